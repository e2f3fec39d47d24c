"""``python -m asymptotics`` is ``smi``."""

import sys

from .cli import main

sys.exit(main())
