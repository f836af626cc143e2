"""A mixed table's rows as the numbers driftline validates and monitors, the same way in training and serving.

The model sees one-hot and TF-IDF columns; people think in columns. So validation and drift watch one value
per column, and a few per text column:

* a number or boolean column: its value;
* a categorical column: the index of its value in the training categories (most frequent first); an unseen
  value gets the code ``len(categories)`` (the drift table's "other" bin, and an unknown category to the
  validator); missing (null or "") is NaN;
* a text column: its length in words (``NAME``), then, after every column, ``NAME.chars`` (length in characters),
  ``NAME.oov`` (share of its words not among the training words) and ``NAME.language`` (share of its words
  among the training text's most frequent words: the language check; a Polish listing has "się", "i", "w").
  Both shares are NaN for a text without words;
* at the very end of a profile, ``NAME.words``: the frequencies of the words themselves (training words, then
  hashed buckets for the rest), each word one observation, counted by :func:`add_words` with a numba kernel.

Values are computed per batch: a dictionary lookup per distinct category or word of the batch, numpy and numba
for the rest, never a Python loop over rows and columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from driftline.kernels.words import count_ids, row_word_stats
from driftline.registry.table import BOOLEAN, CATEGORICAL, NUMERIC, TEXT, TableColumn, TableSpec
from driftline.registry.words import HASH_BUCKETS, LANGUAGE_WORDS, TokenizedText, WordIds

CHARS, OOV, LANGUAGE, WORDS = ".chars", ".oov", ".language", ".words"
KIND_NUMERIC, KIND_CATEGORICAL, KIND_WORDS = "numeric", "categorical", "words"


@dataclass(frozen=True)
class ViewColumn:
    name: str
    kind: str  # numeric | categorical (codes) | words (word frequencies, profile only)
    column: str  # the table column it describes
    categories: int | None = None  # categorical and words: the number of codes


@dataclass(frozen=True)
class TableView:
    """A batch seen through :class:`TableEncoder`: the matrix [rows, view columns] and each text column's words."""

    matrix: np.ndarray  # float64
    words: dict[str, TokenizedText]
    unseen: dict[str, np.ndarray]  # categorical column -> bool [rows]: the value is not a training category

    @property
    def rows(self) -> int:
        return len(self.matrix)

    @staticmethod
    def concat(views: Sequence[TableView]) -> TableView:
        if len(views) == 1:
            return views[0]
        words = {}
        for name in views[0].words:
            parts = [v.words[name] for v in views]
            starts = np.cumsum([0] + [len(p.ids) for p in parts[:-1]])
            offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, starts,
                                                                                                 strict=True)])
            words[name] = TokenizedText(np.concatenate([p.ids for p in parts]), offsets,
                                        np.concatenate([p.chars for p in parts]))
        unseen = {name: np.concatenate([v.unseen[name] for v in views]) for name in views[0].unseen}
        return TableView(np.concatenate([v.matrix for v in views]), words, unseen)


class TableEncoder:
    """Turns a mixed table's columns (by name: numbers, or strings as object arrays) into a :class:`TableView`."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self._codes = {c.name: {v: i for i, v in enumerate(c.categories)} for c in spec.columns
                       if c.role == CATEGORICAL}
        self._words = {c.name: WordIds(c.words) for c in spec.columns if c.role == TEXT}
        self.texts = tuple(c for c in spec.columns if c.role == TEXT)
        columns = []
        for c in spec.columns:
            if c.role == CATEGORICAL:
                columns.append(ViewColumn(c.name, KIND_CATEGORICAL, c.name, len(c.categories)))
            else:
                columns.append(ViewColumn(c.name, KIND_NUMERIC, c.name))
        for c in self.texts:
            columns += [ViewColumn(c.name + suffix, KIND_NUMERIC, c.name) for suffix in (CHARS, OOV, LANGUAGE)]
        self.columns: tuple[ViewColumn, ...] = tuple(columns)
        # The word tables, which a profile lists after everything else (see the module docstring).
        self.word_columns: tuple[ViewColumn, ...] = tuple(
            ViewColumn(c.name + WORDS, KIND_WORDS, c.name, len(c.words) + HASH_BUCKETS) for c in self.texts)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def view(self, columns: Mapping[str, np.ndarray]) -> TableView:
        spec = self.spec
        rows = len(np.asarray(columns[spec.columns[0].name]).reshape(-1)) if spec.columns else 0
        matrix = np.empty((rows, len(self.columns)), dtype=np.float64)
        words: dict[str, TokenizedText] = {}
        unseen: dict[str, np.ndarray] = {}
        extra = len(spec.columns)
        for i, c in enumerate(spec.columns):
            values = np.asarray(columns[c.name]).reshape(-1)
            if c.role in (NUMERIC, BOOLEAN):
                matrix[:, i] = values.astype(np.float64)
            elif c.role == CATEGORICAL:
                matrix[:, i], unseen[c.name] = self._categorical(c, values)
            else:
                tokenized = self._words[c.name].tokenize(values)
                words[c.name] = tokenized
                counts = np.empty((3, rows), dtype=np.float64)
                row_word_stats(tokenized.ids, tokenized.offsets, self._words[c.name].size,
                               min(LANGUAGE_WORDS, self._words[c.name].size), counts[0], counts[1], counts[2])
                matrix[:, i] = counts[0]
                with np.errstate(invalid="ignore", divide="ignore"):
                    matrix[:, extra] = tokenized.chars
                    matrix[:, extra + 1] = np.where(counts[0] > 0, counts[1] / counts[0], np.nan)
                    matrix[:, extra + 2] = np.where(counts[0] > 0, counts[2] / counts[0], np.nan)
                extra += 3
        return TableView(matrix, words, unseen)

    def _categorical(self, column: TableColumn, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        codes_of = self._codes[column.name]
        other = float(len(column.categories))
        if not len(values):
            return np.zeros(0), np.zeros(0, dtype=np.bool_)
        text = np.array([_text(v) for v in values], dtype=object)
        unique, inverse = np.unique(text, return_inverse=True)  # one lookup per distinct value of the batch
        unique_codes = np.array([np.nan if u == "" else codes_of.get(u, other) for u in unique], dtype=np.float64)
        codes = unique_codes[inverse.reshape(-1)]
        return codes, codes == other

    def words_of(self, view: TableView) -> list[np.ndarray]:
        """Each text column's word ids, in the order of :attr:`word_columns`."""
        return [view.words[c.name].ids for c in self.texts]


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, float) and value != value:
        return ""
    return str(value)


def add_words(counts: np.ndarray, missing: np.ndarray, first: int, words: Sequence[np.ndarray], rows: int) -> None:
    """Count each text column's words into its word-table column of a drift state (columns ``first``...).

    The state was updated with NaN in those columns, which counted every row as missing; a word table has no
    missing rows, only words, so that is undone here.
    """
    for k, ids in enumerate(words):
        count_ids(ids, counts[first + k])
        missing[first + k] -= rows
