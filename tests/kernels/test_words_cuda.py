"""The CUDA word kernels against their CPU twins. Runs on a GPU, or in the simulator:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/kernels/test_words_cuda.py

(the variable must be set before numba is imported, hence a separate pytest run). Launch geometry is
small so that several blocks and the grid-stride loop both run.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

if not cuda.is_available():
    pytest.skip("no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to use the simulator)", allow_module_level=True)

from driftline.kernels.words import count_ids, row_word_stats  # noqa: E402
from driftline.kernels.words_cuda import count_ids_cuda, row_word_stats_cuda  # noqa: E402


def batch(rng: np.random.Generator, rows: int, vocabulary: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(0, 9, rows)
    lengths[rng.random(rows) < 0.2] = 0
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = rng.integers(0, vocabulary + buckets, int(offsets[-1])).astype(np.int64)
    return ids, offsets


@pytest.mark.parametrize(("threads", "blocks"), [(8, 3), (32, 64), (16, 1)])
def test_cuda_count_ids_matches_cpu(threads: int, blocks: int) -> None:
    rng = np.random.default_rng(threads)
    ids, _ = batch(rng, 60, 30, 8)
    ids[:3] = [-2, 38, 500]  # out of range: the last entry
    start = rng.integers(0, 3, 38).astype(np.int64)
    cpu = start.copy()
    count_ids(ids, cpu)
    host = start.copy()
    assert count_ids_cuda(ids, host, threads_per_block=threads, max_blocks=blocks) is host  # host in, in place
    np.testing.assert_array_equal(host, cpu)
    device = cuda.to_device(start)
    count_ids_cuda(cuda.to_device(ids), device, threads_per_block=threads, max_blocks=blocks)  # stays on device
    np.testing.assert_array_equal(device.copy_to_host(), cpu)


def test_cuda_count_ids_of_an_empty_batch_and_bad_inputs() -> None:
    counts = np.arange(5, dtype=np.int64)
    count_ids_cuda(np.zeros(0, dtype=np.int64), counts)
    assert counts.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="integer"):
        count_ids_cuda(np.zeros(3), counts)
    with pytest.raises(ValueError, match="no entry"):
        count_ids_cuda(np.ones(2, dtype=np.int64), np.zeros(0, dtype=np.int64))


@pytest.mark.parametrize(("threads", "blocks", "vocabulary", "language"),
                         [(8, 3, 30, 10), (32, 64, 30, 30), (16, 1, 0, 0)])
def test_cuda_row_word_stats_match_cpu(threads: int, blocks: int, vocabulary: int, language: int) -> None:
    rng = np.random.default_rng(threads + vocabulary)
    ids, offsets = batch(rng, 90, max(vocabulary, 1), 8)
    rows = len(offsets) - 1
    cpu = np.full((3, rows), np.nan)
    row_word_stats(ids, offsets, vocabulary, language, cpu[0], cpu[1], cpu[2])
    host = [np.full(rows, np.nan) for _ in range(3)]
    row_word_stats_cuda(ids, offsets, vocabulary, language, *host, threads_per_block=threads, max_blocks=blocks)
    np.testing.assert_array_equal(np.vstack(host), cpu)
    device = [cuda.to_device(np.full(rows, np.nan)) for _ in range(3)]
    row_word_stats_cuda(cuda.to_device(ids), cuda.to_device(offsets), vocabulary, language, *device,
                        threads_per_block=threads, max_blocks=blocks)
    np.testing.assert_array_equal(np.vstack([d.copy_to_host() for d in device]), cpu)


def test_cuda_row_word_stats_of_wordless_rows_and_an_empty_batch() -> None:
    offsets = np.zeros(4, dtype=np.int64)  # three rows, no words at all
    out = [np.full(3, np.nan) for _ in range(3)]
    row_word_stats_cuda(np.zeros(0, dtype=np.int64), offsets, 5, 2, *out, threads_per_block=2)
    assert np.vstack(out).tolist() == [[0, 0, 0]] * 3
    none = [np.empty(0) for _ in range(3)]
    row_word_stats_cuda(np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64), 5, 2, *none)
    with pytest.raises(ValueError, match="tokens_out"):
        row_word_stats_cuda(np.zeros(0, dtype=np.int64), offsets, 5, 2, np.empty(2), *out[1:])


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_launch_helper_grids_and_a_stream_at_odd_batch_sizes(rows: int) -> None:
    rng = np.random.default_rng(rows)
    ids, offsets = batch(rng, rows, 30, 8)
    cpu = np.full((3, rows), np.nan)
    row_word_stats(ids, offsets, 30, 10, cpu[0], cpu[1], cpu[2])
    counts = np.zeros(38, dtype=np.int64)
    count_ids(ids, counts)
    stream = cuda.stream()
    device = [cuda.to_device(np.full(rows, np.nan), stream=stream) for _ in range(3)]
    row_word_stats_cuda(cuda.to_device(ids, stream=stream), cuda.to_device(offsets, stream=stream), 30, 10,
                        *device, stream=stream)  # device outputs: nothing waited for until read back
    np.testing.assert_array_equal(np.vstack([d.copy_to_host(stream=stream) for d in device]), cpu)
    host = np.zeros(38, dtype=np.int64)
    count_ids_cuda(ids, host, stream=stream)  # host counts: copied back, the stream waited for
    np.testing.assert_array_equal(host, counts)
    with pytest.raises(ValueError, match="threads_per_block"):
        count_ids_cuda(ids, host, threads_per_block=0)
