"""A time machine for data: `driftline train` keeps its training table; `driftline reproduce` rebuilds from it."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from driftline.errors import InvalidInput
from driftline.registry import Registry
from driftline.registry.blobs import blob_key
from driftline.registry.store import MODEL_FILE
from driftline.trainer import snapshot, synthetic
from helpers import driftline

QUICK = ("--param", "n_estimators=15")


def train(root: Path, name: str, *args: str) -> None:
    driftline("train", name, "--registry", str(root), "--rows", "800", *args)


def test_a_numeric_model_is_reproduced_from_its_snapshot(tmp_path: Path):
    root = tmp_path / "registry"
    train(root, "housing", *QUICK)
    stored = Registry(root).open("housing", 1)
    lineage = stored.metadata.extra[snapshot.LINEAGE_KEY]
    table = snapshot.read(stored)
    assert table.height == lineage["rows"] == stored.metadata.data_rows == 800
    assert lineage["data_version"] == stored.metadata.data_version  # the very table the version was trained on
    assert (root / blob_key(lineage["sha256"])).stat().st_size == lineage["bytes"]
    result = driftline("reproduce", "housing", "1", "--registry", str(root))
    assert "stored and rebuilt models agree" in result.stdout and "160 holdout rows" in result.stdout
    assert "max abs deviation 0" in result.stdout and Registry(root).versions("housing") == [1]  # nothing published


def test_a_mixed_table_model_is_reproduced_from_its_snapshot(tmp_path: Path):
    root = tmp_path / "registry"
    train(root, "listings", "--synthetic", "listings", *QUICK)
    assert snapshot.read(Registry(root).open("listings", 1)).schema["description"] == pl.String
    result = driftline("reproduce", "listings", "1", "--registry", str(root))
    assert "stored and rebuilt models agree" in result.stdout, result.stdout


def test_a_classifier_is_reproduced_label_for_label(tmp_path: Path):
    root = tmp_path / "registry"
    train(root, "segment", "--estimator", "logistic")
    result = driftline("reproduce", "segment", "1", "--registry", str(root)).stdout
    assert "label          0 of 160 rows differ" in result and "probabilities  max abs deviation 0" in result
    assert "stored and rebuilt models agree" in result


def test_a_version_whose_model_is_not_what_its_recipe_gives_disagrees(tmp_path: Path):
    root = tmp_path / "registry"
    train(root, "housing", *QUICK)
    train(root, "housing", "--param", "n_estimators=3")
    registry = Registry(root)
    one, three_trees = registry.open("housing", 1), registry.open("housing", 2)
    swapped = {name: one.read(name) for name in one.checksums}
    swapped[MODEL_FILE] = three_trees.read(MODEL_FILE)  # v1's recipe and data, another model
    version = registry.publish("housing", swapped)
    result = driftline("reproduce", "housing", str(version), "--registry", str(root), check=False)
    assert result.returncode == 1 and "DISAGREE" in result.stdout, result.stdout + result.stderr


def test_a_version_without_a_snapshot_exits_2_saying_how_to_get_one(tmp_path: Path):
    root = tmp_path / "registry"
    train(root, "housing", *QUICK, "--no-snapshot-data")
    assert snapshot.SNAPSHOT_FILE not in Registry(root).open("housing", 1).checksums
    result = driftline("reproduce", "housing", "1", "--registry", str(root), check=False)
    assert result.returncode == 2 and "--snapshot-data" in result.stderr and "Traceback" not in result.stderr


def test_training_twice_on_the_same_data_stores_it_once_and_du_shows_the_saving(tmp_path: Path):
    root = tmp_path / "registry"
    data = tmp_path / "houses.parquet"
    synthetic.housing(600, seed=4).drop(synthetic.CLASS_TARGET).write_parquet(data)
    for estimator in (("--estimator", "linear"), QUICK):  # two models, one table
        driftline("train", "housing", "--registry", str(root), "--data", str(data), "--target", "price", *estimator)
    registry = Registry(root)
    one, two = (registry.open("housing", v).metadata.extra[snapshot.LINEAGE_KEY] for v in (1, 2))
    assert one["sha256"] == two["sha256"]
    assert (root / "housing/1/data.parquet").samefile(root / "housing/2/data.parquet")
    report = json.loads(driftline("models", "du", "--registry", str(root), "--json").stdout)
    assert report["saved_bytes"] >= one["bytes"]
    second = report["models"][0]["versions"][1]
    assert second["bytes"] - second["stored_bytes"] >= one["bytes"]  # the second version added no data bytes
    table = driftline("models", "du", "--registry", str(root)).stdout
    assert "content addressing saves" in table


def test_retrain_snapshots_its_new_data(tmp_path: Path):
    root = tmp_path / "registry"
    train(root, "housing", "--estimator", "linear")
    data = tmp_path / "new.parquet"
    synthetic.housing(700, seed=9).drop(synthetic.CLASS_TARGET).write_parquet(data)
    result = driftline("retrain", "housing", "--data", str(data), "--registry", str(root), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    stored = Registry(root).open("housing", 2)
    assert snapshot.read(stored).height == 700 == stored.metadata.extra[snapshot.LINEAGE_KEY]["rows"]
    assert "agree" in driftline("reproduce", "housing", "2", "--registry", str(root)).stdout


def test_snapshots_default_on_for_local_registries_and_off_for_object_stores():
    assert snapshot.wanted(None, "driftline-registry") and snapshot.wanted(None, "file:///srv/registry")
    assert not snapshot.wanted(None, "s3://bucket/models")
    assert snapshot.wanted(None, "s3://bucket/models", "1") and not snapshot.wanted(None, "reg", "off")
    assert not snapshot.wanted(False, "reg", "1") and snapshot.wanted(True, "s3://b/m", "0")
    with pytest.raises(InvalidInput, match="DRIFTLINE_SNAPSHOT_DATA"):
        snapshot.wanted(None, "reg", "maybe")


def test_the_same_table_gives_the_same_parquet_bytes():
    frame = synthetic.synthetic_frame("listings", 300, seed=1)
    assert snapshot.parquet_bytes(frame) == snapshot.parquet_bytes(frame.clone())
    assert snapshot.parquet_bytes(frame) != snapshot.parquet_bytes(frame.head(299))
