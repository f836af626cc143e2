"""Word-id kernels against plain Python loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftline.kernels.words import count_ids, row_word_stats, top_overlap


def naive_counts(ids: list[int], size: int) -> np.ndarray:
    out = np.zeros(size, dtype=np.int64)
    for i in ids:
        out[i if 0 <= i < size else size - 1] += 1
    return out


def naive_row_stats(ids: list[int], offsets: list[int], vocabulary: int, language: int) -> np.ndarray:
    out = np.zeros((3, len(offsets) - 1))
    for r in range(len(offsets) - 1):
        row = ids[offsets[r]:offsets[r + 1]]
        out[:, r] = [len(row), sum(i >= vocabulary for i in row), sum(i < language for i in row)]
    return out


def batch(rng: np.random.Generator, rows: int, vocabulary: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(0, 12, rows)
    lengths[rng.random(rows) < 0.2] = 0  # texts without words, and missing cells
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = rng.integers(0, vocabulary + buckets, int(offsets[-1])).astype(np.int64)
    return ids, offsets


@pytest.mark.parametrize("seed", range(4))
def test_count_ids_matches_a_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids, _ = batch(rng, 200, 40, 16)
    counts = rng.integers(0, 5, 56).astype(np.int64)  # counts accumulate onto what is there
    expected = counts + naive_counts(ids.tolist(), 56)
    count_ids(ids, counts)
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == expected.sum()


def test_count_ids_sends_out_of_range_ids_to_the_last_entry() -> None:
    counts = np.zeros(5, dtype=np.int64)
    count_ids(np.array([-3, 0, 4, 5, 99, 2, -1], dtype=np.int64), counts)
    assert counts.tolist() == [1, 0, 1, 0, 5]


def test_count_ids_of_an_empty_batch_changes_nothing() -> None:
    counts = np.arange(4, dtype=np.int64)
    count_ids(np.zeros(0, dtype=np.int64), counts)
    assert counts.tolist() == [0, 1, 2, 3]
    count_ids(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="no entry"):
        count_ids(np.array([1], dtype=np.int64), np.zeros(0, dtype=np.int64))


def test_count_ids_into_a_row_of_a_state() -> None:
    counts = np.zeros((3, 10), dtype=np.int64)
    count_ids(np.array([1, 1, 9, 12], dtype=np.int64), counts[1])
    assert counts[1].tolist() == [0, 2, 0, 0, 0, 0, 0, 0, 0, 2] and counts[[0, 2]].sum() == 0


@pytest.mark.parametrize(("vocabulary", "language"), [(40, 10), (40, 40), (0, 0), (40, 0)])
def test_row_word_stats_match_a_loop(vocabulary: int, language: int) -> None:
    rng = np.random.default_rng(vocabulary + language)
    ids, offsets = batch(rng, 150, max(vocabulary, 1), 16)
    out = np.full((3, 150), np.nan)
    row_word_stats(ids, offsets, vocabulary, language, out[0], out[1], out[2])
    np.testing.assert_array_equal(out, naive_row_stats(ids.tolist(), offsets.tolist(), vocabulary, language))
    assert out[0].sum() == len(ids)


def test_row_word_stats_of_empty_rows_and_an_empty_batch() -> None:
    ids = np.array([0, 7, 3], dtype=np.int64)
    offsets = np.array([0, 0, 2, 2, 3], dtype=np.int64)  # rows 0 and 2 have no words
    out = np.full((3, 4), np.nan)
    row_word_stats(ids, offsets, 5, 2, out[0], out[1], out[2])
    assert out.tolist() == [[0, 2, 0, 1], [0, 1, 0, 0], [0, 1, 0, 0]]
    none = np.empty((3, 0))
    row_word_stats(np.zeros(0, dtype=np.int64), np.zeros(1, dtype=np.int64), 5, 2, none[0], none[1], none[2])


def naive_top_overlap(counts: list[int], k: int, reference_top: int) -> float:
    ranked = sorted((i for i, c in enumerate(counts) if c > 0), key=lambda i: (-counts[i], i))[:k]
    return math.nan if not ranked else sum(i < reference_top for i in ranked) / len(ranked)


def test_top_overlap_matches_a_sort() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        counts = rng.integers(0, 4, int(rng.integers(1, 30))) * (rng.random() < 0.9)
        k, top = int(rng.integers(1, 12)), int(rng.integers(0, 15))
        expected = naive_top_overlap(counts.tolist(), k, top)
        got = top_overlap(counts, k, top)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-15)


def test_top_overlap_ties_go_to_the_lower_id_and_edges() -> None:
    counts = np.array([0, 3, 3, 0, 3, 1])
    assert top_overlap(counts, 2, 2) == 0.5  # ids 1 and 2 (not 4): one of them below 2
    assert top_overlap(counts, 10, 3) == 0.5  # only 4 ids have words
    assert top_overlap(counts, 1, 0) == 0.0
    assert math.isnan(top_overlap(np.zeros(5), 3, 2))
    assert math.isnan(top_overlap(np.zeros(0, dtype=np.int64), 3, 2))
    assert math.isnan(top_overlap(counts, 0, 2))
    with pytest.raises(ValueError):
        top_overlap(counts.reshape(2, 3), 1, 1)
    with pytest.raises(ValueError):
        top_overlap(counts, -1, 1)


def test_a_new_language_has_little_overlap() -> None:
    from driftline.registry.words import HASH_BUCKETS, WordIds, top_words

    english = ["the cat sat on the mat", "the dog and the cat", "a cat on a mat and a dog"]
    polish = ["kot siedzi na macie i się bawi", "pies i kot", "na macie się śpi"]
    words, _ = top_words(english)
    ids = WordIds(words)
    table = np.zeros(len(words) + HASH_BUCKETS, dtype=np.int64)
    count_ids(ids.tokenize(english).ids, table)
    assert top_overlap(table, 3, 3) == 1.0
    live = np.zeros_like(table)
    tokenized = ids.tokenize([*polish, None])
    count_ids(tokenized.ids, live)
    assert top_overlap(live, 3, 3) == 0.0
    out = np.empty((3, tokenized.rows))
    row_word_stats(tokenized.ids, tokenized.offsets, ids.size, 3, out[0], out[1], out[2])
    assert out[0, -1] == 0 and np.all(out[1, :3] > 0)
