"""Read the tree ensemble of an ONNX model (ai.onnx.ml TreeEnsembleRegressor / TreeEnsembleClassifier).

:func:`read_tree_ensemble` turns the node that skl2onnx emits for GradientBoosting*, HistGradientBoosting*
and RandomForest* (regressors and classifiers) into a :class:`driftline.kernels.treeshap.TreeEnsemble`
whose raw output equals what onnxruntime computes *before* the post transform:

==========================  =========================================================================
estimator (skl2onnx)        raw output (``n_outputs``) -> served output
==========================  =========================================================================
GradientBoostingRegressor   prediction (1); ``base_values`` = init, leaf weights include learning_rate
HistGradientBoostingReg.    prediction (1); ``base_values`` = baseline
RandomForestRegressor       prediction (1); leaf weights already divided by n_trees (SUM), no base
GB / HGB classifier, 2 cls  log-odds of class 1 (1): probabilities = [1 - sigmoid, sigmoid] (LOGISTIC)
GB / HGB classifier, K cls  per-class scores (K): probabilities = softmax (SOFTMAX)
RandomForestClassifier 2    P(class 1) (1): probabilities = [1 - s, s] (post_transform NONE)
RandomForestClassifier K    per-class probabilities (K), weights divided by n_trees (NONE)
==========================  =========================================================================

SHAP values are attributions of that raw output (the margin: log-odds / class scores for boosted
classifiers), never of the probabilities after LOGISTIC/SOFTMAX, which are not additive. For a binary
classifier whose ONNX node scores one class only (skl2onnx's layout: every class id 0), ``n_outputs`` is 1
and the score is the *positive* class's (onnxruntime derives the other one); ``n_classes`` stays 2.

Node modes: ``BRANCH_LEQ`` (all skl2onnx emits), ``BRANCH_LT``, ``BRANCH_GT``, ``BRANCH_GTE`` are rewritten
to one float32 ``x <= threshold`` test (thresholds rounded so every float32 input routes as onnxruntime
routes it, including ``*_as_tensor`` double thresholds); ``BRANCH_EQ`` / ``BRANCH_NEQ`` and the MIN / MAX
aggregates are refused (``ValueError``). ``nodes_missing_value_tracks_true`` sends NaN to the true branch.

Cover: ONNX stores no node cover (skl2onnx writes ``nodes_hitrates`` = 1.0). Compute it once with
:func:`driftline.kernels.treeshap.compute_cover` on the training rows and store it with :func:`with_cover`
(it goes into ``nodes_hitrates``, which onnxruntime ignores); :func:`read_tree_ensemble` trusts
``nodes_hitrates`` only when they are not all 1.0, and leaves ``cover`` NaN otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from driftline.kernels.treeshap import TreeEnsemble
from driftline.registry.table import ENCODED_OUTPUT

__all__ = ["TREE_OPS", "find_tree_node", "read_tree_ensemble", "with_cover"]

TREE_OPS = ("TreeEnsembleRegressor", "TreeEnsembleClassifier")
_ML = "ai.onnx.ml"
_BRANCH_MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT")
_TRUE_IS_LE = {"BRANCH_LEQ": True, "BRANCH_LT": True, "BRANCH_GTE": False, "BRANCH_GT": False}


def find_tree_node(model: onnx.ModelProto) -> onnx.NodeProto:
    """The graph's single ai.onnx.ml tree ensemble node (ValueError if none or several)."""
    nodes = [n for n in model.graph.node if n.domain == _ML and n.op_type in TREE_OPS]
    if not nodes:
        other = [n.op_type for n in model.graph.node if n.domain == _ML and n.op_type.startswith("TreeEnsemble")]
        hint = f" ({other[0]} is not supported)" if other else ""
        raise ValueError(f"the model has no TreeEnsembleRegressor / TreeEnsembleClassifier node{hint}")
    if len(nodes) > 1:
        raise ValueError(f"the model has {len(nodes)} tree ensemble nodes; expected one")
    return nodes[0]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type == onnx.AttributeProto.TENSOR:
            out[a.name] = numpy_helper.to_array(a.t)
        else:
            out[a.name] = helper.get_attribute_value(a)
    return out


def _array(attrs: dict[str, Any], name: str, dtype: type, default: Any = None) -> np.ndarray | None:
    """``name`` or its ``name_as_tensor`` twin (ai.onnx.ml 3) as a numpy array."""
    for key in (f"{name}_as_tensor", name):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype).reshape(-1)
    return None if default is None else np.asarray(default, dtype=dtype)


def _round_down_f32(t: np.ndarray) -> np.ndarray:
    """Largest float32 <= t (float64): ``x <= t`` and ``x <= result`` agree for every float32 x."""
    r = t.astype(np.float32)
    over = r.astype(np.float64) > t
    r[over] = np.nextafter(r[over], np.float32(-np.inf))
    return r


def _below_f32(t: np.ndarray) -> np.ndarray:
    """Largest float32 < t: ``x < t`` equals ``x <= result`` for every float32 x."""
    r = _round_down_f32(t)
    eq = r.astype(np.float64) == t
    r[eq] = np.nextafter(r[eq], np.float32(-np.inf))
    return r


def _n_features(model: onnx.ModelProto, node: onnx.NodeProto, max_feature: int) -> int:
    inputs = {i.name: i for i in model.graph.input}
    # A mixed-table model (trainer/table_pipeline.py) publishes the matrix its trees read as ENCODED_OUTPUT;
    # the attributions are then of those encoded features, which the caller reads off that output.
    inputs.update({o.name: o for o in model.graph.output if o.name == ENCODED_OUTPUT})
    producers = {out: n for n in model.graph.node for out in n.output}
    src = node.input[0]
    while src not in inputs and src in producers and producers[src].op_type in ("Cast", "Identity"):
        src = producers[src].input[0]  # a dtype cast keeps the columns
    if src not in inputs:
        raise ValueError(
            f"the tree ensemble reads {src!r}, not a graph input: the model transforms its input first, so "
            "attributions of the model's input features cannot be read off the trees"
        )
    dims = inputs[src].type.tensor_type.shape.dim
    n = dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value") else 0
    if n and max_feature >= n:
        raise ValueError(f"a split uses feature {max_feature} but the input has {n} columns")
    return int(n) if n else max_feature + 1


def _layout(attrs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], int], np.ndarray]:
    tree_ids = _array(attrs, "nodes_treeids", np.int64)
    node_ids = _array(attrs, "nodes_nodeids", np.int64)
    if tree_ids is None or node_ids is None or tree_ids.shape != node_ids.shape or tree_ids.size == 0:
        raise ValueError("the tree ensemble node has no (or inconsistent) nodes_treeids / nodes_nodeids")
    pos = {(int(t), int(n)): i for i, (t, n) in enumerate(zip(tree_ids.tolist(), node_ids.tolist(), strict=True))}
    if len(pos) != tree_ids.size:
        raise ValueError("the tree ensemble node repeats a (tree id, node id) pair")
    return tree_ids, node_ids, pos, np.unique(tree_ids)


def _lookup(pos: dict[tuple[int, int], int], trees: np.ndarray, nodes: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.fromiter((pos[(int(t), int(n))] for t, n in zip(trees, nodes, strict=True)), np.int64, trees.size)
    except KeyError as exc:
        raise ValueError(f"{what} refers to a node {exc.args[0]} (tree id, node id) that does not exist") from None


def _structure(attrs: dict[str, Any], pos: dict[tuple[int, int], int], tree_ids: np.ndarray) -> dict[str, np.ndarray]:
    n = tree_ids.size
    modes = [m.decode() if isinstance(m, bytes) else str(m) for m in attrs.get("nodes_modes", [])]
    if len(modes) != n:
        raise ValueError("nodes_modes does not cover every node")
    bad = sorted({m for m in modes if m != "LEAF" and m not in _BRANCH_MODES})
    if bad:
        raise ValueError(f"unsupported tree node mode(s) {bad}; supported: LEAF, {', '.join(_BRANCH_MODES)}")
    is_split = np.array([m != "LEAF" for m in modes])
    feature = _array(attrs, "nodes_featureids", np.int64)
    values = _array(attrs, "nodes_values", np.float64)
    true_ids = _array(attrs, "nodes_truenodeids", np.int64)
    false_ids = _array(attrs, "nodes_falsenodeids", np.int64)
    tracks = _array(attrs, "nodes_missing_value_tracks_true", np.int64, [])
    if tracks.size == 0:  # absent or empty: NaN takes the false branch everywhere
        tracks = np.zeros(n, np.int64)
    for name, arr in (("featureids", feature), ("values", values), ("truenodeids", true_ids),
                      ("falsenodeids", false_ids), ("missing_value_tracks_true", tracks)):  # fmt: skip
        if arr is None or arr.shape != (n,):
            raise ValueError(f"nodes_{name} must list one entry per node")
    split = np.flatnonzero(is_split)
    true_pos = _lookup(pos, tree_ids[split], true_ids[split], "nodes_truenodeids")
    false_pos = _lookup(pos, tree_ids[split], false_ids[split], "nodes_falsenodeids")
    true_is_le = np.array([_TRUE_IS_LE[modes[i]] for i in split], dtype=bool)
    is_lt_like = np.array([modes[i] in ("BRANCH_LT", "BRANCH_GTE") for i in split], dtype=bool)

    left = np.full(n, -1, np.int64)
    right = np.full(n, -1, np.int64)
    left[split] = np.where(true_is_le, true_pos, false_pos)
    right[split] = np.where(true_is_le, false_pos, true_pos)
    thr = np.full(n, np.nan, np.float32)
    thr[split] = np.where(is_lt_like, _below_f32(values[split]), _round_down_f32(values[split]))
    # NaN takes the true branch iff tracks_true; the true branch is `left` only for LEQ / LT.
    default_left = np.zeros(n, bool)
    default_left[split] = (tracks[split] != 0) == true_is_le
    feat = np.full(n, -1, np.int64)
    feat[split] = feature[split]
    if split.size and feature[split].min() < 0:
        raise ValueError("nodes_featureids holds a negative feature index")
    return {"feature": feat, "threshold": thr, "default_left": default_left, "left": left, "right": right}


def _roots(tree_ids: np.ndarray, unique_trees: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    is_child = np.zeros(tree_ids.size, bool)
    is_child[left[left >= 0]] = True
    is_child[right[right >= 0]] = True
    roots = []
    for t in unique_trees:
        cand = np.flatnonzero((tree_ids == t) & ~is_child)
        if cand.size != 1:
            raise ValueError(f"tree {int(t)} has {cand.size} root nodes; expected one")
        roots.append(int(cand[0]))
    return np.asarray(roots, np.int64)


def _leaf_values(
    attrs: dict[str, Any], prefix: str, pos: dict[tuple[int, int], int], n_nodes: int, n_outputs: int,
    binary_single: bool,
) -> np.ndarray:  # fmt: skip
    trees = _array(attrs, f"{prefix}_treeids", np.int64, [])
    nodes = _array(attrs, f"{prefix}_nodeids", np.int64, [])
    ids = _array(attrs, f"{prefix}_ids", np.int64, [])
    weights = _array(attrs, f"{prefix}_weights", np.float64, [])
    if not (trees.shape == nodes.shape == ids.shape == weights.shape):
        raise ValueError(f"{prefix}_treeids / _nodeids / _ids / _weights differ in length")
    where = _lookup(pos, trees, nodes, f"{prefix}_nodeids")
    out = np.zeros(ids.shape, np.int64) if binary_single else ids
    if out.size and (out.min() < 0 or out.max() >= n_outputs):
        raise ValueError(f"{prefix}_ids must lie in [0, {n_outputs})")
    value = np.zeros((n_nodes, n_outputs))
    np.add.at(value, (where, out), weights)
    return value


def _parse(model: onnx.ModelProto) -> TreeEnsemble:
    node = find_tree_node(model)
    attrs = _attrs(node)
    tree_ids, _, pos, unique_trees = _layout(attrs)
    n_nodes = tree_ids.size
    s = _structure(attrs, pos, tree_ids)
    roots = _roots(tree_ids, unique_trees, s["left"], s["right"])
    split = s["left"] >= 0
    n_features = _n_features(model, node, int(s["feature"][split].max()) if split.any() else 0)
    post = attrs.get("post_transform", b"NONE")
    post = post.decode() if isinstance(post, bytes) else str(post)
    base = _array(attrs, "base_values", np.float64, [])

    if node.op_type == "TreeEnsembleRegressor":
        n_outputs = int(attrs.get("n_targets", 1))
        agg = attrs.get("aggregate_function", b"SUM")
        agg = agg.decode() if isinstance(agg, bytes) else str(agg)
        if agg not in ("SUM", "AVERAGE"):
            raise ValueError(f"aggregate_function {agg} is not additive over trees; only SUM / AVERAGE are supported")
        value = _leaf_values(attrs, "target", pos, n_nodes, n_outputs, False)
        if agg == "AVERAGE":
            value /= unique_trees.size
        n_classes = 0
    else:
        labels = attrs.get("classlabels_int64s", attrs.get("classlabels_strings", []))
        n_classes = len(labels)
        if n_classes < 2:
            raise ValueError("TreeEnsembleClassifier with fewer than two class labels")
        ids = _array(attrs, "class_ids", np.int64, [])
        binary_single = n_classes == 2 and bool(np.all(ids == 0))
        n_outputs = 1 if binary_single else n_classes
        if binary_single and base.size == 2:
            raise ValueError("binary TreeEnsembleClassifier scoring one class with two base_values is ambiguous")
        value = _leaf_values(attrs, "class", pos, n_nodes, n_outputs, binary_single)
    if base.size == 0:
        base = np.zeros(n_outputs)
    if base.shape != (n_outputs,):
        raise ValueError(f"base_values has {base.size} entries for {n_outputs} outputs")

    hit = _array(attrs, "nodes_hitrates", np.float64)
    if hit is not None and hit.shape == (n_nodes,) and not np.all(hit == 1.0) and np.all(hit >= 0):
        cover = hit
    else:
        cover = np.full(n_nodes, np.nan)
    return TreeEnsemble(
        feature=s["feature"], threshold=s["threshold"], default_left=s["default_left"], left=s["left"],
        right=s["right"], value=value, cover=cover, roots=roots, n_features=n_features, n_outputs=n_outputs,
        base_values=base, post_transform=post, n_classes=n_classes,
    )  # fmt: skip


def read_tree_ensemble(model: onnx.ModelProto) -> TreeEnsemble:
    """The model's tree ensemble; global node index ``k`` = position ``k`` in the node's ``nodes_*`` lists.

    Raises ValueError for a model without exactly one TreeEnsembleRegressor/Classifier node fed by a graph
    input, with an unsupported node mode or aggregate function, or with an inconsistent node table.
    ``cover`` comes from ``nodes_hitrates`` when they are not all 1.0 (see :func:`with_cover`), else NaN.
    """
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    return _parse(model)


def with_cover(model: onnx.ModelProto, cover: np.ndarray) -> onnx.ModelProto:
    """A copy of ``model`` whose tree node carries ``cover`` (``[n_nodes]``, in :func:`read_tree_ensemble`'s
    node order) as ``nodes_hitrates``, so the artifact is self-contained. Stored as float32: counts are exact
    up to 2**24 rows per node. Scores are unchanged (onnxruntime ignores hit rates)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    node = find_tree_node(out)
    n = len(_array(_attrs(node), "nodes_treeids", np.int64))
    cover = np.asarray(cover, dtype=np.float64).reshape(-1)
    if cover.shape != (n,):
        raise ValueError(f"cover must have one entry per tree node ({n}), got {cover.shape}")
    if not (np.all(np.isfinite(cover)) and np.all(cover >= 0)):
        raise ValueError("cover must be finite and non-negative")
    if np.all(cover == 1.0):
        raise ValueError("a cover of all ones cannot be told from skl2onnx's placeholder hit rates")
    for a in list(node.attribute):
        if a.name in ("nodes_hitrates", "nodes_hitrates_as_tensor"):
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute("nodes_hitrates", cover.astype(np.float32).tolist()))
    return out
