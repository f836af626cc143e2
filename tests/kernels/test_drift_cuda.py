"""The CUDA update against its CPU twin. Runs on a GPU, or in the simulator:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/kernels/test_drift_cuda.py

(the variable must be set before numba is imported, hence a separate pytest run). Launch geometry is
small so that several blocks and the grid-stride loop both run.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

if not cuda.is_available():
    pytest.skip("no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)", allow_module_level=True)

from driftline.kernels.drift import BinLayout, DriftState, empty_state, state_of  # noqa: E402
from driftline.kernels.drift_cuda import layout_to_device, update_from_device  # noqa: E402


def assert_same(gpu: DriftState, cpu: DriftState) -> None:
    for f in ("counts", "missing", "n", "min", "max"):
        np.testing.assert_array_equal(getattr(gpu, f), getattr(cpu, f), err_msg=f)
    for f in ("mean", "m2"):
        np.testing.assert_allclose(getattr(gpu, f), getattr(cpu, f), rtol=1e-9, atol=1e-12, err_msg=f)


def layout_and_batch(rng: np.random.Generator, rows: int) -> tuple[BinLayout, np.ndarray]:
    train = rng.normal(10, 3, 500)
    continuous = np.unique(np.quantile(train, np.arange(8) / 8, method="inverted_cdf")).tolist()
    continuous.append(float(np.nextafter(train.max(), np.inf)))
    many = np.unique(rng.normal(10, 3, 40)).tolist()  # > 32 edges: the binary-search path
    layout = BinLayout.from_columns([continuous, [1.0, 2.0, 3.0, np.nextafter(3.0, np.inf)], many, [], []],
                                    [None, None, None, 3, None])
    X = np.column_stack([
        rng.normal(10, 4, rows),  # wider than training: under- and overflow
        rng.integers(0, 5, rows),  # discrete, 0 and 4 outside
        rng.normal(10, 3, rows),
        rng.integers(-1, 5, rows) + (rng.random(rows) < 0.1) * 0.5,  # codes, "other" included
        rng.normal(0, 1, rows),  # no edges: one bin
    ])
    X[rng.random(X.shape) < 0.08] = np.nan
    X[rng.random(rows) < 0.03, 0] = np.inf
    X[rng.random(rows) < 0.03, 2] = -np.inf
    return layout, X


@pytest.mark.parametrize(("dtype", "threads", "blocks"),
                         [(np.float64, 8, 3), (np.float32, 16, 64), (np.float64, 32, 1),
                          (np.float64, 5, 2), (np.float32, 15, 3)])  # 5 columns: one column per thread
def test_cuda_update_matches_cpu(dtype: type, threads: int, blocks: int) -> None:
    rng = np.random.default_rng(threads)
    layout, X = layout_and_batch(rng, 120)
    X = X.astype(dtype)
    device_layout = layout_to_device(layout)
    gpu = empty_state(layout)
    cpu = empty_state(layout)
    for part in np.array_split(X, 3):  # several batches: the host-side Chan merge runs too
        update_from_device(gpu, cuda.to_device(np.ascontiguousarray(part)), *device_layout,
                           threads_per_block=threads, max_blocks=blocks)
        cpu.update(part, layout)
    assert_same(gpu, cpu)
    assert_same(gpu, state_of(X, layout))


@pytest.mark.parametrize("rows", [1, 7, 1000])
@pytest.mark.parametrize("shared", [True, False])
def test_shared_and_global_statistics_match_cpu_at_odd_batch_sizes(rows: int, shared: bool) -> None:
    layout, X = layout_and_batch(np.random.default_rng(rows), rows)
    X = X.astype(np.float32)
    stream = cuda.stream()
    gpu = empty_state(layout)
    # the launch helper picks the grid (on the simulator a small fixed device: 1000 rows wrap it)
    update_from_device(gpu, cuda.to_device(X, stream=stream), *layout_to_device(layout, stream=stream),
                       stream=stream, shared=shared)
    assert_same(gpu, state_of(X, layout))


def test_a_layout_too_wide_for_shared_memory_uses_global_atomics() -> None:
    wide = BinLayout.from_columns([np.arange(600.0).tolist()] * 5, [None] * 5)  # 5 x 601 bins > SHARED_CELLS
    X = np.random.default_rng(3).uniform(-5, 605, (20, 5))
    gpu = empty_state(wide)
    update_from_device(gpu, cuda.to_device(X), *layout_to_device(wide))
    assert_same(gpu, state_of(X, wide))
    with pytest.raises(ValueError, match="shared memory"):
        update_from_device(empty_state(wide), cuda.to_device(X), *layout_to_device(wide), shared=True)


def test_cuda_update_of_an_empty_batch_changes_nothing() -> None:
    layout, X = layout_and_batch(np.random.default_rng(0), 10)
    state = state_of(X, layout)
    before = state.copy()
    update_from_device(state, cuda.to_device(X[:0]), *layout_to_device(layout), threads_per_block=4)
    assert_same(state, before)


def test_cuda_update_checks_its_inputs() -> None:
    layout, X = layout_and_batch(np.random.default_rng(1), 10)
    device_layout = layout_to_device(layout)
    with pytest.raises(ValueError, match="columns"):
        update_from_device(empty_state(layout), cuda.to_device(np.ascontiguousarray(X[:, :3])), *device_layout)
    for shared in (True, False):
        narrow = empty_state(BinLayout.from_columns([[1.0]] * 5, [None] * 5))
        before = narrow.copy()
        with pytest.raises(ValueError, match="narrower"):
            update_from_device(narrow, cuda.to_device(X), *device_layout, shared=shared)
        assert_same(narrow, before)  # nothing folded in
    with pytest.raises(ValueError, match="float32 or float64"):
        update_from_device(empty_state(layout), cuda.to_device(np.zeros((4, 5), dtype=np.int32)), *device_layout)
