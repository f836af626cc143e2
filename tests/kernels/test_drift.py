"""Drift states and statistics against independent numpy/scipy references (the references live here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

from driftline.kernels.drift import (
    BinLayout,
    DriftState,
    empty_state,
    merge,
    merge_into,
    state_of,
    update,
    update_state,
)
from driftline.kernels.drift_stats import PSI_EPSILON, Thresholds, report, statistics

# --------------------------------------------------------------------------- naive references


def naive_bin(v: float, edges: np.ndarray, categorical: bool) -> int:
    """The documented convention, written the obvious way."""
    if categorical:
        k = len(edges)
        return int(v) if (0 <= v < k and v == math.floor(v)) else k
    return int(np.searchsorted(edges, v, side="right"))


def naive_state(X: np.ndarray, edges: list, categories: list) -> dict:
    cols = X.shape[1]
    width = max(len(e) if k is None else k for e, k in zip(edges, categories, strict=True)) + 1
    out = {"counts": np.zeros((cols, width), np.int64), "missing": np.zeros(cols, np.int64),
           "n": np.zeros(cols, np.int64), "mean": np.zeros(cols), "m2": np.zeros(cols),
           "min": np.full(cols, np.inf), "max": np.full(cols, -np.inf)}
    for c in range(cols):
        col = X[:, c].astype(np.float64)
        present = col[~np.isnan(col)]
        finite = col[np.isfinite(col)]
        cat = categories[c] is not None
        e = np.arange(categories[c], dtype=float) if cat else np.asarray(edges[c], dtype=float)
        for v in present:
            out["counts"][c, naive_bin(v, e, cat)] += 1
        out["missing"][c] = len(col) - len(present)
        out["n"][c] = len(finite)
        if len(finite):
            out["mean"][c] = finite.mean()
            out["m2"][c] = ((finite - finite.mean()) ** 2).sum()
        if len(present):
            out["min"][c], out["max"][c] = present.min(), present.max()
    return out


def assert_state_equal(state: DriftState, expected: dict | DriftState, rtol: float = 1e-9) -> None:
    get = expected.get if isinstance(expected, dict) else lambda f: getattr(expected, f)
    for f in ("counts", "missing", "n", "min", "max"):
        np.testing.assert_array_equal(getattr(state, f), get(f), err_msg=f)
    for f in ("mean", "m2"):
        np.testing.assert_allclose(getattr(state, f), get(f), rtol=rtol, atol=1e-12, err_msg=f)


def training_like(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Continuous, skewed, discrete (bedrooms) and categorical (label) columns."""
    return np.column_stack([
        rng.normal(80, 25, rows),
        rng.lognormal(6, 0.5, rows),
        rng.integers(1, 6, rows).astype(float),
        rng.integers(0, 3, rows).astype(float),
    ])


def layout_for(rng: np.random.Generator) -> tuple[BinLayout, list, list]:
    train = training_like(rng, 2000)
    edges = [np.unique(np.quantile(train[:, c], np.arange(20) / 20, method="inverted_cdf")).tolist()
             for c in range(3)]
    edges[0].append(float(np.nextafter(train[:, 0].max(), np.inf)))
    edges = [*edges, []]
    categories = [None, None, None, 3]
    return BinLayout.from_columns(edges, categories), edges, categories


def dirty(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Live rows with NaN, values outside the training range, +-inf and bad category codes."""
    X = training_like(rng, rows)
    X[rng.random(rows) < 0.1, 0] = np.nan
    X[rng.random(rows) < 0.05, 1] = 1e9
    X[rng.random(rows) < 0.05, 1] = -5.0
    X[rng.random(rows) < 0.02, 2] = np.inf
    X[rng.random(rows) < 0.02, 2] = -np.inf
    X[rng.random(rows) < 0.1, 3] = rng.choice([-1.0, 3.0, 1.5, np.inf, 7.0])
    X[rng.random(rows) < 0.05, 3] = np.nan
    return X


# --------------------------------------------------------------------------- update


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_update_matches_naive_reference(dtype: type) -> None:
    rng = np.random.default_rng(1)
    layout, edges, categories = layout_for(rng)
    X = dirty(rng, 3000).astype(dtype)
    assert_state_equal(state_of(X, layout), naive_state(X, edges, categories))


def test_numeric_counts_match_np_histogram() -> None:
    rng = np.random.default_rng(2)
    layout, edges, _ = layout_for(rng)
    X = dirty(rng, 5000)
    state = state_of(X, layout)
    for c in range(3):
        col = X[:, c][~np.isnan(X[:, c])]
        expected, _ = np.histogram(col, bins=[-np.inf, *edges[c], np.inf])
        np.testing.assert_array_equal(state.counts[c, : len(edges[c]) + 1], expected)
        assert state.counts[c, len(edges[c]) + 1:].sum() == 0
        assert state.missing[c] + state.counts[c].sum() == len(X)


def test_bins_are_left_closed_with_under_and_overflow() -> None:
    layout = BinLayout.from_columns([[1.0, 2.0, 3.0], []], [None, 2])
    X = np.array([[0.999, 0], [1.0, 1], [1.5, 2], [2.0, -1], [2.999, 0.5], [3.0, np.inf], [-np.inf, np.nan],
                  [np.inf, 1.0]])
    state = state_of(X, layout)
    assert state.counts[0].tolist() == [2, 2, 2, 2]  # <1: 0.999,-inf; [1,2); [2,3); >=3: 3.0, inf
    assert state.counts[1].tolist() == [1, 2, 4, 0]  # code 0; code 1 (x2); other: 2, -1, 0.5, inf
    assert state.missing.tolist() == [0, 1]
    assert state.n.tolist() == [6, 6]  # infinite values are binned but not in the moments
    assert state.min[0] == -np.inf and state.max[0] == np.inf
    finite = X[np.isfinite(X[:, 0]), 0]
    assert state.mean[0] == pytest.approx(finite.mean())


def test_discrete_column_one_bin_per_value() -> None:
    edges = [1.0, 2.0, 3.0, 4.0, 5.0, float(np.nextafter(5.0, np.inf))]
    layout = BinLayout.from_columns([edges], [None])
    X = np.array([[0.0], [1], [2], [2], [3], [4], [5], [5], [6]])
    assert state_of(X, layout).counts[0].tolist() == [1, 1, 2, 1, 1, 2, 1]


def test_many_edges_use_the_binary_search_path() -> None:
    rng = np.random.default_rng(3)
    edges = np.unique(rng.normal(size=200)).tolist()
    layout = BinLayout.from_columns([edges], [None])
    X = np.concatenate([rng.normal(size=(3000, 1)) * 1.5, [[edges[0]], [edges[-1]], [np.nan]]])
    assert_state_equal(state_of(X, layout), naive_state(X, [edges], [None]))


def test_update_accumulates_and_raw_kernel_is_in_place() -> None:
    rng = np.random.default_rng(4)
    layout, edges, categories = layout_for(rng)
    A, B = dirty(rng, 700), dirty(rng, 300)
    state = empty_state(layout)
    update(state.counts, state.missing, state.n, state.mean, state.m2, state.min, state.max,
           A, layout.edges, layout.n_edges, layout.is_categorical)
    state.update(B, layout)
    assert_state_equal(state, naive_state(np.vstack([A, B]), edges, categories))
    assert state.rows == 1000


def test_update_checks_its_inputs() -> None:
    layout, _, _ = layout_for(np.random.default_rng(5))
    state = empty_state(layout)
    with pytest.raises(ValueError, match="columns"):
        update_state(state, np.zeros((3, 5)), layout)
    with pytest.raises(ValueError, match="float32 or float64"):
        update_state(state, np.zeros((3, 4), dtype=np.int64), layout)
    with pytest.raises(ValueError, match="2-D"):
        update_state(state, np.zeros(4), layout)
    with pytest.raises(ValueError, match="strictly increasing"):
        BinLayout.from_columns([[1.0, 1.0]], [None])


def test_empty_batch_changes_nothing() -> None:
    layout, _, _ = layout_for(np.random.default_rng(6))
    state = state_of(np.empty((0, 4)), layout)
    assert_state_equal(state, empty_state(layout), rtol=0)


# --------------------------------------------------------------------------- merge


def test_merge_of_random_splits_equals_the_whole() -> None:
    rng = np.random.default_rng(7)
    layout, _, _ = layout_for(rng)
    for trial in range(50):
        rows = int(rng.integers(0, 400))
        X = dirty(rng, rows) * rng.uniform(0.5, 2.0)
        whole = state_of(X, layout)
        cuts = np.sort(rng.integers(0, rows + 1, size=int(rng.integers(1, 5))))
        parts = [state_of(p, layout) for p in np.split(X, cuts)]
        rng.shuffle(parts)
        merged = parts[0]
        for p in parts[1:]:
            merged = merge(merged, p) if trial % 2 else merge(p, merged)
        assert_state_equal(merged, whole)
        sequential = empty_state(layout)
        for p in np.split(X, cuts):
            sequential.update(p, layout)
        assert_state_equal(sequential, whole)


def test_merge_with_empty_is_exact_identity_and_leaves_inputs_alone() -> None:
    rng = np.random.default_rng(8)
    layout, _, _ = layout_for(rng)
    a = state_of(dirty(rng, 100), layout)
    before = a.copy()
    assert_state_equal(merge(a, empty_state(layout)), a, rtol=0)
    assert_state_equal(merge(empty_state(layout), a), a, rtol=0)
    assert_state_equal(a, before, rtol=0)
    with pytest.raises(ValueError, match="different layouts"):
        merge(a, empty_state(BinLayout.from_columns([[1.0]], [None])))
    merge_into(before, a)
    assert before.rows == 200


def test_state_dict_round_trip_is_json_safe_and_exact() -> None:
    rng = np.random.default_rng(9)
    layout, _, _ = layout_for(rng)
    X = dirty(rng, 200)
    X[:, 0] = np.nan  # empty moments and +-inf min/max
    state = state_of(X, layout)
    text = json.dumps(state.to_dict(), allow_nan=False)
    back = DriftState.from_dict(json.loads(text))
    assert_state_equal(back, state, rtol=0)
    assert back.min[0] == np.inf and back.max[0] == -np.inf
    with pytest.raises(ValueError, match="format"):
        DriftState.from_dict({**state.to_dict(), "format": 2})


# --------------------------------------------------------------------------- statistics


class Ref:
    """A minimal profile: what :func:`report` needs."""

    def __init__(self, layout: BinLayout, reference: DriftState, names: list[str]) -> None:
        self.layout, self.reference, self.names = layout, reference, names


def proportions(state: DriftState, c: int, bins: int) -> np.ndarray:
    counts = state.counts[c, :bins].astype(float)
    return counts / counts.sum()


def naive_psi(p: np.ndarray, q: np.ndarray) -> float:
    total = 0.0
    for pi, qi in zip(p, q, strict=True):
        pi, qi = max(pi, PSI_EPSILON), max(qi, PSI_EPSILON)
        total += (qi - pi) * math.log(qi / pi)
    return total


def naive_w1(p: np.ndarray, q: np.ndarray, edges: list[float], lo: float, hi: float) -> float:
    """Numerical integral of |F_p - F_q| for piecewise-linear CDFs on [lo, edges..., hi]."""
    xs = np.array([lo, *edges, hi])
    fp = np.concatenate([[0.0], np.cumsum(p)])
    fq = np.concatenate([[0.0], np.cumsum(q)])
    grid = np.union1d(np.linspace(lo, hi, 400_001), xs)
    gap = np.abs(np.interp(grid, xs, fp) - np.interp(grid, xs, fq))
    return float(np.trapezoid(gap, grid))


def two_samples(rng: np.random.Generator, shift: float = 0.0, live_rows: int = 2000):
    train = training_like(rng, 5000)
    live = training_like(rng, live_rows)
    live[:, 0] += shift * 25
    live[:, 1] *= 1 + shift
    if shift:
        live[: live_rows // 2, 3] = 2  # more of label 2
    return train, live


def profile_of(train: np.ndarray) -> Ref:
    edges = []
    for c in range(3):
        e = np.unique(np.quantile(train[:, c], np.arange(20) / 20, method="inverted_cdf"))
        edges.append([*e.tolist(), float(np.nextafter(train[:, c].max(), np.inf))])
    layout = BinLayout.from_columns([*edges, []], [None, None, None, 3])
    return Ref(layout, state_of(train, layout), ["area", "lot", "bedrooms", "label"])


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_psi_js_wasserstein_match_independent_computations(shift: float) -> None:
    rng = np.random.default_rng(10)
    train, live_rows = two_samples(rng, shift)
    ref = profile_of(train)
    live = state_of(live_rows, ref.layout)
    s = statistics(live, ref.reference, ref.layout)
    for c in range(4):
        bins = int(ref.layout.n_bins[c])
        p, q = proportions(ref.reference, c, bins), proportions(live, c, bins)
        assert s.psi[c] == pytest.approx(naive_psi(p, q), rel=1e-12, abs=1e-15)
        assert s.js[c] == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9, abs=1e-12)
        assert 0.0 <= s.js[c] <= 1.0
        if c < 3:
            edges = ref.layout.edges[c, : ref.layout.n_edges[c]].tolist()
            lo = min(train[:, c].min(), live_rows[:, c].min(), edges[0])
            hi = max(train[:, c].max(), live_rows[:, c].max(), edges[-1])
            assert s.wasserstein[c] == pytest.approx(naive_w1(p, q, edges, lo, hi), rel=1e-4, abs=1e-9)
            mean_shift = (live_rows[:, c].mean() - train[:, c].mean()) / train[:, c].std()
            assert s.mean_shift[c] == pytest.approx(mean_shift, rel=1e-9, abs=1e-12)
        else:
            assert math.isnan(s.wasserstein[c]) and math.isnan(s.ks[c]) and math.isnan(s.mean_shift[c])


@pytest.mark.parametrize("seed", range(8))
def test_binned_ks_is_raw_ks_within_bin_resolution(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    shift, rows = float(rng.choice([0.0, 0.05, 0.2, 1.0])), int(rng.integers(50, 3000))
    train, live_rows = two_samples(rng, shift=shift, live_rows=rows)
    ref = profile_of(train)
    live = state_of(live_rows, ref.layout)
    s = statistics(live, ref.reference, ref.layout)
    for c in range(3):
        raw = ks_2samp(train[:, c], live_rows[:, c]).statistic
        bins = int(ref.layout.n_bins[c])
        largest_bin = max(proportions(ref.reference, c, bins).max(), proportions(live, c, bins).max())
        assert s.ks[c] <= raw + 1e-12
        assert raw - s.ks[c] <= largest_bin + 1e-12


def test_categorical_chi2_matches_scipy_contingency() -> None:
    rng = np.random.default_rng(11)
    train, live_rows = two_samples(rng, shift=0.2)
    live_rows[:7, 3] = -1  # "other", empty in training
    ref = profile_of(train)
    live = state_of(live_rows, ref.layout)
    s = statistics(live, ref.reference, ref.layout)
    table = np.vstack([ref.reference.counts[3, :4], live.counts[3, :4]])
    table = table[:, table.sum(axis=0) > 0]
    expected = chi2_contingency(table, correction=False)
    assert s.chi2[3] == pytest.approx(expected.statistic, rel=1e-9)
    assert s.chi2_dof[3] == expected.dof == 3
    assert np.isnan(s.chi2[:3]).all()


def test_identical_distribution_gives_zero_and_no_alarm() -> None:
    rng = np.random.default_rng(12)
    train, _ = two_samples(rng)
    ref = profile_of(train)
    drift = report(state_of(train, ref.layout), ref, Thresholds(min_rows=1))
    for d in drift:
        assert d.psi == pytest.approx(0, abs=1e-12) and d.js == pytest.approx(0, abs=1e-7)
        assert not d.alarm and d.alarms == ()
        if d.kind == "numeric":
            assert d.ks == 0 and d.wasserstein == pytest.approx(0, abs=1e-9) and d.mean_shift == 0
        else:
            assert d.chi2 == pytest.approx(0, abs=1e-12)


def test_fresh_sample_of_the_same_distribution_does_not_alarm() -> None:
    rng = np.random.default_rng(13)
    train, live_rows = two_samples(rng, shift=0.0, live_rows=500)
    ref = profile_of(train)
    assert [d.alarms for d in report(state_of(live_rows, ref.layout), ref)] == [()] * 4


def test_clearly_shifted_columns_alarm() -> None:
    rng = np.random.default_rng(14)
    train, live_rows = two_samples(rng, shift=1.0)
    ref = profile_of(train)
    drift = {d.name: d for d in report(state_of(live_rows, ref.layout), ref)}
    assert {"psi", "js", "ks", "mean_shift"} <= set(drift["area"].alarms)
    assert drift["lot"].alarm and drift["label"].alarm
    assert set(drift["label"].alarms) <= {"psi", "js", "test"}  # half the rows moved to label 2: real drift
    assert not drift["bedrooms"].alarm
    assert drift["area"].rows == 2000


def test_alarm_needs_min_rows() -> None:
    rng = np.random.default_rng(15)
    train, live_rows = two_samples(rng, shift=1.0, live_rows=600)
    ref = profile_of(train)
    few = state_of(live_rows[:499], ref.layout)
    assert not any(d.alarm for d in report(few, ref, Thresholds(min_rows=500)))
    enough = few.copy().update(live_rows[499:500], ref.layout)
    assert report(enough, ref, Thresholds(min_rows=500))[0].alarm
    assert not report(enough, ref, Thresholds(psi=None, js=None, ks=None, mean_shift=None, alpha=None))[0].alarm
    missing = live_rows.copy()
    missing[:200, 0] = np.nan  # rows counts a column's non-missing values
    assert not report(state_of(missing, ref.layout), ref)[0].alarm


def test_empty_live_state_reports_nan_without_alarm() -> None:
    ref = profile_of(training_like(np.random.default_rng(16), 1000))
    for d in report(empty_state(ref.layout), ref, Thresholds(min_rows=0)):
        assert d.rows == 0 and not d.alarm
        assert all(math.isnan(x) for x in (d.psi, d.js, d.ks, d.wasserstein, d.mean_shift))


def test_infinite_live_values_make_wasserstein_infinite() -> None:
    rng = np.random.default_rng(17)
    train, live_rows = two_samples(rng)
    ref = profile_of(train)
    live_rows[0, 0] = np.inf
    s = statistics(state_of(live_rows, ref.layout), ref.reference, ref.layout)
    assert s.wasserstein[0] == np.inf and np.isfinite(s.wasserstein[1])
    assert np.isfinite(s.mean_shift[0])  # the moments skip infinite values


# --------------------------------------------------------------------------- discrete columns, p-values, notes


def discrete_edges(train: np.ndarray) -> list[float]:
    values = np.unique(train)
    return [*values.tolist(), float(np.nextafter(values.max(), np.inf))]


def discrete_samples(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 0/1 flag, rooms 1..6, and a continuous column; live rooms also take 7 (one value past training)."""
    train = np.column_stack([(rng.random(5000) < 0.3).astype(float), rng.integers(1, 7, 5000).astype(float),
                             rng.normal(80, 25, 5000)])
    live = np.column_stack([(rng.random(700) < 0.45).astype(float), rng.integers(1, 8, 700).astype(float),
                            rng.normal(90, 25, 700)])
    return train, live


@pytest.mark.parametrize("seed", range(4))
def test_discrete_wasserstein_equals_scipy_on_the_raw_samples(seed: int) -> None:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(200 + seed)
    train, live_rows = discrete_samples(rng)
    if seed % 2:
        train, live_rows = live_rows, train  # live values below and above the training range
        live_rows = live_rows.copy()
        live_rows[:5, 1] = 0.0
    continuous = np.unique(np.quantile(train[:, 2], np.arange(20) / 20, method="inverted_cdf")).tolist()
    edges = [discrete_edges(train[:, 0]), discrete_edges(train[:, 1]),
             [*continuous, float(np.nextafter(train[:, 2].max(), np.inf))]]
    layout = BinLayout.from_columns(edges, [None] * 3, [True, True, False])
    s = statistics(state_of(live_rows, layout), state_of(train, layout), layout)
    for c in range(2):
        assert s.wasserstein[c] == pytest.approx(wasserstein_distance(train[:, c], live_rows[:, c]), rel=0, abs=1e-9)
    spread = BinLayout.from_columns(edges, [None] * 3)
    before = statistics(state_of(live_rows, spread), state_of(train, spread), spread)
    assert s.wasserstein[2] == before.wasserstein[2]  # continuous columns are unchanged
    assert abs(before.wasserstein[0] - wasserstein_distance(train[:, 0], live_rows[:, 0])) > 0.01  # what it fixes
    for f in ("psi", "js", "ks", "p_value"):
        np.testing.assert_array_equal(getattr(s, f), getattr(before, f), err_msg=f)


def test_discrete_flags_are_checked() -> None:
    layout = BinLayout.from_columns([[0.0, 1.0], []], [None, 2])
    assert layout.is_discrete.tolist() == [False, False]
    with pytest.raises(ValueError, match="categorical columns cannot be discrete"):
        BinLayout.from_columns([[0.0, 1.0], []], [None, 2], [False, True])
    with pytest.raises(ValueError, match="discrete flags"):
        BinLayout.from_columns([[0.0, 1.0], []], [None, 2], [False])


def test_p_values_match_scipy() -> None:
    from scipy.stats import chi2 as chi2_distribution
    from scipy.stats import kstwobign

    rng = np.random.default_rng(18)
    train, live_rows = two_samples(rng, shift=0.05, live_rows=700)
    ref = profile_of(train)
    s = statistics(state_of(live_rows, ref.layout), ref.reference, ref.layout)
    n_eff = 700 * 5000 / 5700
    for c in range(3):
        assert s.p_value[c] == pytest.approx(kstwobign.sf(s.ks[c] * math.sqrt(n_eff)), rel=1e-9, abs=1e-300)
    assert s.p_value[3] == pytest.approx(chi2_distribution.sf(s.chi2[3], s.chi2_dof[3]), rel=1e-9)
    assert np.all((s.p_value >= 0) & (s.p_value <= 1))
    empty = statistics(empty_state(ref.layout), ref.reference, ref.layout)
    assert np.isnan(empty.p_value).all()


def test_single_category_in_both_samples_has_p_value_one() -> None:
    layout = BinLayout.from_columns([[]], [3])
    X = np.ones((50, 1))
    s = statistics(state_of(X, layout), state_of(X[:20], layout), layout)
    assert s.chi2_dof[0] == 0 and s.p_value[0] == 1.0


def naive_holm(p: list[float]) -> list[float]:
    tested = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    out = [math.nan] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * v))
        out[i] = running
    return out


def test_holm_matches_the_textbook_procedure() -> None:
    from driftline.kernels.drift_stats import holm

    rng = np.random.default_rng(19)
    for _ in range(20):
        p = rng.random(int(rng.integers(0, 9))) ** 3
        p[rng.random(p.size) < 0.2] = np.nan
        np.testing.assert_allclose(holm(p), naive_holm(p.tolist()), rtol=1e-12, equal_nan=True)
    assert np.allclose(holm(np.array([0.01, 0.04, 0.03, np.nan])), [0.03, 0.06, 0.06, np.nan], equal_nan=True)
    assert holm(np.array([])).shape == (0,)


def test_test_alarm_fires_on_adjusted_p_value_for_both_kinds() -> None:
    rng = np.random.default_rng(20)
    train, live_rows = two_samples(rng, shift=1.0, live_rows=600)
    ref = profile_of(train)
    only_test = Thresholds(psi=None, js=None, ks=None, mean_shift=None)
    drift = {d.name: d for d in report(state_of(live_rows, ref.layout), ref, only_test)}
    assert drift["area"].alarms == ("test",) and drift["label"].alarms == ("test",)
    assert drift["area"].p_adjusted < 1e-3 and drift["label"].p_adjusted < 1e-3
    assert drift["bedrooms"].alarms == () and drift["bedrooms"].p_adjusted >= 1e-3
    assert all(d.p_adjusted >= d.p_value for d in drift.values())
    ps = [d.p_value for d in drift.values()]
    assert [d.p_adjusted for d in drift.values()] == pytest.approx(naive_holm(ps), rel=1e-12)
    strict = Thresholds(psi=None, js=None, ks=None, mean_shift=None, alpha=1e-300)
    assert not any(d.alarm for d in report(state_of(live_rows, ref.layout), ref, strict))


def test_too_few_rows_is_noted_and_min_rows_can_differ_per_column() -> None:
    rng = np.random.default_rng(21)
    train, live_rows = two_samples(rng, shift=1.0, live_rows=600)
    ref = profile_of(train)
    live_rows[93:, 0] = np.nan
    live = state_of(live_rows, ref.layout)
    drift = report(live, ref)
    assert drift[0].note == "too few rows: 93 of 500" and not drift[0].alarm
    assert not math.isnan(drift[0].p_value)  # the statistics are still there to read
    assert [d.note for d in drift[1:]] == ["", "", ""]
    lower = report(live, ref, min_rows=[50, 500, 500, 700])
    assert lower[0].note == "" and lower[0].alarm
    assert lower[3].note == "too few rows: 600 of 700" and not lower[3].alarm
    with pytest.raises(ValueError, match="one value per column"):
        report(live, ref, min_rows=[50])
    assert report(empty_state(ref.layout), ref)[0].note == "too few rows: 0 of 500"
    assert Thresholds().min_rows_sampled < Thresholds().min_rows
