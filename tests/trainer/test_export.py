"""ONNX export parity: onnxruntime must reproduce scikit-learn on held-out rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from driftline.trainer import export
from driftline.trainer.export import CLASSIFIER_OUTPUTS, INPUT_NAME, REGRESSION_OUTPUT, export_onnx

N_FEATURES = 6
FLOAT = onnx.TensorProto.FLOAT
INT64 = onnx.TensorProto.INT64


def _data(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    y = (2.0 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x[:300], y[:300], x[300:], y[300:]


X_TRAIN, Y_TRAIN, X_TEST, Y_TEST = _data()
Y_BINARY = (Y_TRAIN > 0).astype(np.int64)
Y_3CLASS = np.digitize(Y_TRAIN, [-1.0, 1.0]).astype(np.int64)  # 0, 1, 2

REGRESSORS: dict[str, Callable[[], BaseEstimator]] = {
    "gbr": lambda: GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0),
    "hgbr": lambda: HistGradientBoostingRegressor(max_iter=20, random_state=0),
    "rfr": lambda: RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0),
    "linear": lambda: LinearRegression(),
    "ridge": lambda: Ridge(alpha=1.0),
    "scaler+ridge": lambda: make_pipeline(StandardScaler(), Ridge()),
}
CLASSIFIERS: dict[str, Callable[[], BaseEstimator]] = {
    "gbc": lambda: GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0),
    "hgbc": lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0),
    "rfc": lambda: RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0),
    "logreg": lambda: LogisticRegression(max_iter=500),
    "scaler+logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]


def _assert_contract(model: onnx.ModelProto, outputs: list[tuple[str, int, list[int | str | None]]]) -> None:
    (inp,) = model.graph.input
    assert inp.name == INPUT_NAME
    assert inp.type.tensor_type.elem_type == FLOAT
    batch, features = _dims(inp)
    assert isinstance(batch, str | None) and features == N_FEATURES  # dynamic batch, fixed width
    got = [(o.name, o.type.tensor_type.elem_type, _dims(o)) for o in model.graph.output]
    assert [(n, t) for n, t, _ in got] == [(n, t) for n, t, _ in outputs]
    for (_, _, dims), (_, _, want) in zip(got, outputs, strict=True):
        assert len(dims) == len(want) and isinstance(dims[0], str | None) and dims[1:] == want[1:]
    assert not any(n.op_type == "ZipMap" for n in model.graph.node)
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    # skl2onnx stamps the lowest opset the graph needs, never above the requested target.
    assert opsets["ai.onnx"] <= export.TARGET_OPSET[""]
    assert opsets.get("ai.onnx.ml", 0) <= export.TARGET_OPSET["ai.onnx.ml"]
    sess = _session(model)
    assert [i.name for i in sess.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in sess.get_outputs()] == [n for n, _, _ in outputs]


def _assert_regression_parity(est: BaseEstimator, model: onnx.ModelProto, x: np.ndarray) -> None:
    (pred,) = _session(model).run(None, {INPUT_NAME: x})
    assert pred.dtype == np.float32 and pred.shape == (len(x), 1)
    np.testing.assert_allclose(pred[:, 0], est.predict(x), rtol=1e-4, atol=1e-4)


def _assert_classifier_parity(est: BaseEstimator, model: onnx.ModelProto, x: np.ndarray) -> None:
    label, proba = _session(model).run(None, {INPUT_NAME: x})
    assert label.dtype == np.int64 and label.shape == (len(x),)
    assert proba.dtype == np.float32 and proba.shape == (len(x), len(est.classes_))
    np.testing.assert_array_equal(label, est.predict(x))
    np.testing.assert_allclose(proba, est.predict_proba(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", REGRESSORS)
def test_regressor_matches_sklearn(name: str) -> None:
    est = REGRESSORS[name]().fit(X_TRAIN, Y_TRAIN)
    model = export_onnx(est, N_FEATURES)
    _assert_contract(model, [(REGRESSION_OUTPUT, FLOAT, [None, 1])])
    _assert_regression_parity(est, model, X_TEST)


@pytest.mark.parametrize("target", ["binary", "3class"])
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_matches_sklearn(name: str, target: str) -> None:
    y = Y_BINARY if target == "binary" else Y_3CLASS
    est = CLASSIFIERS[name]().fit(X_TRAIN, y)
    model = export_onnx(est, N_FEATURES)
    n_classes = len(np.unique(y))
    _assert_contract(model, [(CLASSIFIER_OUTPUTS[0], INT64, [None]), (CLASSIFIER_OUTPUTS[1], FLOAT, [None, n_classes])])
    _assert_classifier_parity(est, model, X_TEST)


def test_non_contiguous_integer_labels_are_kept() -> None:
    # Labels are emitted from classes_, not as argmax indices.
    y = np.where(Y_BINARY == 1, 7, 3)
    est = LogisticRegression().fit(X_TRAIN, y)
    _assert_classifier_parity(est, export_onnx(est, N_FEATURES), X_TEST)


# --- skl2onnx HistGradientBoosting bool-attribute bug -------------------------------------------


@pytest.mark.parametrize(
    "make, y",
    [
        (lambda: HistGradientBoostingRegressor(max_iter=10), Y_TRAIN),
        (lambda: HistGradientBoostingClassifier(max_iter=10), Y_BINARY),
        (lambda: HistGradientBoostingClassifier(max_iter=10), Y_3CLASS),
    ],
    ids=["hgbr", "hgbc-binary", "hgbc-3class"],
)
def test_hgb_export_passes_no_bools_to_onnx(
    make: Callable[[], BaseEstimator], y: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With protobuf 6.3x the bug is only a DeprecationWarning (protobuf >= 7.34 raises TypeError), and that
    # warning fires once per process, so a warnings-as-errors test would be order dependent. Instead, look
    # at the Python values skl2onnx hands to onnx.helper.make_node: without driftline's fix this fails.
    from skl2onnx.common import _container

    seen: list[object] = []

    def spy(op_type: str, *args: object, **attrs: object) -> onnx.NodeProto:
        seen.extend(attrs.get("nodes_missing_value_tracks_true", []))  # type: ignore[arg-type]
        return onnx.helper.make_node(op_type, *args, **attrs)

    monkeypatch.setattr(_container, "make_node", spy)
    est = make().fit(X_TRAIN, y)
    model = export_onnx(est, N_FEATURES)
    assert seen and not any(isinstance(v, bool | np.bool_) for v in seen)
    assert {type(v) for v in seen} == {int}
    ensemble = next(n for n in model.graph.node if n.op_type.startswith("TreeEnsemble"))
    flags = next(a for a in ensemble.attribute if a.name == "nodes_missing_value_tracks_true")
    assert flags.type == onnx.AttributeProto.INTS and set(flags.ints) == {0, 1}


def test_hgb_fix_is_idempotent_and_installed_helper_is_clean() -> None:
    from skl2onnx.common import tree_ensemble
    from skl2onnx.operator_converters import random_forest

    export._fix_hgb_missing_flags()
    installed = random_forest.add_tree_to_attribute_pairs_hist_gradient_boosting
    assert tree_ensemble.add_tree_to_attribute_pairs_hist_gradient_boosting is installed
    assert not export._helper_emits_bool(installed)

    export._fix_hgb_missing_flags.cache_clear()  # simulate a second "first" call: must not double-wrap
    export._fix_hgb_missing_flags()
    assert random_forest.add_tree_to_attribute_pairs_hist_gradient_boosting is installed
    if getattr(installed, export._PATCH_MARK, False):
        assert export._helper_emits_bool(installed.__wrapped__)  # the patch is only there if the bug was


def test_bool_probe_distinguishes_buggy_and_fixed_helpers() -> None:
    def buggy(attr_pairs: dict, *args: object, **kwargs: object) -> None:
        attr_pairs["nodes_missing_value_tracks_true"].append(False)

    def fixed(attr_pairs: dict, *args: object, **kwargs: object) -> None:
        attr_pairs["nodes_missing_value_tracks_true"].append(0)

    def incompatible(*args: object, **kwargs: object) -> None:
        raise TypeError("new signature")

    assert export._helper_emits_bool(buggy)
    assert not export._helper_emits_bool(fixed)
    assert not export._helper_emits_bool(incompatible)


# --- NaN routing -----------------------------------------------------------------------------------


def _with_nans(x: np.ndarray, seed: int) -> np.ndarray:
    x = x.copy()
    mask = np.random.default_rng(seed).random(x.shape) < 0.2
    x[mask] = np.nan
    return x


@pytest.mark.parametrize("train_nan", [False, True], ids=["clean-train", "nan-train"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: HistGradientBoostingRegressor(max_iter=20, random_state=0),
        lambda: HistGradientBoostingClassifier(max_iter=20, random_state=0),
        lambda: RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0),
        lambda: RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0),
    ],
    ids=["hgbr", "hgbc", "rfr", "rfc"],
)
def test_nan_rows_route_like_sklearn(make: Callable[[], BaseEstimator], train_nan: bool) -> None:
    x_train = _with_nans(X_TRAIN, 1) if train_nan else X_TRAIN
    x_test = _with_nans(X_TEST, 2)
    est = make()
    is_clf = hasattr(est, "predict_proba")
    est.fit(x_train, Y_3CLASS if is_clf else Y_TRAIN)
    model = export_onnx(est, N_FEATURES)
    if is_clf:
        _assert_classifier_parity(est, model, x_test)
    else:
        _assert_regression_parity(est, model, x_test)


def test_forest_nan_flags_come_from_sklearn_trees() -> None:
    # Guards the post-conversion copy: skl2onnx itself leaves every flag at 0 for forests.
    est = RandomForestRegressor(n_estimators=3, random_state=0).fit(_with_nans(X_TRAIN, 3), Y_TRAIN)
    ensemble = next(n for n in export_onnx(est, N_FEATURES).graph.node if n.op_type == "TreeEnsembleRegressor")
    attrs = {a.name: list(a.ints) for a in ensemble.attribute}
    pairs = zip(attrs["nodes_treeids"], attrs["nodes_nodeids"], strict=True)
    want = [int(est.estimators_[t].tree_.missing_go_to_left[n]) for t, n in pairs]
    assert attrs["nodes_missing_value_tracks_true"] == want and any(want)


# --- API edges ---------------------------------------------------------------------------------------


def test_model_name_and_checker() -> None:
    est = LinearRegression().fit(X_TRAIN, Y_TRAIN)
    model = export_onnx(est, N_FEATURES, model_name="churn-v3")
    assert model.graph.name == "churn-v3"
    onnx.checker.check_model(model)


def test_opset_imports_are_in_domain_order() -> None:
    # skl2onnx's own order varies between processes; a stable order keeps equal models byte-identical.
    model = export_onnx(HistGradientBoostingRegressor(max_iter=5).fit(X_TRAIN, Y_TRAIN), N_FEATURES)
    domains = [opset.domain for opset in model.opset_import]
    assert len(domains) > 1 and domains == sorted(domains)


def test_batch_of_one_and_large_batch() -> None:
    est = HistGradientBoostingRegressor(max_iter=10).fit(X_TRAIN, Y_TRAIN)
    model = export_onnx(est, N_FEATURES)
    _assert_regression_parity(est, model, X_TEST[:1])
    _assert_regression_parity(est, model, np.tile(X_TEST, (20, 1)))


def test_string_labels_are_rejected() -> None:
    est = LogisticRegression().fit(X_TRAIN, np.where(Y_BINARY == 1, "yes", "no"))
    with pytest.raises(ValueError, match="encode the target"):
        export_onnx(est, N_FEATURES)


def test_float_labels_are_rejected() -> None:
    est = RandomForestClassifier(n_estimators=2).fit(X_TRAIN, Y_BINARY.astype(np.float64))
    with pytest.raises(ValueError, match="int64 labels"):
        export_onnx(est, N_FEATURES)


def test_unsupported_estimator_is_rejected() -> None:
    est = KNeighborsRegressor().fit(X_TRAIN, Y_TRAIN)
    with pytest.raises(TypeError, match="KNeighborsRegressor"):
        export_onnx(est, N_FEATURES)


def test_feature_count_mismatch_is_rejected() -> None:
    est = Ridge().fit(X_TRAIN, Y_TRAIN)
    with pytest.raises(ValueError, match="fitted on 6 features"):
        export_onnx(est, N_FEATURES + 1)


def test_multi_target_regression_is_rejected() -> None:
    est = LinearRegression().fit(X_TRAIN, np.stack([Y_TRAIN, -Y_TRAIN], axis=1))
    with pytest.raises(ValueError, match="2 targets"):
        export_onnx(est, N_FEATURES)


def test_unfitted_estimator_is_rejected() -> None:
    with pytest.raises(NotFittedError):
        export_onnx(clone(REGRESSORS["hgbr"]()), N_FEATURES)
