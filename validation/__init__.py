"""Theory against closed forms, published data and simulation: checks, figures, the
validation report and the optimizer-claim experiments.

Public names (loaded on first use): :func:`run_validation`, :func:`make_plot`,
:func:`load_results`, :func:`se_prediction`, :func:`compare`,
:func:`iter_amp_rows_against_se`, :func:`alpha_critical`.
"""

from __future__ import annotations

from asymptotics._lazy import lazy_exports

PLOT_KINDS = ("overlaps", "errors", "phase-diagram", "dynamics")  # smi plot KIND

_EXPORTS = {
    "run_validation": "report",
    "make_plot": "plots", "load_results": "plots", "PlotInputError": "plots",
    "se_prediction": "amp_vs_se", "compare": "amp_vs_se", "finite_size_fits": "amp_vs_se",
    "iter_amp_rows_against_se": "amp_vs_se",
    "alpha_critical": "published",
    "use_style": "style",
    "FigureSpec": "theory_vs_simulation", "SpecError": "theory_vs_simulation",
    "FIGURE_BUDGETS": "theory_vs_simulation", "compute_rows": "theory_vs_simulation",
    "write_figure": "theory_vs_simulation",
}
__all__ = ["PLOT_KINDS", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
