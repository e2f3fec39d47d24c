"""One figure style for every plot of the project (``smi plot``, ``smi validate``).

- no LaTeX: mathtext only, so figures render wherever matplotlib does;
- the Okabe–Ito palette (Okabe & Ito 2008), safe for the common colour-vision deficiencies;
  curves of different layers also differ in marker and line style;
- widths for one-column (3.4 in) and two-column (7.0 in) papers, ``--width single|double``.
"""

from __future__ import annotations

from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")  # noqa: E402 - non-interactive backend, before pyplot
import matplotlib.pyplot as plt  # noqa: E402

#: Okabe–Ito colours, in the order layers and series use them.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
#: Series colours (yellow last: low contrast on white).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":"]

#: Figure widths in inches.
WIDTHS = {"single": 3.4, "double": 7.0}
#: Height over width.
ASPECT = 0.72

RC = {
    "text.usetex": False,
    "font.family": "sans-serif",
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "errorbar.capsize": 1.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.direction": "in",
    "ytick.direction": "in",
    "legend.frameon": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,  # TrueType in PDFs (editable text, accepted by journals)
    "ps.fonttype": 42,
}


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def linestyle(i: int) -> str:
    return LINESTYLES[i % len(LINESTYLES)]


def figsize(width: str = "single", ncols: int = 1, aspect: float = ASPECT) -> tuple:
    """(width, height) in inches of a figure with ``ncols`` panels side by side."""
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {', '.join(WIDTHS)}, got {width!r}")
    w = WIDTHS[width]
    h = w * aspect if ncols == 1 else max(w / ncols * 0.9, 1.9)
    return w, h


@contextmanager
def style():
    """Context in which figures take the project style."""
    with plt.rc_context(RC):
        yield


def new_figure(width: str = "single", ncols: int = 1, aspect: float = ASPECT):
    """A styled figure with ``ncols`` panels side by side; call inside :func:`style`."""
    fig, axes = plt.subplots(1, ncols, figsize=figsize(width, ncols, aspect), squeeze=False,
                             layout="constrained")
    return fig, list(axes[0])


def save(fig, path: str) -> None:
    """Write ``fig`` to ``path`` (PDF or PNG by extension) and close it."""
    fig.savefig(path)
    plt.close(fig)
