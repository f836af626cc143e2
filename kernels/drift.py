"""Mergeable drift states: binned counts and running moments of a stream of batches.

The server updates one :class:`DriftState` per served model version inline, on every executed batch
(:func:`update`); the trainer runs the very same kernel over the training rows to get the profile's
reference state, which is what keeps training and serving binned identically.

Bin convention (one convention, used by the profile, the CPU kernel and the CUDA kernel)
---------------------------------------------------------------------------------------
A numeric column ``c`` has ``k = n_edges[c]`` strictly increasing edges ``e[0] < ... < e[k-1]``
(``edges[c, :k]``; the rest of the row is padding) and ``k + 1`` bins::

    bin 0            v <  e[0]                  underflow (below the training minimum)
    bin i, 1<=i<k    e[i-1] <= v < e[i]         left-closed, right-open
    bin k            v >= e[k-1]                overflow (above the training maximum)

i.e. ``bin = np.searchsorted(e, v, side="right")``. The profile puts ``e[0]`` at the training minimum
and ``e[k-1]`` at the next float64 above the training maximum, so bins 0 and k count exactly the values
outside the training range. ``-inf`` lands in bin 0 and ``+inf`` in bin k.

A categorical column has ``k = n_edges[c]`` categories, coded ``0.0 .. k-1.0``: an integral value ``v``
with ``0 <= v < k`` goes to bin ``int(v)``; anything else (negative, fractional, too large, infinite)
goes to bin ``k``, "other". Its ``edges`` row is not read.

NaN is *missing* everywhere: counted in ``missing``, never in a bin, in min/max or in the moments.
Infinite values are counted in their bin and in min/max but not in the moments (``n``, ``mean``,
``m2`` cover finite values only), so one bad value cannot poison a running mean forever.

Every value that is not NaN is in exactly one bin, so for every column
``missing[c] + counts[c].sum()`` is the number of rows seen.

States are not thread-safe: give each thread its own state and :func:`merge` them, or hold a lock
around :func:`update` (which releases the GIL).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

STATE_FORMAT = 1


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True, eq=False)
class BinLayout:
    """How each column is binned: padded edges, the number of edges (or categories), the kind.

    ``edges``: float64 [columns, max(1, max n_edges)], padded with +inf; ``n_edges``: int64 [columns];
    ``is_categorical``: bool [columns]. A column has ``n_edges[c] + 1`` bins; states are
    ``[columns, width]`` with ``width = max(n_edges) + 1``.

    ``is_discrete``: bool [columns] (default all False): a numeric column whose training values are exactly
    its interior edges (``e[0..k-2]``, ``e[k-1]`` the next float above the last), so every interior bin holds
    one value. Binning ignores it; the statistics read it to put a bin's mass at a point instead of
    spreading it over the bin (see :mod:`driftline.kernels.drift_stats`).
    """

    edges: np.ndarray
    n_edges: np.ndarray
    is_categorical: np.ndarray
    is_discrete: np.ndarray | None = None

    def __post_init__(self) -> None:
        edges = np.ascontiguousarray(self.edges, dtype=np.float64)
        n_edges = np.ascontiguousarray(self.n_edges, dtype=np.int64)
        is_categorical = np.ascontiguousarray(self.is_categorical, dtype=np.bool_)
        if edges.ndim != 2 or n_edges.shape != (edges.shape[0],) or is_categorical.shape != n_edges.shape:
            raise ValueError(
                f"layout shapes disagree: edges {edges.shape}, n_edges {n_edges.shape}, "
                f"is_categorical {is_categorical.shape}"
            )
        if n_edges.size and (n_edges.min() < 0 or n_edges.max() > edges.shape[1]):
            raise ValueError(f"n_edges must lie in 0..{edges.shape[1]}, got {n_edges.tolist()}")
        for c in np.flatnonzero(~is_categorical):
            row = edges[c, : n_edges[c]]
            if not np.all(np.isfinite(row)) or np.any(np.diff(row) <= 0):
                raise ValueError(f"column {c}: edges must be finite and strictly increasing, got {row.tolist()}")
        if self.is_discrete is None:
            is_discrete = np.zeros(n_edges.shape, dtype=np.bool_)
        else:
            is_discrete = np.ascontiguousarray(self.is_discrete, dtype=np.bool_)
        if is_discrete.shape != n_edges.shape:
            raise ValueError(f"is_discrete has shape {is_discrete.shape}, expected {n_edges.shape}")
        if np.any(is_discrete & is_categorical):
            raise ValueError(f"categorical columns cannot be discrete: {np.flatnonzero(is_discrete & is_categorical)}")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "n_edges", n_edges)
        object.__setattr__(self, "is_categorical", is_categorical)
        object.__setattr__(self, "is_discrete", is_discrete)

    @property
    def columns(self) -> int:
        return int(self.n_edges.shape[0])

    @property
    def width(self) -> int:
        """Bins per column in a state's ``counts`` (the widest column's)."""
        return int(self.n_edges.max()) + 1 if self.n_edges.size else 1

    @property
    def n_bins(self) -> np.ndarray:
        return self.n_edges + 1

    @classmethod
    def from_columns(cls, edges: list[np.ndarray | list[float]], categories: list[int | None],
                     discrete: list[bool] | None = None) -> BinLayout:
        """One entry per column: numeric columns give their edges (``categories[c]`` None), categorical
        ones give ``categories[c] = K`` (their ``edges[c]`` is ignored); ``discrete[c]`` marks a numeric
        column as discrete (default: none is)."""
        if len(edges) != len(categories):
            raise ValueError(f"{len(edges)} edge lists for {len(categories)} columns")
        if discrete is not None and len(discrete) != len(edges):
            raise ValueError(f"{len(discrete)} discrete flags for {len(edges)} columns")
        sizes = [len(e) if k is None else int(k) for e, k in zip(edges, categories, strict=True)]
        padded = np.full((len(sizes), max([1, *sizes])), np.inf)
        for c, (e, k) in enumerate(zip(edges, categories, strict=True)):
            if k is None:
                padded[c, : len(e)] = np.asarray(e, dtype=np.float64)
            else:
                padded[c, : int(k)] = np.arange(int(k), dtype=np.float64)  # not read; shows the codes
        is_discrete = np.zeros(len(sizes), dtype=np.bool_) if discrete is None else np.asarray(discrete, dtype=np.bool_)
        return cls(padded, np.asarray(sizes, dtype=np.int64), np.asarray([k is not None for k in categories]),
                   is_discrete)


# --------------------------------------------------------------------------- state


@dataclass(frozen=True, eq=False)
class DriftState:
    """Binned counts and moments of every column. Fields are fixed; :func:`update` fills the arrays in place.

    ``counts`` int64 [columns, width]; ``missing`` int64 [columns] (NaN); ``n`` int64 [columns] (finite
    values, the moments' count); ``mean``, ``m2`` float64 [columns] (Welford/Chan: variance = m2 / n);
    ``min``, ``max`` float64 [columns] over all non-NaN values (+inf / -inf while empty).
    """

    counts: np.ndarray
    missing: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @property
    def columns(self) -> int:
        return int(self.counts.shape[0])

    @property
    def rows(self) -> int:
        """Rows seen (every row is missing or in one bin of each column)."""
        return int(self.missing[0] + self.counts[0].sum()) if self.columns else 0

    def variance(self) -> np.ndarray:
        """Population variance (m2 / n) of the finite values; NaN where a column has none."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, self.m2 / np.maximum(self.n, 1), np.nan)

    def copy(self) -> DriftState:
        return DriftState(*(getattr(self, f).copy() for f in _FIELDS))

    def update(self, X: np.ndarray, layout: BinLayout) -> DriftState:
        """Checked :func:`update` of this state with a batch; returns ``self``."""
        update_state(self, X, layout)
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``json.dumps(..., allow_nan=False)`` works: non-finite floats become strings)."""
        return {
            "format": STATE_FORMAT,
            "counts": self.counts.tolist(),
            "missing": self.missing.tolist(),
            "n": self.n.tolist(),
            "mean": encode_floats(self.mean),
            "m2": encode_floats(self.m2),
            "min": encode_floats(self.min),
            "max": encode_floats(self.max),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftState:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported drift state format {data.get('format')!r}; this reader knows {STATE_FORMAT}")
        counts = np.asarray(data["counts"], dtype=np.int64)
        if counts.ndim != 2:
            raise ValueError(f"counts must be [columns, bins], got shape {counts.shape}")
        state = cls(
            counts=counts,
            missing=np.asarray(data["missing"], dtype=np.int64),
            n=np.asarray(data["n"], dtype=np.int64),
            mean=decode_floats(data["mean"]),
            m2=decode_floats(data["m2"]),
            min=decode_floats(data["min"]),
            max=decode_floats(data["max"]),
        )
        for f in _FIELDS[1:]:
            if getattr(state, f).shape != (counts.shape[0],):
                raise ValueError(f"{f} must have one value per column ({counts.shape[0]})")
        return state


_FIELDS = ("counts", "missing", "n", "mean", "m2", "min", "max")


def empty_state(layout: BinLayout) -> DriftState:
    """The state of no rows: the identity of :func:`merge`."""
    c = layout.columns
    return DriftState(
        counts=np.zeros((c, layout.width), dtype=np.int64),
        missing=np.zeros(c, dtype=np.int64),
        n=np.zeros(c, dtype=np.int64),
        mean=np.zeros(c, dtype=np.float64),
        m2=np.zeros(c, dtype=np.float64),
        min=np.full(c, np.inf),
        max=np.full(c, -np.inf),
    )


def _check_same_shape(a: DriftState, b: DriftState) -> None:
    if a.counts.shape != b.counts.shape:
        raise ValueError(f"states of different layouts: counts {a.counts.shape} and {b.counts.shape}")


def merge(a: DriftState, b: DriftState) -> DriftState:
    """The state of the rows of ``a`` and ``b`` together (a new state; ``a`` and ``b`` are unchanged).

    Counts, missing, n, min and max are exact; mean and m2 use Chan et al.'s pairwise formula.
    """
    _check_same_shape(a, b)
    out = a.copy()
    merge_into(out, b)
    return out


def merge_into(dst: DriftState, src: DriftState) -> None:
    """``dst`` becomes ``merge(dst, src)``, in place."""
    _check_same_shape(dst, src)
    merge_moments_into(dst, src.n, src.mean, src.m2)
    np.add(dst.counts, src.counts, out=dst.counts)
    np.add(dst.missing, src.missing, out=dst.missing)
    np.minimum(dst.min, src.min, out=dst.min)
    np.maximum(dst.max, src.max, out=dst.max)


def merge_moments_into(dst: DriftState, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
    """Chan's update of ``dst``'s (n, mean, m2) with another part's; exact when either part is empty."""
    n_a = dst.n.astype(np.float64)
    nb = np.asarray(n_b, dtype=np.float64)
    total = n_a + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_b = np.where(total > 0, nb / np.maximum(total, 1.0), 0.0)
        delta = np.where(nb > 0, mean_b - dst.mean, 0.0)
        dst.mean[:] = dst.mean + delta * frac_b
        dst.m2[:] = dst.m2 + np.where(nb > 0, m2_b, 0.0) + delta * delta * n_a * frac_b
    np.add(dst.n, np.asarray(n_b, dtype=np.int64), out=dst.n)


# --------------------------------------------------------------------------- kernels


# Up to this many edges a branch-free linear count beats a binary search (about 3x at 21 edges on
# random data: the search's branches are unpredictable); above it, binary search.
LINEAR_SCAN_MAX_EDGES = 32


def bin_index_py(v, edges, c, k, categorical):  # noqa: ANN001, ANN201 - compiled for CPU and CUDA
    """The bin of a non-NaN value ``v`` in column ``c`` (see the module docstring).

    Plain Python on purpose: :func:`update` compiles it with ``njit`` and ``drift_cuda`` with
    ``cuda.jit(device=True)``, so both kernels bin with the same source.
    """
    if categorical:
        if v >= 0.0 and v < k and v == math.floor(v):
            return int(v)
        return k
    if k <= LINEAR_SCAN_MAX_EDGES:  # count the edges <= v without data-dependent branches
        below = 0
        for j in range(k):
            below += edges[c, j] <= v
        return below
    lo = 0
    hi = k
    while lo < hi:  # first edge > v, i.e. the number of edges <= v
        mid = (lo + hi) >> 1
        if v >= edges[c, mid]:
            lo = mid + 1
        else:
            hi = mid
    return lo


_bin_index = njit(nogil=True, cache=True, inline="always")(bin_index_py)


@njit(nogil=True, cache=True)
def update(counts, missing, n, mean, m2, vmin, vmax, X, edges, n_edges, is_categorical):  # noqa: ANN001, ANN201
    """Fold a batch ``X`` [rows, columns] (float32 or float64) into the state arrays, in place.

    Per column, the batch's finite values get two-pass moments (batch mean, then the sum of squared
    deviations from it) that are merged into (n, mean, m2) with Chan's formula - the same arithmetic as
    :func:`merge`, so splitting a stream into batches changes moments only by rounding. No checks: use
    :func:`update_state` unless the shapes are known to agree (``X.shape[1] == counts.shape[0]`` and
    ``counts.shape[1] > n_edges.max()``).
    """
    rows = X.shape[0]
    cols = X.shape[1]
    for c in range(cols):
        k = n_edges[c]
        categorical = is_categorical[c]
        miss = 0
        cnt = 0
        total = 0.0
        lo = vmin[c]
        hi = vmax[c]
        for r in range(rows):
            v = np.float64(X[r, c])
            if v != v:
                miss += 1
                continue
            counts[c, _bin_index(v, edges, c, k, categorical)] += 1
            if v < lo:
                lo = v
            if v > hi:
                hi = v
            if math.isfinite(v):
                cnt += 1
                total += v
        missing[c] += miss
        vmin[c] = lo
        vmax[c] = hi
        if cnt == 0:
            continue
        batch_mean = total / cnt
        batch_m2 = 0.0
        for r in range(rows):
            v = np.float64(X[r, c])
            if math.isfinite(v):
                d = v - batch_mean
                batch_m2 += d * d
        n_a = np.float64(n[c])
        new_n = n[c] + cnt
        frac_b = cnt / np.float64(new_n)
        delta = batch_mean - mean[c]
        mean[c] += delta * frac_b
        m2[c] += batch_m2 + delta * delta * n_a * frac_b
        n[c] = new_n


def update_state(state: DriftState, X: np.ndarray, layout: BinLayout) -> None:
    """:func:`update` after checking that the batch, the state and the layout agree."""
    if not isinstance(X, np.ndarray) or X.ndim != 2:
        shape = getattr(X, "shape", "")
        raise ValueError(f"a batch must be a 2-D array [rows, columns], got {type(X).__name__} {shape}")
    if X.dtype not in (np.float32, np.float64):
        raise ValueError(f"a batch must be float32 or float64, got {X.dtype}")
    if X.shape[1] != layout.columns or state.counts.shape != (layout.columns, layout.width):
        raise ValueError(
            f"batch of {X.shape[1]} columns, state counts {state.counts.shape}, layout of "
            f"{layout.columns} columns x {layout.width} bins"
        )
    update(state.counts, state.missing, state.n, state.mean, state.m2, state.min, state.max,
           X, layout.edges, layout.n_edges, layout.is_categorical)


def state_of(X: np.ndarray, layout: BinLayout) -> DriftState:
    """The state of one batch."""
    state = empty_state(layout)
    update_state(state, X, layout)
    return state


# --------------------------------------------------------------------------- JSON-safe floats

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_float(x: float) -> float | str:
    """A finite float as itself; NaN and +-inf as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def decode_float(x: float | int | str) -> float:
    if isinstance(x, str):
        try:
            return _NON_FINITE[x]
        except KeyError:
            raise ValueError(f"not a number: {x!r}") from None
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ValueError(f"not a number: {x!r}")
    return float(x)


def encode_floats(values: np.ndarray) -> list[float | str]:
    return [encode_float(x) for x in np.asarray(values, dtype=np.float64).tolist()]


def decode_floats(values: list[float | int | str]) -> np.ndarray:
    return np.asarray([decode_float(x) for x in values], dtype=np.float64)
