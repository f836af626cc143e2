"""The array module of a batch: numpy on the host, CuPy on the GPU, and views between the two.

A batch on the device path keeps its arrays on the GPU from onnxruntime's outputs to the drift and TreeSHAP
kernels; the code that handles them is written once against ``xp`` (numpy or cupy, which share the calls used
here). CuPy is imported only when a GPU path is chosen (:func:`cupy_module`): serving on the CPU never imports
it, and a machine without it serves as before.

Views never copy: onnxruntime's device outputs are wrapped by pointer (CuPy's ``UnownedMemory``, keeping the
OrtValue alive), CuPy arrays reach numba through ``__cuda_array_interface__`` and anything exporting DLPack
reaches CuPy through ``cupy.from_dlpack``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

from driftline.datatypes import NUMPY_OF, oip_from_ort
from driftline.errors import Unavailable

CPU = "cpu"
CUDA = "cuda"
INSTALL_HINT = "install the GPU extra: pip install 'driftline[gpu]' (CuPy for CUDA 12)"


def cupy_module() -> ModuleType:
    """CuPy, imported now (the first GPU batch or load pays for it, never a CPU server)."""
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise Unavailable(f"the GPU path needs CuPy, which is not installed: {INSTALL_HINT}") from exc


def array_module(device: str) -> ModuleType:
    """numpy for ``"cpu"``, cupy for ``"cuda"``."""
    if device == CPU:
        return np
    if device == CUDA:
        return cupy_module()
    raise ValueError(f"device must be cpu or cuda, not {device!r}")


def on_device(array: Any, xp: ModuleType) -> Any:
    """``array`` as an ``xp`` array, without a copy when it already lives where ``xp`` computes."""
    if xp is np:
        return np.asarray(array)
    if hasattr(array, "__cuda_array_interface__"):
        return xp.asarray(array)  # reads the interface: a view, not a copy
    if hasattr(array, "__dlpack__") and not isinstance(array, np.ndarray):
        return xp.from_dlpack(array)
    return xp.asarray(array)  # a host array: this is the one copy to the device


def to_host(array: Any) -> np.ndarray:
    """A host copy of a device array (the array itself when it is on the host already)."""
    if isinstance(array, np.ndarray):
        return array
    return array.get() if hasattr(array, "get") else np.asarray(array)


def ortvalue_view(value: Any, xp: ModuleType) -> Any:
    """An onnxruntime output (OrtValue) as an ``xp`` array sharing its memory; the array keeps ``value`` alive."""
    if xp is np:
        return value.numpy()
    dtype = NUMPY_OF[oip_from_ort(value.data_type())]
    shape = tuple(value.shape())
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    memory = xp.cuda.UnownedMemory(value.data_ptr(), size, value)
    return xp.ndarray(shape, dtype, xp.cuda.MemoryPointer(memory, 0))

