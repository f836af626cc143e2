"""Words of a text column, as driftline counts them in training and in live traffic.

One tokeniser for both sides: lower-cased runs of Unicode letters and digits (``\\w+`` with ``re.UNICODE``),
so "Się" and "się" are one word and Polish diacritics stay inside words. A word's id is its index in the
column's training word list (most frequent first); a word not in that list is *out of vocabulary* and gets one
of ``HASH_BUCKETS`` ids after the list, by a stable hash, so the counts of unknown words still form a bounded,
mergeable table (a one-row count sketch) in which a new language's words pile up.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

TOKEN = re.compile(r"\w+", re.UNICODE)
HASH_BUCKETS = 256  # ids for out-of-vocabulary words, after the vocabulary
VOCABULARY = 500  # training words kept per text column (most frequent first)
LANGUAGE_WORDS = 50  # of those, the first this many are the language check's reference words


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def top_words(texts: Iterable[str | None], limit: int = VOCABULARY) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The ``limit`` most frequent words of ``texts`` with their counts (ties by the word, for determinism)."""
    counts: Counter[str] = Counter()
    for text in texts:
        if text:
            counts.update(tokens(text))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return tuple(w for w, _ in ranked), tuple(c for _, c in ranked)


def bucket(word: str) -> int:
    """The out-of-vocabulary bucket of a word: stable across processes and machines (crc32, not hash())."""
    return zlib.crc32(word.encode("utf-8")) % HASH_BUCKETS


@dataclass(frozen=True)
class TokenizedText:
    """A batch of texts as word ids: ``ids[offsets[r]:offsets[r + 1]]`` are row r's words; ``chars`` its length in
    characters. A missing text (null) is empty text: the protocol's strings cannot tell them apart."""

    ids: np.ndarray  # int64 [total words]
    offsets: np.ndarray  # int64 [rows + 1]
    chars: np.ndarray  # float64 [rows]

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1


class WordIds:
    """Maps words to ids for one text column's vocabulary."""

    def __init__(self, vocabulary: Sequence[str]) -> None:
        self.size = len(vocabulary)
        self._ids = {w: i for i, w in enumerate(vocabulary)}

    def id_of(self, word: str) -> int:
        found = self._ids.get(word)
        return found if found is not None else self.size + bucket(word)

    def tokenize(self, cells: Sequence[object]) -> TokenizedText:
        """Word ids of every cell; a missing cell (None) is empty."""
        words: list[list[str]] = []
        chars = np.empty(len(cells), dtype=np.float64)
        for r, cell in enumerate(cells):
            if cell is None:
                chars[r] = 0
                words.append([])
                continue
            text = cell.decode("utf-8", errors="replace") if isinstance(cell, bytes) else str(cell)
            chars[r] = len(text)
            words.append(tokens(text))
        offsets = np.zeros(len(cells) + 1, dtype=np.int64)
        np.cumsum([len(w) for w in words], out=offsets[1:])
        flat = [w for row in words for w in row]
        if not flat:
            return TokenizedText(np.zeros(0, dtype=np.int64), offsets, chars)
        # one dictionary lookup per distinct word of the batch, not per word
        unique, inverse = np.unique(np.array(flat, dtype=object), return_inverse=True)
        unique_ids = np.fromiter((self.id_of(w) for w in unique), dtype=np.int64, count=len(unique))
        return TokenizedText(unique_ids[inverse.reshape(-1)], offsets, chars)
