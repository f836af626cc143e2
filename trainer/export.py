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

__all__ = ["CLASSIFIER_OUTPUTS", "INPUT_NAME", "REGRESSION_OUTPUT", "export_onnx"]

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
    model.graph.name = model_name
    onnx.checker.check_model(model, full_check=True)
    return model
