"""The training profile: statistics vs numpy, bins from the server's kernel, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from driftline.kernels.drift import state_of
from driftline.kernels.drift_stats import Thresholds, report
from driftline.registry.profile import DEFAULT_QUANTILES, Profile, build_profile, quantile_edges

NAMES = ["living_area", "lot_area", "bedrooms", "has_basement", "prediction", "label"]
KINDS = ["numeric"] * 5 + ["categorical"]


def housing(rng: np.random.Generator, rows: int = 4000) -> np.ndarray:
    X = np.column_stack([
        rng.normal(84, 25, rows),
        rng.lognormal(6, 0.6, rows),
        rng.choice([1, 2, 3, 4, 5], rows, p=[0.1, 0.3, 0.3, 0.2, 0.1]),
        rng.integers(0, 2, rows),
        rng.normal(500_000, 150_000, rows),
        rng.choice([0, 1, 2], rows, p=[0.5, 0.3, 0.2]),
    ]).astype(np.float32)  # served as float32
    X[rng.random(rows) < 0.03, 1] = np.nan
    return X


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, Profile]:
    X = housing(np.random.default_rng(0))
    return X, build_profile(X, NAMES, kinds=KINDS)


def test_column_statistics_match_numpy(data: tuple[np.ndarray, Profile]) -> None:
    X, profile = data
    assert profile.rows == len(X) and profile.names == NAMES and profile.kinds == KINDS
    for c, col in enumerate(profile.columns):
        values = X[:, c].astype(np.float64)
        present = values[~np.isnan(values)]
        assert col.count == len(present) and col.missing == len(values) - len(present) and col.finite == len(present)
        assert col.min == present.min() and col.max == present.max()
        assert col.mean == pytest.approx(present.mean(), rel=1e-12)
        assert col.variance == pytest.approx(present.var(), rel=1e-9)
        if col.kind == "numeric":
            np.testing.assert_allclose(col.quantiles, np.quantile(present, DEFAULT_QUANTILES), rtol=1e-12)
        else:
            assert col.quantiles is None


def test_edges_are_deduplicated_training_quantiles(data: tuple[np.ndarray, Profile]) -> None:
    X, profile = data
    area = profile.column("living_area")
    values = X[:, 0].astype(np.float64)
    assert len(area.edges) == 21 and area.edges[0] == values.min()
    assert area.edges[-1] == np.nextafter(values.max(), np.inf)
    np.testing.assert_array_equal(area.edges[:-1], np.quantile(values, np.arange(20) / 20, method="inverted_cdf"))
    assert list(profile.column("bedrooms").edges) == [1, 2, 3, 4, 5, np.nextafter(5.0, np.inf)]
    assert list(profile.column("has_basement").edges) == [0, 1, np.nextafter(1.0, np.inf)]
    bedrooms = np.bincount(X[:, 2].astype(int), minlength=6)[1:]
    assert profile.column("bedrooms").counts == (0, *bedrooms.tolist(), 0)


def test_reference_counts_come_from_the_kernel(data: tuple[np.ndarray, Profile]) -> None:
    X, profile = data
    state = state_of(X, profile.layout)
    np.testing.assert_array_equal(profile.reference.counts, state.counts)
    for c, col in enumerate(profile.columns):
        if col.kind == "numeric":
            values = X[:, c][~np.isnan(X[:, c])]
            expected, _ = np.histogram(values, bins=[-np.inf, *col.edges, np.inf])
            assert col.counts == tuple(expected.tolist())
            assert col.counts[0] == 0 and col.counts[-1] == 0  # nothing outside the training range
            assert min(col.counts[1:-1]) > 0  # every interior bin holds training rows
    np.testing.assert_allclose(profile.reference.m2, state.m2, rtol=1e-12)


def test_categorical_columns_store_category_frequencies(data: tuple[np.ndarray, Profile]) -> None:
    X, profile = data
    label = profile.column("label")
    assert label.categories == 3 and label.edges == ()
    assert label.counts == (*np.bincount(X[:, 5].astype(int)).tolist(), 0)
    np.testing.assert_allclose(label.frequencies, [0.5, 0.3, 0.2, 0.0], atol=0.03)
    wider = build_profile(X[:, 5:], ["label"], kinds=["categorical"], categories={"label": 5})
    assert wider.column("label").counts == (*label.counts[:3], 0, 0, 0)
    with pytest.raises(ValueError, match="codes"):
        build_profile(np.array([[0.0], [1.5]]), ["x"], kinds=["categorical"])
    with pytest.raises(ValueError, match="not categorical"):
        build_profile(X[:, :1], ["a"], categories={"a": 3})


def test_json_round_trip(data: tuple[np.ndarray, Profile]) -> None:
    _, profile = data
    text = profile.to_json(indent=1)
    back = Profile.from_json(text)
    assert back.to_json(indent=1) == text
    assert back.to_dict() == profile.to_dict()
    for f in ("counts", "missing", "n", "min", "max"):
        np.testing.assert_array_equal(getattr(back.reference, f), getattr(profile.reference, f))
    np.testing.assert_allclose(back.reference.m2, profile.reference.m2, rtol=1e-12)
    doc = json.loads(text)
    assert doc["format"] == 1 and [c["name"] for c in doc["columns"]] == NAMES
    assert "edges" not in doc["columns"][5] and doc["columns"][5]["categories"] == 3


def test_non_finite_values_are_encoded_as_strings() -> None:
    X = np.array([[np.nan, 1.0], [np.nan, np.inf], [np.nan, 2.0]])
    profile = build_profile(X, ["empty", "with_inf"])
    text = profile.to_json()
    doc = json.loads(text, parse_constant=lambda token: pytest.fail(f"bare {token} in JSON"))
    empty, with_inf = doc["columns"]
    assert empty["count"] == 0 and empty["missing"] == 3 and empty["edges"] == [] and empty["counts"] == [0]
    assert empty["mean"] == "NaN" and empty["min"] == "Infinity" and empty["max"] == "-Infinity"
    assert with_inf["max"] == "Infinity" and with_inf["finite"] == 2 and with_inf["mean"] == 1.5
    assert with_inf["counts"][-1] == 1  # +inf is above the finite training maximum
    back = Profile.from_json(text)
    assert back.to_json() == text and back.column("with_inf").max == np.inf


def test_readers_refuse_unknown_or_malformed_profiles(data: tuple[np.ndarray, Profile]) -> None:
    _, profile = data
    doc = profile.to_dict()
    with pytest.raises(ValueError, match="format"):
        Profile.from_dict({**doc, "format": 2})
    with pytest.raises(ValueError, match="format"):
        Profile.from_dict({k: v for k, v in doc.items() if k != "format"})
    with pytest.raises(ValueError, match="must not contain NaN"):
        Profile.from_json(profile.to_json().replace('"mean": ', '"mean": NaN, "ignored": ', 1))
    broken = json.loads(profile.to_json())
    broken["columns"][0]["counts"] = broken["columns"][0]["counts"][:-1]
    with pytest.raises(ValueError, match="counts"):
        Profile.from_dict(broken)
    broken = json.loads(profile.to_json())
    del broken["columns"][0]["edges"]
    with pytest.raises(ValueError, match="malformed"):
        Profile.from_dict(broken)
    broken = json.loads(profile.to_json())
    broken["columns"][0]["kind"] = "ordinal"
    with pytest.raises(ValueError, match="unknown kind"):
        Profile.from_dict(broken)


def test_build_profile_checks_its_inputs() -> None:
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="names"):
        build_profile(X, ["a"])
    with pytest.raises(ValueError, match="kinds"):
        build_profile(X, ["a", "b"], kinds=["numeric", "text"])
    with pytest.raises(ValueError, match="unique"):
        build_profile(X, ["a", "a"])
    with pytest.raises(ValueError, match="2-D"):
        build_profile(np.zeros(5), ["a"])
    ints = build_profile(np.array([[1], [2], [2]]), ["n"], bins=4)
    assert ints.column("n").counts == (0, 1, 2, 0)


def test_constant_and_tiny_columns() -> None:
    assert quantile_edges(np.array([]), 20) == []
    assert quantile_edges(np.array([3.0, 3.0]), 20) == [3.0, np.nextafter(3.0, np.inf)]
    profile = build_profile(np.full((10, 1), 7.0), ["c"])
    assert profile.column("c").counts == (0, 10, 0) and profile.column("c").variance == 0.0


def test_training_rows_against_their_own_profile_do_not_drift(data: tuple[np.ndarray, Profile]) -> None:
    X, profile = data
    live = profile.empty_state()
    for batch in np.array_split(X, 37):  # served in batches, float32 as trained
        live.update(batch, profile.layout)
    for d in report(live, Profile.from_json(profile.to_json()), Thresholds(min_rows=1)):
        assert not d.alarm and d.psi == pytest.approx(0, abs=1e-12)
        assert d.kind == "categorical" or (d.ks == 0 and abs(d.mean_shift) < 1e-9)


def test_drifted_serving_rows_alarm(data: tuple[np.ndarray, Profile]) -> None:
    _, profile = data
    live_rows = housing(np.random.default_rng(1), 1000)
    live_rows[:, 0] += 40  # bigger flats
    live_rows[:, 5] = 2  # the model now says "premium" for everything
    drift = {d.name: d for d in report(profile.empty_state().update(live_rows, profile.layout), profile)}
    assert drift["living_area"].alarm and "ks" in drift["living_area"].alarms
    assert drift["label"].alarm and drift["label"].chi2 > 100
    assert not drift["bedrooms"].alarm and not drift["prediction"].alarm
