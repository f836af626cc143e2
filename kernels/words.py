"""Kernels over the word ids of a text column: the word table's counts and each row's word statistics.

Input is what :class:`driftline.registry.words.WordIds` makes of a batch of texts: ``ids`` int64 [total
words] and ``offsets`` int64 [rows + 1], row ``r``'s words being ``ids[offsets[r]:offsets[r + 1]]``. Ids
``0 .. V-1`` are the column's training vocabulary, most frequent first (so ids below ``L`` are the ``L``
reference words of the language check); ids ``V .. V+H-1`` are hashed out-of-vocabulary buckets.

:func:`count_ids` and :func:`row_word_stats` have CUDA twins in :mod:`driftline.kernels.words_cuda`, compiled
from the same per-element source (:func:`clamp_id_py`, :func:`word_flags_py`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["count_ids", "row_word_stats", "top_overlap"]


def clamp_id_py(word, size):  # noqa: ANN001, ANN201 - compiled for CPU and CUDA
    """The counts entry of a word id: itself, or the last entry when it lies outside ``0 .. size-1``.

    Out-of-range ids land in the last entry rather than being dropped so that every word is counted once
    and the table's total stays the number of words.
    """
    if word < 0 or word >= size:
        return size - 1
    return word


def word_flags_py(word, vocabulary, language):  # noqa: ANN001, ANN201 - compiled for CPU and CUDA
    """(out of vocabulary, language reference word) of one id, as 0/1 integers."""
    oov = 1 if word >= vocabulary else 0
    reference = 1 if word < language else 0
    return oov, reference


_clamp_id = njit(nogil=True, cache=True, inline="always")(clamp_id_py)
_word_flags = njit(nogil=True, cache=True, inline="always")(word_flags_py)


@njit(nogil=True, cache=True)
def count_ids(ids, counts):  # noqa: ANN001, ANN201
    """Add 1 to ``counts[id]`` for every id in ``ids``, in place; ids outside ``0 .. len(counts)-1`` go to
    the last entry. ``counts`` may be empty only when ``ids`` is."""
    size = counts.shape[0]
    if size == 0:
        if ids.shape[0]:
            raise ValueError("count_ids: no entry to count words in")  # counts[-1] would write out of bounds
        return
    for i in range(ids.shape[0]):
        counts[_clamp_id(ids[i], size)] += 1


@njit(nogil=True, cache=True)
def row_word_stats(ids, offsets, vocabulary, language, tokens_out, oov_out, language_out):  # noqa: ANN001, ANN201
    """Per row: its number of words, of out-of-vocabulary words (``id >= vocabulary``) and of language
    reference words (``id < language``), written as float64 counts into the three ``[rows]`` outputs.

    Counts rather than shares so that the caller decides what a row without words means (the table view
    makes both shares NaN there).
    """
    rows = offsets.shape[0] - 1
    for r in range(rows):
        oov = 0
        reference = 0
        for i in range(offsets[r], offsets[r + 1]):
            flag_oov, flag_reference = _word_flags(ids[i], vocabulary, language)
            oov += flag_oov
            reference += flag_reference
        tokens_out[r] = np.float64(offsets[r + 1] - offsets[r])
        oov_out[r] = np.float64(oov)
        language_out[r] = np.float64(reference)


def top_overlap(live_counts: np.ndarray, k: int, reference_top: int) -> float:
    """The share of the live table's ``k`` most frequent ids that are below ``reference_top`` (the training's
    top words, which come first in the vocabulary). Only ids with a positive count take part, ties go to the
    lower id, so fewer than ``k`` ids may be compared; NaN when the live table is empty or ``k`` is 0.

    A new language keeps the text column's length and word counts but replaces its most frequent words, so
    this falls from near 1 towards 0.
    """
    counts = np.asarray(live_counts)
    if counts.ndim != 1:
        raise ValueError(f"live_counts must be 1-D, got shape {counts.shape}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    present = np.flatnonzero(counts > 0)
    if present.size == 0 or k == 0:
        return math.nan
    # stable sort of ascending ids by descending count: equal counts keep the lower id first
    order = present[np.argsort(-counts[present], kind="stable")]
    top = order[:k]
    return float(np.count_nonzero(top < reference_top)) / top.size
