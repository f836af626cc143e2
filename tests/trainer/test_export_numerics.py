"""Issue 16: exported tree ensembles compute what scikit-learn computes, and forests' attributions are shap's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from driftline.trainer.export import (
    _round_down_f32,
    check_export,
    export_onnx,
    onnx_raw_margins,
    sklearn_raw_margins,
)
from driftline.trainer.train import TrainConfig, train
from sklearn import datasets
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor

from driftline.attribution import FITTED_COVER, REFERENCE_COVER, attach_cover, cover_source, explainer_for

LOADERS = {"diabetes": datasets.load_diabetes, "iris": datasets.load_iris, "wine": datasets.load_wine}
# The numerics under test, not model quality: the small data sets may trip the trainer's quality fuses.
ALLOW = ("underfit", "overfit", "leakage")
FLOAT32_TOL = 2e-6  # relative to the margin scale: float32 leaf weights summed over 200 trees


def _allow() -> dict[str, tuple[str, ...]]:
    return {"allow": ALLOW} if "allow" in TrainConfig.__dataclass_fields__ else {}


def _csv(tmp_path: Path, name: str) -> tuple[str, int]:
    bunch = LOADERS[name]()
    frame = pl.DataFrame({f"f{j}": bunch.data[:, j] for j in range(bunch.data.shape[1])}).with_columns(
        pl.Series("target", bunch.target))
    path = tmp_path / f"{name}.csv"
    frame.write_csv(path)
    return str(path), bunch.data.shape[1]


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_hist_gradient_boosting_raw_margins_match_on_every_row(tmp_path: Path, name: str) -> None:
    path, _ = _csv(tmp_path, name)
    task = "regression" if name == "diabetes" else "classification"
    trained = train(TrainConfig(model=f"{name}_hgb", estimator="hist_gradient_boosting", data=path,
                                target="target", task=task, seed=0, **_allow()))
    X = trained.dataset.X  # fit and holdout rows
    served = onnx_raw_margins(trained.onnx_model, X)
    expected = sklearn_raw_margins(trained.estimator, X.astype(np.float32).astype(np.float64))
    scale = np.maximum(np.abs(expected), np.mean(np.abs(expected)))
    assert served.shape == expected.shape
    assert np.max(np.abs(served - expected) / scale) < FLOAT32_TOL
    check = check_export(trained.onnx_model, trained.estimator, X)
    assert check.ok and not check.splits and check.rows == len(X), check.describe()
    if task == "classification":  # and the served labels are scikit-learn's
        import onnxruntime as ort

        session = ort.InferenceSession(trained.onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
        labels = session.run(["label"], {"input": X.astype(np.float32)})[0]
        np.testing.assert_array_equal(labels, trained.estimator.predict(X.astype(np.float32).astype(np.float64)))


def test_round_down_keeps_every_float32_comparison() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(size=2000) * 10.0 ** rng.integers(-5, 5, 2000)
    down = _round_down_f32(t)
    assert np.all(down.astype(np.float64) <= t)
    up = np.nextafter(down, np.float32(np.inf))
    assert np.all(up.astype(np.float64) > t)  # no float32 lies in (down, t]


def test_a_misrouting_threshold_is_named() -> None:
    X, y = datasets.load_iris(return_X_y=True)
    est = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(X, y)
    model = export_onnx(est, X.shape[1])
    node = next(n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier")
    values = next(a for a in node.attribute if a.name == "nodes_values")
    values.floats[0] = float(np.float32(est._predictors[0][0].nodes["num_threshold"][0]))  # round to nearest
    t = est._predictors[0][0].nodes["num_threshold"][0]
    if np.float32(t) <= t:  # already the rounded-down value: nudge it up to a misrouting one
        values.floats[0] = float(np.nextafter(np.float32(t), np.float32(np.inf)))
    check = check_export(model, est, X)
    assert not check.ok
    text = check.describe()
    assert "tree 0 node 0" in text and "row " in text and "feature " in text


def _shap_forest(estimator, X: np.ndarray) -> np.ndarray:
    shap = pytest.importorskip("shap")
    values = shap.TreeExplainer(estimator).shap_values(X, check_additivity=False)
    values = np.asarray(values)
    if values.ndim == 3 and values.shape[0] != len(X):  # older shap: [classes, rows, features]
        values = np.moveaxis(values, 0, -1)
    return values


def test_driftline_trained_forest_attributions_equal_shap(tmp_path: Path) -> None:
    path, n_features = _csv(tmp_path, "diabetes")
    trained = train(TrainConfig(model="diabetes_rf", estimator="random_forest", data=path, target="target",
                                task="regression", seed=0, params={"n_estimators": 30}, **_allow()))
    assert cover_source(trained.onnx_model) == FITTED_COVER
    X = trained.dataset.X.astype(np.float32)
    explainer = explainer_for(trained.onnx_model, None)
    phi, base = explainer.explain(X[:100], n_threads=1)
    expected = _shap_forest(trained.estimator, X[:100].astype(np.float64))
    scale = float(np.std(trained.estimator.predict(X)))
    assert np.max(np.abs(phi[:, :, 0] - expected)) < 1e-6 * scale


def test_binary_forest_attributions_are_the_positive_class_as_in_shap() -> None:
    X, y = datasets.load_breast_cancer(return_X_y=True)
    est = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(X, y)
    model = attach_cover(export_onnx(est, X.shape[1]), X)
    assert cover_source(model) == FITTED_COVER
    rows = X[:50].astype(np.float32)
    phi, base = explainer_for(model, None).explain(rows, n_threads=1)
    assert phi.shape[2] == 1  # one output: P(class 1), whatever class a row is predicted as
    expected = _shap_forest(est, rows.astype(np.float64))[:, :, 1]
    assert np.max(np.abs(phi[:, :, 0] - expected)) < 1e-6


def test_imported_forest_keeps_reference_row_cover() -> None:
    X, y = datasets.load_diabetes(return_X_y=True)
    est = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, y)
    model = export_onnx(est, X.shape[1])
    del model.metadata_props[:]  # what an ONNX file from elsewhere looks like: no driftline record
    assert cover_source(attach_cover(model, X)) == REFERENCE_COVER
