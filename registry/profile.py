"""The training profile: what the training rows looked like, column by column, for drift checks.

:func:`build_profile` bins the training rows with the server's own kernel
(:func:`driftline.kernels.drift.update`), so the profile's reference counts and the server's live counts
come from one piece of code and one bin convention (see :mod:`driftline.kernels.drift`):

* numeric columns: bin edges are training quantiles at ``0, 1/bins, ..., (bins-1)/bins`` taken as data
  values (``method="inverted_cdf"``), deduplicated, plus the next float64 above the training maximum; a column
  with at most ``bins`` distinct values (a 0/1 flag, a count of rooms) has its distinct values as edges instead,
  so every value, rare ones included, has its own bin. So ``edges[0]`` is the training minimum, every interior
  bin holds training rows, and the underflow bin (``v < edges[0]``) and overflow bin (``v > training max``) count
  live values outside the training range. A column whose every distinct training value has its own bin is
  marked ``discrete`` and the drift statistics compare it as point masses;
* categorical columns (integer codes ``0..K-1``, e.g. a classifier's ``label``): one bin per code plus an
  "other" bin for anything else; ``counts`` are the category frequencies.

This module imports only numpy and :mod:`driftline.kernels`, so a server may read profiles with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from driftline.kernels.words import count_ids
from driftline.kernels.drift import (
    BinLayout,
    DriftState,
    decode_float,
    empty_state,
    encode_float,
    state_of,
)

PROFILE_FORMAT = 1
NUMERIC = "numeric"
CATEGORICAL = "categorical"
# A text column's word table: categorical over word ids, but every word of a row is one observation, so its
# ``count`` is the number of words and it has no missing rows (see registry/table_view.py).
WORDS = "words"
KINDS = (NUMERIC, CATEGORICAL, WORDS)
DEFAULT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass(frozen=True)
class ColumnProfile:
    """One column of the training rows. NaN values are ``missing``; the rest are ``count``.

    ``finite`` values (not NaN, not +-inf) make the moments: ``mean`` and ``variance`` (population,
    ddof=0; NaN without finite values). ``min``/``max`` cover all non-missing values (+inf/-inf when there
    are none). ``quantiles`` (numeric only; linear interpolation over the finite values) are at the
    profile's ``quantile_levels``. ``counts`` has one entry per bin: ``len(edges) + 1`` for numeric
    columns (underflow first, overflow last), ``categories + 1`` for categorical ones ("other" last).
    ``discrete``: a numeric column whose edges are its distinct training values plus the next float above
    the maximum (written to JSON only when true, so older profiles read as not discrete).
    """

    name: str
    kind: str
    count: int
    missing: int
    finite: int
    min: float
    max: float
    mean: float
    variance: float
    counts: tuple[int, ...]
    edges: tuple[float, ...] = ()
    quantiles: tuple[float, ...] | None = None
    categories: int | None = None
    discrete: bool = False

    @property
    def frequencies(self) -> np.ndarray:
        """Bin proportions of the non-missing values (the category frequencies of a categorical column)."""
        total = sum(self.counts)
        return np.asarray(self.counts, dtype=np.float64) / total if total else np.zeros(len(self.counts))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "kind": self.kind, "count": self.count, "missing": self.missing,
            "finite": self.finite, "min": encode_float(self.min), "max": encode_float(self.max),
            "mean": encode_float(self.mean), "variance": encode_float(self.variance),
        }
        if self.kind == NUMERIC:
            out["quantiles"] = [encode_float(q) for q in (self.quantiles or ())]
            out["edges"] = [encode_float(e) for e in self.edges]
            if self.discrete:
                out["discrete"] = True
        else:
            out["categories"] = self.categories
        out["counts"] = list(self.counts)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], n_quantiles: int) -> ColumnProfile:
        kind = data["kind"]
        if kind not in KINDS:
            raise ValueError(f"column {data.get('name')!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        common = dict(
            name=_str(data["name"]), kind=kind, count=_int(data["count"]), missing=_int(data["missing"]),
            finite=_int(data["finite"]), min=decode_float(data["min"]), max=decode_float(data["max"]),
            mean=decode_float(data["mean"]), variance=decode_float(data["variance"]),
            counts=tuple(_int(c) for c in data["counts"]),
        )
        if kind == NUMERIC:
            discrete = data.get("discrete", False)
            if not isinstance(discrete, bool):
                raise ValueError(f"column {data.get('name')!r}: discrete must be true or false, got {discrete!r}")
            column = cls(**common, edges=tuple(decode_float(e) for e in data["edges"]),
                         quantiles=tuple(decode_float(q) for q in data["quantiles"]), discrete=discrete)
            expected_bins = len(column.edges) + 1
            if len(column.quantiles or ()) != n_quantiles:
                raise ValueError(f"column {column.name!r}: {len(column.quantiles or ())} quantiles for "
                                 f"{n_quantiles} levels")
        else:
            column = cls(**common, categories=_int(data["categories"]))
            expected_bins = (column.categories or 0) + 1
        if len(column.counts) != expected_bins:
            raise ValueError(f"column {column.name!r}: {len(column.counts)} counts for {expected_bins} bins")
        if min(column.counts) < 0 or sum(column.counts) != column.count or column.finite > column.count:
            raise ValueError(f"column {column.name!r}: counts, count and finite disagree")
        return column


@dataclass(frozen=True)
class Profile:
    """The training profile: per-column statistics and reference bin counts, in the caller's column order."""

    columns: tuple[ColumnProfile, ...]
    rows: int
    bins: int
    quantile_levels: tuple[float, ...] = DEFAULT_QUANTILES
    format: int = PROFILE_FORMAT

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"column names must be unique: {names}")
        for c in self.columns:
            if c.kind != WORDS and c.count + c.missing != self.rows:
                raise ValueError(f"column {c.name!r}: count {c.count} + missing {c.missing} != rows {self.rows}")
        self.layout  # noqa: B018 - validates the edges now rather than at the first report

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def kinds(self) -> list[str]:
        return [c.kind for c in self.columns]

    def column(self, name: str) -> ColumnProfile:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @cached_property
    def layout(self) -> BinLayout:
        """The bins the server's kernels use for this profile's columns."""
        return BinLayout.from_columns(
            [list(c.edges) for c in self.columns],
            [c.categories if c.kind != NUMERIC else None for c in self.columns],
            [c.discrete for c in self.columns],
        )

    @cached_property
    def reference(self) -> DriftState:
        """The training rows' drift state (m2 rebuilt as variance x finite, so within rounding)."""
        state = empty_state(self.layout)
        for i, c in enumerate(self.columns):
            state.counts[i, : len(c.counts)] = c.counts
            state.missing[i] = c.missing
            state.n[i] = c.finite
            state.min[i] = c.min
            state.max[i] = c.max
            if c.finite:
                state.mean[i] = c.mean
                state.m2[i] = c.variance * c.finite
        for array in (state.counts, state.missing, state.n, state.mean, state.m2, state.min, state.max):
            array.setflags(write=False)  # shared by every report; merge() copies
        return state

    def empty_state(self) -> DriftState:
        """A fresh live state for this profile's columns."""
        return empty_state(self.layout)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "rows": self.rows,
            "bins": self.bins,
            "quantile_levels": list(self.quantile_levels),
            "columns": [c.to_dict() for c in self.columns],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        """JSON without NaN or Infinity tokens: non-finite floats are the strings "NaN", "Infinity", "-Infinity"."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        if not isinstance(data, Mapping):
            raise ValueError("a profile must be a JSON object")
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"unsupported profile format {data.get('format')!r}; this reader knows {PROFILE_FORMAT}")
        try:
            levels = tuple(float(q) for q in data["quantile_levels"])
            return cls(
                columns=tuple(ColumnProfile.from_dict(c, len(levels)) for c in data["columns"]),
                rows=_int(data["rows"]), bins=_int(data["bins"]), quantile_levels=levels,
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed profile: {type(e).__name__}: {e}") from e

    @classmethod
    def from_json(cls, text: str | bytes) -> Profile:
        return cls.from_dict(json.loads(text, parse_constant=_refuse_constant))


def build_profile(X: np.ndarray, names: Sequence[str], *, bins: int = 20, kinds: Sequence[str] | None = None,
                  categories: Mapping[str, int] | None = None,
                  quantile_levels: Sequence[float] = DEFAULT_QUANTILES,
                  word_ids: Mapping[str, np.ndarray] | None = None) -> Profile:
    """Profile the training rows ``X`` [rows, columns], column ``c`` named ``names[c]``.

    ``kinds[c]`` is "numeric" (default) or "categorical". A categorical column holds integer codes; it has
    ``categories[name]`` categories if given, else ``max code + 1``. A "words" column (a text column's word table)
    is NaN in ``X``; its words are ``word_ids[name]`` (ids ``0..categories[name]-1``), counted with the server's
    kernel. Pass ``X`` exactly as it is served
    (float32 features stay float32) so training and live values are binned identically.
    """
    X = _as_float_rows(X)
    names = [str(n) for n in names]
    if len(names) != X.shape[1]:
        raise ValueError(f"{len(names)} names for {X.shape[1]} columns")
    kinds = [NUMERIC] * len(names) if kinds is None else list(kinds)
    if len(kinds) != len(names) or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be one of {KINDS} per column, got {kinds}")
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    categories = dict(categories or {})
    unknown = set(categories) - {n for n, k in zip(names, kinds, strict=True) if k != NUMERIC}
    if unknown:
        raise ValueError(f"categories given for columns that are not categorical: {sorted(unknown)}")
    levels = tuple(float(q) for q in quantile_levels)
    if any(not 0.0 <= q <= 1.0 for q in levels):
        raise ValueError(f"quantile levels must lie in [0, 1], got {levels}")

    edges: list[list[float]] = []
    n_categories: list[int | None] = []
    discrete: list[bool] = []
    finite_values = []
    for c, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        column = X[:, c].astype(np.float64)
        finite = column[np.isfinite(column)]
        finite_values.append(finite)
        if kind == NUMERIC:
            edges.append(quantile_edges(finite, int(bins)))
            n_categories.append(None)
            discrete.append(is_discrete(finite, edges[-1]))
        else:
            edges.append([])
            n_categories.append(_categories(name, column, categories.get(name)))
            discrete.append(False)

    state = state_of(X, BinLayout.from_columns(edges, n_categories))  # the server's kernel
    for c, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        if kind == WORDS:
            words = np.asarray((word_ids or {}).get(name, ()), dtype=np.int64)
            count_ids(words, state.counts[c, : n_categories[c] + 1])
            state.missing[c] = 0
    variance = state.variance()
    columns = []
    for c, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        finite = finite_values[c]
        n_bins = (len(edges[c]) if kind == NUMERIC else n_categories[c]) + 1
        quantiles = None
        if kind == NUMERIC:
            quantiles = tuple(np.quantile(finite, levels).tolist()) if finite.size else (math.nan,) * len(levels)
        columns.append(ColumnProfile(
            name=name, kind=kind, count=int(state.counts[c].sum()), missing=int(state.missing[c]),
            finite=int(state.n[c]), min=float(state.min[c]), max=float(state.max[c]),
            mean=float(state.mean[c]) if state.n[c] else math.nan, variance=float(variance[c]),
            counts=tuple(state.counts[c, :n_bins].tolist()), edges=tuple(edges[c]), quantiles=quantiles,
            categories=n_categories[c], discrete=discrete[c],
        ))
    return Profile(columns=tuple(columns), rows=int(X.shape[0]), bins=int(bins), quantile_levels=levels)


def counting_layout(reference: Profile, columns: int) -> BinLayout:
    """The bins of ``reference``'s first ``columns`` columns (the ones :func:`recounted` takes from a state)."""
    return BinLayout.from_columns(
        [list(c.edges) for c in reference.columns[:columns]],
        [c.categories if c.kind != NUMERIC else None for c in reference.columns[:columns]],
        [c.discrete for c in reference.columns[:columns]],
    )


def recounted(reference: Profile, state: DriftState, rows: int) -> Profile:
    """``reference``'s bins, quantiles and discrete flags, with the counts, missing, min, max and moments of
    ``state`` (its first ``state.columns`` columns, binned by :func:`counting_layout`), over ``rows`` rows.

    This is how a table too large to hold is profiled: the bins come from a sample, every row is counted into
    them piece by piece and the pieces' states merged. The columns after the counted ones (statistics of a
    sample of rows, like attribution shares) keep their counts, and every other row is missing there.
    """
    counted = state.columns
    if counted > len(reference.columns):
        raise ValueError(f"a state of {counted} columns for a profile of {len(reference.columns)}")
    variance = state.variance()
    columns = []
    for c, column in enumerate(reference.columns):
        if c >= counted:
            columns.append(replace(column, missing=rows - column.count))
            continue
        n_bins = len(column.counts)
        columns.append(replace(
            column, count=int(state.counts[c, :n_bins].sum()), missing=int(state.missing[c]),
            finite=int(state.n[c]), min=float(state.min[c]), max=float(state.max[c]),
            mean=float(state.mean[c]) if state.n[c] else math.nan, variance=float(variance[c]),
            counts=tuple(state.counts[c, :n_bins].tolist()),
        ))
    return Profile(columns=tuple(columns), rows=int(rows), bins=reference.bins,
                   quantile_levels=reference.quantile_levels)


def _as_float_rows(X: np.ndarray) -> np.ndarray:
    """float32/float64 stay as they are (served values are binned as trained); other numbers become float64."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D [rows, columns], got shape {X.shape}")
    if X.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
            raise ValueError(f"X must be numeric, got {X.dtype}")
        X = X.astype(np.float64)
    return np.ascontiguousarray(X)


def quantile_edges(finite: np.ndarray, bins: int) -> list[float]:
    """Bin edges of a numeric column from its finite training values (see the module docstring)."""
    if finite.size == 0:
        return []
    distinct = np.unique(finite)
    if distinct.size <= bins:
        # A discrete column (a flag, a count of rooms) gets one bin per value, rare ones included, so it is
        # compared as the values it takes (see is_discrete).
        edges = distinct
    else:
        edges = np.quantile(finite, np.arange(bins) / bins, method="inverted_cdf")
    top = np.nextafter(finite.max(), np.inf)
    if np.isfinite(top):  # else the largest float64 itself lands in the overflow bin
        edges = np.append(edges, top)
    return np.unique(edges).tolist()


def is_discrete(finite: np.ndarray, edges: Sequence[float]) -> bool:
    """Whether ``edges`` give every distinct value of ``finite`` its own bin: the edges are exactly the sorted
    distinct values plus the next float above the largest (what :func:`quantile_edges` makes of a column with
    at most ``bins`` values that each hold enough rows)."""
    if finite.size == 0:
        return False
    values = np.unique(finite)
    with np.errstate(over="ignore"):
        top = np.nextafter(values[-1], np.inf)
    if not np.isfinite(top) or len(edges) != values.size + 1:
        return False
    return bool(np.array_equal(np.asarray(edges, dtype=np.float64), np.append(values, top)))


def _categories(name: str, column: np.ndarray, given: int | None) -> int:
    if given is not None:
        if int(given) < 1:
            raise ValueError(f"column {name!r}: categories must be >= 1, got {given}")
        return int(given)
    codes = column[~np.isnan(column)]
    if codes.size == 0:
        raise ValueError(f"column {name!r} is categorical but has no values; pass categories={{{name!r}: K}}")
    if np.any(codes < 0) or np.any(codes != np.floor(codes)) or not np.all(np.isfinite(codes)):
        raise ValueError(f"column {name!r} is categorical but holds values that are not codes 0..K-1")
    return int(codes.max()) + 1


def _refuse_constant(token: str) -> float:
    raise ValueError(f"profile JSON must not contain {token}; non-finite numbers are written as strings")


def _int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValueError(f"expected an integer, got {x!r}")
    return x


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise ValueError(f"expected a string, got {x!r}")
    return x
