"""The language check of a text column: do the live texts use the words the training texts used?

A window's word table (training words, then hashed buckets for the rest; see :mod:`driftline.registry.words`)
is compared with the training one. Text in another language, or a vocabulary that took over, shows as
the window's most frequent words no longer being the training's most frequent ones ("się", "i", "w" for
Polish listings): the check alarms when fewer than half of the window's top words are among the training's.
The note says what moved: the overlap, the share of the training's common words, the share of unknown words.

Word counts are not independent draws (a listing repeats its words), so the generic chi-square and PSI
alarms, which assume they are, are not used for word tables: they would fire on fresh text of the same kind.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from driftline.kernels.drift_stats import ColumnDrift
from driftline.kernels.words import top_overlap
from driftline.registry.table import TableColumn
from driftline.registry.words import HASH_BUCKETS, LANGUAGE_WORDS

TOP = 20  # the window's most frequent words compared with the training's
MIN_OVERLAP = 0.5  # below this share of the top words in common, another language or vocabulary dominates
MIN_WORDS = 2000  # words in a window before it is judged (~80 listings of 25 words)


def judge(drift: ColumnDrift, live: np.ndarray, reference: np.ndarray, column: TableColumn,
          min_words: int = MIN_WORDS) -> ColumnDrift:
    """``drift`` (the generic statistics of the word table) with the language check's alarm and note."""
    vocabulary = len(column.words)
    width = vocabulary + HASH_BUCKETS
    live = np.asarray(live[:width], dtype=np.float64)
    reference = np.asarray(reference[:width], dtype=np.float64)
    words = int(live.sum())
    # The chi-square p-value treats words as independent draws; they are not (see the module docstring).
    drift = replace(drift, p_value=math.nan, p_adjusted=math.nan)
    if words < min_words:
        return replace(drift, alarm=False, alarms=(), note=f"too few words: {words} of {min_words}")
    common = min(LANGUAGE_WORDS, vocabulary)
    overlap = top_overlap(live.astype(np.int64), TOP, min(TOP, vocabulary))
    shares = [(table[:common].sum() / max(table.sum(), 1.0), table[vocabulary:].sum() / max(table.sum(), 1.0))
              for table in (live, reference)]
    (common_live, unknown_live), (common_train, unknown_train) = shares
    alarm = bool(overlap < MIN_OVERLAP)
    note = (f"top-{TOP} words {overlap:.0%} shared with training; common training words ({', '.join(column.words[:5])}"
            f", ...) {common_live:.0%} of words (training {common_train:.0%}); unknown words {unknown_live:.0%} "
            f"(training {unknown_train:.0%})")
    return replace(drift, alarm=alarm, alarms=("language",) if alarm else (), note=note)
