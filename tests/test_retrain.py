"""Continuous training: a broken retrain is refused, a good one publishes, promotes and is served."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as triton

from driftline.registry import Registry
from helpers import driftline, running_server


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    root = tmp_path / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "3000", "--seed", "1",
              "--param", "n_estimators=60")
    driftline("promote", "housing", "1", "--registry", str(root))
    return root


def new_data(tmp_path: Path, shuffle: bool) -> Path:
    path = tmp_path / ("shuffled.csv" if shuffle else "fresh.csv")
    driftline("data", "housing", "--rows", "3000", "--seed", "8", "--out", str(path))
    if shuffle:  # the classic broken pipeline: labels no longer belong to their rows
        frame = pl.read_csv(path)
        prices = np.random.default_rng(0).permutation(frame["price"].to_numpy())
        frame.with_columns(pl.Series("price", prices)).write_csv(path)
    return path


def test_shuffled_labels_are_refused(registry: Path, tmp_path: Path):
    result = driftline("retrain", "housing", "--data", str(new_data(tmp_path, shuffle=True)),
                       "--registry", str(registry), "--promote", check=False)
    assert result.returncode == 3
    assert "refused" in result.stdout and "nothing was published" in result.stdout
    assert Registry(registry).versions("housing") == [1]
    assert Registry(registry).aliases("housing") == {"production": 1}


def test_good_retrain_publishes_promotes_and_the_polling_server_serves_it(registry: Path, tmp_path: Path):
    fresh = new_data(tmp_path, shuffle=False)
    with running_server(registry, "--poll", "0.2") as server:
        client = triton.InferenceServerClient(url=server.address)
        assert client.get_model_metadata("housing").versions == ["1"]
        result = driftline("retrain", "housing", "--data", str(fresh), "--registry", str(registry), "--promote")
        assert "published version 2" in result.stdout and "production -> version 2" in result.stdout
        meta = Registry(registry).open("housing", 2).metadata
        assert meta.source == "driftline retrain" and meta.extra["retrained_from"] == 1
        assert meta.estimator == "gradient_boosting" and meta.parameters["n_estimators"] == 60
        deadline = time.monotonic() + 60
        while client.get_model_metadata("housing").versions != ["2"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get_model_metadata("housing").versions == ["2"]
        client.close()


def test_models_show_and_diff(registry: Path, tmp_path: Path):
    driftline("retrain", "housing", "--data", str(new_data(tmp_path, shuffle=False)), "--registry", str(registry))
    shown = driftline("models", "show", "housing", "--registry", str(registry)).stdout
    assert "version 2" in shown and "version 1  [production]" in shown and "driftline retrain" in shown
    diff = driftline("models", "diff", "housing", "production", "2", "--registry", str(registry)).stdout
    assert "version 1 -> version 2" in diff and "data_version" in diff and "training profiles" in diff


def test_retrain_carries_the_declared_schema_forward_and_refuses_data_that_breaks_it(tmp_path: Path):
    # The bug of issue 16: v1 declared bedrooms >= 0; retrain on data with five bedrooms=-8 published v2 with a
    # freshly inferred schema that had lost the declared minimum. Retrain validates like train and keeps it.
    root = tmp_path / "registry"
    overrides = tmp_path / "schema.yaml"
    overrides.write_text("bedrooms: {min: 0}\npolicy: {above_training_range: 'off'}\n")
    driftline("train", "housing", "--registry", str(root), "--rows", "2000", "--seed", "1", "--param",
              "n_estimators=40", "--schema", str(overrides))
    fresh = new_data(tmp_path, shuffle=False)
    broken = tmp_path / "broken.csv"
    frame = pl.read_csv(fresh)
    frame.with_columns(pl.when(pl.int_range(pl.len()) < 5).then(-8).otherwise(pl.col("bedrooms"))
                       .alias("bedrooms")).write_csv(broken)
    refused = driftline("retrain", "housing", "--data", str(broken), "--registry", str(root), check=False)
    assert refused.returncode != 0 and "bedrooms" in refused.stdout + refused.stderr
    assert Registry(root).versions("housing") == [1]

    result = driftline("retrain", "housing", "--data", str(fresh), "--registry", str(root))
    assert "published version 2" in result.stdout
    from driftline.registry.schema import SCHEMA_FILE, Schema

    schema = Schema.from_json(Registry(root).open("housing", 2).read(SCHEMA_FILE))
    bedrooms = schema.feature("bedrooms")
    assert bedrooms.min == 0 and "min" in bedrooms.declared
    assert schema.policy.above_training_range == "off"
