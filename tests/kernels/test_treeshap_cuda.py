"""The CUDA twin of the TreeSHAP kernel must equal the CPU kernel (run under NUMBA_ENABLE_CUDASIM=1 without a GPU).

Kept small for the simulator (every CUDA thread is a Python thread there): a few shallow trees, a few rows,
and few threads per block and blocks, so the grid-stride loop wraps several times.
"""

from __future__ import annotations

import pytest
from numba import cuda

if not cuda.is_available():
    pytest.skip("no CUDA device (NUMBA_ENABLE_CUDASIM=1 before numba's import simulates one)", allow_module_level=True)

import warnings  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    GradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)

from driftline.kernels.treeshap import compute_cover, prepare, shap_values  # noqa: E402
from driftline.kernels.treeshap_cuda import prepare_cuda, shap_values_cuda  # noqa: E402
from driftline.onnx_trees import read_tree_ensemble  # noqa: E402
from driftline.trainer.export import export_onnx  # noqa: E402

F = 5
RNG = np.random.default_rng(5)
X = RNG.normal(size=(200, F)).astype(np.float32)
X[RNG.random(X.shape) < 0.1] = np.nan
Y = 2.0 * np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1]) ** 2 + np.nan_to_num(X[:, 2])
Y3 = np.digitize(Y, [-1.0, 1.0])
MODELS = {
    "hgb-regressor": (lambda: HistGradientBoostingRegressor(max_iter=3, max_depth=3, random_state=0), Y),
    "gb-3class": (lambda: GradientBoostingClassifier(n_estimators=1, max_depth=2, random_state=0), Y3),  # 1 tree/class
    "rf-3class": (lambda: RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0), Y3),  # 3 outputs/leaf
}


@pytest.mark.parametrize("name", list(MODELS))
def test_cuda_twin_equals_cpu_kernel(name: str) -> None:
    make, y = MODELS[name]
    rows = np.nan_to_num(X, nan=0.0) if name.startswith("gb") else X  # GradientBoosting rejects NaN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make().fit(rows, y)
    e = read_tree_ensemble(export_onnx(est, F))
    e = e.with_cover(compute_cover(e, rows))
    prepared = prepare(e)
    batch = rows[:5]
    want, want_base = shap_values(prepared, batch)

    model = prepare_cuda(prepared)
    phi, base = shap_values_cuda(model, cuda.to_device(batch), threads_per_block=16, max_blocks=2)
    assert 5 * model.n_leaves > 16 * 2  # the grid-stride loop wraps
    got = phi.copy_to_host()
    assert got.shape == want.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(base, want_base)

    empty, _ = shap_values_cuda(model, cuda.to_device(batch[:0]))
    assert empty.shape == (0, F, e.n_outputs)
    with pytest.raises(ValueError, match="float32 device rows"):
        shap_values_cuda(model, cuda.to_device(batch.astype(np.float64)))


def small_model(name: str = "hgb-regressor"):  # noqa: ANN201
    make, y = MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make().fit(X, y)
    e = read_tree_ensemble(export_onnx(est, F))
    return prepare(e.with_cover(compute_cover(e, X)))


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_shared_and_global_paths_equal_the_cpu_kernel_at_odd_batch_sizes(rows: int) -> None:
    prepared = small_model()
    batch = np.ascontiguousarray(np.resize(X, (rows, F)))  # 1000 rows: X repeated, NaNs included
    want, _ = shap_values(prepared, batch)
    # 40 splits a slice: several slices, so blocks go through the barriers and reload shared memory
    model = prepare_cuda(prepared, shared_path_entries=40)
    assert len(model.slices) > 2 and model.fits_shared
    stream = cuda.stream()
    device_rows = cuda.to_device(batch, stream=stream)
    for shared in (True, False):
        phi, _ = shap_values_cuda(model, device_rows, shared=shared, stream=stream, to_host=True)
        assert isinstance(phi, np.ndarray)
        np.testing.assert_allclose(phi, want, rtol=0, atol=1e-12)
    # the launch helper's own choice (shared memory from SHARED_MIN_ROWS rows), left on the device
    phi, _ = shap_values_cuda(model, device_rows, stream=stream)
    assert hasattr(phi, "copy_to_host")
    np.testing.assert_allclose(phi.copy_to_host(stream=stream), want, rtol=0, atol=1e-12)


def test_host_rows_are_copied_over_and_too_long_paths_stay_in_global_memory() -> None:
    prepared = small_model()
    want, _ = shap_values(prepared, X[:3])
    model = prepare_cuda(prepared, shared_path_entries=1)  # every path is longer than one split
    assert not model.fits_shared
    phi, _ = shap_values_cuda(model, X[:3], to_host=True)  # numpy rows in: copied to the device first
    np.testing.assert_allclose(phi, want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shared memory"):
        shap_values_cuda(model, X[:3], shared=True)
    with pytest.raises(ValueError, match="shared_path_entries"):
        prepare_cuda(prepared, shared_path_entries=0)
