"""CUDA twin of :func:`driftline.kernels.treeshap.shap_values`, for rows that are already on the GPU.

One thread per (row, leaf) pair with a grid-stride loop, in the spirit of GPUTreeShap's one thread per
(row, path): consecutive threads take consecutive rows of the same leaf, so a warp reads one leaf's path
(the same addresses: one broadcast read), runs the same number of iterations (no divergence over the path
length) and adds into 32 different rows (no two atomics of a warp on one address). A thread routes its row along its leaf's root path (the bit mask of
path slots the row leaves the path at), integrates the leaf's contribution with the CPU kernel's own
Gauss-Legendre code (:func:`driftline.kernels.treeshap.leaf_quadrature_py`, compiled here as a device
function) and adds it to ``phi[row, feature, output]`` with float64 atomics. No tables: the per-leaf
quadrature needs no memory beyond the path arrays, which suits a GPU better than 2**d tables.

Path tables in shared memory. Every (row, leaf) pair reads its leaf's path (feature, threshold, direction,
slot bit per split). :func:`prepare_cuda` cuts the leaves into *slices* whose paths together fit
:data:`SHARED_PATH_ENTRIES` splits (17 KiB); for a batch of at least :data:`SHARED_MIN_ROWS` rows, every block
copies a slice's paths into shared memory once, and all its threads route their rows through that copy
before the block moves to the next slice. Smaller batches (one request's rows) read the paths from global
memory: there, a slice would give too few (row, leaf) pairs to fill the device between two barriers. Launch
sizes come from :mod:`driftline.kernels.launch` (the batch and the device), on the caller's stream.

The result equals the CPU kernel's to rounding (atomics add in no fixed order). All ``numba.cuda`` use is
in this module; it imports without a GPU and the kernels compile at their first launch. Under
``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) they run in the simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import cuda, float32, float64, int8, int32, int64, njit

from driftline.kernels.launch import DeviceLimits, device_limits, resolve
from driftline.kernels.treeshap import TreeEnsemble, TreeShapModel, leaf_quadrature_py, prepare

__all__ = ["CUDA_MAX_PATH_FEATURES", "SHARED_MIN_ROWS", "SHARED_PATH_ENTRIES", "CudaTreeShap", "prepare_cuda",
           "shap_values_cuda"]

CUDA_MAX_PATH_FEATURES = 32  # per-thread scratch is a fixed-size local array
SHARED_PATH_ENTRIES = 1024  # splits per shared-memory slice: 17 bytes each (int32, float32, int64, int8)
SHARED_PATH_BYTES = SHARED_PATH_ENTRIES * (4 + 4 + 8 + 1)
SHARED_MIN_ROWS = 32  # from this many rows a batch reads the paths from shared memory
PREFERRED_THREADS = 128  # local scratch is 5 x 32 x 8 bytes a thread: smaller blocks keep occupancy up
FLAG_DEFAULT_LEFT = 1  # path_flags bits: a NaN goes left at this split ...
FLAG_LEFT = 2  # ... and the leaf's path goes left at it

_leaf_quadrature = cuda.jit(device=True)(leaf_quadrature_py)


@njit(cache=True)
def _leaf_paths(tree_inner_start, tree_leaf_start, inner_node, inner_left, inner_right, leaf_node, max_tree_nodes):  # noqa: ANN001, ANN202
    """Per leaf, the splits on its root path: (path_lo [L + 1], path_inner [sum depth], path_left [sum depth])."""
    n_leaves = leaf_node.shape[0]
    parent_inner = np.full(max_tree_nodes, -1, np.int64)
    child_left = np.zeros(max_tree_nodes, np.bool_)
    path_lo = np.zeros(n_leaves + 1, np.int64)
    cap = 16 * max(n_leaves, 1)
    path_inner = np.empty(cap, np.int64)
    path_left = np.empty(cap, np.bool_)
    pos = 0
    for t in range(tree_leaf_start.shape[0] - 1):
        for j in range(tree_inner_start[t], tree_inner_start[t + 1]):
            parent_inner[inner_left[j]] = j
            child_left[inner_left[j]] = True
            parent_inner[inner_right[j]] = j
            child_left[inner_right[j]] = False
        for leaf in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
            c = leaf_node[leaf]
            while c != 0:
                if pos == cap:
                    cap *= 2
                    grown = np.empty(cap, np.int64)
                    grown[:pos] = path_inner[:pos]
                    path_inner = grown
                    grown_left = np.empty(cap, np.bool_)
                    grown_left[:pos] = path_left[:pos]
                    path_left = grown_left
                j = parent_inner[c]
                path_inner[pos] = j
                path_left[pos] = child_left[c]
                pos += 1
                c = inner_node[j]
            path_lo[leaf + 1] = pos
    return path_lo, path_inner[:pos], path_left[:pos]


@njit(cache=True)
def _slices(path_lo, cap):  # noqa: ANN001, ANN202
    """Leaf boundaries [s0 = 0, s1, ..., n_leaves] such that each slice's paths hold at most ``cap`` splits;
    an empty array when one leaf's path alone is longer."""
    n_leaves = path_lo.shape[0] - 1
    out = np.empty(n_leaves + 2, np.int64)
    out[0] = 0
    k = 1
    first = 0
    for leaf in range(n_leaves):
        if path_lo[leaf + 1] - path_lo[leaf] > cap:
            return np.empty(0, np.int64)
        if path_lo[leaf + 1] - path_lo[first] > cap:
            out[k] = leaf
            k += 1
            first = leaf
    out[k] = n_leaves
    return out[: k + 1]


@dataclass(frozen=True, eq=False)
class CudaTreeShap:
    """Device copies of what the kernel reads; build with :func:`prepare_cuda` (once, at model load).

    ``slices``: leaf boundaries of the shared-memory slices (empty when a path is too long for shared memory).
    """

    n_features: int
    n_outputs: int
    n_leaves: int
    expected_value: np.ndarray  # float64 [n_outputs], on the host
    arrays: dict[str, Any]  # name -> device array
    slices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def fits_shared(self) -> bool:
        return self.slices.size >= 2


def prepare_cuda(model: TreeShapModel | TreeEnsemble, *, stream: Any = None,
                 shared_path_entries: int = SHARED_PATH_ENTRIES) -> CudaTreeShap:
    """Copy a prepared model's per-leaf arrays (plus each leaf's root path) to the current GPU.

    ``shared_path_entries`` (at most :data:`SHARED_PATH_ENTRIES`) bounds the splits of one shared-memory slice.
    """
    if not 1 <= shared_path_entries <= SHARED_PATH_ENTRIES:
        raise ValueError(f"shared_path_entries must lie in [1, {SHARED_PATH_ENTRIES}]")
    if isinstance(model, TreeEnsemble):
        model = prepare(model, table_budget_bytes=0)
    m = model
    if m.max_slots > CUDA_MAX_PATH_FEATURES:
        raise ValueError(
            f"a path splits on {m.max_slots} distinct features; the CUDA kernel takes {CUDA_MAX_PATH_FEATURES}"
        )
    path_lo, path_inner, path_left = _leaf_paths(
        m.tree_inner_start, m.tree_leaf_start, m.inner_node, m.inner_left, m.inner_right, m.leaf_node, m.max_tree_nodes
    )
    leaf_tree = np.searchsorted(m.tree_leaf_start, np.arange(m.leaf_d.size), side="right") - 1
    flags = m.inner_default_left[path_inner].astype(np.int8) * FLAG_DEFAULT_LEFT + path_left.astype(np.int8) * FLAG_LEFT
    host = {
        "path_lo": path_lo,
        "path_feature": m.inner_feature[path_inner].astype(np.int32),
        "path_threshold": m.inner_threshold[path_inner].astype(np.float32),
        "path_flags": flags.astype(np.int8),
        "path_bit": m.inner_bit[path_inner].astype(np.int64),
        "leaf_d": m.leaf_d,
        "leaf_lo": m.leaf_lo,
        "leaf_out": m.tree_out[leaf_tree],
        "leaf_value": m.leaf_value,
        "slot_feature": m.slot_feature if m.slot_feature.size else np.zeros(1, np.int64),
        "slot_z": m.slot_z if m.slot_z.size else np.zeros(1),
        "gl_t": m.gl_t,
        "gl_w": m.gl_w,
        "gl_pw": m.gl_pw,
    }
    for name in ("path_feature", "path_threshold", "path_flags", "path_bit"):
        if host[name].size == 0:  # single-leaf trees only: keep a placeholder (never read)
            host[name] = np.zeros(1, host[name].dtype)
    s = 0 if stream is None else stream
    arrays = {k: cuda.to_device(np.ascontiguousarray(v), stream=s) for k, v in host.items()}
    slices = _slices(path_lo, shared_path_entries)
    arrays["slices"] = cuda.to_device(slices if slices.size else np.zeros(1, np.int64), stream=s)
    if s != 0:
        s.synchronize()  # the host arrays above are temporaries: the copies must be done before they go
    return CudaTreeShap(m.n_features, m.n_outputs, int(m.leaf_d.size), m.expected_value.copy(), arrays, slices)


@cuda.jit
def _zero(flat):  # noqa: ANN001, ANN202
    for i in range(cuda.grid(1), flat.shape[0], cuda.gridsize(1)):
        flat[i] = 0.0


@cuda.jit(device=True)
def _add_leaf(X, phi, r, leaf, path_feature, path_threshold, path_flags, path_bit, first, last, leaf_d,  # noqa: ANN001, ANN202
              leaf_lo, leaf_out, leaf_value, slot_feature, slot_z, gl_t, gl_w, gl_pw, coef, g, pre, acc, idx):  # fmt: skip
    """Row ``r``'s terms of ``leaf``, whose path is ``path_*[first:last]`` (global or shared memory)."""
    d = leaf_d[leaf]
    if d == 0:
        return
    out = leaf_out[leaf]
    if out >= 0 and leaf_value[leaf, out] == 0.0:
        return
    mask = 0
    for j in range(first, last):
        xv = X[r, path_feature[j]]
        flags = path_flags[j]
        if math.isnan(xv):
            go_left = (flags & FLAG_DEFAULT_LEFT) != 0
        else:
            go_left = xv <= path_threshold[j]
        if go_left != ((flags & FLAG_LEFT) != 0):
            mask |= path_bit[j]
    lo = leaf_lo[leaf]
    if not _leaf_quadrature(mask, d, lo, slot_z, gl_t, gl_w, gl_pw, coef, g, pre, acc, idx):
        return
    if out >= 0:
        v = leaf_value[leaf, out]
        for s in range(d):
            cuda.atomic.add(phi, (r, slot_feature[lo + s], out), coef[s] * v)
    else:
        n_out = leaf_value.shape[1]
        for s in range(d):
            f = slot_feature[lo + s]
            for o in range(n_out):
                cuda.atomic.add(phi, (r, f, o), coef[s] * leaf_value[leaf, o])


@cuda.jit
def _shap_leaves(X, phi, path_lo, path_feature, path_threshold, path_flags, path_bit,  # noqa: ANN001, ANN202
                 leaf_d, leaf_lo, leaf_out, leaf_value, slot_feature, slot_z, gl_t, gl_w, gl_pw):  # fmt: skip
    # Paths read from global memory: for a few rows.
    coef = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    g = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    pre = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    acc = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    idx = cuda.local.array(CUDA_MAX_PATH_FEATURES, int64)
    rows = X.shape[0]
    total = rows * leaf_d.shape[0]
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        leaf = i // rows
        r = i - leaf * rows
        _add_leaf(X, phi, r, leaf, path_feature, path_threshold, path_flags, path_bit, path_lo[leaf],
                  path_lo[leaf + 1], leaf_d, leaf_lo, leaf_out, leaf_value, slot_feature, slot_z, gl_t, gl_w,
                  gl_pw, coef, g, pre, acc, idx)  # fmt: skip


@cuda.jit
def _shap_leaves_shared(X, phi, slices, path_lo, path_feature, path_threshold, path_flags, path_bit,  # noqa: ANN001, ANN202
                        leaf_d, leaf_lo, leaf_out, leaf_value, slot_feature, slot_z, gl_t, gl_w, gl_pw):  # fmt: skip
    # Slice by slice: the block copies the slice's paths to shared memory, then its threads take (row, leaf)
    # pairs of that slice. The slice loop has the same trip count in every thread, so the barriers are safe.
    s_feature = cuda.shared.array(SHARED_PATH_ENTRIES, int32)
    s_threshold = cuda.shared.array(SHARED_PATH_ENTRIES, float32)
    s_bit = cuda.shared.array(SHARED_PATH_ENTRIES, int64)
    s_flags = cuda.shared.array(SHARED_PATH_ENTRIES, int8)
    coef = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    g = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    pre = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    acc = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    idx = cuda.local.array(CUDA_MAX_PATH_FEATURES, int64)
    rows = X.shape[0]
    for s in range(slices.shape[0] - 1):
        first = slices[s]
        width = slices[s + 1] - first
        base = path_lo[first]
        for j in range(cuda.threadIdx.x, path_lo[first + width] - base, cuda.blockDim.x):
            s_feature[j] = path_feature[base + j]
            s_threshold[j] = path_threshold[base + j]
            s_bit[j] = path_bit[base + j]
            s_flags[j] = path_flags[base + j]
        cuda.syncthreads()
        for i in range(cuda.grid(1), rows * width, cuda.gridsize(1)):
            k = i // rows
            r = i - k * rows
            leaf = first + k
            _add_leaf(X, phi, r, leaf, s_feature, s_threshold, s_flags, s_bit, path_lo[leaf] - base,
                      path_lo[leaf + 1] - base, leaf_d, leaf_lo, leaf_out, leaf_value, slot_feature, slot_z, gl_t,
                      gl_w, gl_pw, coef, g, pre, acc, idx)  # fmt: skip
        cuda.syncthreads()  # nobody may overwrite the slice while a thread still reads it


def shap_values_cuda(
    model: CudaTreeShap,
    X: Any,
    *,
    threads_per_block: int | None = None,
    max_blocks: int | None = None,
    stream: Any = None,
    shared: bool | None = None,
    to_host: bool = False,
    limits: DeviceLimits | None = None,
) -> tuple[Any, np.ndarray]:
    """SHAP values for device rows ``X`` (float32 ``[n, n_features]``, anything with
    ``__cuda_array_interface__``; a numpy array is copied over first): ``(phi, base)`` with ``phi`` a float64
    ``[n, n_features, n_outputs]`` device array (left on the device, nothing waited for) or, with ``to_host``,
    a numpy array (waits for ``stream``), and ``base`` the host float64 ``[n_outputs]``; the same contract as
    :func:`driftline.kernels.treeshap.shap_values`.

    Kernels run on ``stream`` (None: the default stream). ``shared`` forces the paths in shared memory (True)
    or global memory (False); None picks shared memory from :data:`SHARED_MIN_ROWS` rows when the model's
    slices fit the device. The grid is :mod:`driftline.kernels.launch`'s unless ``threads_per_block`` /
    ``max_blocks`` say otherwise.
    """
    s = 0 if stream is None else stream
    if isinstance(X, np.ndarray):
        if X.ndim != 2 or X.shape[1] != model.n_features or X.dtype != np.float32:
            raise ValueError(f"expected float32 rows of shape [n, {model.n_features}], got {X.dtype} {X.shape}")
        X = cuda.to_device(np.ascontiguousarray(X), stream=s)
    elif not hasattr(X, "copy_to_host"):  # CuPy, PyTorch...: wrap without copying
        X = cuda.as_cuda_array(X)
    if len(X.shape) != 2 or X.shape[1] != model.n_features or X.dtype != np.float32:
        raise ValueError(f"expected float32 device rows of shape [n, {model.n_features}], got {X.dtype} {X.shape}")
    limits = limits or device_limits()
    if shared and not model.fits_shared:
        raise ValueError("a leaf's path is longer than a shared-memory slice (prepare_cuda's shared_path_entries): "
                         "this model's paths cannot go to shared memory")
    n = X.shape[0]
    if shared is None:
        shared = model.fits_shared and n >= SHARED_MIN_ROWS and limits.shared_bytes_per_block >= SHARED_PATH_BYTES
    phi = cuda.device_array((n, model.n_features, model.n_outputs), dtype=np.float64, stream=s)
    if phi.size:
        grid = resolve(phi.size, threads_per_block, max_blocks, limits)
        _zero[grid.blocks, grid.threads_per_block, s](phi.reshape(phi.size))
    total = n * model.n_leaves
    if total:
        a = model.arrays
        grid = resolve(total, threads_per_block, max_blocks, limits, preferred_threads=PREFERRED_THREADS)
        common = (a["path_feature"], a["path_threshold"], a["path_flags"], a["path_bit"], a["leaf_d"], a["leaf_lo"],
                  a["leaf_out"], a["leaf_value"], a["slot_feature"], a["slot_z"], a["gl_t"], a["gl_w"], a["gl_pw"])
        if shared:
            _shap_leaves_shared[grid.blocks, grid.threads_per_block, s](X, phi, a["slices"], a["path_lo"], *common)
        else:
            _shap_leaves[grid.blocks, grid.threads_per_block, s](X, phi, a["path_lo"], *common)
    if to_host:
        host = phi.copy_to_host(stream=s)
        if s != 0:
            s.synchronize()
        return host, model.expected_value.copy()
    return phi, model.expected_value.copy()
