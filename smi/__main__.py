"""``python -m smi`` is the ``smi`` command."""

import sys

from .cli import main

sys.exit(main())
