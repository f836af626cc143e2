"""Exact path-dependent TreeSHAP for tree ensembles, as numba kernels.

What is computed
----------------
The SHAP values of Lundberg et al., "Consistent individualized feature attribution for tree ensembles"
(Algorithm 2, *path-dependent* TreeSHAP, ``shap.TreeExplainer(model)`` with its default
``feature_perturbation="tree_path_dependent"``): the conditional expectation ``E[f(x) | x_S]`` is taken
by following ``x`` at splits on features in ``S`` and weighting both children by their cover (training
rows through the node) elsewhere. Interventional TreeSHAP (a background data set) is not implemented.

How (per leaf, closed form)
---------------------------
For a leaf ``l`` with value ``v``, let ``U`` be the distinct features split on along its root path
(``d = |U|``), ``z_j`` the product of ``cover(child) / cover(node)`` over the path's splits on ``j`` and
``o_j`` in {0, 1} whether ``x`` takes the path's direction at all of them; ``A = {j: o_j = 1}``. Writing the
Shapley weight as a Beta integral, ``|S|!(d-|S|-1)!/d! = int_0^1 t^|S| (1-t)^(d-1-|S|) dt``, turns the
leaf's contribution into (the multilinear-extension form behind Linear TreeSHAP and GPUTreeShap)::

    phi_i += v (o_i - z_i) int_0^1 prod_{j in U, j != i} (z_j + (o_j - z_j) t) dt
           = v (1 - z_i) Z(U\\A) K(A\\{i})      for i in A
           = -v          Z(U\\A) K(A)           for i not in A   (the same for every such i)

with ``Z(B) = prod_{j in B} z_j`` and ``K(B) = int_0^1 (1-t)^(d-1-|B|) prod_{j in B} (z_j + (1-z_j) t) dt``,
a polynomial of degree ``d - 1`` that ``ceil(d/2)``-point Gauss-Legendre quadrature integrates *exactly*.
Repeated features on a path merge multiplicatively, as in Algorithm 2's unwind step. Summing over all leaves
gives exactly Algorithm 2's values; efficiency holds by construction: ``sum_i phi_i + E[f] = f(x)`` with
``E[f] = sum_l v_l prod_j z_j`` (the cover-weighted mean leaf value, ``base``).

Per row and tree, one pass over the splits in preorder routes ``x`` (a bit mask per node: the path slots
the row leaves the path at), then every leaf adds its ``d`` terms, in one of two ways:

* table (FastTreeSHAP-v2 style): :func:`prepare` stores ``K(B)`` for every subset ``B`` of the leaf's path
  features (``2**d`` float64 per leaf). Where a leaf feeds one output and every ``z_j > 0`` (all leaves of a
  boosted model or a regression forest, given cover), the table is *folded*: it holds
  ``T(B) = v Z(U\\B) K(B)``, so the leaf's terms are ``-T(A)`` for ``i`` not in ``A`` and
  ``(1/z_i - 1) T(A\\{i})`` for ``i`` in ``A``: ``d`` table reads and ``d`` multiply-adds, no per-row product.
* quadrature (no memory): the two integrals are evaluated per row at ``ceil(d/2)`` Gauss-Legendre nodes with
  prefix/suffix products over the satisfied features; ``O(d * ceil(d/2))`` flops per leaf. The CUDA twin
  (:mod:`driftline.kernels.treeshap_cuda`) runs this one, from the same source.

Per row that is O(nodes + leaves * d) with tables, O(nodes + leaves * d**2 / 2) without; Algorithm 2 is
O(leaves * depth**2). :func:`prepare` gives tables to the leaves with the fewest path features first
(``d <= max_table_depth``) until ``table_budget_bytes`` (default 32 MiB per model) is spent.

Batches of 2 rows or more run :func:`_shap_block_kernel`: blocks of 64 rows, trees outermost, rows innermost
(transposed rows, per-node masks and sums row-contiguous), so routing a split and adding a folded leaf's
terms are loops over the block that the compiler vectorises, and a tree's arrays and tables are read once
per block (tables larger than the cache cost little). One row runs :func:`_shap_kernel`, row by row. Both add
each row's terms in the same order: a row's values are bit-for-bit the same in any batch and thread split.
Measured on the shared 2-core AMD EPYC, one thread: GBM 100 trees depth 6 (11 features): ~40,000 rows/s
from 64 rows up, ~9,300 rows/s (0.11 ms) for one row, with 1.1 MB of tables; RF 100 trees depth 10:
~2,300 rows/s from 64 rows up (23 MB of tables), ~270 rows/s for one row (see benchmarks/kernels.py).

Routing is ONNX ``BRANCH_LEQ`` on float32: ``x <= threshold`` goes ``left``, a NaN goes ``left`` iff
``default_left`` (ONNX's ``nodes_missing_value_tracks_true`` on a ``BRANCH_LEQ`` node). The kernels are
``nogil``; none is ``parallel=True`` (numba's threading layer costs milliseconds on a busy machine, more than
a small batch takes); ``shap_values(..., n_threads=k)`` splits batches of at least 64 rows (by default) into
row ranges run on threads started for the call instead.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from numba import njit

__all__ = [
    "MAX_PATH_FEATURES",
    "TreeEnsemble",
    "TreeShapModel",
    "compute_cover",
    "predict_raw",
    "prepare",
    "shap_values",
]

MAX_PATH_FEATURES = 62  # distinct features on one root-to-leaf path: one bit each in an int64 mask
DEFAULT_MAX_TABLE_DEPTH = 8
DEFAULT_TABLE_BUDGET_BYTES = 32 << 20  # per model; batches read a tree's tables once per block of rows
_FOLD_MIN_Z = 1e-150  # a leaf's table folds in its z's only when 1 / z stays finite


# --------------------------------------------------------------------------------------------------------------
# the ensemble
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """A tree ensemble as flat per-node arrays (``n_nodes`` nodes over ``n_trees`` trees).

    Per node (global index ``k``; any order, e.g. the ONNX attribute order):

    - ``feature`` int32: feature index split on, -1 for a leaf;
    - ``threshold`` float32: a row goes to ``left[k]`` iff ``x[feature] <= threshold`` (float32 compare);
    - ``default_left`` bool: where a NaN goes (True: ``left``);
    - ``left`` / ``right`` int32: global child indices, -1 for a leaf;
    - ``value`` float64 ``[n_nodes, n_outputs]``: leaf values (rows of zeros for split nodes); the raw output
      for output ``o`` is ``base_values[o] + sum over trees of value[leaf reached, o]``;
    - ``cover`` float64: rows (or weight) reaching the node in the reference data; all NaN when unknown
      (see :func:`compute_cover`, :meth:`with_cover`).

    Per tree: ``roots`` int32 ``[n_trees]``. Ensemble: ``n_features``, ``n_outputs``, ``base_values`` float64
    ``[n_outputs]``, ``post_transform`` (the ONNX name: ``NONE``, ``LOGISTIC``, ``SOFTMAX``, ...: applied to the
    raw output to get the served scores; attributions are always of the raw output), ``n_classes`` (0 for a
    regressor; a binary classifier with ``n_outputs == 1`` scores the positive class only).
    """

    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    cover: np.ndarray
    roots: np.ndarray
    n_features: int
    n_outputs: int
    base_values: np.ndarray
    post_transform: str = "NONE"
    n_classes: int = 0

    def __post_init__(self) -> None:
        conv = {
            "feature": np.int32, "threshold": np.float32, "default_left": np.bool_, "left": np.int32,
            "right": np.int32, "value": np.float64, "cover": np.float64, "roots": np.int32,
            "base_values": np.float64,
        }  # fmt: skip
        for name, dtype in conv.items():
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
        n = self.feature.shape[0]
        for name in ("threshold", "default_left", "left", "right", "cover"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"TreeEnsemble.{name} must have shape ({n},), got {getattr(self, name).shape}")
        if self.value.shape != (n, self.n_outputs):
            raise ValueError(f"TreeEnsemble.value must have shape ({n}, {self.n_outputs}), got {self.value.shape}")
        if self.base_values.shape != (self.n_outputs,):
            raise ValueError(f"TreeEnsemble.base_values must have shape ({self.n_outputs},)")
        if self.roots.ndim != 1 or self.roots.size == 0:
            raise ValueError("TreeEnsemble needs at least one tree")
        for name in ("left", "right", "roots"):
            a = getattr(self, name)
            if a.size and (a.min() < -1 or a.max() >= n or (name == "roots" and a.min() < 0)):
                raise ValueError(f"TreeEnsemble.{name} holds node indices outside [0, {n})")
        split = self.left >= 0
        if np.any(split != (self.right >= 0)):
            raise ValueError("TreeEnsemble: a node has exactly one child")
        if np.any(self.feature[split] < 0) or np.any(self.feature >= self.n_features):
            raise ValueError(f"TreeEnsemble: split features must lie in [0, {self.n_features})")

    @property
    def n_nodes(self) -> int:
        return int(self.feature.shape[0])

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    @property
    def has_cover(self) -> bool:
        return bool(np.all(np.isfinite(self.cover)) and np.all(self.cover >= 0))

    def with_cover(self, cover: np.ndarray) -> TreeEnsemble:
        """A copy with ``cover`` (float64 ``[n_nodes]``, e.g. from :func:`compute_cover`)."""
        cover = np.ascontiguousarray(cover, dtype=np.float64)
        if cover.shape != (self.n_nodes,):
            raise ValueError(f"cover must have shape ({self.n_nodes},), got {cover.shape}")
        if not (np.all(np.isfinite(cover)) and np.all(cover >= 0)):
            raise ValueError("cover must be finite and non-negative")
        return replace(self, cover=cover)


def _rows(X: np.ndarray, n_features: int) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"expected rows of shape [n, {n_features}], got {X.shape}")
    return np.ascontiguousarray(X, dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------
# routing, cover, raw prediction
# --------------------------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True, inline="always")
def _goes_left(x, threshold, default_left):  # noqa: ANN001, ANN202
    if x != x:  # NaN
        return default_left
    return x <= threshold


@njit(nogil=True, cache=True)
def _cover_kernel(X, weight, roots, feature, threshold, default_left, left, right, cover):  # noqa: ANN001, ANN202
    for r in range(X.shape[0]):
        w = weight[r]
        for t in range(roots.shape[0]):
            k = roots[t]
            while True:
                cover[k] += w
                if left[k] < 0:
                    break
                if _goes_left(X[r, feature[k]], threshold[k], default_left[k]):
                    k = left[k]
                else:
                    k = right[k]


@njit(nogil=True, cache=True)
def _predict_kernel(X, roots, feature, threshold, default_left, left, right, value, out):  # noqa: ANN001, ANN202
    n_out = value.shape[1]
    for r in range(X.shape[0]):
        for t in range(roots.shape[0]):
            k = roots[t]
            while left[k] >= 0:
                if _goes_left(X[r, feature[k]], threshold[k], default_left[k]):
                    k = left[k]
                else:
                    k = right[k]
            for o in range(n_out):
                out[r, o] += value[k, o]


def compute_cover(ensemble: TreeEnsemble, X: np.ndarray, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``X`` (float32 ``[n, n_features]``, e.g. the training rows) reaching each node: float64 ``[n_nodes]``.

    With ``sample_weight`` (``[n]``) the weights are summed instead. Call at publish time and keep the result
    (:meth:`TreeEnsemble.with_cover`, :func:`driftline.onnx_trees.with_cover`): ONNX stores no cover.
    """
    X = _rows(X, ensemble.n_features)
    w = np.ones(X.shape[0]) if sample_weight is None else np.ascontiguousarray(sample_weight, dtype=np.float64)
    if w.shape != (X.shape[0],):
        raise ValueError(f"sample_weight must have shape ({X.shape[0]},)")
    cover = np.zeros(ensemble.n_nodes)
    e = ensemble
    _cover_kernel(X, w, e.roots, e.feature, e.threshold, e.default_left, e.left, e.right, cover)
    return cover


def predict_raw(ensemble: TreeEnsemble, X: np.ndarray) -> np.ndarray:
    """The raw output (margin, before ``post_transform``) for rows ``X``: float64 ``[n, n_outputs]``."""
    X = _rows(X, ensemble.n_features)
    e = ensemble
    out = np.zeros((X.shape[0], e.n_outputs))
    _predict_kernel(X, e.roots, e.feature, e.threshold, e.default_left, e.left, e.right, e.value, out)
    return out + e.base_values


# --------------------------------------------------------------------------------------------------------------
# prepare: preorder layout, per-leaf path features, tables
# --------------------------------------------------------------------------------------------------------------


@njit(cache=True)
def _preorder(roots, left, right):  # noqa: ANN001, ANN202
    """Preorder of every tree; returns (order, tree_start, depth, is_left, parent) or order[0] = -1 on a bad graph."""
    n = left.shape[0]
    seen = np.zeros(n, np.bool_)
    order = np.empty(n, np.int64)
    depth = np.empty(n, np.int64)
    is_left = np.zeros(n, np.bool_)
    parent = np.full(n, -1, np.int64)
    tree_start = np.empty(roots.shape[0] + 1, np.int64)
    stack = np.empty(n + 1, np.int64)
    sdepth = np.empty(n + 1, np.int64)
    sparent = np.empty(n + 1, np.int64)
    sleft = np.empty(n + 1, np.bool_)
    m = 0
    for t in range(roots.shape[0]):
        tree_start[t] = m
        top = 0
        stack[0] = roots[t]
        sdepth[0] = 0
        sparent[0] = -1
        sleft[0] = False
        top = 1
        while top > 0:
            top -= 1
            k = stack[top]
            if seen[k] or m >= n:
                order[0] = -1  # a node shared by two parents / trees, or a cycle
                return order, tree_start, depth, is_left, parent
            seen[k] = True
            order[m] = k
            depth[m] = sdepth[top]
            is_left[m] = sleft[top]
            parent[m] = sparent[top]
            here = m
            dk = sdepth[top]
            m += 1
            if left[k] >= 0:
                stack[top] = right[k]  # pushed first, popped after the whole left subtree
                sdepth[top] = dk + 1
                sparent[top] = here
                sleft[top] = False
                stack[top + 1] = left[k]
                sdepth[top + 1] = dk + 1
                sparent[top + 1] = here
                sleft[top + 1] = True
                top += 2
    tree_start[roots.shape[0]] = m
    return order[:m], tree_start, depth[:m], is_left[:m], parent[:m]


@njit(cache=True)
def _path_features(feature, depth, parent, is_leaf, cover, max_depth, slot_capacity):  # noqa: ANN001, ANN202
    """Per edge into node k: the bit of its split feature's slot on the path; per leaf: slots' features and z.

    Nodes are in preorder. A slot is a distinct feature on the root path, numbered by first occurrence;
    z is the product of cover(child) / cover(parent) over the path's splits on that feature (0/0 -> 1/2).
    Returns edge_bit, leaf_d, leaf_lo, slot_feature, slot_z; leaf_d[0] = -1 if a path has more than
    MAX_PATH_FEATURES distinct features.
    """
    n = feature.shape[0]
    edge_bit = np.zeros(n, np.int64)
    n_leaves = 0
    for k in range(n):
        if is_leaf[k]:
            n_leaves += 1
    leaf_d = np.zeros(max(n_leaves, 1), np.int64)
    leaf_lo = np.zeros(max(n_leaves, 1), np.int64)
    slot_feature = np.empty(slot_capacity, np.int64)
    slot_z = np.empty(slot_capacity, np.float64)
    st_f = np.empty((max_depth + 1, max_depth + 1), np.int64)
    st_z = np.empty((max_depth + 1, max_depth + 1), np.float64)
    st_n = np.zeros(max_depth + 1, np.int64)
    leaf = 0
    pos = 0
    for k in range(n):
        dk = depth[k]
        if dk == 0:
            st_n[0] = 0
        else:
            p = parent[k]
            ns = st_n[dk - 1]
            for s in range(ns):
                st_f[dk, s] = st_f[dk - 1, s]
                st_z[dk, s] = st_z[dk - 1, s]
            f = feature[p]
            slot = ns
            for s in range(ns):
                if st_f[dk, s] == f:
                    slot = s
                    break
            if slot == ns:
                if ns >= 62:
                    leaf_d[0] = -1
                    return edge_bit, leaf_d, leaf_lo, slot_feature, slot_z
                st_f[dk, slot] = f
                st_z[dk, slot] = 1.0
                ns += 1
            st_z[dk, slot] *= cover[k] / cover[p] if cover[p] > 0 else 0.5
            st_n[dk] = ns
            edge_bit[k] = np.int64(1) << slot
        if is_leaf[k]:
            ns = st_n[dk]
            leaf_d[leaf] = ns
            leaf_lo[leaf] = pos
            for s in range(ns):
                slot_feature[pos + s] = st_f[dk, s]
                slot_z[pos + s] = st_z[dk, s]
            pos += ns
            leaf += 1
    return edge_bit, leaf_d[:leaf], leaf_lo[:leaf], slot_feature[:pos], slot_z[:pos]


@njit(cache=True)
def _build_tables(leaf_d, leaf_lo, slot_z, table_off, tables, gl_t, gl_w, gl_pw, max_table_depth):  # noqa: ANN001, ANN202
    """tables[off + B] = K(B) = int_0^1 (1-t)^(d-1-|B|) prod_{j in B} (z_j + (1-z_j) t) dt for B != all."""
    size = 1 << max_table_depth
    m_max = max(1, (max_table_depth + 1) >> 1)
    prod = np.empty((size, m_max))
    pc = np.empty(size, np.int64)
    for leaf in range(leaf_d.shape[0]):
        off = table_off[leaf]
        if off < 0:
            continue
        d = leaf_d[leaf]
        lo = leaf_lo[leaf]
        m = (d + 1) >> 1
        full = (1 << d) - 1
        for q in range(m):
            prod[0, q] = 1.0
        pc[0] = 0
        for b in range(1, full + 1):
            j = 0
            while not (b >> j) & 1:
                j += 1
            prev = b ^ (1 << j)
            zj = slot_z[lo + j]
            pc[b] = pc[prev] + 1
            for q in range(m):
                prod[b, q] = prod[prev, q] * (zj + (1.0 - zj) * gl_t[m, q])
        for b in range(full):
            e = d - 1 - pc[b]
            acc = 0.0
            for q in range(m):
                acc += gl_w[m, q] * gl_pw[m, q, e] * prod[b, q]
            tables[off + b] = acc
        tables[off + full] = 0.0  # never read


@njit(cache=True)
def _fold_tables(leaf_d, leaf_lo, slot_z, table_off, leaf_fold_value, tables):  # noqa: ANN001, ANN202
    """Turn K(B) into T(B) = v Z(U\\B) K(B) for the leaves with a finite ``leaf_fold_value`` v.

    A folded leaf then needs no per-row product: phi for an unsatisfied slot is ``-T(A)``, for a satisfied
    slot ``s`` it is ``v Z(U\\A) (1 - z_s) K(A\\{s}) = (1/z_s - 1) T(A\\{s})`` (all its z_s > 0).
    """
    for leaf in range(leaf_d.shape[0]):
        off = table_off[leaf]
        v = leaf_fold_value[leaf]
        if off < 0 or v != v:
            continue
        d = leaf_d[leaf]
        lo = leaf_lo[leaf]
        full = (1 << d) - 1
        for b in range(full):
            zc = v
            for s in range(d):
                if not (b >> s) & 1:
                    zc *= slot_z[lo + s]
            tables[off + b] *= zc


def _gauss_legendre(max_slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes/weights on [0, 1] for m = 1..ceil(max_slots/2) points, and (1 - t)^u for u = 0..max_slots."""
    m_max = max(1, (max_slots + 1) // 2)
    t = np.zeros((m_max + 1, m_max))
    w = np.zeros((m_max + 1, m_max))
    for m in range(1, m_max + 1):
        x, wx = np.polynomial.legendre.leggauss(m)
        t[m, :m] = (x + 1.0) / 2.0
        w[m, :m] = wx / 2.0
    pw = (1.0 - t)[:, :, None] ** np.arange(max_slots + 1)[None, None, :]
    return t, w, np.ascontiguousarray(pw)


@dataclass(frozen=True, eq=False)
class TreeShapModel:
    """Per-model arrays for the kernels, built once by :func:`prepare` (read-only afterwards: thread-safe).

    Split nodes ("inner") and leaves are listed tree by tree, each in preorder; node ids inside a tree are
    tree-local preorder positions (the root is 0).
    """

    n_features: int
    n_outputs: int
    expected_value: np.ndarray  # float64 [n_outputs]: base_values + cover-weighted mean leaf value
    tree_inner_start: np.ndarray  # int64 [n_trees + 1]
    tree_leaf_start: np.ndarray  # int64 [n_trees + 1]
    tree_out: np.ndarray  # int64 [n_trees]: the only output a tree's leaves feed, -1 if several
    inner_node: np.ndarray  # int64 [I]: tree-local id of the split node
    inner_feature: np.ndarray  # int64 [I]
    inner_threshold: np.ndarray  # float32 [I]: left iff x <= threshold
    inner_default_left: np.ndarray  # bool [I]: NaN goes left
    inner_bit: np.ndarray  # int64 [I]: 1 << slot of the split's feature on the path to it
    inner_left: np.ndarray  # int64 [I]: tree-local id of the left child
    inner_right: np.ndarray  # int64 [I]
    leaf_node: np.ndarray  # int64 [L]: tree-local id of the leaf
    leaf_d: np.ndarray  # int64 [L]: distinct features on the leaf's path
    leaf_lo: np.ndarray  # int64 [L]: offset into slot_feature / slot_z
    leaf_value: np.ndarray  # float64 [L, n_outputs]
    table_off: np.ndarray  # int64 [L]: offset of the leaf's 2**d table in ``tables``, -1: quadrature
    leaf_folded: np.ndarray  # bool [L]: its table holds T(B) = v Z(U\B) K(B) (one output, every z > 0)
    slot_feature: np.ndarray  # int64 [sum d]: a leaf's path features in first-occurrence order
    slot_z: np.ndarray  # float64 [sum d]: their cover fractions (product over repeated splits)
    slot_invz: np.ndarray  # float64 [sum d]: 1 / slot_z (0 where slot_z is 0)
    tables: np.ndarray  # float64 [sum of 2**d over table leaves]: K(B) per leaf
    gl_t: np.ndarray  # Gauss-Legendre nodes on [0, 1]: gl_t[m, :m]
    gl_w: np.ndarray  # and weights
    gl_pw: np.ndarray  # (1 - gl_t[m, q]) ** u: gl_pw[m, q, u]
    max_tree_nodes: int
    max_slots: int
    stats: dict = field(default_factory=dict)

    @property
    def n_trees(self) -> int:
        return int(self.tree_out.shape[0])

    @property
    def table_bytes(self) -> int:
        return int(self.tables.nbytes) if self.stats.get("table_leaves", 0) else 0


def _children(parent: np.ndarray, is_left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = parent.shape[0]
    left = np.full(n, -1, np.int64)
    right = np.full(n, -1, np.int64)
    idx = np.arange(n)
    has = parent >= 0
    left[parent[has & is_left]] = idx[has & is_left]
    right[parent[has & ~is_left]] = idx[has & ~is_left]
    return left, right


def _table_offsets(leaf_d: np.ndarray, max_table_depth: int, budget: int) -> tuple[np.ndarray, int]:
    """Tables for the leaves with the fewest path features first, laid out in leaf order; -1: none."""
    table_off = np.full(leaf_d.shape[0], -1, np.int64)
    cand = np.flatnonzero((leaf_d <= max_table_depth) & (leaf_d > 0))
    cand = cand[np.argsort(leaf_d[cand], kind="stable")]
    sizes = np.left_shift(np.int64(1), leaf_d[cand]).astype(np.int64)
    keep = np.cumsum(sizes) * 8 <= budget
    cand = np.sort(cand[keep])
    sizes = np.left_shift(np.int64(1), leaf_d[cand]).astype(np.int64)
    table_off[cand] = np.cumsum(sizes) - sizes
    return table_off, int(sizes.sum())


def prepare(
    ensemble: TreeEnsemble,
    *,
    table_budget_bytes: int = DEFAULT_TABLE_BUDGET_BYTES,
    max_table_depth: int = DEFAULT_MAX_TABLE_DEPTH,
) -> TreeShapModel:
    """Build the per-model arrays (once, at model load). Needs ``ensemble.cover``.

    Leaves whose path splits on at most ``max_table_depth`` distinct features get a ``2**d`` float64 table,
    fewest features first, until ``table_budget_bytes`` is spent; the others are integrated per row
    (quadrature). Both are exact. The block kernel reads a tree's tables once per 64 rows, so tables pay even
    beyond the cache (RF 100 x depth 10: ~6x faster than quadrature with all 23 MB tabled); one-row calls gain
    less. ``table_budget_bytes`` bounds the memory (``TreeShapModel.table_bytes`` reports it);
    ``table_budget_bytes=0`` means quadrature only.
    """
    if not ensemble.has_cover:
        raise ValueError(
            "the ensemble has no node cover: pass the reference (training) rows through compute_cover() and "
            "use ensemble.with_cover(cover) (ONNX models store none unless written by onnx_trees.with_cover)"
        )
    if not 0 <= max_table_depth <= 20:
        raise ValueError("max_table_depth must lie in [0, 20]")
    e = ensemble
    order, tree_start, depth, is_left, parent = _preorder(e.roots, e.left, e.right)
    if order.size == 0 or order[0] < 0:
        raise ValueError("TreeEnsemble: the trees are not disjoint binary trees (a node has two parents or a cycle)")
    n = order.size
    feature = np.ascontiguousarray(e.feature[order]).astype(np.int64)
    is_leaf = e.left[order] < 0
    cover = np.ascontiguousarray(e.cover[order])
    edge_bit, leaf_d, leaf_lo, slot_feature, slot_z = _path_features(
        feature, depth, parent, is_leaf, cover, int(depth.max()), int(depth[is_leaf].sum())
    )
    if leaf_d.size and leaf_d[0] < 0:
        raise ValueError(f"a root-to-leaf path splits on more than {MAX_PATH_FEATURES} distinct features")
    leaves = np.flatnonzero(is_leaf)
    inner = np.flatnonzero(~is_leaf)
    n_leaves = leaves.size
    tree_leaf_start = np.searchsorted(leaves, tree_start)
    # Within each tree, leaves by their number of path features: the per-leaf loop's trip count then changes
    # a few times per tree instead of at almost every leaf (each change is a mispredicted loop exit).
    leaf_tree = np.searchsorted(tree_leaf_start, np.arange(n_leaves), side="right") - 1
    by_d = np.lexsort((leaf_d, leaf_tree))
    leaves, leaf_d = leaves[by_d], leaf_d[by_d]
    new_lo = np.cumsum(leaf_d) - leaf_d
    gather = np.repeat(leaf_lo[by_d] - new_lo, leaf_d) + np.arange(int(leaf_d.sum()))
    slot_feature, slot_z, leaf_lo = slot_feature[gather], slot_z[gather], new_lo
    leaf_value = np.ascontiguousarray(e.value[order[leaves]])
    max_slots = int(leaf_d.max()) if n_leaves else 0
    left, right = _children(parent, is_left)
    node_tree = np.searchsorted(tree_start, np.arange(n), side="right") - 1
    local = np.arange(n) - tree_start[node_tree]

    zprod = np.ones(n_leaves)  # expected value: sum over leaves of v * prod z
    np.multiply.at(zprod, np.repeat(np.arange(n_leaves), leaf_d), slot_z)
    expected = e.base_values + zprod @ leaf_value

    tree_out = np.full(e.n_trees, -1, np.int64)  # GB multiclass: one tree per class
    if e.n_outputs == 1:
        tree_out[:] = 0
    else:
        nz = leaf_value != 0.0
        for t in range(e.n_trees):
            cols = np.flatnonzero(nz[tree_leaf_start[t] : tree_leaf_start[t + 1]].any(axis=0))
            if cols.size <= 1:
                tree_out[t] = cols[0] if cols.size else 0

    table_off, total = _table_offsets(leaf_d, max_table_depth, int(table_budget_bytes))
    gl_t, gl_w, gl_pw = _gauss_legendre(max(max_slots, 1))
    tables = np.zeros(max(total, 1))
    leaf_out = tree_out[leaf_tree] if n_leaves else np.zeros(0, np.int64)
    small_z = np.zeros(n_leaves, np.int64)  # slots with z too small to divide by (zero cover)
    np.add.at(small_z, np.repeat(np.arange(n_leaves), leaf_d), slot_z < _FOLD_MIN_Z)
    leaf_folded = (table_off >= 0) & (leaf_out >= 0) & (small_z == 0)
    if total:
        deepest = int(leaf_d[table_off >= 0].max())  # sizes the builder's scratch
        _build_tables(leaf_d, leaf_lo, slot_z, table_off, tables, gl_t, gl_w, gl_pw, deepest)
        fold_value = np.full(n_leaves, np.nan)
        fold_value[leaf_folded] = leaf_value[np.flatnonzero(leaf_folded), leaf_out[leaf_folded]]
        _fold_tables(leaf_d, leaf_lo, slot_z, table_off, fold_value, tables)
    with np.errstate(divide="ignore"):
        slot_invz = np.where(slot_z > 0, 1.0 / np.where(slot_z > 0, slot_z, 1.0), 0.0)
    stats = {
        "n_trees": e.n_trees, "n_nodes": n, "n_leaves": int(n_leaves), "max_depth": int(depth.max()),
        "max_path_features": max_slots, "table_leaves": int((table_off >= 0).sum()), "table_bytes": total * 8,
        "folded_leaves": int(leaf_folded.sum()),
    }  # fmt: skip
    return TreeShapModel(
        n_features=e.n_features, n_outputs=e.n_outputs, expected_value=expected,
        tree_inner_start=np.searchsorted(inner, tree_start), tree_leaf_start=tree_leaf_start, tree_out=tree_out,
        inner_node=local[inner], inner_feature=feature[inner], inner_threshold=e.threshold[order[inner]],
        inner_default_left=e.default_left[order[inner]], inner_bit=edge_bit[left[inner]],
        inner_left=local[left[inner]], inner_right=local[right[inner]], leaf_node=local[leaves], leaf_d=leaf_d,
        leaf_lo=leaf_lo, leaf_value=leaf_value, table_off=table_off, leaf_folded=leaf_folded,
        slot_feature=slot_feature, slot_z=slot_z, slot_invz=slot_invz,
        tables=tables, gl_t=gl_t, gl_w=gl_w, gl_pw=gl_pw, max_tree_nodes=int(np.diff(tree_start).max()),
        max_slots=max(max_slots, 1), stats=stats,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# the SHAP kernel
# --------------------------------------------------------------------------------------------------------------


def leaf_quadrature_py(mask, d, lo, slot_z, gl_t, gl_w, gl_pw, coef, g, pre, acc, idx):  # noqa: ANN001, ANN201
    """The leaf's coefficients ``coef[s]`` (times the leaf value: its phi for slot ``s``) by Gauss-Legendre.

    ``mask`` has bit ``s`` set when the row leaves the path at a split on slot ``s``. ``g``, ``pre``,
    ``acc``, ``idx`` are scratch of at least ``d`` entries. Plain Python on purpose: compiled by ``njit``
    here and by ``cuda.jit(device=True)`` in ``treeshap_cuda``. Returns False when all are 0 (zero cover).
    """
    za = 1.0
    a = 0
    for s in range(d):  # branch-free: which slots a row satisfies is data (mispredictions cost more)
        unsat = (mask >> s) & 1
        za *= 1.0 + (slot_z[lo + s] - 1.0) * unsat
        idx[a] = s
        a += 1 - unsat
    if za == 0.0:
        return False
    m = (d + 1) >> 1  # ceil(d/2) nodes integrate the degree d-1 polynomials exactly
    u = d - a
    acc_out = 0.0
    for j in range(a):
        acc[j] = 0.0
    for q in range(m):
        tq = gl_t[m, q]
        wq = gl_w[m, q]
        p = 1.0
        for j in range(a):
            zj = slot_z[lo + idx[j]]
            gj = zj + (1.0 - zj) * tq
            g[j] = gj
            pre[j] = p
            p *= gj
        if u > 0:
            acc_out += wq * gl_pw[m, q, u - 1] * p
        sfx = wq * gl_pw[m, q, u]
        for jj in range(a):
            j = a - 1 - jj
            acc[j] += pre[j] * sfx
            sfx *= g[j]
    c_out = -za * acc_out
    for s in range(d):
        coef[s] = c_out
    for j in range(a):
        s = idx[j]
        coef[s] = za * (1.0 - slot_z[lo + s]) * acc[j]
    return True


_leaf_quadrature = njit(nogil=True, cache=True, inline="always")(leaf_quadrature_py)


@njit(nogil=True, cache=True, inline="always")
def _leaf_table(mask, d, lo, slot_z, tables, off, coef):  # noqa: ANN001, ANN202
    # coef[s] = za (1 - z_s) K(A \ {s}) for s in A, -za K(A) otherwise; both read K(A & ~bit). Branch-free:
    # which slots a row satisfies is data, and mispredicted branches cost more than the arithmetic.
    za = 1.0
    for s in range(d):
        za *= 1.0 + (slot_z[lo + s] - 1.0) * ((mask >> s) & 1)
    if za == 0.0:
        return False
    sat = ((np.int64(1) << d) - 1) & ~mask
    for s in range(d):
        f = -1.0 + (2.0 - slot_z[lo + s]) * ((sat >> s) & 1)
        coef[s] = za * f * tables[off + (sat & ~(np.int64(1) << s))]
    return True


@njit(nogil=True, cache=True)
def _shap_kernel(X, phi, tree_inner_start, tree_leaf_start, tree_out, inner_node, inner_feature,  # noqa: ANN001, ANN202, C901
                 inner_threshold, inner_default_left, inner_bit, inner_left, inner_right, leaf_node, leaf_d,
                 leaf_lo, leaf_value, table_off, leaf_folded, slot_feature, slot_z, slot_invz, tables, gl_t, gl_w,
                 gl_pw, max_tree_nodes, max_slots):  # fmt: skip
    # Row by row: for a few rows (one request's); larger batches go to _shap_block_kernel.
    n_out = leaf_value.shape[1]
    mask = np.zeros(max_tree_nodes, np.int64)  # per node of the current tree: slots the row leaves the path at
    coef = np.empty(max_slots + 1)
    g = np.empty(max_slots + 1)
    pre = np.empty(max_slots + 1)
    acc = np.empty(max_slots + 1)
    idx = np.empty(max_slots + 1, np.int64)
    for r in range(X.shape[0]):
        x = X[r]
        phi_r = phi[r]
        for t in range(tree_out.shape[0]):
            out = tree_out[t]
            # Route the row at every split, splits in preorder (parents first). Branch-free: where a row goes
            # is data, and mispredicted branches cost more than the arithmetic.
            mask[0] = 0
            for j in range(tree_inner_start[t], tree_inner_start[t + 1]):
                xv = x[inner_feature[j]]
                go_left = (xv <= inner_threshold[j]) | ((xv != xv) & inner_default_left[j])
                m = mask[inner_node[j]]
                b = inner_bit[j]
                right_bit = b & -np.int64(go_left)  # going left leaves the right child's path, and back
                mask[inner_left[j]] = m | (b ^ right_bit)
                mask[inner_right[j]] = m | right_bit
            for leaf in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
                d = leaf_d[leaf]
                off = table_off[leaf]
                if leaf_folded[leaf]:  # the hot path (one output, table folded): d reads, d fmas
                    lo = leaf_lo[leaf]
                    sat = ((np.int64(1) << d) - 1) & ~mask[leaf_node[leaf]]
                    for s in range(d):
                        bit = (sat >> s) & 1
                        c = slot_invz[lo + s] * bit - 1.0  # satisfied: 1/z - 1; not: -1
                        phi_r[slot_feature[lo + s], out] += c * tables[off + (sat & ~(np.int64(1) << s))]
                    continue
                if d == 0 or (out >= 0 and leaf_value[leaf, out] == 0.0):
                    continue
                mk = mask[leaf_node[leaf]]
                lo = leaf_lo[leaf]
                if off >= 0:
                    nonzero = _leaf_table(mk, d, lo, slot_z, tables, off, coef)
                else:
                    nonzero = _leaf_quadrature(mk, d, lo, slot_z, gl_t, gl_w, gl_pw, coef, g, pre, acc, idx)
                if not nonzero:
                    continue
                if out >= 0:
                    v = leaf_value[leaf, out]
                    for s in range(d):
                        phi_r[slot_feature[lo + s], out] += coef[s] * v
                else:
                    for s in range(d):
                        f = slot_feature[lo + s]
                        c = coef[s]
                        for o in range(n_out):
                            phi_r[f, o] += c * leaf_value[leaf, o]


@njit(nogil=True, cache=True)
def _shap_block_kernel(X, phi, tree_inner_start, tree_leaf_start, tree_out, inner_node, inner_feature,  # noqa: ANN001, ANN202, C901
                       inner_threshold, inner_default_left, inner_bit, inner_left, inner_right, leaf_node, leaf_d,
                       leaf_lo, leaf_value, table_off, leaf_folded, slot_feature, slot_z, slot_invz, tables, gl_t,
                       gl_w, gl_pw, max_tree_nodes, max_slots, block):  # fmt: skip
    """:func:`_shap_kernel` for ``block`` rows at a time, the rows innermost (SIMD lanes).

    Per block the rows are transposed (``xt[feature, row]``), and masks (``mask[node, row]``) and sums
    (``acc[feature * n_out + out, row]``) are kept row-contiguous, so routing a split and adding a folded
    leaf's slot are loops over the block's rows that the compiler vectorises; the tree's arrays are read once
    per block. Each row adds the same terms in the same order as :func:`_shap_kernel`: equal results.
    """
    n = X.shape[0]
    n_feat = X.shape[1]
    n_out = leaf_value.shape[1]
    mask = np.zeros((max_tree_nodes, block), np.int64)
    xt = np.empty((n_feat, block), np.float32)
    acc = np.empty((phi.shape[1] * n_out, block))
    coef = np.empty(max_slots + 1)
    g = np.empty(max_slots + 1)
    pre = np.empty(max_slots + 1)
    qacc = np.empty(max_slots + 1)
    idx = np.empty(max_slots + 1, np.int64)
    for r0 in range(0, n, block):
        nb = min(n - r0, block)
        for f in range(n_feat):
            xf = xt[f]
            for r in range(nb):
                xf[r] = X[r0 + r, f]
        acc[:, :] = 0.0
        for t in range(tree_out.shape[0]):
            out = tree_out[t]
            m0 = mask[0]
            for r in range(nb):
                m0[r] = 0
            for j in range(tree_inner_start[t], tree_inner_start[t + 1]):
                xr = xt[inner_feature[j]]
                thr = inner_threshold[j]
                dl = inner_default_left[j]
                b = inner_bit[j]
                mp = mask[inner_node[j]]
                ml = mask[inner_left[j]]
                mr = mask[inner_right[j]]
                for r in range(nb):
                    xv = xr[r]
                    go_left = (xv <= thr) | ((xv != xv) & dl)
                    right_bit = b & -np.int64(go_left)
                    m = mp[r]
                    ml[r] = m | (b ^ right_bit)
                    mr[r] = m | right_bit
            for leaf in range(tree_leaf_start[t], tree_leaf_start[t + 1]):
                d = leaf_d[leaf]
                off = table_off[leaf]
                lo = leaf_lo[leaf]
                mk = mask[leaf_node[leaf]]
                if leaf_folded[leaf]:
                    full = (np.int64(1) << d) - 1
                    for s in range(d):
                        a = acc[slot_feature[lo + s] * n_out + out]
                        iz = slot_invz[lo + s]
                        sb = np.int64(1) << s
                        for r in range(nb):
                            sat = full & ~mk[r]
                            c = iz * ((sat >> s) & 1) - 1.0
                            a[r] += c * tables[off + (sat & ~sb)]
                    continue
                if d == 0 or (out >= 0 and leaf_value[leaf, out] == 0.0):
                    continue
                for r in range(nb):
                    if off >= 0:
                        nonzero = _leaf_table(mk[r], d, lo, slot_z, tables, off, coef)
                    else:
                        nonzero = _leaf_quadrature(mk[r], d, lo, slot_z, gl_t, gl_w, gl_pw, coef, g, pre, qacc, idx)
                    if not nonzero:
                        continue
                    if out >= 0:
                        v = leaf_value[leaf, out]
                        for s in range(d):
                            acc[slot_feature[lo + s] * n_out + out, r] += coef[s] * v
                    else:
                        for s in range(d):
                            k = slot_feature[lo + s] * n_out
                            c = coef[s]
                            for o in range(n_out):
                                acc[k + o, r] += c * leaf_value[leaf, o]
        for f in range(phi.shape[1]):
            for o in range(n_out):
                a = acc[f * n_out + o]
                for r in range(nb):
                    phi[r0 + r, f, o] = a[r]


ROW_BLOCK = 64  # rows per block in _shap_block_kernel (the SIMD lanes; a tree's arrays are read once per block)
BLOCK_SCRATCH_BYTES = 4 << 20  # at most this much per call for the block kernel's per-node masks
BLOCK_MIN_ROWS = 2  # fewer rows (one): _shap_kernel, row by row (same results; less set-up)


def _run(model: TreeShapModel, X: np.ndarray, phi: np.ndarray) -> None:
    m = model
    args = (
        X, phi, m.tree_inner_start, m.tree_leaf_start, m.tree_out, m.inner_node, m.inner_feature,
        m.inner_threshold, m.inner_default_left, m.inner_bit, m.inner_left, m.inner_right, m.leaf_node, m.leaf_d,
        m.leaf_lo, m.leaf_value, m.table_off, m.leaf_folded, m.slot_feature, m.slot_z, m.slot_invz, m.tables,
        m.gl_t, m.gl_w, m.gl_pw, m.max_tree_nodes, m.max_slots,
    )  # fmt: skip
    if X.shape[0] < BLOCK_MIN_ROWS:
        _shap_kernel(*args)
    else:
        # Scratch (the masks: max_tree_nodes x block int64) sized to the batch and bounded for very large trees.
        block = min(ROW_BLOCK, X.shape[0], max(1, BLOCK_SCRATCH_BYTES // (8 * m.max_tree_nodes)))
        _shap_block_kernel(*args, block)


DEFAULT_MIN_ROWS_PER_THREAD = 32  # ~1 ms of work per thread on a GBM of 100 depth-6 trees: the hand-off pays
def shap_values(
    model: TreeShapModel | TreeEnsemble,
    X: np.ndarray,
    *,
    n_threads: int = 1,
    min_rows_per_thread: int = DEFAULT_MIN_ROWS_PER_THREAD,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact path-dependent SHAP values of the raw output for rows ``X`` (float32 ``[n, n_features]``).

    Returns ``(phi, base)``: ``phi`` float64 ``[n, n_features, n_outputs]`` and ``base`` float64
    ``[n_outputs]`` (the expected value) with ``phi[r].sum(axis=0) + base == raw output of row r`` (the margin:
    before ``post_transform``, e.g. log-odds for a boosted classifier). ``X`` is cast to float32 first, as the
    ONNX input is. ``model`` is :func:`prepare`'s result
    (a bare :class:`TreeEnsemble` is prepared on every call). ``n_threads > 1`` splits batches of at least
    ``2 * min_rows_per_thread`` rows into up to ``n_threads`` row ranges: the calling thread runs one, threads
    started for the call the others (the kernels release the GIL). A row's values do not depend on the batch it
    came in nor on the threads: every path adds the same terms in the same order.
    """
    if isinstance(model, TreeEnsemble):
        model = prepare(model)
    X = _rows(X, model.n_features)
    n = X.shape[0]
    phi = np.zeros((n, model.n_features, model.n_outputs))
    chunks = min(int(n_threads), n // max(1, int(min_rows_per_thread)))
    if chunks <= 1:
        _run(model, X, phi)
    else:
        bounds = np.linspace(0, n, chunks + 1).astype(np.int64)
        if n >= chunks * ROW_BLOCK:  # whole blocks per thread where there are enough rows
            bounds[1:-1] = (bounds[1:-1] + ROW_BLOCK // 2) // ROW_BLOCK * ROW_BLOCK
        # A pool per call, no process-wide one: starting a thread (~0.1 ms) is small beside 64+ rows (~1.6 ms a
        # thread at 40,000 rows/s), and the kernels stay pure functions with nothing living between calls.
        with ThreadPoolExecutor(max_workers=chunks - 1, thread_name_prefix="treeshap") as pool:
            jobs = [pool.submit(_run, model, X[a:b], phi[a:b])
                    for a, b in zip(bounds[:-2], bounds[1:-1], strict=True)]
            _run(model, X[bounds[-2]:], phi[bounds[-2]:])
            for job in jobs:
                job.result()
    return phi, model.expected_value.copy()
