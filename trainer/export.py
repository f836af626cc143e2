"""Export fitted scikit-learn estimators to ONNX graphs that driftline serves.

The served contract is deliberately narrow: one float32 input ``input`` of shape
``[N, n_features]`` and plain tensor outputs (no ZipMap / sequence-of-maps), so
the server and the Triton backend never need per-model output handling.

NaN handling (scikit-learn routes NaN per split; onnxruntime's TreeEnsemble
ops do the same through ``nodes_missing_value_tracks_true``, where "true" is
the ``x <= threshold`` = left child):
- HistGradientBoosting*: skl2onnx copies ``missing_go_to_left`` into that
  attribute, so NaN rows score as in scikit-learn.
- RandomForest*: skl2onnx leaves the flag 0 everywhere (NaN always goes right)
  although scikit-learn >= 1.4 forests route NaN by ``tree_.missing_go_to_left``
  (learnt, or the bigger child when training saw no NaN); we copy the flags in
  after conversion so NaN rows agree.
- GradientBoosting* and the linear models reject NaN in scikit-learn; the ONNX
  graphs do not validate: GradientBoosting returns an ordinary-looking score
  (NaN goes right), linear models return NaN scores/probabilities but a
  classifier still emits a valid-looking label. Callers must validate input.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from sklearn.base import BaseEstimator, is_classifier
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from driftline.attribution import COVER_KEY, FITTED_COVER

__all__ = [
    "CLASSIFIER_OUTPUTS", "COVER_KEY", "FITTED_COVER", "INPUT_NAME", "REGRESSION_OUTPUT", "ExportCheck",
    "check_export", "export_onnx", "onnx_raw_margins", "sklearn_raw_margins",
]  # fmt: skip

INPUT_NAME = "input"
REGRESSION_OUTPUT = "prediction"  # float32 [-1, 1]
CLASSIFIER_OUTPUTS = ("label", "probabilities")  # int64 [-1], float32 [-1, n_classes]

# Upper bound only: skl2onnx stamps the lowest opsets the emitted ops need
# (typically 9 / ai.onnx.ml 1, IR 8), which keeps models loadable by older
# onnxruntime / Triton builds. 17 + ml 3 is within what skl2onnx 1.20 is tested
# with and what onnxruntime 1.31 runs; raising it changes nothing we emit today.
TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}

SUPPORTED_ESTIMATORS: tuple[type[BaseEstimator], ...] = (
    GradientBoostingRegressor,
    GradientBoostingClassifier,
    HistGradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestRegressor,
    RandomForestClassifier,
    LinearRegression,
    Ridge,
    LogisticRegression,
)

# ONNX model metadata (``metadata_props``) naming where the node cover in ``nodes_hitrates`` came from;
# driftline.attribution.attach_cover leaves a fitted cover in place and marks the others "reference rows".
MAX_RAW_DEVIATION = 1e-5  # relative to the margin's scale: float32 leaf weights and sums, nothing more

_HGB_HELPER = "add_tree_to_attribute_pairs_hist_gradient_boosting"
_PATCH_MARK = "__driftline_int_missing_flags__"


def _helper_emits_bool(helper: Callable[..., None]) -> bool:
    """Probe ``helper`` with a one-leaf tree and report whether it leaks a bool flag."""
    attrs: dict[str, Any] = {
        "nodes_treeids": [], "nodes_nodeids": [], "nodes_featureids": [], "nodes_modes": [],
        "nodes_values": [], "nodes_truenodeids": [], "nodes_falsenodeids": [],
        "nodes_missing_value_tracks_true": [], "nodes_hitrates": [],
        "target_treeids": [], "target_nodeids": [], "target_ids": [], "target_weights": [],
    }  # fmt: skip
    leaf = types.SimpleNamespace(nodes=[{"value": np.array([0.0]), "is_leaf": True}])
    try:
        helper(attrs, False, leaf, 0, 1.0, 0, False, False, dtype=np.float32)
    except Exception:  # a changed private signature: don't guess, leave skl2onnx alone
        return False
    return any(isinstance(v, (bool, np.bool_)) for v in attrs["nodes_missing_value_tracks_true"])


@functools.cache
def _fix_hgb_missing_flags() -> bool:
    """Make skl2onnx emit integer ``nodes_missing_value_tracks_true`` for HistGradientBoosting.

    Root cause (skl2onnx <= 1.20, ``skl2onnx/common/tree_ensemble.py``,
    ``add_tree_to_attribute_pairs_hist_gradient_boosting``): leaves get
    ``missing = False`` (a Python bool) while split nodes get the uint8
    ``missing_go_to_left``, and the list goes into the INTS attribute
    ``nodes_missing_value_tracks_true``. protobuf 6.3x only warns ("Expected an
    int, got a boolean ... will be rejected in 7.34.0") -- an error under
    ``-W error`` -- and protobuf >= 7.34 raises ``TypeError``, i.e. HGB export
    breaks on an ordinary dependency upgrade.

    ``random_forest.py`` imported the helper by name, so the wrapper must be
    installed in every skl2onnx module that bound it. Runs once (cached), is
    idempotent (marked wrapper), and patches nothing if a probe shows the
    installed skl2onnx no longer emits bools. Returns whether a patch is active.
    """
    from skl2onnx.common import tree_ensemble
    from skl2onnx.operator_converters import random_forest

    original = getattr(tree_ensemble, _HGB_HELPER, None)
    if original is None:
        return False
    if getattr(original, _PATCH_MARK, False):
        return True
    if not _helper_emits_bool(original):
        return False

    @functools.wraps(original)
    def fixed(attr_pairs: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        flags = attr_pairs["nodes_missing_value_tracks_true"]
        start = len(flags)  # only touch this tree's nodes: keeps big ensembles linear
        original(attr_pairs, *args, **kwargs)
        flags[start:] = [int(v) for v in flags[start:]]

    setattr(fixed, _PATCH_MARK, True)
    for module in (tree_ensemble, random_forest):
        if getattr(module, _HGB_HELPER, None) is original:
            setattr(module, _HGB_HELPER, fixed)
    return True


def _final_estimator(estimator: BaseEstimator) -> BaseEstimator:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _output_types(final: BaseEstimator) -> list[tuple[str, Any]]:
    if is_classifier(final):
        classes = np.asarray(final.classes_)
        if not np.issubdtype(classes.dtype, np.integer):
            raise ValueError(
                f"{type(final).__name__} was fitted on {classes.dtype} class labels {classes[:5].tolist()}; "
                "driftline serves int64 labels only - encode the target to 0..K-1 (e.g. LabelEncoder) before fitting"
            )
        label, proba = CLASSIFIER_OUTPUTS
        return [(label, Int64TensorType([None])), (proba, FloatTensorType([None, len(classes)]))]
    coef = getattr(final, "coef_", None)
    n_targets = np.shape(coef)[0] if coef is not None and np.ndim(coef) == 2 else getattr(final, "n_outputs_", 1)
    if n_targets != 1:
        name = type(final).__name__
        raise ValueError(f"{name} predicts {n_targets} targets; only single-target regression is served")
    return [(REGRESSION_OUTPUT, FloatTensorType([None, 1]))]


def _copy_forest_missing_flags(model: onnx.ModelProto, forest: RandomForestRegressor | RandomForestClassifier) -> None:
    trees = [est.tree_ for est in forest.estimators_]
    for node in model.graph.node:
        if node.domain != "ai.onnx.ml" or node.op_type not in ("TreeEnsembleRegressor", "TreeEnsembleClassifier"):
            continue
        attrs = {a.name: a for a in node.attribute}
        # (tree id, node id) pairs instead of positional zip: robust to skl2onnx reordering/skipping nodes.
        pairs = zip(attrs["nodes_treeids"].ints, attrs["nodes_nodeids"].ints, strict=True)
        flags = [int(trees[t].missing_go_to_left[n]) for t, n in pairs]
        old = attrs.get("nodes_missing_value_tracks_true")
        if old is not None:
            node.attribute.remove(old)
        node.attribute.append(onnx.helper.make_attribute("nodes_missing_value_tracks_true", flags))


_TREE_OPS = ("TreeEnsembleRegressor", "TreeEnsembleClassifier")
_FORESTS = (RandomForestRegressor, RandomForestClassifier)
_BOOSTED = (GradientBoostingRegressor, GradientBoostingClassifier)
_HIST = (HistGradientBoostingRegressor, HistGradientBoostingClassifier)


def _tree_node(model: onnx.ModelProto) -> onnx.NodeProto | None:
    nodes = [n for n in model.graph.node if n.domain == "ai.onnx.ml" and n.op_type in _TREE_OPS]
    return nodes[0] if len(nodes) == 1 else None


def _round_down_f32(t: np.ndarray) -> np.ndarray:
    """Largest float32 not above ``t`` (float64): ``x <= t`` and ``x <= result`` agree for every float32 ``x``.

    skl2onnx rounds HistGradientBoosting thresholds to nearest instead; a threshold rounded *up* onto a
    float32 value ``v`` with ``t < v`` sends ``x = v`` left in ONNX and right in scikit-learn.
    """
    t = np.asarray(t, dtype=np.float64)
    r = t.astype(np.float32)
    over = r.astype(np.float64) > t
    r[over] = np.nextafter(r[over], np.float32(-np.inf))
    return r


def _sklearn_splits(final: BaseEstimator) -> dict[tuple[int, int], tuple[int, float]] | None:
    """(ONNX tree id, node id) -> (feature, float64 threshold) of every numeric split, in skl2onnx's numbering:
    forests tree ``t`` = ``estimators_[t]``; boosting tree ``i * K + k`` = stage ``i``, output ``k``."""
    out: dict[tuple[int, int], tuple[int, float]] = {}
    if isinstance(final, _FORESTS):
        trees = [(t, est.tree_) for t, est in enumerate(final.estimators_)]
    elif isinstance(final, _BOOSTED):
        stages = np.asarray(final.estimators_)
        k = stages.shape[1]
        trees = [(i * k + c, stages[i, c].tree_) for i in range(stages.shape[0]) for c in range(k)]
    elif isinstance(final, _HIST):
        for i, per_output in enumerate(final._predictors):  # noqa: SLF001 - what skl2onnx converts too
            k = len(per_output)
            for c, predictor in enumerate(per_output):
                nodes = predictor.nodes
                for n in np.flatnonzero(~nodes["is_leaf"].astype(bool)):
                    if "is_categorical" in nodes.dtype.names and nodes["is_categorical"][n]:
                        return None  # a bitset split has no threshold: leave skl2onnx's output alone
                    thr = nodes["num_threshold"][n] if "num_threshold" in nodes.dtype.names else nodes["threshold"][n]
                    out[(i * k + c, int(n))] = (int(nodes["feature_idx"][n]), float(thr))
        return out
    else:
        return None
    for tid, tree in trees:
        for n in np.flatnonzero(tree.children_left >= 0):
            out[(tid, int(n))] = (int(tree.feature[n]), float(tree.threshold[n]))
    return out


def _round_thresholds_down(model: onnx.ModelProto, final: BaseEstimator) -> int:
    """Rewrite the tree node's BRANCH_LEQ thresholds as the largest float32 not above scikit-learn's float64
    threshold, so every float32 input routes as scikit-learn routes it. Returns how many thresholds changed.

    Each split is matched by (tree id, node id) and checked against its feature and against skl2onnx's value
    (round to nearest, or already rounded down): a numbering skl2onnx changed raises instead of mis-writing.
    """
    node = _tree_node(model)
    splits = _sklearn_splits(final)
    if node is None or splits is None:
        return 0
    attrs = {a.name: a for a in node.attribute}
    if "nodes_values" not in attrs:  # nodes_values_as_tensor (double): nothing lost to float32
        return 0
    tree_ids, node_ids = list(attrs["nodes_treeids"].ints), list(attrs["nodes_nodeids"].ints)
    features = list(attrs["nodes_featureids"].ints)
    modes = [m.decode() for m in attrs["nodes_modes"].strings]
    values = np.asarray(attrs["nodes_values"].floats, dtype=np.float32)
    fixed = values.copy()
    seen = 0
    for k, mode in enumerate(modes):
        if mode == "LEAF":
            continue
        key = (tree_ids[k], node_ids[k])
        if mode != "BRANCH_LEQ" or key not in splits or splits[key][0] != features[k]:
            raise ValueError(f"ONNX tree {key[0]} node {key[1]} ({mode}, feature {features[k]}) does not match "
                             f"the fitted estimator's split {splits.get(key)}; skl2onnx's layout changed")
        t64 = splits[key][1]
        down = _round_down_f32(np.array([t64]))[0]
        if values[k] not in (np.float32(t64), down):
            raise ValueError(f"ONNX tree {key[0]} node {key[1]}: threshold {values[k]!r} is not scikit-learn's "
                             f"{t64!r} rounded to float32; skl2onnx's layout changed")
        fixed[k] = down
        seen += 1
    if seen != len(splits):
        raise ValueError(f"the ONNX trees hold {seen} splits, the fitted estimator {len(splits)}")
    changed = int(np.count_nonzero(fixed != values))
    if changed:
        node.attribute.remove(attrs["nodes_values"])
        node.attribute.append(onnx.helper.make_attribute("nodes_values", fixed.tolist()))
    return changed


def _write_forest_cover(model: onnx.ModelProto, forest: RandomForestRegressor | RandomForestClassifier) -> None:
    """Node cover = the fitted trees' ``weighted_n_node_samples`` (bootstrap-weighted, as scikit-learn and shap
    use), in ``nodes_hitrates``, and ``metadata_props[COVER_KEY]`` saying so."""
    node = _tree_node(model)
    if node is None:
        return
    attrs = {a.name: a for a in node.attribute}
    trees = [est.tree_ for est in forest.estimators_]
    pairs = zip(attrs["nodes_treeids"].ints, attrs["nodes_nodeids"].ints, strict=True)
    cover = [float(trees[t].weighted_n_node_samples[n]) for t, n in pairs]
    for name in ("nodes_hitrates", "nodes_hitrates_as_tensor"):
        if name in attrs:
            node.attribute.remove(attrs[name])
    node.attribute.append(onnx.helper.make_attribute("nodes_hitrates", cover))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, COVER_KEY: FITTED_COVER})


# --- the export check: raw margins of onnxruntime against scikit-learn, row by row --------------------------


def sklearn_raw_margins(estimator: BaseEstimator, X: np.ndarray) -> np.ndarray:
    """float64 ``[rows, outputs]``: what the ONNX tree node sums before its post transform (the margin:
    decision_function of boosted classifiers, P(class 1) / class probabilities of forests, the prediction of
    regressors); for other estimators the served score (probabilities / prediction)."""
    final = _final_estimator(estimator)
    X = np.asarray(X, dtype=np.float64)
    if is_classifier(final):
        if isinstance(final, _BOOSTED + _HIST):
            raw = estimator.decision_function(X)
        else:
            raw = estimator.predict_proba(X)
            if isinstance(final, _FORESTS) and raw.shape[1] == 2:
                raw = raw[:, 1]
    else:
        raw = estimator.predict(X)
    raw = np.asarray(raw, dtype=np.float64)
    return raw.reshape(len(X), -1)


def _raw_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The tree node alone, as a TreeEnsembleRegressor without post transform: its raw margins."""
    node = _tree_node(model)
    assert node is not None
    keep = {}
    n_targets = 1
    for a in node.attribute:
        name = a.name
        if name in ("post_transform", "classlabels_int64s", "classlabels_strings", "n_targets"):
            continue
        if name.startswith("class_"):
            name = "target_" + name[len("class_"):]
        keep[name] = onnx.helper.get_attribute_value(a)
    if node.op_type == "TreeEnsembleClassifier":
        labels = [a for a in node.attribute if a.name.startswith("classlabels_")]
        n_classes = len(onnx.helper.get_attribute_value(labels[0]))
        ids = keep.get("target_ids", [])
        n_targets = 1 if n_classes == 2 and all(i == 0 for i in ids) else n_classes
    else:
        n_targets = next((a.i for a in node.attribute if a.name == "n_targets"), 1)
    source = model.graph.input[0]
    raw = onnx.helper.make_node("TreeEnsembleRegressor", [source.name], ["raw"], domain="ai.onnx.ml",
                                n_targets=n_targets, post_transform="NONE", **keep)
    graph = onnx.helper.make_graph(
        [raw], "raw", [source],
        [onnx.helper.make_tensor_value_info("raw", onnx.TensorProto.FLOAT, [None, n_targets])],
    )
    opsets = [onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("ai.onnx.ml", 3)]
    return onnx.helper.make_model(graph, opset_imports=opsets, ir_version=8), "raw"


def onnx_raw_margins(model: onnx.ModelProto, X: np.ndarray) -> np.ndarray:
    """float64 ``[rows, outputs]`` that onnxruntime computes for float32 ``X``: the tree node's raw margins
    for a tree ensemble, else the served prediction / probabilities."""
    import onnxruntime as ort

    X32 = np.ascontiguousarray(X, dtype=np.float32)
    node = _tree_node(model)
    if node is not None and node.input[0] == model.graph.input[0].name:
        model, output = _raw_model(model)
    else:
        output = REGRESSION_OUTPUT if len(model.graph.output) == 1 else CLASSIFIER_OUTPUTS[1]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run([output], {session.get_inputs()[0].name: X32})
    return np.asarray(out, dtype=np.float64).reshape(len(X32), -1)


@dataclass(frozen=True)
class ExportCheck:
    """onnxruntime against scikit-learn on the same float32 rows (what the server is sent).

    ``max_rel_deviation``: ``max |onnx - sklearn| / scale`` over rows and outputs, where ``scale`` is
    ``max(|sklearn margin of that row|, mean |margin| over rows, 1e-12)``: float32 rounding of leaf weights and
    sums stays near 1e-7..1e-6; a row routed down another branch shows as a leaf-sized jump.
    ``row`` / ``output``: where it is largest. ``splits``: ONNX thresholds that route some float32 value
    differently from scikit-learn's float64 threshold, as (tree id, node id, feature, onnx, sklearn).
    """

    rows: int
    max_abs_deviation: float
    max_rel_deviation: float
    row: int
    output: int
    onnx_value: float
    sklearn_value: float
    splits: tuple[tuple[int, int, int, float, float], ...] = ()
    tolerance: float = MAX_RAW_DEVIATION

    @property
    def ok(self) -> bool:
        return self.max_rel_deviation <= self.tolerance and not self.splits

    def describe(self) -> str:
        text = (f"ONNX raw margins deviate from scikit-learn by up to {self.max_rel_deviation:.3g} relative "
                f"({self.max_abs_deviation:.3g} absolute) over {self.rows} rows; worst: row {self.row}, output "
                f"{self.output}: onnx {self.onnx_value!r}, scikit-learn {self.sklearn_value!r}")
        for tree, node, feature, t32, t64 in self.splits[:3]:
            text += (f"; tree {tree} node {node} splits feature {feature} at {t32!r} in ONNX but {t64!r} in "
                     "scikit-learn (float32 rounding)")
        if len(self.splits) > 3:
            text += f"; and {len(self.splits) - 3} more such thresholds"
        return text


def _misrouting_splits(model: onnx.ModelProto, final: BaseEstimator) -> tuple[tuple[int, int, int, float, float], ...]:
    node = _tree_node(model)
    splits = _sklearn_splits(final) if node is not None else None
    if not splits:
        return ()
    attrs = {a.name: a for a in node.attribute}
    if "nodes_values" not in attrs:
        return ()
    bad = []
    values = np.asarray(attrs["nodes_values"].floats, dtype=np.float32)
    for k, (t, n) in enumerate(zip(attrs["nodes_treeids"].ints, attrs["nodes_nodeids"].ints, strict=True)):
        if (t, n) in splits:
            feature, t64 = splits[(t, n)]
            if values[k] != _round_down_f32(np.array([t64]))[0]:
                bad.append((int(t), int(n), feature, float(values[k]), t64))
    return tuple(bad)


def check_export(model: onnx.ModelProto, estimator: BaseEstimator, X: np.ndarray,
                 tolerance: float = MAX_RAW_DEVIATION) -> ExportCheck:
    """Compare onnxruntime's raw margins with scikit-learn's on every row of ``X`` (pass fit and holdout rows).

    Both see the same float32 rows (scikit-learn gets them widened back to float64): the served input is
    float32, so that is the contract. Thresholds are checked too (see :class:`ExportCheck`). Not ``ok`` means
    the exported graph is not the trained model; :meth:`ExportCheck.describe` names the row and threshold.
    """
    X32 = np.ascontiguousarray(X, dtype=np.float32)
    served = onnx_raw_margins(model, X32)
    expected = sklearn_raw_margins(estimator, X32.astype(np.float64))
    splits = _misrouting_splits(model, _final_estimator(estimator))
    if served.shape != expected.shape:
        raise ValueError(f"ONNX raw output has shape {served.shape}, scikit-learn's {expected.shape}")
    if not len(X32):
        return ExportCheck(0, 0.0, 0.0, -1, -1, 0.0, 0.0, splits, tolerance)
    diff = np.abs(served - expected)
    floor = max(float(np.mean(np.abs(expected))), 1e-12)
    rel = diff / np.maximum(np.abs(expected), floor)
    row, out = np.unravel_index(int(np.argmax(rel)), rel.shape)
    return ExportCheck(len(X32), float(diff.max()), float(rel[row, out]), int(row), int(out),
                       float(served[row, out]), float(expected[row, out]), splits, tolerance)


def export_onnx(estimator: BaseEstimator, n_features: int, *, model_name: str = "driftline") -> onnx.ModelProto:
    """Convert a fitted estimator (or Pipeline ending in one) to a checked ONNX model.

    Regressors expose ``prediction`` (float32 ``[N, 1]``); classifiers expose
    ``label`` (int64 ``[N]``) and ``probabilities`` (float32 ``[N, n_classes]``).
    """
    final = _final_estimator(estimator)
    if not isinstance(final, SUPPORTED_ESTIMATORS):
        supported = ", ".join(t.__name__ for t in SUPPORTED_ESTIMATORS)
        raise TypeError(f"cannot export {type(final).__name__}; supported estimators: {supported}")
    check_is_fitted(estimator)
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 1:
        raise ValueError(f"n_features must be a positive int, got {n_features!r}")
    fitted_on = getattr(estimator, "n_features_in_", None)
    if fitted_on is not None and fitted_on != n_features:
        raise ValueError(f"estimator was fitted on {fitted_on} features but n_features={n_features}")

    _fix_hgb_missing_flags()  # cached no-op after the first call

    model = convert_sklearn(
        estimator,
        name=model_name,
        initial_types=[(INPUT_NAME, FloatTensorType([None, int(n_features)]))],
        final_types=_output_types(final),
        # ZipMap would turn probabilities into a sequence of maps, which the tensor-only server can't serve.
        options={id(final): {"zipmap": False}} if is_classifier(final) else None,
        target_opset=dict(TARGET_OPSET),
    )
    if isinstance(final, (RandomForestRegressor, RandomForestClassifier)):
        _copy_forest_missing_flags(model, final)
        _write_forest_cover(model, final)
    _round_thresholds_down(model, final)
    model.graph.name = model_name
    sort_opsets(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def sort_opsets(model: onnx.ModelProto) -> None:
    """Put the opset imports in domain order: skl2onnx lists them in an order that varies between processes, so
    the same fitted model would serialise to different bytes and its version could not share a stored file."""
    ordered = sorted(model.opset_import, key=lambda opset: opset.domain)
    del model.opset_import[:]
    model.opset_import.extend(ordered)
