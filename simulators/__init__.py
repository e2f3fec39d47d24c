"""Finite size: one data generator, Bayes-AMP at dimension D, training of the attention
network with a menu of optimizers, and the sweeps of both as library functions.

Public names (loaded on first use): :class:`AMPConfig`, :func:`run_amp`, :func:`summarise`,
:class:`TrainConfig`, :func:`train_run`, :func:`teacher_data`, :func:`seed_streams`,
:func:`make_optimizer`, :func:`amp_rows`, :func:`training_rows`.
"""

from __future__ import annotations

from asymptotics._lazy import lazy_exports

_EXPORTS = {
    "AMPConfig": "amp", "AMPResult": "amp", "run_amp": "amp", "summarise": "amp",
    "TrainConfig": "attention_training", "AttentionModel": "attention_training",
    "train_run": "attention_training", "teacher_labels": "attention_training",
    "TeacherData": "data", "teacher_data": "data", "seed_streams": "data",
    "sample_sequences": "data",
    "make_optimizer": "optimizers", "OPTIMIZERS": "optimizers",
    "amp_rows": "sweeps", "iter_amp_rows": "sweeps", "training_rows": "sweeps",
    "iter_training_rows": "sweeps",
    "default_lr": "sweeps",
    "parse_optimizer_name": "optimizers",
    "check_amp": "resources",
    "check_training": "resources",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
