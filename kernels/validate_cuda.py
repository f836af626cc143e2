"""CUDA twin of :func:`driftline.kernels.validate.validate_rows`: the per-batch schema check on the GPU.

One thread per row (grid-stride loop): the row's mask is the OR over its values of the CPU kernel's own
classification (:func:`driftline.kernels.validate._value_bits`, its Python source compiled here as a device
function), so a value is judged by the same code on both sides. The CPU kernel first tries a branch-free
fast test and classifies only the rows that fail it; a GPU thread has no branch predictor to spare, so it
classifies every value: the masks are the same (the fast test only skips rows whose every value has no bit).
Failed rows are counted with one integer atomic each.

The masks (4 bytes a row) and the count stay on the device unless the caller asks for them; a batch whose
count is 0 (the common case) needs nothing else. For the rows that failed, the per-feature detail and the
messages come from the CPU side (:class:`driftline.kernels.validate.ValidationResult` on the host copy).

All ``numba.cuda`` use is in this module; it imports without a GPU and the kernel compiles at its first
launch. Under ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) it runs in the simulator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from driftline.kernels.launch import DeviceLimits, device_view, resolve
from driftline.kernels.validate import SchemaArrays, _value_bits

__all__ = ["schema_to_device", "validate_rows_cuda"]

_value_bits_device = cuda.jit(device=True)(_value_bits.py_func)


@cuda.jit
def _validate_rows(X, params, meta, cat_ok, row_mask, failed):  # noqa: ANN001, ANN202
    cols = X.shape[1]
    for r in range(cuda.grid(1), X.shape[0], cuda.gridsize(1)):
        m = 0
        for f in range(cols):
            m |= _value_bits_device(float(X[r, f]), f, params, meta, cat_ok)
        row_mask[r] = m
        if m != 0:
            cuda.atomic.add(failed, 0, 1)


def schema_to_device(arrays: SchemaArrays, dtype: Any, *, stream: Any = None) -> tuple[Any, Any, Any]:
    """``(params, meta, cat_ok)`` of a compiled schema on the GPU, the limits for batches of ``dtype``
    (float32 batches compare with limits rounded to float32): copy once per version and dtype."""
    s = 0 if stream is None else stream
    out = tuple(cuda.to_device(np.ascontiguousarray(a), stream=s)
                for a in (arrays.for_dtype(np.dtype(dtype)), arrays.meta, arrays.cat_ok))
    if s != 0:
        s.synchronize()
    return out


def validate_rows_cuda(X: Any, params: Any, meta: Any, cat_ok: Any, row_mask: Any, *, stream: Any = None,
                       to_host: bool = True, threads_per_block: int | None = None, max_blocks: int | None = None,
                       limits: DeviceLimits | None = None) -> Any:
    """Check device rows ``X`` [rows, features] (float32 or float64); ``row_mask[r]`` (uint32) gets row r's
    failed kinds, as :func:`~driftline.kernels.validate.validate_rows` writes them.

    ``params``, ``meta``, ``cat_ok``: :func:`schema_to_device`'s (numpy arrays are copied over per call).
    A device ``row_mask`` is written there; a numpy one is filled from the device. Returns the number of rows
    with any failure: an int, waiting for ``stream`` (None: the default stream), or with ``to_host=False`` a
    one-element int64 device array, nothing waited for (a numpy ``row_mask`` still waits for its copy).
    """
    s = 0 if stream is None else stream
    X = device_view(X, s)
    if len(X.shape) != 2 or X.dtype not in (np.float32, np.float64):
        raise ValueError(f"a batch must be 2-D float32 or float64 [rows, features], got {X.dtype} {tuple(X.shape)}")
    rows, cols = X.shape
    if tuple(params.shape) != (6, cols) or tuple(meta.shape) != (4, cols):
        raise ValueError(f"a batch of {cols} features for a schema of {params.shape[1]}")
    if tuple(row_mask.shape) != (rows,) or np.dtype(row_mask.dtype) != np.uint32:
        raise ValueError(f"row_mask must be uint32 [{rows}], got {row_mask.dtype} {tuple(row_mask.shape)}")
    failed = cuda.to_device(np.zeros(1, dtype=np.int64), stream=s)
    on_host = isinstance(row_mask, np.ndarray)
    mask = cuda.device_array(rows, dtype=np.uint32, stream=s) if on_host else device_view(row_mask, s)
    if rows:
        grid = resolve(rows, threads_per_block, max_blocks, limits)
        _validate_rows[grid.blocks, grid.threads_per_block, s](X, device_view(params, s), device_view(meta, s),
                                                               device_view(cat_ok, s), mask, failed)
    if on_host:
        row_mask[...] = mask.copy_to_host(stream=s)
    if not to_host:
        if on_host and s != 0:
            s.synchronize()
        return failed
    count = failed.copy_to_host(stream=s)
    if s != 0:
        s.synchronize()
    return int(count[0])
