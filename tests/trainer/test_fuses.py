"""Issue 16, "test the model as well as the data": fit fuses and the leakage check, through the real CLI.

A model that learnt nothing (shuffled labels) or memorised its rows (an unbounded tree on noisy rows) is not
published unless the blown fuse is allowed by name; a feature cut from the target is refused by name before
fitting. The fuse numbers, and what was overridden, travel in every version's lineage.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from driftline.registry import Registry
from helpers import driftline, published_version


def houses(tmp_path: Path, rows: int, *extra: str, name: str = "houses.csv") -> Path:
    path = tmp_path / name
    driftline("data", "housing", "--rows", str(rows), "--seed", "3", "--out", str(path), *extra)
    return path


def shuffled(tmp_path: Path) -> Path:
    path = houses(tmp_path, 1200)
    frame = pl.read_csv(path)
    prices = np.random.default_rng(0).permutation(frame["price"].to_numpy())
    frame.with_columns(pl.Series("price", prices)).write_csv(path)
    return path


def noisy(tmp_path: Path, rows: int = 200) -> Path:
    path = houses(tmp_path, rows)
    frame = pl.read_csv(path)
    price = frame["price"].to_numpy()
    noise = np.random.default_rng(1).normal(0.0, 0.7 * price.std(), len(price))
    frame.with_columns(pl.Series("price", price + noise)).write_csv(path)
    return path


def train(registry: Path, data: Path, *extra: str, check: bool = False):
    return driftline("train", "m", "--registry", str(registry), "--data", str(data), "--target", "price",
                     *extra, check=check)


# One depth-unbounded decision tree: a forest of one tree, on all rows, grown to single-row leaves.
UNBOUNDED_TREE = ("--estimator", "random_forest", "--param", "n_estimators=1", "--param", "bootstrap=false",
                  "--param", "max_depth=None", "--param", "min_samples_leaf=1", "--param", "max_features=None")


def test_shuffled_labels_blow_the_underfit_fuse_and_nothing_is_published(tmp_path: Path):
    registry = tmp_path / "registry"
    result = train(registry, shuffled(tmp_path), "--estimator", "linear")
    assert result.returncode == 2, result.stdout + result.stderr
    message = re.search(r"underfit fuse blown: holdout r2 (-?\d\.\d{3}) vs (-?\d\.\d{3}) for predicting the mean "
                        r"\(needs \+0\.05\)", result.stderr)
    assert message, result.stderr
    assert float(message.group(1)) < float(message.group(2)) + 0.05
    assert "nothing was published" in result.stderr and "--allow underfit" in result.stderr
    assert Registry(registry).versions("m") == []


def test_an_unbounded_tree_on_200_noisy_rows_blows_the_overfit_fuse(tmp_path: Path):
    registry = tmp_path / "registry"
    data = noisy(tmp_path)
    result = train(registry, data, *UNBOUNDED_TREE)
    assert result.returncode == 2, result.stdout + result.stderr
    gap = re.search(r"overfit fuse blown: r2 (\d\.\d{3}) on the training rows vs (-?\d\.\d{3}) on the holdout, "
                    r"a gap of (\d\.\d{3}) \(at most 0\.2\)", result.stderr)
    assert gap, result.stderr
    assert float(gap.group(1)) == pytest.approx(1.0) and float(gap.group(3)) > 0.2
    assert "nothing was published" in result.stderr
    assert Registry(registry).versions("m") == []

    # Moving the threshold is a decision too: it publishes, and the lineage says with which threshold.
    loose = train(registry, data, *UNBOUNDED_TREE, "--fuse", "overfit_gap=1.5", "--fuse", "underfit_margin=-5",
                  check=True)
    fuses = Registry(registry).open("m", published_version(loose)).metadata.extra["fuses"]
    assert fuses["overfit_gap"] == 1.5 and fuses["underfit_margin"] == -5 and fuses["blown"] == []


def test_allow_underfit_publishes_and_the_lineage_records_the_override(tmp_path: Path):
    registry = tmp_path / "registry"
    result = train(registry, shuffled(tmp_path), "--estimator", "linear", "--allow", "underfit", check=True)
    assert "blown but allowed: underfit" in result.stdout
    meta = Registry(registry).open("m", published_version(result)).metadata
    fuses = meta.extra["fuses"]
    assert fuses["blown"] == ["underfit"] and fuses["overridden"] == ["underfit"]
    assert fuses["metric"] == "r2" and fuses["baseline_strategy"] == "mean"
    assert fuses["underfit_margin"] == 0.05 and fuses["overfit_gap"] == 0.2
    assert fuses["holdout"] == pytest.approx(meta.metrics["r2"])
    assert fuses["holdout"] < fuses["baseline"] + 0.05


def test_every_published_version_records_its_fuses(tmp_path: Path):
    registry = tmp_path / "registry"
    result = train(registry, houses(tmp_path, 600), "--param", "n_estimators=30", check=True)
    extra = Registry(registry).open("m", published_version(result)).metadata.extra
    assert extra["fuses"]["blown"] == [] and extra["fuses"]["overridden"] == []
    assert extra["fuses"]["holdout"] > extra["fuses"]["baseline"] + 0.05
    assert extra["leakage"] == {"flagged": [], "overridden": False}


def test_a_feature_cut_from_the_target_is_refused_by_name_unless_allowed(tmp_path: Path):
    registry = tmp_path / "registry"
    data = houses(tmp_path, 1000, "--with-segment", name="houses.parquet")
    refused = train(registry, data)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "target leakage: price_segment" in refused.stderr and "--allow leakage" in refused.stderr
    assert re.search(r"accuracy (0\.99\d|1\.000)", refused.stderr), refused.stderr
    assert "living_area" not in refused.stderr  # only the leaking column is named
    assert Registry(registry).versions("m") == []

    allowed = train(registry, data, "--allow", "leakage", "--param", "n_estimators=30", check=True)
    leakage = Registry(registry).open("m", published_version(allowed)).metadata.extra["leakage"]
    assert leakage["overridden"] is True and [f["feature"] for f in leakage["flagged"]] == ["price_segment"]


def test_the_default_data_file_has_no_segment_and_trains(tmp_path: Path):
    data = houses(tmp_path, 800, name="houses.parquet")
    assert "price_segment" not in pl.read_parquet(data).columns
    result = train(tmp_path / "registry", data, "--param", "n_estimators=30", check=True)
    assert published_version(result) == 1


def test_unknown_fuse_settings_are_refused(tmp_path: Path):
    result = train(tmp_path / "registry", houses(tmp_path, 200), "--fuse", "overfit=0.3")
    assert result.returncode == 2 and "unknown --fuse overfit" in result.stderr, result.stderr
