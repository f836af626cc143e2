"""Exact path-dependent TreeSHAP kernels: additivity against onnxruntime, agreement with shap, brute force."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from driftline.kernels.treeshap import TreeEnsemble, compute_cover, predict_raw, prepare, shap_values
from driftline.onnx_trees import read_tree_ensemble
from driftline.trainer.export import export_onnx

F = 6
RNG = np.random.default_rng(3)
X = RNG.normal(size=(300, F)).astype(np.float32)
X_NAN = X.copy()
X_NAN[RNG.random(X.shape) < 0.1] = np.nan
Y = 2.0 * X[:, 0] - X[:, 1] ** 2 + X[:, 2] * X[:, 3] + 0.1 * RNG.normal(size=len(X))
Y2 = (Y > 0).astype(np.int64)
Y3 = np.digitize(Y, [-1.0, 1.0]).astype(np.int64)
TABLES, QUADRATURE = 8 << 20, 0  # prepare(table_budget_bytes=...): all leaves on tables / none

MODELS: dict[str, tuple[Callable[[], BaseEstimator], np.ndarray, np.ndarray]] = {
    "gb-regressor": (lambda: GradientBoostingRegressor(n_estimators=20, max_depth=4, random_state=0), Y, X),
    "hgb-regressor": (lambda: HistGradientBoostingRegressor(max_iter=20, max_depth=5, random_state=0), Y, X_NAN),
    "rf-regressor": (lambda: RandomForestRegressor(n_estimators=8, max_depth=8, random_state=0), Y, X_NAN),
    "gb-binary": (lambda: GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0), Y2, X),
    "gb-3class": (lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0), Y3, X),
    "hgb-binary": (lambda: HistGradientBoostingClassifier(max_iter=15, max_depth=4, random_state=0), Y2, X_NAN),
    "hgb-3class": (lambda: HistGradientBoostingClassifier(max_iter=10, max_depth=3, random_state=0), Y3, X_NAN),
    "rf-binary": (lambda: RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0), Y2, X_NAN),
    "rf-3class": (lambda: RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0), Y3, X_NAN),
}


def _tree_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type.startswith("TreeEnsemble"))


def ort_margin(model: onnx.ModelProto, rows: np.ndarray) -> np.ndarray:
    """onnxruntime's score with post_transform NONE, [n, n_outputs] (binary single-score: the positive class)."""
    raw = onnx.ModelProto()
    raw.CopyFrom(model)
    node = _tree_node(raw)
    for a in list(node.attribute):
        if a.name == "post_transform":
            node.attribute.remove(a)
    node.attribute.append(helper.make_attribute("post_transform", "NONE"))
    out = ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": rows})
    scores = out[-1].astype(np.float64)
    if node.op_type == "TreeEnsembleClassifier":
        class_ids = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "class_ids")
        if scores.shape[1] == 2 and len(set(class_ids)) == 1:
            return scores[:, 1:]
    return scores


@pytest.fixture(scope="module")
def fitted() -> dict[str, tuple[BaseEstimator, onnx.ModelProto, TreeEnsemble, np.ndarray]]:
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (make, y, rows) in MODELS.items():
            est = make().fit(rows, y)
            model = export_onnx(est, F)
            e = read_tree_ensemble(model)
            out[name] = (est, model, e.with_cover(compute_cover(e, rows)), rows)
    return out


@pytest.mark.parametrize("budget", [TABLES, QUADRATURE], ids=["tables", "quadrature"])
@pytest.mark.parametrize("name", list(MODELS))
def test_attributions_add_up_to_the_onnxruntime_margin(fitted, name: str, budget: int) -> None:  # noqa: ANN001
    _, model, e, rows = fitted[name]
    prepared = prepare(e, table_budget_bytes=budget)
    assert (prepared.stats["table_leaves"] == prepared.stats["n_leaves"]) == (budget == TABLES)
    phi, base = shap_values(prepared, rows)
    assert phi.shape == (len(rows), F, e.n_outputs) and phi.dtype == np.float64
    assert base.shape == (e.n_outputs,)
    total = phi.sum(axis=1) + base
    margin = ort_margin(model, rows)
    scale = max(1.0, float(np.abs(margin).max()))
    np.testing.assert_allclose(total, margin, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(total, predict_raw(e, rows), rtol=1e-10, atol=1e-10 * scale)  # exact in float64


def test_tables_and_quadrature_agree(fitted) -> None:  # noqa: ANN001
    for name in ("hgb-regressor", "rf-3class"):
        _, _, e, rows = fitted[name]
        a, base_a = shap_values(prepare(e, table_budget_bytes=TABLES), rows)
        b, base_b = shap_values(prepare(e, table_budget_bytes=QUADRATURE), rows)
        c, _ = shap_values(prepare(e, table_budget_bytes=20_000, max_table_depth=3), rows)  # mixed leaves
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
        np.testing.assert_allclose(a, c, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(base_a, base_b)


def test_table_memory_stays_within_the_budget(fitted) -> None:  # noqa: ANN001
    _, _, e, _ = fitted["rf-regressor"]
    full = prepare(e, table_budget_bytes=1 << 30)
    assert full.stats["table_leaves"] == full.stats["n_leaves"]
    for budget in (0, 4096, full.table_bytes // 3):
        p = prepare(e, table_budget_bytes=budget)
        assert p.table_bytes <= budget and p.stats["table_bytes"] <= budget
        assert 0 < p.stats["table_leaves"] < full.stats["table_leaves"] or budget == 0
    shallow = prepare(e, max_table_depth=2)
    assert np.all(shallow.leaf_d[shallow.table_off >= 0] <= 2)


# --------------------------------------------------------------------------------------------------------------
# agreement with shap's TreeExplainer (path-dependent, its default)
# --------------------------------------------------------------------------------------------------------------


NO_BOOTSTRAP = {"bootstrap": False, "max_features": 0.5, "random_state": 0}  # cover = the training rows' counts


@pytest.mark.parametrize(
    "make, y",
    [
        (lambda: GradientBoostingRegressor(n_estimators=25, max_depth=4, random_state=0), Y),
        (lambda: RandomForestRegressor(n_estimators=6, max_depth=7, **NO_BOOTSTRAP), Y),
        (lambda: GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0), Y2),
        (lambda: RandomForestClassifier(n_estimators=6, max_depth=6, **NO_BOOTSTRAP), Y2),
        (lambda: RandomForestClassifier(n_estimators=6, max_depth=6, **NO_BOOTSTRAP), Y3),
    ],
    ids=["gb-regressor", "rf-regressor", "gb-binary", "rf-binary", "rf-3class"],
)
def test_matches_shap_tree_explainer(make: Callable[[], BaseEstimator], y: np.ndarray) -> None:
    shap = pytest.importorskip("shap")
    est = make().fit(X, y)
    e = read_tree_ensemble(export_onnx(est, F))
    e = e.with_cover(compute_cover(e, X))  # = sklearn's node counts: same rows, no bootstrap, no subsample
    rows = X[:40]
    phi, base = shap_values(prepare(e), rows)
    explainer = shap.TreeExplainer(est)  # feature_perturbation="tree_path_dependent"
    want = np.asarray(explainer.shap_values(rows), dtype=np.float64)
    want_base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    if want.ndim == 2:  # regressors, GradientBoostingClassifier (binary, log-odds): [n, F]
        want = want[:, :, None]
    if e.n_outputs == 1 and want.shape[2] == 2:  # RF binary: shap gives both classes, ONNX stores class 1
        want, want_base = want[:, :, 1:], want_base[1:]
    assert want.shape == phi.shape
    np.testing.assert_allclose(phi, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(base, want_base, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# brute force: the Shapley formula over all subsets of E[f(x) | x_S] (path-dependent conditional expectation)
# --------------------------------------------------------------------------------------------------------------


def _conditional(e: TreeEnsemble, x: np.ndarray, subset: frozenset[int], k: int) -> np.ndarray:
    if e.left[k] < 0:
        return e.value[k]
    f = int(e.feature[k])
    if f in subset:
        go_left = e.default_left[k] if np.isnan(x[f]) else x[f] <= e.threshold[k]
        return _conditional(e, x, subset, int(e.left[k] if go_left else e.right[k]))
    wl, wr = (e.cover[e.left[k]] / e.cover[k], e.cover[e.right[k]] / e.cover[k]) if e.cover[k] > 0 else (0.5, 0.5)
    return wl * _conditional(e, x, subset, int(e.left[k])) + wr * _conditional(e, x, subset, int(e.right[k]))


def _brute_force(e: TreeEnsemble, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = e.n_features

    def value(subset: frozenset[int]) -> np.ndarray:
        return e.base_values + sum(_conditional(e, x, subset, int(r)) for r in e.roots)

    phi = np.zeros((n, e.n_outputs))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in itertools.combinations(others, size):
                phi[i] += w * (value(frozenset(s) | {i}) - value(frozenset(s)))
    return phi, value(frozenset())


def test_equals_brute_force_shapley_with_repeats_nan_and_empty_nodes() -> None:
    """Deep trees on few features (features repeat along paths), NaN rows, and a cover from a handful of rows
    (nodes no reference row reaches: the 0/0 split weights 1/2 each, in kernel and brute force alike)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    y = np.nan_to_num(x[:, 0]) * np.nan_to_num(x[:, 1]) + np.sin(3 * np.nan_to_num(x[:, 2]))
    y3 = np.digitize(y, [-0.5, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = [
            HistGradientBoostingRegressor(max_iter=4, max_depth=6, min_samples_leaf=5, random_state=0).fit(x, y),
            RandomForestClassifier(n_estimators=2, max_depth=7, random_state=0).fit(x, y3),
        ]
    for est in models:
        e = read_tree_ensemble(export_onnx(est, 4))
        e = e.with_cover(compute_cover(e, x[:25]))
        assert np.any(e.cover == 0)
        rows = x[25:31]
        for budget in (TABLES, QUADRATURE):
            phi, base = shap_values(prepare(e, table_budget_bytes=budget), rows)
            for r, row in enumerate(rows):
                want, want_base = _brute_force(e, row)
                np.testing.assert_allclose(phi[r], want, rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(base, want_base, rtol=1e-9, atol=1e-12)


def test_hand_built_ensemble_with_a_leaf_only_tree_and_a_repeated_feature() -> None:
    """TreeEnsemble is not ONNX-specific: any node order, a one-leaf tree, a path splitting twice on feature 0."""
    # tree 0 (root 4): x0 <= 0 ? (x0 <= -1 ? 1.0 : 2.0) : (x2 <= 0.5 ? 3.0 : 4.0); tree 1 (root 7): leaf 10.0
    e = TreeEnsemble(
        feature=[-1, 0, -1, -1, 0, 2, -1, -1, -1],
        threshold=[np.nan, -1.0, np.nan, np.nan, 0.0, 0.5, np.nan, np.nan, np.nan],
        default_left=[False, True, False, False, True, False, False, False, False],
        left=[-1, 0, -1, -1, 1, 6, -1, -1, -1],
        right=[-1, 2, -1, -1, 5, 8, -1, -1, -1],
        value=[[1.0], [0.0], [2.0], [0.0], [0.0], [0.0], [3.0], [10.0], [4.0]],
        cover=[10.0, 30.0, 20.0, 0.0, 100.0, 70.0, 35.0, 100.0, 35.0],
        roots=[4, 7],
        n_features=3,
        n_outputs=1,
        base_values=[0.5],
    )  # node 3 is unreachable (ignored)
    rows = np.array([[-2, 0, 0], [-0.5, 9, 1], [0.3, 0, 0.2], [np.nan, 0, np.nan], [5, 5, 5]], np.float32)
    for budget in (TABLES, QUADRATURE):
        phi, base = shap_values(prepare(e, table_budget_bytes=budget), rows)
        np.testing.assert_allclose(phi.sum(axis=1) + base, predict_raw(e, rows), rtol=0, atol=1e-12)
        assert np.all(phi[:, 1] == 0)  # never split on
        for r, row in enumerate(rows):
            want, want_base = _brute_force(e, row)
            np.testing.assert_allclose(phi[r], want, rtol=0, atol=1e-12)
            np.testing.assert_allclose(base, want_base, rtol=0, atol=1e-12)
    assert predict_raw(e, rows)[3, 0] == 0.5 + 1.0 + 10.0  # NaN goes left (default_left) at nodes 4 and 1
    assert predict_raw(e, rows[4:])[0, 0] == 0.5 + 4.0 + 10.0
    with pytest.raises(ValueError, match="exactly one child"):
        TreeEnsemble(feature=[0, -1], threshold=[0, 0], default_left=[0, 0], left=[1, -1], right=[-1, -1],
                     value=[[0], [1]], cover=[1, 1], roots=[0], n_features=1, n_outputs=1, base_values=[0])  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# the wrapper
# --------------------------------------------------------------------------------------------------------------


def test_wrapper_batches_threads_and_errors(fitted) -> None:  # noqa: ANN001
    _, _, e, rows = fitted["gb-3class"]
    prepared = prepare(e)
    phi, base = shap_values(prepared, rows)
    threaded, _ = shap_values(prepared, rows, n_threads=2, min_rows_per_thread=16)
    np.testing.assert_array_equal(threaded, phi)
    one, _ = shap_values(prepared, rows[3:4])
    np.testing.assert_array_equal(one, phi[3:4])
    empty, _ = shap_values(prepared, rows[:0])
    assert empty.shape == (0, F, 3)
    bare, bare_base = shap_values(e, rows[:5])  # a TreeEnsemble is prepared on the fly
    np.testing.assert_allclose(bare, phi[:5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(bare_base, base, rtol=0, atol=1e-12)
    np.testing.assert_allclose(shap_values(prepared, rows.astype(np.float64))[0], phi)  # converted to float32
    with pytest.raises(ValueError, match=r"rows of shape \[n, 6\]"):
        shap_values(prepared, rows[:, :5])
    with pytest.raises(ValueError, match="no node cover"):
        prepare(read_tree_ensemble(fitted["gb-3class"][1]))


@pytest.mark.parametrize("budget", [TABLES, QUADRATURE, 20_000], ids=["tables", "quadrature", "mixed"])
@pytest.mark.parametrize("name", ["gb-regressor", "hgb-binary", "gb-3class", "rf-3class"])
def test_row_block_and_threaded_paths_give_identical_values(fitted, name: str, budget: int) -> None:  # noqa: ANN001
    """One row (row kernel), blocks of rows (block kernel, a partial last block) and row ranges on threads add
    the same terms in the same order: bit-for-bit equal, whichever path a batch takes."""
    _, _, e, rows = fitted[name]
    prepared = prepare(e, table_budget_bytes=budget, max_table_depth=3 if budget == 20_000 else 8)
    batch, _ = shap_values(prepared, rows)  # 300 rows: blocks of 64 and a partial one
    singles = np.concatenate([shap_values(prepared, rows[r : r + 1])[0] for r in range(0, len(rows), 7)])
    np.testing.assert_array_equal(singles, batch[::7])
    for threads, min_rows in ((2, 1), (3, 50), (8, 16)):
        threaded, _ = shap_values(prepared, rows, n_threads=threads, min_rows_per_thread=min_rows)
        np.testing.assert_array_equal(threaded, batch)
    np.testing.assert_array_equal(shap_values(prepared, rows[5:7])[0], batch[5:7])  # two rows: the block kernel


def test_folded_tables_only_for_single_output_leaves_with_cover(fitted) -> None:  # noqa: ANN001
    p = prepare(fitted["gb-regressor"][2])
    assert p.stats["folded_leaves"] == p.stats["table_leaves"] == p.stats["n_leaves"]
    assert np.all(p.leaf_folded == (p.table_off >= 0))
    multi = prepare(fitted["rf-3class"][2])  # every tree feeds three outputs: plain K tables
    assert multi.stats["folded_leaves"] == 0 and multi.stats["table_leaves"] > 0
    assert prepare(fitted["gb-regressor"][2], table_budget_bytes=0).stats["folded_leaves"] == 0


def test_tree_explainer_uses_the_cores_and_reports_its_tables(fitted) -> None:  # noqa: ANN001
    from driftline.attribution import TreeExplainer, explainer_for

    _, model, e, rows = fitted["gb-regressor"]
    explainer = explainer_for(attach_cover_of(model, rows), None)
    assert isinstance(explainer, TreeExplainer)
    assert explainer.table_bytes == explainer.model.table_bytes > 0
    everywhere, base = explainer.explain(rows)  # all cores (os.cpu_count()) for a batch this size
    single, single_base = explainer.explain(rows, n_threads=1)  # what sampled monitoring may ask for
    np.testing.assert_array_equal(everywhere, single)
    np.testing.assert_array_equal(base, single_base)
    np.testing.assert_array_equal(single, shap_values(prepare(e), rows)[0])


def attach_cover_of(model: onnx.ModelProto, rows: np.ndarray) -> onnx.ModelProto:
    from driftline.attribution import attach_cover

    return attach_cover(model, rows)


def test_block_kernel_with_scratch_for_few_rows_gives_identical_values(fitted, monkeypatch) -> None:  # noqa: ANN001
    """Very large trees shrink the block (bounded scratch): same values, whatever the block."""
    import driftline.kernels.treeshap as ts

    _, _, e, rows = fitted["rf-regressor"]
    prepared = prepare(e)
    want, _ = shap_values(prepared, rows)
    monkeypatch.setattr(ts, "BLOCK_SCRATCH_BYTES", 8 * prepared.max_tree_nodes * 3)  # blocks of 3 rows
    np.testing.assert_array_equal(shap_values(prepared, rows)[0], want)
