"""CUDA twin of :func:`driftline.kernels.drift.update`, for a batch that is already on the GPU.

Two kernels, one thread per (row, column) pair with a grid-stride loop (consecutive threads take
consecutive columns of a row, so reads of the row-major batch coalesce):

1. bin counts, missing counts, finite count and sum, min and max;
2. the sum of squared deviations from the batch mean (sum / count, read on the device).

The launch makes the grid a multiple of the column count, so each thread's grid-stride loop stays in one
column: its missing count, finite count, sum, min, max and squared deviations add up in registers and reach
memory once per thread; only the bin counts take an atomic per value. (A grid that is not such a multiple,
e.g. one a caller forces, falls back to an atomic per value for everything.)

A batch has few columns (a dozen), so millions of values would add into a few dozen addresses: each block
first accumulates its share in shared memory (the block's private counts and sums, :data:`SHARED_CELLS` bins
and :data:`SHARED_COLUMNS` columns at most) and adds it to the batch's totals once, with one global atomic
per cell. A layout too wide for that runs the same kernels with global atomics throughout.

The host then merges the batch's (count, mean, m2) into the state with Chan's formula, exactly as the
CPU kernel does per batch, so counts, missing, min and max equal the CPU state's and the moments agree to
rounding (float64 atomics add in no fixed order). Bins come from the CPU kernel's own source
(:func:`driftline.kernels.drift.bin_index_py`, compiled here as a device function). The batch statistics
(a few hundred numbers) are the only thing copied back, on the caller's stream, and that copy is the one
place the host waits.

All ``numba.cuda`` use is in this module. It imports without a GPU; the kernels compile at their first
launch. Under ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) they run in the simulator.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda, float64, int64

from driftline.kernels.drift import BinLayout, DriftState, bin_index_py, merge_into
from driftline.kernels.launch import DeviceLimits, Launch, device_limits, resolve

__all__ = ["SHARED_CELLS", "SHARED_COLUMNS", "layout_to_device", "update_from_device"]

SHARED_COLUMNS = 64  # columns whose missing / n / sum / min / max / m2 a block keeps in shared memory
SHARED_CELLS = 2048  # bins (columns x width) a block counts in shared memory
SHARED_BYTES = 8 * (SHARED_CELLS + 6 * SHARED_COLUMNS)
BLOCKS_PER_SM = 4  # each block flushes its sums once: a few resident blocks per multiprocessor are enough

_bin_index = cuda.jit(device=True)(bin_index_py)

# ints (int64): counts [cols * width], missing [cols], n [cols], then one cell: values binned past the width.
# floats (float64): sums [cols], m2 [cols], min [cols], max [cols].


@cuda.jit
def _init(ints, floats, cols):  # noqa: ANN001, ANN202
    for i in range(cuda.grid(1), ints.shape[0], cuda.gridsize(1)):
        ints[i] = 0
    for i in range(cuda.grid(1), floats.shape[0], cuda.gridsize(1)):
        floats[i] = math.inf if 2 * cols <= i < 3 * cols else (-math.inf if i >= 3 * cols else 0.0)


@cuda.jit(device=True)
def _bin_value(X, r, c, edges, n_edges, is_categorical, width, counts, missing, n, sums, vmin, vmax, overflow):  # noqa: ANN001, ANN202
    """One value into the accumulators (global or shared arrays: the same code for both)."""
    v = float(X[r, c])
    if math.isnan(v):
        cuda.atomic.add(missing, c, 1)
        return
    b = _bin_index(v, edges, c, n_edges[c], is_categorical[c])
    if b >= width:
        cuda.atomic.add(overflow, 0, 1)
        return
    cuda.atomic.add(counts, c * width + b, 1)
    cuda.atomic.min(vmin, c, v)
    cuda.atomic.max(vmax, c, v)
    if not math.isinf(v):
        cuda.atomic.add(n, c, 1)
        cuda.atomic.add(sums, c, v)


@cuda.jit(device=True)
def _bin_column(X, c, start, stride, edges, n_edges, is_categorical, width, counts, missing, n, sums, vmin, vmax,  # noqa: ANN001, ANN202
                overflow):  # fmt: skip
    """A thread whose grid-stride loop stays in column ``c``: missing, n, sum, min and max add up in registers
    and reach the accumulators once; only the bin counts take an atomic per value."""
    rows, cols = X.shape
    k = n_edges[c]
    categorical = is_categorical[c]
    miss = 0
    past = 0
    count = 0
    total = 0.0
    lo = math.inf
    hi = -math.inf
    for i in range(start, rows * cols, stride):
        v = float(X[i // cols, c])
        if math.isnan(v):
            miss += 1
            continue
        b = _bin_index(v, edges, c, k, categorical)
        if b >= width:
            past += 1
            continue
        cuda.atomic.add(counts, c * width + b, 1)
        lo = min(lo, v)
        hi = max(hi, v)
        if not math.isinf(v):
            count += 1
            total += v
    if miss:
        cuda.atomic.add(missing, c, miss)
    if past:
        cuda.atomic.add(overflow, 0, past)
    if lo <= hi:
        cuda.atomic.min(vmin, c, lo)
        cuda.atomic.max(vmax, c, hi)
    if count:
        cuda.atomic.add(n, c, count)
        cuda.atomic.add(sums, c, total)


@cuda.jit(device=True)
def _clear(s_ints, s_floats, t, step):  # noqa: ANN001, ANN202
    for j in range(t, s_ints.shape[0], step):
        s_ints[j] = 0
    for j in range(t, 3 * SHARED_COLUMNS, step):
        s_floats[j] = 0.0 if j < SHARED_COLUMNS else (math.inf if j < 2 * SHARED_COLUMNS else -math.inf)


@cuda.jit(device=True)
def _flush(ints, floats, cols, cells, counts, missing, n, overflow, sums, vmin, vmax, t, step):  # noqa: ANN001, ANN202
    """A block's share into the batch's totals: one global atomic per non-empty cell."""
    for j in range(t, cells, step):
        if counts[j] != 0:
            cuda.atomic.add(ints, j, counts[j])
    for c in range(t, cols, step):
        if missing[c] != 0:
            cuda.atomic.add(ints, cells + c, missing[c])
        if n[c] != 0:
            cuda.atomic.add(ints, cells + cols + c, n[c])
            cuda.atomic.add(floats, c, sums[c])
        if vmin[c] <= vmax[c]:
            cuda.atomic.min(floats, 2 * cols + c, vmin[c])
            cuda.atomic.max(floats, 3 * cols + c, vmax[c])
    if t == 0 and overflow[0] != 0:
        cuda.atomic.add(ints, cells + 2 * cols, overflow[0])


@cuda.jit
def _bin_and_sum(X, edges, n_edges, is_categorical, ints, floats, width, shared):  # noqa: ANN001, ANN202
    s_ints = cuda.shared.array(SHARED_CELLS + 2 * SHARED_COLUMNS + 1, int64)  # counts, missing, n, overflow
    s_floats = cuda.shared.array(3 * SHARED_COLUMNS, float64)  # sums, min, max
    rows, cols = X.shape
    cells = cols * width
    t = cuda.threadIdx.x
    step = cuda.blockDim.x
    if shared:  # the block's private accumulators
        _clear(s_ints, s_floats, t, step)
        cuda.syncthreads()
        counts = s_ints[:SHARED_CELLS]
        missing = s_ints[SHARED_CELLS:SHARED_CELLS + SHARED_COLUMNS]
        n = s_ints[SHARED_CELLS + SHARED_COLUMNS:SHARED_CELLS + 2 * SHARED_COLUMNS]
        overflow = s_ints[SHARED_CELLS + 2 * SHARED_COLUMNS:]
        sums = s_floats[:SHARED_COLUMNS]
        vmin = s_floats[SHARED_COLUMNS:2 * SHARED_COLUMNS]
        vmax = s_floats[2 * SHARED_COLUMNS:]
    else:
        counts = ints[:cells]
        missing = ints[cells:cells + cols]
        n = ints[cells + cols:cells + 2 * cols]
        overflow = ints[cells + 2 * cols:]
        sums = floats[:cols]
        vmin = floats[2 * cols:3 * cols]
        vmax = floats[3 * cols:]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    if stride % cols == 0:  # every thread stays in one column (the launch arranges it)
        if start < rows * cols:
            _bin_column(X, start % cols, start, stride, edges, n_edges, is_categorical, width, counts, missing, n,
                        sums, vmin, vmax, overflow)
    else:
        for i in range(start, rows * cols, stride):
            r = i // cols
            _bin_value(X, r, i - r * cols, edges, n_edges, is_categorical, width, counts, missing, n, sums, vmin,
                       vmax, overflow)
    if shared:
        cuda.syncthreads()
        _flush(ints, floats, cols, cells, counts, missing, n, overflow, sums, vmin, vmax, t, step)


@cuda.jit(device=True)
def _column_m2(X, c, start, stride, count, total):  # noqa: ANN001, ANN202
    """Squared deviations of column ``c``'s finite values on this thread's grid-stride loop."""
    rows, cols = X.shape
    out = 0.0
    if count > 0:  # count 0: nothing finite, or values binned past the width (an error raised on the host)
        mean = total / count
        for i in range(start, rows * cols, stride):
            v = float(X[i // cols, c])
            if not math.isnan(v) and not math.isinf(v):
                out += (v - mean) * (v - mean)
    return out


@cuda.jit
def _squared_deviations(X, ints, floats, width, shared):  # noqa: ANN001, ANN202
    s_m2 = cuda.shared.array(SHARED_COLUMNS, float64)
    rows, cols = X.shape
    cells = cols * width
    t = cuda.threadIdx.x
    if shared:
        for c in range(t, SHARED_COLUMNS, cuda.blockDim.x):
            s_m2[c] = 0.0
        cuda.syncthreads()
        m2 = s_m2[:cols]
    else:
        m2 = floats[cols:2 * cols]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    if stride % cols == 0:  # one column per thread: the sum in a register, one atomic
        c = start % cols
        total = _column_m2(X, c, start, stride, ints[cells + cols + c], floats[c])
        if total != 0.0:
            cuda.atomic.add(m2, c, total)
    else:
        for i in range(start, rows * cols, stride):
            r = i // cols
            c = i - r * cols
            v = float(X[r, c])
            count = ints[cells + cols + c]
            if not math.isnan(v) and not math.isinf(v) and count > 0:
                d = v - floats[c] / count
                cuda.atomic.add(m2, c, d * d)
    if shared:
        cuda.syncthreads()
        for c in range(t, cols, cuda.blockDim.x):
            if s_m2[c] != 0.0:
                cuda.atomic.add(floats, cols + c, s_m2[c])


def layout_to_device(layout: BinLayout, *, stream: Any = None) -> tuple[object, object, object]:
    """``(edges, n_edges, is_categorical)`` on the GPU: copy once per model version, pass to every update."""
    s = 0 if stream is None else stream
    out = (cuda.to_device(layout.edges, stream=s), cuda.to_device(layout.n_edges, stream=s),
           cuda.to_device(layout.is_categorical, stream=s))
    if s != 0:
        s.synchronize()
    return out


def column_aligned_blocks(blocks: int, threads_per_block: int, columns: int) -> int:
    """``blocks`` rounded to a multiple that makes the grid a multiple of ``columns``: each thread's grid-stride
    loop then stays in one column and sums in registers (the nearest such count, at least one multiple)."""
    unit = columns // math.gcd(threads_per_block, columns)
    return max(unit, round(blocks / unit) * unit)


def fits_shared(columns: int, width: int) -> bool:
    """Whether a block can keep a batch's statistics of this shape in shared memory."""
    return columns <= SHARED_COLUMNS and columns * width <= SHARED_CELLS


def update_from_device(state: DriftState, X_device, edges_device, n_edges_device, is_categorical_device, *,  # noqa: ANN001
                       threads_per_block: int | None = None, max_blocks: int | None = None, stream: Any = None,
                       shared: bool | None = None, limits: DeviceLimits | None = None) -> DriftState:
    """Fold the device batch ``X_device`` [rows, columns] (float32 or float64) into ``state``, in place.

    ``edges_device`` etc. come from :func:`layout_to_device` for the state's layout. ``X_device`` may be a
    numba device array or anything with ``__cuda_array_interface__`` (CuPy, PyTorch). Runs on ``stream``
    (None: the default stream) and waits for it once, for the batch's statistics. ``shared``: per-block
    statistics in shared memory (None: when the layout fits, :func:`fits_shared`). The grid is
    :mod:`driftline.kernels.launch`'s unless ``threads_per_block`` / ``max_blocks`` say otherwise. Returns
    ``state``; raises ValueError, leaving it as it was, when a value's bin lies beyond the state's width.
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
    if (threads_per_block is not None and threads_per_block < 1) or (max_blocks is not None and max_blocks < 1):
        raise ValueError("threads_per_block and max_blocks must be >= 1")
    if rows == 0:
        return state
    width = state.counts.shape[1]
    if shared is None:
        shared = fits_shared(cols, width)
    elif shared and not fits_shared(cols, width):
        raise ValueError(f"{cols} columns x {width} bins do not fit a block's shared memory "
                         f"({SHARED_COLUMNS} columns, {SHARED_CELLS} bins)")
    limits = limits or device_limits()
    shared = shared and limits.shared_bytes_per_block >= SHARED_BYTES
    s = 0 if stream is None else stream

    cells = cols * width
    ints = cuda.device_array(cells + 2 * cols + 1, dtype=np.int64, stream=s)
    floats = cuda.device_array(4 * cols, dtype=np.float64, stream=s)
    init = resolve(ints.shape[0], None, None, limits)
    _init[init.blocks, init.threads_per_block, s](ints, floats, cols)
    grid = resolve(rows * cols, threads_per_block, max_blocks, limits, blocks_per_sm=BLOCKS_PER_SM)
    blocks = grid.blocks
    if threads_per_block is None and max_blocks is None:
        blocks = column_aligned_blocks(blocks, grid.threads_per_block, cols)
    grid = Launch(blocks, grid.threads_per_block)
    _bin_and_sum[grid.blocks, grid.threads_per_block, s](X_device, edges_device, n_edges_device,
                                                         is_categorical_device, ints, floats, width, shared)
    _squared_deviations[grid.blocks, grid.threads_per_block, s](X_device, ints, floats, width, shared)

    host_ints = ints.copy_to_host(stream=s)
    host_floats = floats.copy_to_host(stream=s)
    if s != 0:
        s.synchronize()
    if host_ints[-1]:
        raise ValueError(f"state counts {state.counts.shape} are narrower than the layout's bins")
    batch_n = host_ints[cells + cols:cells + 2 * cols]
    batch_sums = host_floats[:cols]
    with np.errstate(invalid="ignore", divide="ignore"):
        batch_mean = np.where(batch_n > 0, batch_sums / np.maximum(batch_n, 1), 0.0)
    batch = DriftState(host_ints[:cells].reshape(cols, width), host_ints[cells:cells + cols], batch_n, batch_mean,
                       host_floats[cols:2 * cols], host_floats[2 * cols:3 * cols], host_floats[3 * cols:])
    merge_into(state, batch)
    return state
