"""One figure style for every plot of the project (``smi plot``, ``smi validate``).

- no LaTeX: mathtext only, so figures render wherever matplotlib does;
- the Okabe–Ito palette (Okabe & Ito 2008), safe for the common colour-vision deficiencies;
- one meaning per visual channel in every ``smi plot`` figure:

  * **colour = layer** (:data:`LAYER_COLOURS`: layer 1 blue, layer 2 vermillion, then orange
    and sky blue) for every per-layer quantity: overlaps, cosines, thresholds;
  * the whole-network errors of the ``errors`` figure are not per layer and take colours no
    layer uses (:data:`QUANTITY_COLOURS`: plug-in bluish green, Bayes-optimal black,
    trained network's test error reddish purple);
  * **line style = branch or quantity** (:data:`BRANCH_LINESTYLES`: Bayes-optimal solid,
    AMP branch dashed, informed branch dotted; :data:`THRESHOLD_LINESTYLES` for the
    vertical threshold marks);
  * **marker = source** of simulated points: AMP open circles, trained networks filled
    triangles; SE lines carry small dots at the computed points;
- legends outside the data area (below the axes, one per figure);
- widths for one-column (3.4 in) and two-column (7.0 in) papers, ``--width single|double``.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

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
#: Colour of layer k (k = 0, 1, ...): the same in every figure.
LAYER_COLOURS = ["#0072B2", "#D55E00", "#E69F00", "#56B4E9"]
#: Colours of quantities that are not per layer (never a layer colour).
QUANTITY_COLOURS = {"plugin": "#009E73", "bayes": "#000000", "test": "#CC79A7"}
#: Line style of each SE branch.
BRANCH_LINESTYLES = {"bayes": "-", "amp": "--", "informed": ":"}
#: Line style of the vertical threshold marks (weak recovery, staircase).
THRESHOLD_LINESTYLES = {"alpha_c": "-.", "staircase": (0, (4, 1.5, 1, 1.5, 1, 1.5))}
#: Neutral colour of legend entries that stand for a line style or marker only.
NEUTRAL = "0.45"
#: Markers of simulated points: AMP (open), trained networks (filled).
SOURCE_MARKERS = {"amp": "o", "train": "^"}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":"]

#: Figure widths in inches.
WIDTHS = {"single": 3.4, "double": 7.0}
#: Height over width.
ASPECT = 0.72

#: The settings of ``styles/smi.mplstyle``, as a dict (the file is what :func:`style` uses;
#: a test keeps the two equal).
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


def layer_colour(k: int) -> str:
    """Colour of layer ``k + 1`` (``k`` counts from 0)."""
    return LAYER_COLOURS[k % len(LAYER_COLOURS)]


def marker(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


def linestyle(i: int) -> str:
    return LINESTYLES[i % len(LINESTYLES)]


def figsize(width: str = "single", ncols: int = 1, aspect: float = ASPECT,
            nrows: int = 1) -> tuple:
    """(width, height) in inches of a figure with ``nrows`` x ``ncols`` panels."""
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {', '.join(WIDTHS)}, got {width!r}")
    w = WIDTHS[width]
    if ncols == 1 and nrows == 1:
        return w, w * aspect
    row = min(max(w / ncols * 0.8, 1.3), 2.2)  # a panel wider than tall, never a strip
    return w, row * nrows + 0.35  # + the axis labels of the bottom row


#: The style files (package data): the project style and its variants, applied on top.
STYLE_DIR = Path(__file__).with_name("styles")
VARIANTS = ("default", "paper")


def style_files(variant: str = "default") -> list[Path]:
    """The ``.mplstyle`` files of ``variant``: ``smi.mplstyle``, then for ``paper``
    ``smi-paper.mplstyle`` (serif text and mathtext, no LaTeX)."""
    if variant not in VARIANTS:
        raise ValueError(f"style variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    files = [STYLE_DIR / "smi.mplstyle"]
    if variant != "default":
        files.append(STYLE_DIR / f"smi-{variant}.mplstyle")
    return files


_ACTIVE: list[str] = []  # the variants of the enclosing style() contexts


@contextmanager
def style(variant: str | None = None):
    """Context in which figures take the project style (the file ``smi.mplstyle``);
    ``variant="paper"`` adds ``smi-paper.mplstyle`` (serif).  Without ``variant``, the
    variant of an enclosing ``style(...)`` (``default`` at the top): a function that draws
    inside ``style()`` keeps the variant its caller chose."""
    if variant is None:
        variant = _ACTIVE[-1] if _ACTIVE else "default"
    files = [str(f) for f in style_files(variant)]
    _ACTIVE.append(variant)
    try:
        with plt.style.context(files):
            yield
    finally:
        _ACTIVE.pop()


def new_figure(width: str = "single", ncols: int = 1, aspect: float = ASPECT,
               nrows: int = 1, sharex: bool = False, sharey: bool = False):
    """A styled figure with ``nrows`` x ``ncols`` panels (a flat list, row by row); call
    inside :func:`style`."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize(width, ncols, aspect, nrows),
                             squeeze=False, layout="constrained", sharex=sharex,
                             sharey=sharey)
    return fig, [ax for row in axes for ax in row]


def save(fig, path: str, description: str | None = None,
         provenance: dict | None = None) -> None:
    """Write ``fig`` to ``path`` (PDF or PNG by extension) and close it.

    ``description``: a caption stored in the file's metadata (PNG ``Description``, PDF
    ``Subject``), e.g. how error bars are drawn.  ``provenance``
    (:func:`asymptotics.results.provenance`, plus what the figure was drawn from): stored
    as JSON in the PNG's ``Provenance`` text chunk, or the PDF's ``Keywords``.
    """
    pdf = str(path).lower().endswith(".pdf")
    meta = {}
    if description:
        meta["Subject" if pdf else "Description"] = description
    if provenance:
        meta["Keywords" if pdf else "Provenance"] = json.dumps(provenance, sort_keys=True)
        meta["Creator" if pdf else "Software"] = \
            f"smi-asymptotics {provenance.get('package_version', '')}".strip()
    try:
        fig.savefig(path, metadata=meta or None)
    finally:
        plt.close(fig)


use_style = style  # the name the validation package exports (``validation.style`` is this module)
