"""The retrain gate's first check on its own: a candidate worse than the current version on the same holdout rows
is refused even when it beats the score the current version recorded when it was trained.

Version 1 learns from 4,000 houses whose prices carry heavy noise: a good model of the price (the noise averages
out), with a low recorded r2 (its holdout prices are noisy). The new data is 300 clean houses: the candidate, the
same recipe on far fewer rows, scores well above version 1's recorded r2 (the second check passes) but below
version 1 on the candidate's own clean holdout rows, so only "worse on the same rows" can refuse it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
from driftline.registry import Registry
from helpers import driftline

TOLERANCE = 0.02


def test_a_candidate_worse_on_the_same_rows_is_refused_though_it_beats_the_recorded_score(tmp_path: Path):
    registry = tmp_path / "registry"
    old = tmp_path / "old.csv"
    driftline("data", "housing", "--rows", "4000", "--seed", "1", "--out", str(old))
    frame = pl.read_csv(old)
    price = frame["price"].to_numpy()
    noisy = price + np.random.default_rng(0).normal(0.0, price.std(), len(price))
    frame.with_columns(pl.Series("price", noisy)).write_csv(tmp_path / "noisy.csv")
    driftline("train", "housing", "--registry", str(registry), "--data", str(tmp_path / "noisy.csv"),
              "--target", "price", "--estimator", "random_forest", "--param", "n_estimators=30",
              "--param", "min_samples_leaf=20")
    recorded = Registry(registry).open("housing", 1).metadata.metrics["r2"]
    fresh = tmp_path / "fresh.csv"
    driftline("data", "housing", "--rows", "300", "--seed", "8", "--out", str(fresh))

    result = driftline("retrain", "housing", "--data", str(fresh), "--registry", str(registry),
                       "--tolerance", str(TOLERANCE), check=False)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "on the same rows" in result.stdout and "nothing was published" in result.stdout, result.stdout
    candidate = float(re.search(r"r2 (-?[\d.]+) on the new holdout", result.stdout).group(1))
    assert candidate > recorded + TOLERANCE, (candidate, recorded)  # the recorded-score check alone would publish
    assert Registry(registry).versions("housing") == [1]
