"""Data validation: check a batch of feature rows against a model's schema, the same way everywhere.

One kernel serves the trainer (checking the training data), ``driftline validate`` (checking a file)
and the server (checking every batch before the model runs), so a value is judged by one piece of code
and one vocabulary of constraint kinds. The schema itself (what the limits are, how they are inferred and
stored) lives in :mod:`driftline.registry.schema`; this module sees only arrays and imports only numpy and
numba, so a server may use it without the trainer.

Constraint kinds
----------------
Each kind has a bit (``1 << KINDS.index(kind)``):

===========================  ============================================================================
``missing``                  NaN in a feature that does not allow missing values
``below_min``                below the feature's hard minimum (a value that cannot be)
``above_max``                above the feature's hard maximum
``not_integer``              a feature that must be whole holds a fractional (or infinite) value
``unknown_category``         a categorical feature holds anything but one of its known integer codes
``below_training_range``     below the smallest value seen in training (not impossible, just unseen)
``above_training_range``     above the largest value seen in training
``not_a_number``             a string (or other non-number) where a number belongs; never seen by the
                             kernel (a float array cannot hold it): the data reader or the protocol decoder
                             finds it and passes the cells to :func:`validate` (see :func:`not_a_number_message`)
``infinite``                 +-inf in a feature that does not allow infinite values
===========================  ============================================================================

Declared and inferred limits
----------------------------
A hard limit (min, max, whole, categories) is either *declared* by a person or *inferred* from the training
data. Inferred ones are guesses (a column of whole numbers need not stay whole), so a failure of an inferred
limit sets the kind's bit shifted left by ``INFERRED_SHIFT``: the same kind, a separate bit, and the policy
gives the two bits different actions (an inferred limit's action is the kind's action, at most
``inferred_action``: the schema policy's ``inferred_limits``, "flag" by default). :data:`INFERABLE_KINDS` are the
kinds that can have an inferred limit.

Rules, per value ``v`` of feature ``f`` (compared as float64; see :meth:`SchemaArrays.for_dtype` for float32):

* NaN is *missing* and nothing else: a missing value is checked for ``missing`` only.
* ``+-inf`` in a feature that does not allow it is ``infinite`` and nothing else (a model's output for it
  cannot be trusted, like a missing value's); where it is allowed, it is checked like any other number.
* The hard kinds (``below_min``, ``above_max``, ``not_integer``, ``unknown_category``) are checked
  independently, so ``-2.5`` in a whole, non-negative feature fails both ``below_min`` and ``not_integer``.
  ``+-inf`` is not whole.
* The training range is checked only when no hard kind failed for that value (a value that cannot be is not
  also reported as unseen), and never for categorical features (codes are unordered).
* A kind the policy switches ``off`` is not checked at all (its limits are compiled away).

Layout (fast when everything is valid, which is the common case)
----------------------------------------------------------------
:func:`validate_rows` writes one ``uint32`` per row: the OR of the bits of every kind that failed in that row
(0 = valid), and returns the number of failed rows. Per row, a branch-free pass tests each value against
``[lo, hi]`` (the tighter of the hard and training limits; NaN fails it) and, for whole and categorical
features, ``v - floor(v) == 0``; categorical codes are looked up in a bitmap. Only a row that fails that
pass is classified value by value (:func:`_value_bits`). The per-feature detail (:func:`feature_bits`:
``uint32 [failed rows, features]``) is computed afterwards, on first use and only for the rows that failed;
it is what names the first failing feature, value and limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numba import njit

KINDS: tuple[str, ...] = (
    "missing",
    "below_min",
    "above_max",
    "not_integer",
    "unknown_category",
    "below_training_range",
    "above_training_range",
    "not_a_number",
    "infinite",
)
MISSING, BELOW_MIN, ABOVE_MAX, NOT_INTEGER, UNKNOWN_CATEGORY, BELOW_TRAINING_RANGE, ABOVE_TRAINING_RANGE, \
    NOT_A_NUMBER, INFINITE = KINDS
BIT: dict[str, int] = {kind: 1 << i for i, kind in enumerate(KINDS)}
N_KINDS = len(KINDS)
HARD_KINDS = (MISSING, BELOW_MIN, ABOVE_MAX, NOT_INTEGER, UNKNOWN_CATEGORY, NOT_A_NUMBER, INFINITE)
RANGE_KINDS = (BELOW_TRAINING_RANGE, ABOVE_TRAINING_RANGE)
# Kinds whose limit may be inferred from data rather than declared (see "Declared and inferred limits").
INFERABLE_KINDS = (BELOW_MIN, ABOVE_MAX, NOT_INTEGER, UNKNOWN_CATEGORY)
INFERRED_SHIFT = 16  # an inferred limit's failure sets BIT[kind] << INFERRED_SHIFT (row masks are uint32)
INFERRED_BIT: dict[str, int] = {kind: BIT[kind] << INFERRED_SHIFT for kind in INFERABLE_KINDS}

# Actions a policy can take per kind.
# Text cells that mean "no value" wherever text meets a number column (CSV files, BYTES tensors).
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none"})

REJECT = "reject"
FLAG = "flag"
OFF = "off"
ACTIONS = (REJECT, FLAG, OFF)

MAX_CATEGORY_CODE = (1 << 20) - 1  # categories are codes 0..MAX_CATEGORY_CODE (a bitmap per feature)

# Rows of SchemaArrays.params (float64 [6, features]) and .meta (int64 [4, features]).
P_LO, P_HI, P_MIN, P_MAX, P_TMIN, P_TMAX = range(6)
M_FLAGS, M_CAT_START, M_CAT_LEN, M_INFERRED = range(4)
F_ALLOW_MISSING = 1
F_INTEGER = 2
F_CATEGORICAL = 4
F_ALLOW_INFINITE = 8

_B_MISSING = 1 << 0
_B_BELOW_MIN = 1 << 1
_B_ABOVE_MAX = 1 << 2
_B_NOT_INTEGER = 1 << 3
_B_UNKNOWN_CATEGORY = 1 << 4
_B_BELOW_TRAINING = 1 << 5
_B_ABOVE_TRAINING = 1 << 6
_B_NOT_A_NUMBER = 1 << 7
_B_INFINITE = 1 << 8


# --------------------------------------------------------------------------- kernels


@njit(nogil=True, cache=True, inline="always")
def _value_bits(v, f, params, meta, cat_ok):  # noqa: ANN001, ANN202
    """The kinds value ``v`` of feature ``f`` fails (see the module docstring), as an int64 bitmask; the
    failures of inferred limits are shifted left by INFERRED_SHIFT."""
    flags = meta[M_FLAGS, f]
    if v != v:
        return 0 if flags & F_ALLOW_MISSING else _B_MISSING
    if not (v - v == 0.0) and not (flags & F_ALLOW_INFINITE):  # +-inf (inf - inf is NaN)
        return _B_INFINITE
    bits = 0
    if v < params[P_MIN, f]:
        bits |= _B_BELOW_MIN
    if v > params[P_MAX, f]:
        bits |= _B_ABOVE_MAX
    if flags & F_INTEGER:
        if not (math.isfinite(v) and v == math.floor(v)):
            bits |= _B_NOT_INTEGER
    if flags & F_CATEGORICAL:
        if not (v >= 0.0 and v < meta[M_CAT_LEN, f] and v == math.floor(v)
                and cat_ok[meta[M_CAT_START, f] + np.int64(v)] != 0):
            bits |= _B_UNKNOWN_CATEGORY
    if bits == 0:
        if v < params[P_TMIN, f]:
            bits |= _B_BELOW_TRAINING
        if v > params[P_TMAX, f]:
            bits |= _B_ABOVE_TRAINING
        return bits
    inferred = bits & meta[M_INFERRED, f]
    return (bits & ~inferred) | (inferred << INFERRED_SHIFT)


@njit(nogil=True, cache=True)
def validate_rows(X, params, meta, cat_ok, row_mask):  # noqa: ANN001, ANN201
    """Check ``X`` [rows, features] (float32 or float64); ``row_mask[r]`` gets row r's failed kinds.

    Returns the number of rows with any failure. No shape checks: use :func:`validate`.

    Per row, a branch-free pass tests every value against ``[lo, hi]`` (NaN fails), finiteness (``v - v == 0``)
    unless the feature allows +-inf and, for whole and categorical features, wholeness (``v - floor(v) == 0``,
    which fails +-inf); categorical codes are then looked up in the bitmap. Only a row that fails the fast test
    is classified value by value.
    """
    rows = X.shape[0]
    cols = X.shape[1]
    lo = params[P_LO]
    hi = params[P_HI]
    flags = meta[M_FLAGS]
    whole = F_INTEGER | F_CATEGORICAL
    any_categorical = False
    for f in range(cols):
        if flags[f] & F_CATEGORICAL:
            any_categorical = True
    failed = 0
    for r in range(rows):
        ok = True
        for f in range(cols):
            v = np.float64(X[r, f])
            # np.floor, not math.floor: numba's math.floor gives an int64, and inf - floor(inf) == 0 then
            ok &= (v >= lo[f]) & (v <= hi[f]) & ((v - np.floor(v) == 0.0) | ((flags[f] & whole) == 0)) \
                & ((v - v == 0.0) | ((flags[f] & F_ALLOW_INFINITE) != 0))
        if ok and any_categorical:
            for f in range(cols):
                if flags[f] & F_CATEGORICAL:
                    v = np.float64(X[r, f])
                    if not (v >= 0.0 and v < meta[M_CAT_LEN, f]
                            and cat_ok[meta[M_CAT_START, f] + np.int64(v)] != 0):
                        ok = False
        if ok:
            row_mask[r] = 0
            continue
        m = 0
        for f in range(cols):
            m |= _value_bits(np.float64(X[r, f]), f, params, meta, cat_ok)
        row_mask[r] = m
        if m != 0:
            failed += 1
    return failed


@njit(nogil=True, cache=True)
def feature_bits(X, rows, params, meta, cat_ok, out):  # noqa: ANN001, ANN201
    """``out[i, f]`` = the kinds value ``X[rows[i], f]`` fails: the per-feature detail of chosen rows."""
    cols = X.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        for f in range(cols):
            out[i, f] = _value_bits(np.float64(X[r, f]), f, params, meta, cat_ok)


# --------------------------------------------------------------------------- compiled schema


@dataclass(frozen=True, eq=False)
class SchemaArrays:
    """A schema and a policy compiled for the kernel (build with :meth:`build`; the registry's
    ``Schema.arrays()`` does).

    ``params`` float64 [6, features]: rows ``lo, hi`` (the fast-path range: the tighter of the hard and the
    training limits), ``min, max`` (hard; +-inf when unbounded or off), ``train_min, train_max`` (+-inf when
    off, unknown or categorical). ``meta`` int64 [4, features]: flags (``F_ALLOW_MISSING | F_INTEGER |
    F_CATEGORICAL | F_ALLOW_INFINITE``), then each categorical feature's slice ``[start, start + len)`` of
    ``cat_ok``, a uint8 bitmap over the codes ``0..len-1`` (1 = known category), then the bits of the kinds
    whose limit is inferred for that feature.
    """

    names: tuple[str, ...]
    params: np.ndarray
    meta: np.ndarray
    cat_ok: np.ndarray
    categories: tuple[tuple[int, ...] | None, ...]
    reject_mask: int  # bits the policy rejects (declared limits' and, when so configured, inferred ones')
    flag_mask: int  # bits the policy flags

    @classmethod
    def build(cls, names: Sequence[str], *, min: Sequence[float | None], max: Sequence[float | None],  # noqa: A002
              integer: Sequence[bool], allow_missing: Sequence[bool],
              categories: Sequence[Sequence[int] | None], train_min: Sequence[float | None],
              train_max: Sequence[float | None], actions: Mapping[str, str],
              allow_infinite: Sequence[bool] | None = None, inferred: Sequence[Iterable[str]] | None = None,
              inferred_action: str = FLAG) -> SchemaArrays:
        """Compile per-feature limits (None = unbounded) under ``actions`` (kind -> reject/flag/off; a kind
        that is not named is rejected if hard, flagged if a training-range kind).

        ``allow_infinite`` (default: none does) says per feature whether +-inf is acceptable; ``inferred``
        (default: none) names per feature the kinds of :data:`INFERABLE_KINDS` whose limit was inferred from
        data. Such a limit's action is the kind's, but at most ``inferred_action`` (off < flag < reject).
        """
        names = tuple(str(n) for n in names)
        n = len(names)
        allow_infinite = [False] * n if allow_infinite is None else allow_infinite
        inferred = [()] * n if inferred is None else inferred
        for label, seq in (("min", min), ("max", max), ("integer", integer), ("allow_missing", allow_missing),
                           ("categories", categories), ("train_min", train_min), ("train_max", train_max),
                           ("allow_infinite", allow_infinite), ("inferred", inferred)):
            if len(seq) != n:
                raise ValueError(f"{label}: {len(seq)} values for {n} features")
        act = {k: actions.get(k, FLAG if k in RANGE_KINDS else REJECT) for k in KINDS}
        bad = {k: a for k, a in act.items() if a not in ACTIONS}
        if bad or set(actions) - set(KINDS) or inferred_action not in ACTIONS:
            raise ValueError(f"actions must map kinds {KINDS} to {ACTIONS}, got {dict(actions)} "
                             f"(inferred: {inferred_action!r})")
        soft = {k: _weaker(act[k], inferred_action) for k in INFERABLE_KINDS}  # the action of an inferred limit

        params = np.empty((6, n), dtype=np.float64)
        meta = np.zeros((4, n), dtype=np.int64)
        bitmap: list[np.ndarray] = []
        start = 0
        for f in range(n):
            guessed = set(inferred[f])
            if guessed - set(INFERABLE_KINDS):
                raise ValueError(f"feature {names[f]!r}: only {INFERABLE_KINDS} can be inferred, got {sorted(guessed)}")
            # A limit is checked unless its action (the declared or the inferred one) is off.
            on = {k: (soft[k] if k in guessed else act[k]) != OFF for k in KINDS}
            cats = categories[f]
            categorical = cats is not None
            lo = _bound(min[f], -math.inf) if on[BELOW_MIN] else -math.inf
            hi = _bound(max[f], math.inf) if on[ABOVE_MAX] else math.inf
            tlo = _bound(train_min[f], -math.inf) if on[BELOW_TRAINING_RANGE] and not categorical else -math.inf
            thi = _bound(train_max[f], math.inf) if on[ABOVE_TRAINING_RANGE] and not categorical else math.inf
            params[:, f] = (_max(lo, tlo), _min(hi, thi), lo, hi, tlo, thi)
            flags = 0
            if allow_missing[f] or not on[MISSING]:
                flags |= F_ALLOW_MISSING
            if allow_infinite[f] or not on[INFINITE]:
                flags |= F_ALLOW_INFINITE
            if integer[f] and not categorical and on[NOT_INTEGER]:
                flags |= F_INTEGER
            meta[M_INFERRED, f] = sum(BIT[k] for k in guessed)
            if categorical and on[UNKNOWN_CATEGORY]:
                codes = np.asarray(list(cats), dtype=np.int64)
                if codes.size and (codes.min() < 0 or codes.max() > MAX_CATEGORY_CODE):
                    raise ValueError(f"feature {names[f]!r}: category codes must lie in 0..{MAX_CATEGORY_CODE}")
                size = int(codes.max()) + 1 if codes.size else 0
                ok = np.zeros(size, dtype=np.uint8)
                ok[codes] = 1
                bitmap.append(ok)
                flags |= F_CATEGORICAL
                meta[M_CAT_START, f] = start
                meta[M_CAT_LEN, f] = size
                start += size
            meta[M_FLAGS, f] = flags
        cat_ok = np.concatenate(bitmap) if bitmap else np.zeros(0, dtype=np.uint8)
        cat_ok = np.ascontiguousarray(np.append(cat_ok, np.uint8(0)))  # never empty
        reject = sum(BIT[k] for k in KINDS if act[k] == REJECT) \
            + sum(INFERRED_BIT[k] for k in INFERABLE_KINDS if soft[k] == REJECT)
        flag = sum(BIT[k] for k in KINDS if act[k] == FLAG) \
            + sum(INFERRED_BIT[k] for k in INFERABLE_KINDS if soft[k] == FLAG)
        cats_out = tuple(None if c is None else tuple(int(x) for x in c) for c in categories)
        for a in (params, meta, cat_ok):
            a.setflags(write=False)
        return cls(names, params, meta, cat_ok, cats_out, reject, flag)

    @property
    def features(self) -> int:
        return len(self.names)

    def action(self, kind: str, inferred: bool = False) -> str:
        """What a failure of ``kind`` does: of a declared limit, or (``inferred``) of an inferred one."""
        bit = INFERRED_BIT[kind] if inferred else BIT[kind]
        return REJECT if self.reject_mask & bit else FLAG if self.flag_mask & bit else OFF

    def inferred(self, column: int, kind: str) -> bool:
        """Whether feature ``column``'s limit of ``kind`` was inferred from data (not declared)."""
        return bool(self.meta[M_INFERRED, column] & BIT[kind])

    def action_at(self, column: int, kind: str) -> str:
        """What a failure of ``kind`` in feature ``column`` does."""
        return self.action(kind, kind in INFERRED_BIT and self.inferred(column, kind))

    @cached_property
    def _params32(self) -> np.ndarray:
        """``params`` with every limit rounded to the nearest float32, for float32 batches."""
        with np.errstate(over="ignore"):
            p = self.params.astype(np.float32).astype(np.float64)
        p.setflags(write=False)
        return p

    def for_dtype(self, dtype: np.dtype) -> np.ndarray:
        """The limits a batch of ``dtype`` is compared with.

        A float32 batch is compared with limits rounded to the nearest float32, so a limit written in
        decimal (``max: 0.1``) accepts the value a float32 client sends for it (0.1f > 0.1).
        """
        return self._params32 if dtype == np.float32 else self.params

    def limit(self, column: int, kind: str, dtype: np.dtype = np.float64) -> Any:
        """The limit a failed ``kind`` broke (for messages): a number, the categories, or None."""
        p = self.for_dtype(dtype)
        row = {BELOW_MIN: P_MIN, ABOVE_MAX: P_MAX, BELOW_TRAINING_RANGE: P_TMIN, ABOVE_TRAINING_RANGE: P_TMAX}
        if kind in row:
            return float(p[row[kind], column])
        if kind == UNKNOWN_CATEGORY:
            return self.categories[column]
        return None


_STRENGTH = {OFF: 0, FLAG: 1, REJECT: 2}


def _weaker(a: str, b: str) -> str:
    return a if _STRENGTH[a] <= _STRENGTH[b] else b


def _max(a: float, b: float) -> float:
    return a if a >= b else b


def _min(a: float, b: float) -> float:
    return a if a <= b else b


def _bound(x: float | None, default: float) -> float:
    if x is None:
        return default
    x = float(x)
    if math.isnan(x):
        raise ValueError("a limit must not be NaN")
    return x


# --------------------------------------------------------------------------- results


def format_number(x: float, dtype: np.dtype | type = np.float64) -> str:
    """Shortest text of ``x`` as a value of ``dtype`` (float32 values print as a float32 client wrote them),
    without a trailing ``.0``: ``-8``, ``115.3``, ``1e+20``, ``nan``, ``inf``."""
    t = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    with np.errstate(over="ignore"):
        s = str(t(x))
    return s[:-2] if s.endswith(".0") else s


def not_a_number_message(row: int, feature: str, text: Any = None) -> str:
    """The one wording of "a string where a number belongs", for the trainer, the CLI and the server."""
    shown = "the value" if text is None else repr(text) if isinstance(text, str) else repr(str(text))
    return f"row {row}, feature {feature!r}: {shown} is not a number"


@dataclass(frozen=True)
class Violation:
    """One failed constraint: ``value`` (NaN for missing or not-a-number cells; ``text`` then holds what was
    sent, if known) of feature ``feature`` (column ``column``) in row ``row`` broke ``constraint``, whose
    limit was ``limit`` (a number, the known categories, or None). ``action`` is the policy's: reject or flag.
    ``inferred``: the limit was inferred from the training data, not declared."""

    row: int
    feature: str
    constraint: str
    value: float
    limit: Any
    action: str = REJECT
    column: int = -1
    text: str | None = None
    dtype: str = "float64"
    inferred: bool = False

    def message(self) -> str:
        text = self._message()
        return f"{text} (a limit inferred from the training data)" if self.inferred else text

    def _message(self) -> str:
        where = f"row {self.row}, feature {self.feature!r}"
        v = format_number(self.value, self.dtype)
        k = self.constraint
        if k == NOT_A_NUMBER:
            return not_a_number_message(self.row, self.feature, self.text)
        if k == MISSING:
            return f"{where}: the value is missing and this feature does not allow missing values"
        if k == INFINITE:
            return f"{where}: value {v} is not finite and this feature does not allow infinite values"
        if k == BELOW_MIN:
            return f"{where}: value {v} is below the minimum {format_number(self.limit, self.dtype)}"
        if k == ABOVE_MAX:
            return f"{where}: value {v} is above the maximum {format_number(self.limit, self.dtype)}"
        if k == NOT_INTEGER:
            return f"{where}: value {v} is not a whole number"
        if k == UNKNOWN_CATEGORY:
            known = ", ".join(str(c) for c in (self.limit or ())) if self.limit else "none"
            return f"{where}: value {v} is not a known category (known: {known})"
        if k == BELOW_TRAINING_RANGE:
            return f"{where}: value {v} is below the training range (smallest training value " \
                   f"{format_number(self.limit, self.dtype)})"
        if k == ABOVE_TRAINING_RANGE:
            return f"{where}: value {v} is above the training range (largest training value " \
                   f"{format_number(self.limit, self.dtype)})"
        return f"{where}: value {v} fails {k}"

    def to_dict(self) -> dict[str, Any]:
        value: Any = self.text if self.text is not None else _json_number(self.value)
        limit = list(self.limit) if isinstance(self.limit, tuple) else _json_number(self.limit)
        return {"row": self.row, "feature": self.feature, "constraint": self.constraint, "value": value,
                "limit": limit, "action": self.action, "inferred": self.inferred, "message": self.message()}


def _json_number(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    if math.isfinite(x):
        return int(x) if x.is_integer() and abs(x) < 2**53 else x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


# Kinds in the order a row's first violation is chosen: what would reject it first, then what flags it.
_SEVERITY = (NOT_A_NUMBER, MISSING, INFINITE, BELOW_MIN, ABOVE_MAX, NOT_INTEGER, UNKNOWN_CATEGORY,
             BELOW_TRAINING_RANGE, ABOVE_TRAINING_RANGE)
# Either bit of a kind: the declared limit's or the inferred one's.
_ANY_BIT = {kind: BIT[kind] | INFERRED_BIT.get(kind, 0) for kind in KINDS}


class ValidationResult:
    """What :func:`validate` found in one batch. Everything but ``row_mask`` and ``failed`` is computed on
    first use, so an all-valid batch costs one kernel call.

    ``row_mask``: uint32 [rows], the failed kinds per row (``BIT[kind]``, or ``INFERRED_BIT[kind]`` for an
    inferred limit); ``failed``: rows with any failure.
    ``rejected_rows``: bool [rows], rows with a failure the policy rejects; ``flagged_rows``: rows with a
    failure the policy flags and none it rejects. Row numbers are the batch's plus ``row_offset``.
    """

    __slots__ = ("arrays", "X", "row_mask", "failed", "row_offset", "_nan_cells", "_raw", "__dict__")

    def __init__(self, arrays: SchemaArrays, X: np.ndarray, row_mask: np.ndarray, failed: int,
                 row_offset: int = 0, nan_cells: np.ndarray | None = None,
                 raw: Mapping[tuple[int, int], Any] | None = None) -> None:
        self.arrays = arrays
        self.X = X
        self.row_mask = row_mask
        self.failed = failed
        self.row_offset = row_offset
        self._nan_cells = nan_cells
        self._raw = raw

    @property
    def rows(self) -> int:
        return len(self.row_mask)

    @property
    def ok(self) -> bool:
        """True when no row failed anything (nothing to reject or flag)."""
        return self.failed == 0

    @cached_property
    def rejected_rows(self) -> np.ndarray:
        if self.failed == 0:
            return np.zeros(self.rows, dtype=np.bool_)
        return (self.row_mask & np.uint32(self.arrays.reject_mask)) != 0

    @cached_property
    def flagged_rows(self) -> np.ndarray:
        if self.failed == 0:
            return np.zeros(self.rows, dtype=np.bool_)
        return ((self.row_mask & np.uint32(self.arrays.flag_mask)) != 0) & ~self.rejected_rows

    @property
    def any_rejected(self) -> bool:
        return self.failed != 0 and bool(self.rejected_rows.any())

    @cached_property
    def failed_rows(self) -> np.ndarray:
        """Batch indices (without ``row_offset``) of the rows with any failure, ascending."""
        return np.flatnonzero(self.row_mask)

    @cached_property
    def detail(self) -> np.ndarray:
        """uint32 [len(failed_rows), features]: the kinds each value of each failed row fails."""
        rows = self.failed_rows.astype(np.int64)
        out = np.zeros((len(rows), self.arrays.features), dtype=np.uint32)
        if len(rows):
            feature_bits(self.X, rows, self.arrays.for_dtype(self.X.dtype), self.arrays.meta,
                         self.arrays.cat_ok, out)
            if self._nan_cells is not None:
                cells = self._nan_cells[rows]
                out[cells] = (out[cells] & np.uint32(~BIT[MISSING] & 0xFFFFFFFF)) | np.uint32(BIT[NOT_A_NUMBER])
        return out

    @cached_property
    def counts(self) -> np.ndarray:
        """int64 [features, len(KINDS)]: how many values failed each kind (declared or inferred), per feature."""
        d = self.detail
        out = np.zeros((self.arrays.features, N_KINDS), dtype=np.int64)
        for k, kind in enumerate(KINDS):
            out[:, k] = ((d & np.uint32(_ANY_BIT[kind])) != 0).sum(axis=0)
        return out

    def count(self, feature: str, kind: str) -> int:
        return int(self.counts[self.arrays.names.index(feature), KINDS.index(kind)])

    def _violation(self, i: int, f: int, kind: str) -> Violation:
        r = int(self.failed_rows[i])
        text = None
        if kind == NOT_A_NUMBER and self._raw is not None:
            raw = self._raw.get((r, f))
            text = None if raw is None else str(raw)
        inferred = bool(self.detail[i, f] & INFERRED_BIT.get(kind, 0))
        return Violation(
            row=r + self.row_offset, feature=self.arrays.names[f], constraint=kind,
            value=float(self.X[r, f]), limit=self.arrays.limit(f, kind, self.X.dtype),
            action=self.arrays.action(kind, inferred), column=f, text=text, dtype=str(self.X.dtype),
            inferred=inferred,
        )

    def _index(self, row: int) -> int:
        """Position of batch row ``row`` in ``failed_rows``, or -1."""
        i = int(np.searchsorted(self.failed_rows, row))
        return i if i < len(self.failed_rows) and self.failed_rows[i] == row else -1

    def violations(self, row: int) -> list[Violation]:
        """Every failed constraint of batch row ``row`` (without ``row_offset``), feature by feature."""
        i = self._index(row)
        if i < 0:
            return []
        out = []
        for f, bits in enumerate(self.detail[i].tolist()):
            if bits:
                out.extend(self._violation(i, f, k) for k in _SEVERITY if bits & _ANY_BIT[k])
        return out

    def first_violation(self, row: int | None = None) -> Violation | None:
        """The violation to report for batch row ``row``: the first feature with a rejecting failure (else the
        first with a flagged one), its most serious kind. Without ``row``: of the first rejected row, else
        of the first flagged row. None when there is nothing to report."""
        if self.failed == 0:
            return None
        if row is None:
            for mask in (self.rejected_rows, self.flagged_rows):
                hits = np.flatnonzero(mask)
                if len(hits):
                    row = int(hits[0])
                    break
            else:
                return None
        i = self._index(row)
        if i < 0:
            return None
        row_bits = self.detail[i].tolist()
        for wanted in (self.arrays.reject_mask, self.arrays.flag_mask):
            for f, bits in enumerate(row_bits):
                if bits & wanted:
                    kind = next(k for k in _SEVERITY if bits & wanted & _ANY_BIT[k])
                    return self._violation(i, f, kind)
        return None

    def examples(self, feature: int, kind: str, limit: int = 3) -> list[Violation]:
        """Up to ``limit`` violations of ``kind`` in column ``feature``, in row order."""
        hits = np.flatnonzero(self.detail[:, feature] & np.uint32(_ANY_BIT[kind]))[:limit]
        return [self._violation(int(i), feature, kind) for i in hits]

    def summary(self, max_examples: int = 3) -> dict[str, Any]:
        """A JSON-able report: row counts, then per feature and kind the count, action and a few examples."""
        features: dict[str, Any] = {}
        if self.failed:
            counts = self.counts
            for f, name in enumerate(self.arrays.names):
                kinds = {}
                for k, kind in enumerate(KINDS):
                    if counts[f, k]:
                        kinds[kind] = {
                            "count": int(counts[f, k]), "action": self.arrays.action_at(f, kind),
                            "examples": [v.to_dict() for v in self.examples(f, kind, max_examples)],
                        }
                if kinds:
                    features[name] = kinds
        return {
            "rows": self.rows,
            "failed_rows": int(self.failed),
            "rejected_rows": int(self.rejected_rows.sum()),
            "flagged_rows": int(self.flagged_rows.sum()),
            "features": features,
        }


_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def validate(arrays: SchemaArrays, X: np.ndarray, *, not_a_number: np.ndarray | None = None,
             raw: Mapping[tuple[int, int], Any] | None = None, row_offset: int = 0) -> ValidationResult:
    """Check the batch ``X`` [rows, features] against ``arrays``.

    ``X`` should be a C-contiguous float32 or float64 array (what the model is fed); anything else is
    converted (other numbers to float64). ``not_a_number`` (bool [rows, features], optional) marks cells that
    held something other than a number (``X`` must hold NaN there): they fail ``not_a_number`` instead of
    ``missing``; ``raw`` may map ``(row, column)`` to what was sent there, for messages. ``row_offset`` is
    added to reported row numbers.
    """
    if type(X) is not np.ndarray or X.ndim != 2 or (X.dtype is not _F32 and X.dtype is not _F64) \
            or not X.flags.c_contiguous:
        X = _as_batch(X)
    if X.shape[1] != len(arrays.names):
        raise ValueError(f"a batch of {X.shape[1]} features for a schema of {len(arrays.names)}")
    row_mask = np.empty(X.shape[0], dtype=np.uint32)
    params = arrays._params32 if X.dtype is _F32 else arrays.params
    failed = validate_rows(X, params, arrays.meta, arrays.cat_ok, row_mask)
    nan_cells = None
    if not_a_number is not None:
        nan_cells = np.asarray(not_a_number, dtype=np.bool_)
        if nan_cells.shape != X.shape:
            raise ValueError(f"not_a_number has shape {nan_cells.shape}, the batch {X.shape}")
        if nan_cells.any() and arrays.action(NOT_A_NUMBER) != OFF:
            failed = _mark_not_a_number(arrays, X, nan_cells, row_mask)
        else:
            nan_cells = None
    return ValidationResult(arrays, X, row_mask, failed, row_offset, nan_cells, raw)


def _as_batch(X: Any) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"a batch must be 2-D [rows, features], got shape {X.shape}")
    if X.dtype != _F32 and X.dtype != _F64:
        if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
            raise ValueError(f"a batch must be numeric, got {X.dtype}")
        X = X.astype(np.float64)
    if X.dtype.byteorder not in ("=", "|"):
        X = X.astype(X.dtype.newbyteorder("="))
    return np.ascontiguousarray(X)


def _mark_not_a_number(arrays: SchemaArrays, X: np.ndarray, nan_cells: np.ndarray, row_mask: np.ndarray) -> int:
    """Recompute the masks of rows with not-a-number cells: those cells fail ``not_a_number``, not ``missing``."""
    rows = np.flatnonzero(nan_cells.any(axis=1)).astype(np.int64)
    detail = np.zeros((len(rows), X.shape[1]), dtype=np.uint32)
    feature_bits(X, rows, arrays.for_dtype(X.dtype), arrays.meta, arrays.cat_ok, detail)
    cells = nan_cells[rows]
    detail[cells] = (detail[cells] & np.uint32(~BIT[MISSING] & 0xFFFFFFFF)) | np.uint32(BIT[NOT_A_NUMBER])
    row_mask[rows] = np.bitwise_or.reduce(detail, axis=1)
    return int(np.count_nonzero(row_mask))
