"""Discrete numeric columns in the training profile: which columns are marked, and the JSON that carries it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from driftline.kernels.drift import state_of
from driftline.kernels.drift_stats import report
from driftline.registry.profile import Profile, build_profile, is_discrete

NAMES = ["area", "rooms", "flag", "rare", "constant", "label"]
KINDS = ["numeric"] * 5 + ["categorical"]


def table(rng: np.random.Generator, rows: int, flag_share: float = 0.3) -> np.ndarray:
    X = np.column_stack([
        rng.normal(84, 25, rows),
        rng.integers(1, 7, rows),
        rng.random(rows) < flag_share,
        np.where(rng.random(rows) < 0.01, 9, rng.integers(0, 3, rows)),  # 9 holds < 1/bins of the rows: still a value
        np.full(rows, 4.0),
        rng.integers(0, 3, rows),
    ]).astype(np.float32)
    X[rng.random(rows) < 0.05, 1] = np.nan
    return X


@pytest.fixture(scope="module")
def profile() -> Profile:
    return build_profile(table(np.random.default_rng(0), 4000), NAMES, kinds=KINDS)


def test_columns_with_one_bin_per_value_are_discrete(profile: Profile) -> None:
    assert [c.discrete for c in profile.columns] == [False, True, True, True, True, False]
    assert profile.layout.is_discrete.tolist() == [False, True, True, True, True, False]
    assert list(profile.column("flag").edges) == [0.0, 1.0, np.nextafter(1.0, np.inf)]
    assert list(profile.column("rare").edges) == [0.0, 1.0, 2.0, 9.0, np.nextafter(9.0, np.inf)]


def test_is_discrete_needs_exactly_the_distinct_values() -> None:
    values = np.array([1.0, 2.0, 2.0, 3.0])
    top = float(np.nextafter(3.0, np.inf))
    assert is_discrete(values, [1.0, 2.0, 3.0, top])
    assert not is_discrete(values, [1.0, 3.0, top])  # a value shares a bin
    assert not is_discrete(values, [1.0, 2.0, 3.0])
    assert not is_discrete(np.array([]), [])
    biggest = np.finfo(np.float64).max
    assert not is_discrete(np.array([biggest]), [biggest])  # no float above it: no closing edge


def test_discrete_flag_round_trips_and_old_profiles_still_load(profile: Profile) -> None:
    data = json.loads(profile.to_json())
    assert [c.get("discrete") for c in data["columns"]] == [None, True, True, True, True, None]
    again = Profile.from_json(profile.to_json())
    assert again == profile and again.layout.is_discrete.tolist() == profile.layout.is_discrete.tolist()
    for column in data["columns"]:
        column.pop("discrete", None)  # as a profile written before the flag existed
    old = Profile.from_dict(data)
    assert not any(c.discrete for c in old.columns) and not old.layout.is_discrete.any()
    data["columns"][1]["discrete"] = "yes"
    with pytest.raises(ValueError, match="discrete"):
        Profile.from_dict(data)


def test_report_of_a_discrete_column_gives_the_raw_samples_w1(profile: Profile) -> None:
    rng = np.random.default_rng(1)
    train = table(np.random.default_rng(0), 4000)
    live = table(rng, 800, flag_share=0.5)
    drift = {d.name: d for d in report(state_of(live, profile.layout), profile)}
    for c, name in ((1, "rooms"), (2, "flag")):
        raw = [x[~np.isnan(x)] for x in (train[:, c].astype(np.float64), live[:, c].astype(np.float64))]
        assert drift[name].wasserstein == pytest.approx(wasserstein_distance(*raw), rel=0, abs=1e-9)
        assert drift[name].discrete
    assert not drift["area"].discrete and "test" in drift["flag"].alarms
