"""Drift statistics of a live :class:`~driftline.kernels.drift.DriftState` against a training reference.

Everything is computed from the binned counts (both states share one :class:`BinLayout`), vectorised
over columns with numpy: a report for a few dozen columns takes tens of microseconds.

Per column, with ``p`` the reference's and ``q`` the live bin proportions (NaN excluded):

* ``psi``: Population Stability Index, ``sum((q - p) * ln(q / p))`` with both proportions floored at
  ``PSI_EPSILON`` so that empty bins (e.g. the training data's empty under/overflow bins) stay finite.
* ``js``: Jensen-Shannon *distance* (square root of the divergence), base 2, in [0, 1].
* ``ks``: Kolmogorov-Smirnov statistic of the binned CDFs (max over bin edges of ``|P(X < e) - Q(X < e)|``):
  the raw two-sample KS evaluated at the edges, so it is <= the raw statistic and within the largest bin
  mass of it. Numeric columns only.
* ``wasserstein``: W1 between the two binned distributions with mass spread uniformly inside each bin
  (exact integral of ``|F_p - F_q|`` over piecewise-linear CDFs). The underflow bin starts at the smaller
  of the two minima, the overflow bin ends at the larger of the two maxima. In the column's units; infinite
  when a state holds infinite values in an outer bin. Numeric columns only. A *discrete* column
  (``layout.is_discrete``: one training value per interior bin) has its masses at points instead: interior
  bin ``i`` at ``e[i-1]``, the underflow bin at the smaller of the two minima, the overflow bin at the larger
  of the two maxima; then W1 is exact whenever the live values outside the training range take at most one
  value on each side (spreading a 0/1 flag's mass over [0, 1) and [1, 1+ulp) was off by up to ~0.5 of
  a unit).
* ``mean_shift``: ``(live mean - training mean) / training standard deviation`` (finite values, population
  sd); +-inf when the training column is constant and the live mean differs. Numeric columns only.
* ``chi2`` / ``chi2_dof``: Pearson's chi-square of the 2 x K table (training counts, live counts) over the
  bins that are non-empty in either sample - a test of homogeneity, so training is treated as a sample too.
  Categorical columns only.
* ``p_value``: numeric columns: the asymptotic two-sample KS p-value of ``ks`` with the effective sample size
  ``n_live * n_ref / (n_live + n_ref)`` (``scipy.special.kolmogorov``, the Kolmogorov distribution's survival
  function); the binned statistic is <= the raw one, so the p-value is conservative. Categorical columns:
  ``scipy.stats.chi2.sf(chi2, chi2_dof)`` (1 when both samples use a single category).

Statistics that do not apply, or that lack data (no live or no reference values), are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.special import chdtrc, kolmogorov

from driftline.kernels.drift import BinLayout, DriftState

PSI_EPSILON = 1e-4  # floor of a bin's proportion in PSI: an empty bin that gains 1% of the rows adds ~0.046


@dataclass(frozen=True)
class Thresholds:
    """When a column alarms. A statistic alarms when it is strictly above its threshold (None disables it).

    Defaults, chosen for ~20 quantile bins and at least ``min_rows`` live values against a training set of
    thousands of rows. Simulated with 500 live vs 5000 training rows of one distribution (22 bins), the 99th
    percentiles of pure sampling noise were PSI 0.08, JS 0.12, KS 0.076, |mean shift| 0.13; a normal column
    shifted by 0.25 sd gave PSI 0.11, JS 0.14, KS 0.11, and by 0.5 sd PSI 0.29, JS 0.23, KS 0.20.

    * ``psi = 0.2``: the industry rule of thumb (< 0.1 stable, 0.1-0.2 moderate, > 0.2 significant shift).
      Sampling noise at 500 live rows and 22 bins gives PSI ~ (bins - 1) / n ~ 0.04.
    * ``js = 0.2``: a JS distance of 0.2 is about what PSI 0.2 means for small shifts (PSI ~ chi2 / n and
      JS divergence ~ chi2 / (8 n ln 2), so JS distance ~ sqrt(PSI / 5.5) ~ 0.19). Lower values such as 0.1
      sit inside the sampling noise at 500 rows (~0.09 at 22 bins).
    * ``ks = 0.1``: the two-sample KS critical value at 500 vs 5000 rows is ~0.064 at p = 0.05 and ~0.1 at
      p ~ 2e-4; 0.1 also corresponds to a shift of ~0.25 sd of a normal column.
    * ``mean_shift = 0.5``: half a training standard deviation (Cohen's "medium" effect); at 500 rows the
      mean's standard error is 0.045 sd, so this is never noise, and it catches shifts in heavy-tailed
      columns that the bounded statistics (KS, JS) see only weakly.
    * ``alpha = 0.001``: the "test" alarm fires when a column's Holm-Bonferroni adjusted p-value (KS for
      numeric, chi-square for categorical columns; adjusted over every column of the report) is below it, so
      the chance of any false "test" alarm in one report is at most ``alpha`` whatever the column count. Its
      sensitivity grows with the live rows, unlike the effect-size thresholds above.
    * ``min_rows = 500``: no alarm before a column has this many live (non-missing) values; the report's
      ``note`` says so ("too few rows: 93 of 500") instead of letting a quiet column read as undrifted.
    * ``min_rows_sampled = 200``: the server's ``min_rows`` for columns that see only a sample of the rows
      (e.g. attribution shares, computed for one row in N), passed to :func:`report` per column.

    Categorical columns alarm on PSI, JS and the test only (chi-square itself grows with the row count; W1,
    KS and the mean of codes mean nothing for unordered categories).
    """

    psi: float | None = 0.2
    js: float | None = 0.2
    ks: float | None = 0.1
    mean_shift: float | None = 0.5
    alpha: float | None = 0.001
    min_rows: int = 500
    min_rows_sampled: int = 200


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    name: str
    kind: str  # "numeric" or "categorical"
    rows: int  # live non-missing values of this column
    psi: float
    js: float
    ks: float
    wasserstein: float
    mean_shift: float
    chi2: float
    chi2_dof: int
    alarm: bool
    alarms: tuple[str, ...]  # which statistics crossed their thresholds, e.g. ("psi", "ks", "test")
    p_value: float = math.nan  # KS (numeric) or chi-square (categorical); NaN without data
    p_adjusted: float = math.nan  # Holm-Bonferroni over the report's columns; NaN where p_value is
    note: str = ""  # why a column cannot alarm, e.g. "too few rows: 93 of 500"; "" otherwise
    discrete: bool = False  # numeric column compared as discrete values (see BinLayout.is_discrete)


class ReferenceLike(Protocol):
    """What :func:`report` needs from a training profile (``driftline.registry.profile.Profile`` has it)."""

    @property
    def names(self) -> Sequence[str]: ...

    @property
    def layout(self) -> BinLayout: ...

    @property
    def reference(self) -> DriftState: ...


@dataclass(frozen=True)
class DriftStatistics:
    """Every statistic for every column, as float64 arrays [columns] (``chi2_dof`` and ``rows`` int64)."""

    rows: np.ndarray
    psi: np.ndarray
    js: np.ndarray
    ks: np.ndarray
    wasserstein: np.ndarray
    mean_shift: np.ndarray
    chi2: np.ndarray
    chi2_dof: np.ndarray
    p_value: np.ndarray


def statistics(live: DriftState, reference: DriftState, layout: BinLayout, *,
               psi_epsilon: float = PSI_EPSILON) -> DriftStatistics:
    """All statistics of ``live`` against ``reference``, both binned with ``layout``."""
    if live.counts.shape != reference.counts.shape or live.counts.shape != (layout.columns, layout.width):
        raise ValueError(
            f"live counts {live.counts.shape}, reference counts {reference.counts.shape} and layout "
            f"({layout.columns} columns x {layout.width} bins) disagree"
        )
    categorical = layout.is_categorical
    live_counts = live.counts.astype(np.float64)
    ref_counts = reference.counts.astype(np.float64)
    n_live = live_counts.sum(axis=1)
    n_ref = ref_counts.sum(axis=1)
    usable = (n_live > 0) & (n_ref > 0)

    with np.errstate(divide="ignore", invalid="ignore"):
        q = live_counts / n_live[:, None]
        p = ref_counts / n_ref[:, None]

        # PSI; bins past a column's last are 0 in both and add (eps - eps) * ln 1 = 0
        pe = np.maximum(p, psi_epsilon)
        qe = np.maximum(q, psi_epsilon)
        psi = np.where(usable, ((qe - pe) * np.log(qe / pe)).sum(axis=1), np.nan)

        # Jensen-Shannon distance, base 2; 0 * log 0 = 0
        m = 0.5 * (p + q)
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
        js = np.where(usable, np.sqrt(np.clip(0.5 * (kl_p + kl_q), 0.0, 1.0)), np.nan)

        # binned CDFs at the right end of every bin; d[:, j] = F_p - F_q after bin j
        d = np.cumsum(p, axis=1) - np.cumsum(q, axis=1)
        numeric_ok = usable & ~categorical
        ks = np.where(numeric_ok, np.abs(d).max(axis=1), np.nan)

        wasserstein = np.where(numeric_ok, _wasserstein(d, live, reference, layout), np.nan)

        sd = np.sqrt(reference.m2 / reference.n)
        diff = live.mean - reference.mean
        shift = np.where(diff == 0, 0.0, diff / sd)
        mean_shift = np.where(~categorical & (live.n > 0) & (reference.n > 0), shift, np.nan)

        chi2, dof = _chi2(ref_counts, live_counts, n_ref, n_live)
        chi2 = np.where(usable & categorical, chi2, np.nan)
        dof = np.where(usable & categorical, dof, 0)

        n_effective = n_live * n_ref / (n_live + n_ref)
        p_ks = kolmogorov(ks * np.sqrt(n_effective))
        # one category used by both samples: nothing to tell apart (chdtrc is NaN at 0 dof)
        p_chi2 = np.where(dof > 0, chdtrc(np.maximum(dof, 1), chi2), 1.0)
        p_value = np.where(numeric_ok, p_ks, np.where(usable & categorical, p_chi2, np.nan))

    return DriftStatistics(
        rows=n_live.astype(np.int64), psi=psi, js=js, ks=ks, wasserstein=wasserstein,
        mean_shift=mean_shift, chi2=chi2, chi2_dof=dof.astype(np.int64), p_value=p_value,
    )


def _wasserstein(d: np.ndarray, live: DriftState, reference: DriftState, layout: BinLayout) -> np.ndarray:
    """Integral of |F_p - F_q| over piecewise-linear CDFs (step CDFs for discrete columns); ``d`` holds
    F_p - F_q after each bin."""
    spread = _wasserstein_spread(d, live, reference, layout)
    if not layout.is_discrete.any():
        return spread
    return np.where(layout.is_discrete, _wasserstein_points(d, live, reference, layout), spread)


def _wasserstein_points(d: np.ndarray, live: DriftState, reference: DriftState, layout: BinLayout) -> np.ndarray:
    """W1 with each bin's mass at one point: underflow at the lower minimum, interior bin i at e[i-1],
    overflow at the higher maximum; columns past a column's last bin repeat the overflow point."""
    cols, width = d.shape
    k = layout.n_edges
    rows = np.arange(cols)
    lo = np.minimum(np.minimum(live.min, reference.min), layout.edges[:, 0])
    last_value = layout.edges[rows, np.maximum(k - 2, 0)]
    hi = np.maximum(np.maximum(live.max, reference.max), last_value)
    j = np.arange(width)[None, :]
    x = np.concatenate([lo[:, None], layout.edges[:, : width - 1]], axis=1)
    x = np.where(j >= k[:, None], hi[:, None], x)
    with np.errstate(invalid="ignore"):
        gaps = np.diff(x, axis=1)  # [cols, width - 1]: from each bin's point to the next one's
    gaps[np.isnan(gaps)] = 0.0  # inf - inf: repeated overflow points past a column's last bin
    gap_f = np.abs(d[:, : width - 1])
    area = np.where(gap_f > 0, gap_f * gaps, 0.0)  # an infinite distance with no CDF gap adds nothing
    return area.sum(axis=1)


def _wasserstein_spread(d: np.ndarray, live: DriftState, reference: DriftState, layout: BinLayout) -> np.ndarray:
    """W1 with each bin's mass spread uniformly over it (piecewise-linear CDFs)."""
    cols, width = d.shape
    k = layout.n_edges
    # bin boundaries x[:, 0..width]: x0 = outer low, x[1..k] = edges, x[k+1..] = outer high (zero widths)
    lo = np.minimum(np.minimum(live.min, reference.min), layout.edges[:, 0])
    last = layout.edges[np.arange(cols), np.maximum(k - 1, 0)]
    hi = np.maximum(np.maximum(live.max, reference.max), last)
    no_edges = k == 0
    lo = np.where(no_edges, np.minimum(live.min, reference.min), lo)
    hi = np.where(no_edges, np.maximum(live.max, reference.max), hi)
    x = np.empty((cols, width + 1))
    x[:, 0] = lo
    x[:, 1:] = np.where(np.arange(1, width + 1)[None, :] <= k[:, None],
                        np.concatenate([layout.edges, np.full((cols, 1), np.inf)], axis=1)[:, :width], hi[:, None])
    widths = np.diff(x, axis=1)  # [cols, width]
    widths[np.isnan(widths)] = 0.0  # inf - inf: a zero-width bin past the last one
    a = np.concatenate([np.zeros((cols, 1)), d[:, :-1]], axis=1)  # F_p - F_q at each bin's left end
    b = d  # ... and right end
    abs_a, abs_b = np.abs(a), np.abs(b)
    same_sign = a * b >= 0
    total = abs_a + abs_b
    mean_gap = np.where(same_sign, 0.5 * total, np.where(total > 0, 0.5 * (a * a + b * b) / total, 0.0))
    area = np.where(mean_gap > 0, mean_gap * widths, 0.0)  # an infinite width with no gap adds nothing
    return area.sum(axis=1)


def _chi2(ref: np.ndarray, live: np.ndarray, n_ref: np.ndarray, n_live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    col_total = ref + live
    n = (n_ref + n_live)[:, None]
    e_ref = n_ref[:, None] * col_total / n
    e_live = n_live[:, None] * col_total / n
    used = col_total > 0
    terms = np.where(used, (ref - e_ref) ** 2 / e_ref + (live - e_live) ** 2 / e_live, 0.0)
    return terms.sum(axis=1), np.maximum(used.sum(axis=1) - 1, 0)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values of one family: the tests are the non-NaN entries (NaN stays NaN).

    The i-th smallest of m p-values becomes ``max over j <= i of min(1, (m - j + 1) * p_(j))``; rejecting
    where the adjusted value is below alpha keeps the family-wise error rate at alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    if tested.size == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def report(live: DriftState, profile: ReferenceLike, thresholds: Thresholds | None = None, *,
           psi_epsilon: float = PSI_EPSILON, min_rows: Sequence[int] | None = None) -> list[ColumnDrift]:
    """One :class:`ColumnDrift` per profile column, in the profile's order.

    ``min_rows`` (one per column) overrides ``thresholds.min_rows``, e.g. with ``thresholds.min_rows_sampled``
    for columns that see only a sample of the rows.
    """
    thresholds = thresholds or Thresholds()
    layout = profile.layout
    s = statistics(live, profile.reference, layout, psi_epsilon=psi_epsilon)
    if min_rows is None:
        minimum = np.full(layout.columns, thresholds.min_rows, dtype=np.int64)
    else:
        minimum = np.asarray(min_rows, dtype=np.int64)
        if minimum.shape != (layout.columns,):
            raise ValueError(f"min_rows needs one value per column ({layout.columns}), got {len(min_rows)}")
    enough = s.rows >= minimum
    p_adjusted = holm(s.p_value)
    checks = []  # (name, values, applies to categorical)
    for name, values, categorical_too in (("psi", s.psi, True), ("js", s.js, True),
                                          ("ks", s.ks, False), ("mean_shift", np.abs(s.mean_shift), False)):
        limit = getattr(thresholds, name)
        if limit is not None:
            fired = enough & (values > limit)
            if not categorical_too:
                fired &= ~layout.is_categorical
            checks.append((name, fired.tolist()))
    if thresholds.alpha is not None:
        checks.append(("test", (enough & (p_adjusted < thresholds.alpha)).tolist()))
    kinds = ["categorical" if c else "numeric" for c in layout.is_categorical.tolist()]
    columns = zip(profile.names, kinds, s.rows.tolist(), s.psi.tolist(), s.js.tolist(), s.ks.tolist(),
                  s.wasserstein.tolist(), s.mean_shift.tolist(), s.chi2.tolist(), s.chi2_dof.tolist(),
                  s.p_value.tolist(), p_adjusted.tolist(), minimum.tolist(), layout.is_discrete.tolist(), strict=True)
    out = []
    for i, (name, kind, rows, psi, js, ks, w1, shift, chi2, dof, p, p_adj, least, discrete) in enumerate(columns):
        alarms = tuple(stat for stat, fired in checks if fired[i])
        note = f"too few rows: {rows} of {least}" if rows < least else ""
        out.append(ColumnDrift(name, kind, rows, psi, js, ks, w1, shift, chi2, dof, bool(alarms), alarms,
                               p, p_adj, note, discrete))
    return out
