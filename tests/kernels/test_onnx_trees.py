"""Reading skl2onnx tree ensembles: the parsed trees must score exactly as onnxruntime does."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from driftline.kernels.treeshap import TreeEnsemble, compute_cover, predict_raw
from driftline.onnx_trees import find_tree_node, read_tree_ensemble, with_cover
from driftline.trainer.export import export_onnx

F = 6
RNG = np.random.default_rng(7)
X = RNG.normal(size=(300, F)).astype(np.float32)
X_NAN = X.copy()
X_NAN[RNG.random(X.shape) < 0.1] = np.nan  # HistGradientBoosting / RandomForest learn where NaN goes
Y = 2.0 * X[:, 0] - X[:, 1] + X[:, 2] * X[:, 3] + 0.1 * RNG.normal(size=len(X))
Y2 = (Y > 0).astype(np.int64)
Y3 = np.digitize(Y, [-1.0, 1.0]).astype(np.int64)

# name -> (estimator factory, target, rows)
MODELS: dict[str, tuple[Callable[[], BaseEstimator], np.ndarray, np.ndarray]] = {
    "gbr": (lambda: GradientBoostingRegressor(n_estimators=15, max_depth=3, random_state=0), Y, X),
    "hgbr": (lambda: HistGradientBoostingRegressor(max_iter=15, max_depth=4, random_state=0), Y, X_NAN),
    "rfr": (lambda: RandomForestRegressor(n_estimators=8, max_depth=6, random_state=0), Y, X_NAN),
    "gbc2": (lambda: GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0), Y2, X),
    "gbc3": (lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0), Y3, X),
    "hgbc2": (lambda: HistGradientBoostingClassifier(max_iter=15, max_depth=3, random_state=0), Y2, X_NAN),
    "hgbc3": (lambda: HistGradientBoostingClassifier(max_iter=10, max_depth=3, random_state=0), Y3, X_NAN),
    "rfc2": (lambda: RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0), Y2, X_NAN),
    "rfc3": (lambda: RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0), Y3, X_NAN),
}
EXPECTED = {  # name -> (n_outputs, n_classes, post_transform)
    "gbr": (1, 0, "NONE"), "hgbr": (1, 0, "NONE"), "rfr": (1, 0, "NONE"),
    "gbc2": (1, 2, "LOGISTIC"), "gbc3": (3, 3, "SOFTMAX"), "hgbc2": (1, 2, "LOGISTIC"),
    "hgbc3": (3, 3, "SOFTMAX"), "rfc2": (1, 2, "NONE"), "rfc3": (3, 3, "NONE"),
}  # fmt: skip


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple[BaseEstimator, onnx.ModelProto, np.ndarray]]:
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (make, y, rows) in MODELS.items():
            est = make().fit(rows, y)
            out[name] = (est, export_onnx(est, F), rows)
    return out


def _tree_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type.startswith("TreeEnsemble"))


def _set_attr(node: onnx.NodeProto, name: str, value: object) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))


def _get_attr(node: onnx.NodeProto, name: str) -> object:
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def ort_margin(model: onnx.ModelProto, rows: np.ndarray) -> np.ndarray:
    """onnxruntime's raw score (post_transform switched off): [n, n_outputs] as read_tree_ensemble defines it."""
    raw = onnx.ModelProto()
    raw.CopyFrom(model)
    node = _tree_node(raw)
    _set_attr(node, "post_transform", "NONE")
    out = ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": rows})
    scores = out[-1].astype(np.float64)
    single = node.op_type == "TreeEnsembleClassifier" and len(set(_get_attr(node, "class_ids"))) == 1
    if single and scores.shape[1] == 2:
        return scores[:, 1:]  # one stored score; onnxruntime derives [-s, s] or [1 - s, s]
    return scores


def numpy_eval(e: TreeEnsemble, rows: np.ndarray) -> np.ndarray:
    """An independent (vectorised numpy) evaluation of the parsed arrays."""
    out = np.tile(e.base_values, (len(rows), 1))
    idx = np.arange(len(rows))
    for root in e.roots:
        node = np.full(len(rows), root)
        while True:
            split = e.left[node] >= 0
            if not split.any():
                break
            x = rows[idx, np.maximum(e.feature[node], 0)]
            left = np.where(np.isnan(x), e.default_left[node], x <= e.threshold[node])
            node = np.where(split, np.where(left, e.left[node], e.right[node]), node)
        out += e.value[node]
    return out


@pytest.mark.parametrize("name", list(MODELS))
def test_parsed_ensemble_scores_like_onnxruntime(fitted, name: str) -> None:  # noqa: ANN001
    est, model, rows = fitted[name]
    e = read_tree_ensemble(model)
    n_outputs, n_classes, post = EXPECTED[name]
    assert (e.n_outputs, e.n_classes, e.post_transform, e.n_features) == (n_outputs, n_classes, post, F)
    if name.startswith("rf"):  # driftline's export writes a forest's fitted (bootstrap-weighted) node counts
        fitted_cover = np.concatenate([t.tree_.weighted_n_node_samples for t in est.estimators_])
        assert e.has_cover and np.array_equal(np.sort(e.cover), np.sort(fitted_cover))
    else:  # skl2onnx writes hit rates of 1.0: no cover (it comes from reference rows, attach_cover)
        assert not e.has_cover and np.isnan(e.cover).all()
    want = ort_margin(model, rows)
    np.testing.assert_allclose(numpy_eval(e, rows), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predict_raw(e, rows), want, rtol=1e-5, atol=1e-5)
    if name.startswith("rf"):  # averaging: weights already divided by n_trees, summed (no base)
        assert e.n_trees == est.n_estimators and np.all(e.base_values == 0)
    if name in ("gbc2", "hgbc2"):  # the stored score is class 1's log-odds
        np.testing.assert_allclose(1 / (1 + np.exp(-want[:, 0])), est.predict_proba(rows)[:, 1], atol=1e-5)


def _ids(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    node = _tree_node(model)
    return np.asarray(_get_attr(node, "nodes_treeids")), np.asarray(_get_attr(node, "nodes_nodeids"))


@pytest.mark.parametrize(
    "est",
    [
        GradientBoostingRegressor(n_estimators=5, max_depth=4, random_state=0),
        RandomForestRegressor(n_estimators=4, max_depth=7, bootstrap=False, max_features=0.5, random_state=0),
        RandomForestClassifier(n_estimators=4, max_depth=6, bootstrap=False, max_features=0.5, random_state=0),
    ],
    ids=["gbr", "rfr", "rfc"],
)
def test_compute_cover_counts_training_rows_like_sklearn(est: BaseEstimator) -> None:
    y = Y3 if isinstance(est, RandomForestClassifier) else Y
    est.fit(X, y)
    model = export_onnx(est, F)
    e = read_tree_ensemble(model)
    cover = compute_cover(e, X)
    trees, nodes = _ids(model)
    fitted_trees = est.estimators_[:, 0] if isinstance(est, GradientBoostingRegressor) else est.estimators_
    for t, tree in enumerate(fitted_trees):
        mine = np.zeros(tree.tree_.node_count)
        mine[nodes[trees == t]] = cover[trees == t]
        np.testing.assert_array_equal(mine, tree.tree_.n_node_samples)
    np.testing.assert_array_equal(compute_cover(e, X, sample_weight=np.full(len(X), 2.0)), 2 * cover)


def test_with_cover_round_trips_and_keeps_scores(fitted) -> None:  # noqa: ANN001
    _, model, rows = fitted["hgbr"]
    e = read_tree_ensemble(model)
    cover = compute_cover(e, rows)
    stored = with_cover(model, cover)
    onnx.checker.check_model(stored, full_check=True)
    back = read_tree_ensemble(stored)
    assert back.has_cover
    np.testing.assert_array_equal(back.cover, cover)
    np.testing.assert_array_equal(ort_margin(stored, rows), ort_margin(model, rows))
    assert not read_tree_ensemble(model).has_cover  # the original is untouched
    with pytest.raises(ValueError, match="all ones"):
        with_cover(model, np.ones(e.n_nodes))
    with pytest.raises(ValueError, match="one entry per tree node"):
        with_cover(model, cover[:-1])


def test_refuses_models_without_a_tree_ensemble() -> None:
    model = export_onnx(LinearRegression().fit(X, Y), F)
    with pytest.raises(ValueError, match="no TreeEnsembleRegressor"):
        read_tree_ensemble(model)
    with pytest.raises(ValueError, match="no TreeEnsembleRegressor"):
        find_tree_node(model)


def test_refuses_trees_fed_by_a_transformed_input() -> None:
    pipeline = make_pipeline(StandardScaler(), GradientBoostingRegressor(n_estimators=3, random_state=0)).fit(X, Y)
    with pytest.raises(ValueError, match="not a graph input"):
        read_tree_ensemble(export_onnx(pipeline, F))


@pytest.mark.parametrize("mode", ["BRANCH_EQ", "BRANCH_NEQ"])
def test_refuses_unsupported_node_modes(fitted, mode: str) -> None:  # noqa: ANN001
    bad = onnx.ModelProto()
    bad.CopyFrom(fitted["gbr"][1])
    node = _tree_node(bad)
    modes = list(_get_attr(node, "nodes_modes"))
    modes[0] = mode.encode()
    _set_attr(node, "nodes_modes", modes)
    with pytest.raises(ValueError, match="unsupported tree node mode"):
        read_tree_ensemble(bad)


def test_refuses_min_max_aggregation(fitted) -> None:  # noqa: ANN001
    bad = onnx.ModelProto()
    bad.CopyFrom(fitted["rfr"][1])
    _set_attr(_tree_node(bad), "aggregate_function", "MAX")
    with pytest.raises(ValueError, match="not additive"):
        read_tree_ensemble(bad)


def _threshold_rows(e: TreeEnsemble, rows: np.ndarray) -> np.ndarray:
    """Rows whose values sit exactly on, just below and just above split thresholds (and NaN)."""
    out = rows[:60].copy()
    split = np.flatnonzero(e.left >= 0)
    for i, k in enumerate(split[: len(out)]):
        f, t = e.feature[k], e.threshold[k]
        out[i, f] = [t, np.nextafter(t, np.float32(-np.inf)), np.nextafter(t, np.float32(np.inf)), np.nan][i % 4]
    return out


def test_rewritten_modes_route_like_onnxruntime(fitted) -> None:  # noqa: ANN001
    """BRANCH_LT / GT / GTE (not emitted by skl2onnx) parse to the same float32 routing as onnxruntime's."""
    _, model, rows = fitted["hgbr"]
    e = read_tree_ensemble(model)
    probe = _threshold_rows(e, rows)
    for new_mode in ("BRANCH_LT", "BRANCH_GT", "BRANCH_GTE"):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        node = _tree_node(m)
        modes = [x.decode() for x in _get_attr(node, "nodes_modes")]
        values = np.asarray(_get_attr(node, "nodes_values"), np.float32)
        true_ids = list(_get_attr(node, "nodes_truenodeids"))
        false_ids = list(_get_attr(node, "nodes_falsenodeids"))
        tracks = list(_get_attr(node, "nodes_missing_value_tracks_true"))
        for i, mode in enumerate(modes):
            if mode == "LEAF" or i % 2:  # mix rewritten and BRANCH_LEQ nodes
                continue
            modes[i] = new_mode
            if new_mode == "BRANCH_LT":  # x < next float32 up  <=>  x <= t
                values[i] = np.nextafter(values[i], np.float32(np.inf))
            elif new_mode == "BRANCH_GT":  # x > t  <=>  not x <= t: swap the branches and the NaN side
                true_ids[i], false_ids[i], tracks[i] = false_ids[i], true_ids[i], 1 - tracks[i]
            else:  # x >= next float32 up  <=>  not x <= t
                values[i] = np.nextafter(values[i], np.float32(np.inf))
                true_ids[i], false_ids[i], tracks[i] = false_ids[i], true_ids[i], 1 - tracks[i]
        _set_attr(node, "nodes_modes", modes)
        _set_attr(node, "nodes_values", values.tolist())
        _set_attr(node, "nodes_truenodeids", true_ids)
        _set_attr(node, "nodes_falsenodeids", false_ids)
        _set_attr(node, "nodes_missing_value_tracks_true", tracks)
        want = ort_margin(m, probe)
        np.testing.assert_allclose(want, ort_margin(model, probe), rtol=1e-6, atol=1e-6)  # the rewrite is sound
        np.testing.assert_allclose(predict_raw(read_tree_ensemble(m), probe), want, rtol=1e-5, atol=1e-5)


def test_average_aggregation(fitted) -> None:  # noqa: ANN001
    """aggregate_function AVERAGE (not emitted by skl2onnx) divides the tree sum by the tree count."""
    _, model, rows = fitted["rfr"]
    e = read_tree_ensemble(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = _tree_node(m)
    weights = np.asarray(_get_attr(node, "target_weights"), np.float64) * e.n_trees
    _set_attr(node, "target_weights", weights.astype(np.float32).tolist())
    _set_attr(node, "aggregate_function", "AVERAGE")
    want = ort_margin(m, rows)
    np.testing.assert_allclose(want, ort_margin(model, rows), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predict_raw(read_tree_ensemble(m), rows), want, rtol=1e-5, atol=1e-5)


def test_double_thresholds_route_like_onnxruntime(fitted) -> None:  # noqa: ANN001
    """nodes_values_as_tensor (ai.onnx.ml 3) doubles, on a double input: float32 rows route as x <= double t."""
    _, model, rows = fitted["hgbr"]
    e = read_tree_ensemble(model)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = _tree_node(m)
    values = np.asarray(_get_attr(node, "nodes_values"), np.float64)
    values += np.where(np.arange(values.size) % 2, 1e-9, -1e-9) * np.maximum(1.0, np.abs(values))  # off float32
    node.attribute.remove(next(a for a in node.attribute if a.name == "nodes_values"))
    node.attribute.append(helper.make_attribute("nodes_values_as_tensor", numpy_helper.from_array(values)))
    m.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    for op in m.opset_import:
        if op.domain == "ai.onnx.ml":
            op.version = 3
    probe = _threshold_rows(e, rows)
    want = ort_margin(m, probe.astype(np.float64))
    parsed = read_tree_ensemble(m)
    assert not np.array_equal(parsed.threshold, e.threshold)  # rounded down / kept per the double's side
    np.testing.assert_allclose(predict_raw(parsed, probe), want, rtol=1e-5, atol=1e-5)
