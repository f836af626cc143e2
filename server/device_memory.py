"""Where a batch's arrays are allocated on the device path, within a bound, and what running out looks like.

Two allocators share one small interface (``xp``, ``device``, ``empty``, ``used_bytes``, ``limit_bytes``):

* :class:`CupyMemory`: CuPy's memory pool on the GPU, capped with ``set_limit`` (``--device-memory-mib``).
  onnxruntime's own CUDA arena is capped at the same figure through its ``gpu_mem_limit`` option
  (server/model.py), so that neither pool can take the whole device from the other or from other processes.
* :class:`HostMemory`: numpy, bounded the same way, for the device path's code run on the host (onnxruntime's IO
  binding with CPU buffers). It is how the bound and the fallback are exercised on a machine without a GPU.

:func:`out_of_memory` recognises the device's out-of-memory errors (CuPy's pool, numba's driver calls,
onnxruntime's allocator) by type and message, without importing CuPy: the batch that met one is rerun on the CPU.
"""

from __future__ import annotations

import threading
import weakref
from types import ModuleType
from typing import Any

import numpy as np

from driftline.errors import Unavailable
from driftline.server.arrays import CPU, CUDA, INSTALL_HINT, array_module

MIB = 1024 * 1024
DEFAULT_SHARE = 0.25  # of the GPU's memory, when --device-memory-mib is not given: room for other processes
CUDA_ERROR_OUT_OF_MEMORY = 2  # the driver API's code (numba's CudaAPIError carries it)


class DeviceOutOfMemory(MemoryError):
    """An allocation on the device path would pass its bound."""


class HostMemory:
    """numpy arrays counted against a bound, released when the arrays are collected."""

    xp: ModuleType = np
    device = CPU

    def __init__(self, limit_bytes: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self._used = 0
        self._lock = threading.Lock()  # batches run on several executor threads

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        with self._lock:
            if self.limit_bytes is not None and self._used + size > self.limit_bytes:
                raise DeviceOutOfMemory(f"{size:,} more bytes would pass the bound of {self.limit_bytes:,} "
                                        f"({self._used:,} in use)")
            self._used += size
        array = np.empty(shape, dtype)
        weakref.finalize(array, self._release, size)
        return array

    def _release(self, size: int) -> None:
        with self._lock:
            self._used -= size

    def used_bytes(self) -> int:
        return self._used


class CupyMemory:
    """CuPy's default pool on the current GPU, capped at ``limit_bytes`` (None: a share of the device)."""

    device = CUDA

    def __init__(self, limit_bytes: int | None = None, device_id: int = 0) -> None:
        self.xp = array_module(CUDA)
        self.device_id = device_id
        with self.xp.cuda.Device(device_id):
            if limit_bytes is None:
                _, total = self.xp.cuda.runtime.memGetInfo()
                limit_bytes = int(total * DEFAULT_SHARE)
            self.pool = self.xp.get_default_memory_pool()
            self.pool.set_limit(size=limit_bytes)
        self.limit_bytes = limit_bytes

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        with self.xp.cuda.Device(self.device_id):
            return self.xp.empty(shape, dtype)

    def used_bytes(self) -> int:
        return int(self.pool.used_bytes())


class LazyDeviceMemory:
    """The process's GPU allocator, made (CuPy imported, the pool capped) when the first version takes the device
    path: a server whose versions all run on the CPU never imports CuPy."""

    def __init__(self, limit_mib: int | None) -> None:
        self.limit_bytes = limit_mib * MIB if limit_mib is not None else None
        self._memory: CupyMemory | None = None
        self._lock = threading.Lock()

    def get(self) -> CupyMemory:
        """The allocator; Unavailable (the version then takes the CPU path) when CuPy is missing or cannot start."""
        with self._lock:
            if self._memory is None:
                try:
                    self._memory = CupyMemory(self.limit_bytes)
                except Unavailable:
                    raise
                except Exception as exc:  # noqa: BLE001 - a CuPy built for another CUDA: serve on, without it
                    raise Unavailable(f"CuPy cannot use the GPU ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from exc
            return self._memory

    @property
    def started(self) -> CupyMemory | None:
        """The allocator, when a version has taken the device path; else None (nothing to report)."""
        return self._memory


def out_of_memory(exc: BaseException) -> str | None:
    """Which allocator ran out (``cupy``, ``numba``, ``onnxruntime``, ``bound``) when ``exc`` is the device running
    out of memory; None for any other error, which is the batch's own and is not hidden by a rerun."""
    if isinstance(exc, DeviceOutOfMemory):
        return "bound"
    kind = type(exc)
    names = {(c.__module__.split(".")[0], c.__name__) for c in kind.__mro__}
    if ("cupy", "OutOfMemoryError") in names or ("cupy_backends", "CUDARuntimeError") in names and (
            "memoryallocation" in str(exc).lower().replace(" ", "")):
        return "cupy"
    if ("numba", "CudaAPIError") in names and (getattr(exc, "code", None) == CUDA_ERROR_OUT_OF_MEMORY
                                                 or "OUT_OF_MEMORY" in str(exc)):
        return "numba"
    if kind.__module__.startswith("onnxruntime"):
        message = str(exc).lower()
        if "failed to allocate memory" in message or "out of memory" in message:
            return "onnxruntime"
    return None
