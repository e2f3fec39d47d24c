"""Asymptotics of sequence multi-index models and deep tied attention networks.

The public API, loaded on first use (``import asymptotics`` stays cheap):

- channels: :class:`Channel`, :class:`AttentionChannel`, :class:`Architecture`, the
  closed-form channels, :func:`make_channel` and :data:`MODELS`;
- priors: :class:`Prior`, :class:`GaussianPrior`, :class:`RademacherPrior`,
  :func:`make_prior`;
- state evolution: :class:`SESettings`, :class:`StateEvolution`,
  :func:`run_state_evolution`, :class:`SEResult`; curves: :func:`sweep`,
  :func:`sweep_settings`, :func:`locate_transitions`;
- thresholds: :class:`ThresholdSettings`, :func:`weak_recovery_thresholds`,
  :class:`StaircaseSettings`, :func:`staircase_thresholds`, :func:`threshold_table`;
- results, solvers, executors: :func:`read_rows`, :func:`read_frame`, :func:`to_frame`,
  :func:`to_dataset` (pandas/xarray, the ``data`` extra), :class:`ResultCache`,
  :func:`solve_fixed_point`, :func:`make_executor`.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Channel": "channels.base",
    "Capabilities": "channels.base",
    "Posterior": "channels.base",
    "AttentionChannel": "channels.attention",
    "Architecture": "channels.attention_map",
    "LinearChannel": "channels.closed_form",
    "PhaseRetrievalChannel": "channels.closed_form",
    "ProductChannel": "channels.closed_form",
    "SignChannel": "channels.closed_form",
    "SignProductChannel": "channels.closed_form",
    "MODELS": "channels.names",
    "channel_for": "channels.registry",
    "make_channel": "channels.registry",
    "Prior": "priors",
    "GaussianPrior": "priors",
    "RademacherPrior": "priors",
    "make_prior": "priors",
    "SESettings": "state_evolution",
    "StateEvolution": "state_evolution",
    "SEResult": "state_evolution",
    "run_state_evolution": "state_evolution",
    "sweep": "curves",
    "sweep_settings": "curves",
    "locate_transitions": "curves",
    "ThresholdSettings": "thresholds",
    "weak_recovery_thresholds": "thresholds",
    "StaircaseSettings": "staircase",
    "staircase_thresholds": "staircase",
    "threshold_table": "tables",
    "read_rows": "results",
    "read_result_file": "results",
    "make_header": "results",
    "provenance": "results",
    "to_frame": "frames",
    "read_frame": "frames",
    "to_dataset": "frames",
    "ResultCache": "cache",
    "default_cache": "cache",
    "ResultFileError": "results",
    "threshold_jobs": "tables",
    "threshold_task": "tables",
    "threshold_task_key": "tables",
    "threshold_tasks": "tables",
    "table_settings": "tables",
    "table_workers": "tables",
    "Journal": "sweeps",
    "OutputExistsError": "sweeps",
    "ResumeError": "sweeps",
    "check_writable": "sweeps",
    "check_threshold_job": "resources",
    "check_se": "resources",
    "gpu_available": "backend",
    "solve_fixed_point": "solver",
    "make_executor": "executors",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
