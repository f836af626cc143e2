"""The CUDA schema check against the CPU kernel. Runs on a GPU, or in the simulator:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/kernels/test_validate_cuda.py

(the variable must be set before numba is imported, hence a separate pytest run).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

if not cuda.is_available():
    pytest.skip("no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)", allow_module_level=True)

from driftline.kernels.validate import SchemaArrays, validate, validate_rows  # noqa: E402
from driftline.kernels.validate_cuda import schema_to_device, validate_rows_cuda  # noqa: E402

NAMES = ["area", "rooms", "kind", "score", "free"]


def schema(**actions: str) -> SchemaArrays:
    return SchemaArrays.build(
        NAMES, min=[0.0, 0.0, None, -1.0, None], max=[500.0, 12.0, None, 1.0, None],
        integer=[False, True, False, False, False], allow_missing=[False, True, False, True, True],
        categories=[None, None, [0, 1, 3], None, None], train_min=[20.0, 1.0, None, -0.5, None],
        train_max=[300.0, 8.0, None, 0.9, None], actions=actions, allow_infinite=[False, False, False, False, True],
        inferred=[(), ("not_integer",), (), ("above_max",), ()])


def batch(rng: np.random.Generator, rows: int, dtype: type) -> np.ndarray:
    X = np.column_stack([
        rng.uniform(-50, 600, rows),  # below_min, above_max, the training range
        rng.integers(-1, 14, rows) + (rng.random(rows) < 0.2) * 0.5,  # fractional: not_integer (inferred)
        rng.integers(-1, 6, rows) + (rng.random(rows) < 0.1) * 0.25,  # unknown categories
        rng.uniform(-1.2, 1.2, rows),
        rng.normal(size=rows),
    ])
    X[rng.random(X.shape) < 0.05] = np.nan
    X[rng.random(X.shape) < 0.03] = np.inf
    X[rng.random(X.shape) < 0.03] = -np.inf
    X[: min(rows, 3)] = [100.0, 3.0, 1.0, 0.1, 0.0]  # valid rows too
    return np.ascontiguousarray(X.astype(dtype))


@pytest.mark.parametrize("rows", [1, 7, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_check_equals_the_cpu_kernel(rows: int, dtype: type) -> None:
    arrays = schema(below_training_range="reject", infinite="flag")
    X = batch(np.random.default_rng(rows), rows, dtype)
    want = np.empty(rows, dtype=np.uint32)
    want_failed = validate_rows(X, arrays.for_dtype(X.dtype), arrays.meta, arrays.cat_ok, want)
    assert rows == 1 or 0 < want_failed < rows  # valid and failing rows both
    device_schema = schema_to_device(arrays, dtype)
    got = np.full(rows, 7, dtype=np.uint32)
    assert validate_rows_cuda(X, *device_schema, got) == want_failed  # host rows and mask: copied both ways
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, validate(arrays, X).row_mask)

    stream = cuda.stream()  # device rows and mask on a stream: the count stays on the device too
    mask = cuda.device_array(rows, dtype=np.uint32)
    failed = validate_rows_cuda(cuda.to_device(X, stream=stream), *device_schema, mask, stream=stream, to_host=False)
    assert int(failed.copy_to_host(stream=stream)[0]) == want_failed
    np.testing.assert_array_equal(mask.copy_to_host(stream=stream), want)


def test_policies_that_switch_kinds_off_and_bad_shapes() -> None:
    arrays = schema(missing="off", unknown_category="off", below_min="off", not_integer="flag")
    X = batch(np.random.default_rng(9), 40, np.float64)
    want = np.empty(40, dtype=np.uint32)
    failed = validate_rows(X, arrays.params, arrays.meta, arrays.cat_ok, want)
    got = np.empty(40, dtype=np.uint32)
    assert validate_rows_cuda(X, arrays.params, arrays.meta, arrays.cat_ok, got, threads_per_block=4,
                              max_blocks=3) == failed  # numpy schema arrays are copied over; the grid wraps
    np.testing.assert_array_equal(got, want)
    assert validate_rows_cuda(X[:0], arrays.params, arrays.meta, arrays.cat_ok, np.empty(0, np.uint32)) == 0
    with pytest.raises(ValueError, match="features"):
        validate_rows_cuda(X[:, :3], arrays.params, arrays.meta, arrays.cat_ok, got)
    with pytest.raises(ValueError, match="row_mask"):
        validate_rows_cuda(X, arrays.params, arrays.meta, arrays.cat_ok, np.empty(40, np.int64))
