"""CUDA twin of :func:`driftline.kernels.treeshap.shap_values`, for rows that are already on the GPU.

One thread per (row, leaf) pair with a grid-stride loop, in the spirit of GPUTreeShap's one thread per
(row, path): consecutive threads take consecutive leaves of the same row, so the leaf arrays are read
coalesced and the row stays in cache. A thread routes its row along its leaf's root path (the bit mask of
path slots the row leaves the path at), integrates the leaf's contribution with the CPU kernel's own
Gauss-Legendre code (:func:`driftline.kernels.treeshap.leaf_quadrature_py`, compiled here as a device
function) and adds it to ``phi[row, feature, output]`` with float64 atomics. No tables: the per-leaf
quadrature needs no memory beyond the path arrays, which suits a GPU better than 2**d tables.

The result equals the CPU kernel's to rounding (atomics add in no fixed order). All ``numba.cuda`` use is
in this module; it imports without a GPU and the kernels compile at their first launch. Under
``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported) they run in the simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda, float64, int64, njit

from driftline.kernels.treeshap import TreeEnsemble, TreeShapModel, leaf_quadrature_py, prepare

__all__ = ["CUDA_MAX_PATH_FEATURES", "CudaTreeShap", "prepare_cuda", "shap_values_cuda"]

CUDA_MAX_PATH_FEATURES = 32  # per-thread scratch is a fixed-size local array
DEFAULT_THREADS_PER_BLOCK = 128
DEFAULT_MAX_BLOCKS = 4096  # with the grid-stride loop, more blocks only add atomics contention

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


@dataclass(frozen=True, eq=False)
class CudaTreeShap:
    """Device copies of what the kernel reads; build with :func:`prepare_cuda` (once, at model load)."""

    n_features: int
    n_outputs: int
    n_leaves: int
    expected_value: np.ndarray  # float64 [n_outputs], on the host
    arrays: dict[str, Any]  # name -> device array


def prepare_cuda(model: TreeShapModel | TreeEnsemble) -> CudaTreeShap:
    """Copy a prepared model's per-leaf arrays (plus each leaf's root path) to the current GPU."""
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
    host = {
        "path_lo": path_lo,
        "path_feature": m.inner_feature[path_inner],
        "path_threshold": m.inner_threshold[path_inner],
        "path_default_left": m.inner_default_left[path_inner],
        "path_left": path_left,
        "path_bit": m.inner_bit[path_inner],
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
    for name in ("path_feature", "path_threshold", "path_default_left", "path_left", "path_bit"):
        if host[name].size == 0:  # single-leaf trees only: keep a placeholder (never read)
            host[name] = np.zeros(1, host[name].dtype)
    arrays = {k: cuda.to_device(np.ascontiguousarray(v)) for k, v in host.items()}
    return CudaTreeShap(m.n_features, m.n_outputs, int(m.leaf_d.size), m.expected_value.copy(), arrays)


@cuda.jit
def _zero(flat):  # noqa: ANN001, ANN202
    for i in range(cuda.grid(1), flat.shape[0], cuda.gridsize(1)):
        flat[i] = 0.0


@cuda.jit
def _shap_leaves(X, phi, path_lo, path_feature, path_threshold, path_default_left, path_left, path_bit,  # noqa: ANN001, ANN202
                 leaf_d, leaf_lo, leaf_out, leaf_value, slot_feature, slot_z, gl_t, gl_w, gl_pw):  # fmt: skip
    coef = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    g = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    pre = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    acc = cuda.local.array(CUDA_MAX_PATH_FEATURES, float64)
    idx = cuda.local.array(CUDA_MAX_PATH_FEATURES, int64)
    n_leaves = leaf_d.shape[0]
    n_out = leaf_value.shape[1]
    total = X.shape[0] * n_leaves
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        r = i // n_leaves
        leaf = i - r * n_leaves
        d = leaf_d[leaf]
        if d == 0:
            continue
        out = leaf_out[leaf]
        if out >= 0 and leaf_value[leaf, out] == 0.0:
            continue
        mask = 0
        for j in range(path_lo[leaf], path_lo[leaf + 1]):
            xv = X[r, path_feature[j]]
            if math.isnan(xv):
                go_left = path_default_left[j]
            else:
                go_left = xv <= path_threshold[j]
            if go_left != path_left[j]:
                mask |= path_bit[j]
        lo = leaf_lo[leaf]
        if not _leaf_quadrature(mask, d, lo, slot_z, gl_t, gl_w, gl_pw, coef, g, pre, acc, idx):
            continue
        if out >= 0:
            v = leaf_value[leaf, out]
            for s in range(d):
                cuda.atomic.add(phi, (r, slot_feature[lo + s], out), coef[s] * v)
        else:
            for s in range(d):
                f = slot_feature[lo + s]
                for o in range(n_out):
                    cuda.atomic.add(phi, (r, f, o), coef[s] * leaf_value[leaf, o])


def shap_values_cuda(
    model: CudaTreeShap,
    X: Any,
    *,
    threads_per_block: int = DEFAULT_THREADS_PER_BLOCK,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
    stream: Any = 0,
) -> tuple[Any, np.ndarray]:
    """SHAP values for device rows ``X`` (float32 ``[n, n_features]``, anything with
    ``__cuda_array_interface__``): ``(phi, base)`` with ``phi`` a float64 device array
    ``[n, n_features, n_outputs]`` (left on the device) and ``base`` the host float64 ``[n_outputs]``;
    the same contract as :func:`driftline.kernels.treeshap.shap_values`."""
    if not hasattr(X, "copy_to_host"):  # CuPy, PyTorch...: wrap without copying
        X = cuda.as_cuda_array(X)
    if len(X.shape) != 2 or X.shape[1] != model.n_features or X.dtype != np.float32:
        raise ValueError(f"expected float32 device rows of shape [n, {model.n_features}], got {X.dtype} {X.shape}")
    if threads_per_block < 1 or max_blocks < 1:
        raise ValueError("threads_per_block and max_blocks must be positive")
    n = X.shape[0]
    phi = cuda.device_array((n, model.n_features, model.n_outputs), dtype=np.float64, stream=stream)
    if phi.size:
        blocks = min(max_blocks, math.ceil(phi.size / threads_per_block))
        _zero[blocks, threads_per_block, stream](phi.reshape(phi.size))
    total = n * model.n_leaves
    if total:
        a = model.arrays
        blocks = min(max_blocks, math.ceil(total / threads_per_block))
        _shap_leaves[blocks, threads_per_block, stream](
            X, phi, a["path_lo"], a["path_feature"], a["path_threshold"], a["path_default_left"], a["path_left"],
            a["path_bit"], a["leaf_d"], a["leaf_lo"], a["leaf_out"], a["leaf_value"], a["slot_feature"],
            a["slot_z"], a["gl_t"], a["gl_w"], a["gl_pw"],
        )  # fmt: skip
    return phi, model.expected_value.copy()
