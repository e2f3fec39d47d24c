"""One array-namespace switch: numpy on CPU, cupy on GPU.

Every GPU code path is written against the namespace ``xp`` returned here, so the same
function runs (and is tested) with numpy.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

DEVICES = ("cpu", "gpu")


class BackendError(RuntimeError):
    """Raised when a requested array back-end is not available."""


def get_namespace(device: str = "cpu") -> ModuleType:
    """Return the array module for ``device`` ('cpu' -> numpy, 'gpu' -> cupy).

    Raises ``ValueError`` for an unknown device and ``BackendError`` when cupy or a CUDA
    device is missing, before any work is done.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    if device == "cpu":
        return np
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise BackendError("device 'gpu' needs cupy: pip install 'smi-asymptotics[gpu]'") from exc
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:  # pragma: no cover
        raise BackendError(f"device 'gpu' requested but CUDA is unusable: {exc}") from exc
    if n < 1:  # pragma: no cover
        raise BackendError("device 'gpu' requested but no CUDA device is visible")
    return cupy


def gpu_available() -> bool:
    """True when cupy imports and sees at least one CUDA device."""
    try:
        get_namespace("gpu")
    except (BackendError, ImportError):
        return False
    return True


def namespace_of(*arrays) -> ModuleType:
    """The array module the given arrays live in (numpy unless one is a cupy array)."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy

            return cupy
    return np


def to_numpy(a) -> np.ndarray:
    """Copy an array of either namespace to host numpy."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def prepare_numba_cuda() -> None:
    """Make ``numba.cuda`` importable on numpy >= 2.5: numba-cuda still registers
    ``np.row_stack``, which numpy 2.5 removed, when its CUDA target loads (seen on the
    H200 image: numba-cuda with numpy 2.5.2).  The alias ``np.row_stack = np.vstack`` is
    the one change, made only where the name is missing; call before ``from numba import
    cuda``."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack  # noqa: NPY201
