"""CUDA twin of :func:`driftline.kernels.drift.update`, for a batch that is already on the GPU.

Two kernels, one thread per (row, column) pair with a grid-stride loop (consecutive threads take
consecutive columns of a row, so reads of the row-major batch coalesce):

1. bin counts, missing counts, finite count and sum, min and max, all with global atomics;
2. the sum of squared deviations from the batch mean (sum / count, read on the device).

The host then merges the batch's (count, mean, m2) into the state with Chan's formula, exactly as the
CPU kernel does per batch, so counts, missing, min and max equal the CPU state's and the moments agree to
rounding (float64 atomics add in no fixed order). Bins come from the CPU kernel's own source
(:func:`driftline.kernels.drift.bin_index_py`, compiled here as a device function).

All ``numba.cuda`` use is in this module. It imports without a GPU; the kernels compile at their first
launch. Under ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) they run in the simulator.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from driftline.kernels.drift import BinLayout, DriftState, bin_index_py, merge_into

DEFAULT_THREADS_PER_BLOCK = 256
DEFAULT_MAX_BLOCKS = 1024  # with the grid-stride loop, more blocks than this only add atomics contention

_bin_index = cuda.jit(device=True)(bin_index_py)


@cuda.jit
def _bin_and_sum(X, edges, n_edges, is_categorical, counts, missing, n, sums, vmin, vmax):  # noqa: ANN001
    rows, cols = X.shape
    total = rows * cols
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, total, stride):
        r = i // cols
        c = i - r * cols
        v = float(X[r, c])
        if math.isnan(v):
            cuda.atomic.add(missing, c, 1)
        else:
            b = _bin_index(v, edges, c, n_edges[c], is_categorical[c])
            cuda.atomic.add(counts, (c, b), 1)
            cuda.atomic.min(vmin, c, v)
            cuda.atomic.max(vmax, c, v)
            if not math.isinf(v):
                cuda.atomic.add(n, c, 1)
                cuda.atomic.add(sums, c, v)


@cuda.jit
def _squared_deviations(X, n, sums, m2):  # noqa: ANN001
    rows, cols = X.shape
    total = rows * cols
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, total, stride):
        r = i // cols
        c = i - r * cols
        v = float(X[r, c])
        if not math.isnan(v) and not math.isinf(v):
            d = v - sums[c] / n[c]
            cuda.atomic.add(m2, c, d * d)


def layout_to_device(layout: BinLayout) -> tuple[object, object, object]:
    """``(edges, n_edges, is_categorical)`` on the GPU: copy once per model version, pass to every update."""
    return cuda.to_device(layout.edges), cuda.to_device(layout.n_edges), cuda.to_device(layout.is_categorical)


def update_from_device(state: DriftState, X_device, edges_device, n_edges_device, is_categorical_device, *,  # noqa: ANN001
                       threads_per_block: int = DEFAULT_THREADS_PER_BLOCK, max_blocks: int = DEFAULT_MAX_BLOCKS,
                       stream=0) -> DriftState:  # noqa: ANN001
    """Fold the device batch ``X_device`` [rows, columns] (float32 or float64) into ``state``, in place.

    ``edges_device`` etc. come from :func:`layout_to_device` for the state's layout. ``X_device`` may be a
    numba device array or anything with ``__cuda_array_interface__`` (CuPy, PyTorch). Synchronises on
    ``stream`` (the results are copied to the host state). Returns ``state``.
    """
    if not hasattr(X_device, "copy_to_host"):  # CuPy, PyTorch...: wrap without copying
        X_device = cuda.as_cuda_array(X_device)
    if len(X_device.shape) != 2:
        raise ValueError(f"a batch must be 2-D [rows, columns], got shape {X_device.shape}")
    if X_device.dtype not in (np.float32, np.float64):
        raise ValueError(f"a batch must be float32 or float64, got {X_device.dtype}")
    rows, cols = X_device.shape
    if cols != state.columns or n_edges_device.shape[0] != cols:
        raise ValueError(f"batch of {cols} columns, state of {state.columns}, layout of {n_edges_device.shape[0]}")
    if cols and int(n_edges_device.copy_to_host().max()) + 1 > state.counts.shape[1]:
        raise ValueError(f"state counts {state.counts.shape} are narrower than the layout's bins")  # else OOB atomics
    if threads_per_block < 1 or max_blocks < 1:
        raise ValueError("threads_per_block and max_blocks must be >= 1")
    if rows == 0:
        return state

    counts = cuda.to_device(np.zeros_like(state.counts), stream=stream)
    missing = cuda.to_device(np.zeros(cols, dtype=np.int64), stream=stream)
    n = cuda.to_device(np.zeros(cols, dtype=np.int64), stream=stream)
    sums = cuda.to_device(np.zeros(cols, dtype=np.float64), stream=stream)
    m2 = cuda.to_device(np.zeros(cols, dtype=np.float64), stream=stream)
    vmin = cuda.to_device(np.full(cols, np.inf), stream=stream)
    vmax = cuda.to_device(np.full(cols, -np.inf), stream=stream)

    blocks = max(1, min(max_blocks, math.ceil(rows * cols / threads_per_block)))
    _bin_and_sum[blocks, threads_per_block, stream](
        X_device, edges_device, n_edges_device, is_categorical_device, counts, missing, n, sums, vmin, vmax)
    _squared_deviations[blocks, threads_per_block, stream](X_device, n, sums, m2)

    batch_counts = counts.copy_to_host(stream=stream)
    batch_missing = missing.copy_to_host(stream=stream)
    batch_n = n.copy_to_host(stream=stream)
    batch_sums = sums.copy_to_host(stream=stream)
    batch_m2 = m2.copy_to_host(stream=stream)
    batch_min = vmin.copy_to_host(stream=stream)
    batch_max = vmax.copy_to_host(stream=stream)
    if not isinstance(stream, int):
        stream.synchronize()

    with np.errstate(invalid="ignore", divide="ignore"):
        batch_mean = np.where(batch_n > 0, batch_sums / np.maximum(batch_n, 1), 0.0)
    merge_into(state, DriftState(batch_counts, batch_missing, batch_n, batch_mean, batch_m2, batch_min, batch_max))
    return state
