"""The same bad rows are judged the same way by the trainer, by `driftline validate` and by the server; limits
inferred from data flag, declared ones refuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from driftline.trainer import synthetic
from helpers import driftline, running_server

OVERRIDES = ("bedrooms: {min: 0, integer: true}\nliving_area: {allow_missing: false}\n"
             "condition: {type: categorical, categories: [1, 2, 3, 4, 5]}\n")
# (what is wrong, column, value) - each bad row differs from a clean house in one cell.
BAD = [
    ("below_min", "bedrooms", "-8"),
    ("missing", "living_area", ""),
    ("unknown_category", "condition", "7"),
    ("not_a_number", "lot_area", "abc"),
]
FLAGGED = ("above_training_range", "garage_area", "400")
CLEAN_ROWS = 40  # after the bad ones, so that a training run without them has rows to learn from


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("validation")
    (folder / "schema.yaml").write_text(OVERRIDES)
    registry = folder / "registry"
    driftline("train", "housing", "--registry", str(registry), "--rows", "1500", "--schema",
              str(folder / "schema.yaml"), "--param", "n_estimators=10")
    clean = synthetic.housing(len(BAD) + 1 + CLEAN_ROWS, seed=42).drop("price_segment")
    frame = clean.with_columns([pl.col(c).cast(pl.Utf8) for c in clean.columns])
    for row, (_, column, value) in enumerate([*BAD, FLAGGED]):
        cells = frame[column].to_list()
        cells[row] = value
        frame = frame.with_columns(pl.Series(column, cells))
    frame.write_csv(folder / "bad.csv")
    return folder, registry, frame


def kinds_in(violations: dict) -> set[tuple[str, str]]:
    return {(feature, kind) for feature, kinds in violations.items() for kind in kinds}


def test_trainer_validate_and_server_agree(setup):
    folder, registry, frame = setup
    expected = {(column, kind) for kind, column, _ in BAD}

    # 1. The trainer refuses the file, naming every bad cell.
    trained = driftline("train", "again", "--registry", str(registry), "--data", str(folder / "bad.csv"),
                        "--target", "price", "--schema", str(folder / "schema.yaml"), check=False)
    assert trained.returncode == 2
    for kind, column, _ in BAD:
        assert f"{column}: {kind}" in trained.stderr, trained.stderr

    # 2. driftline validate finds the same, with the flagged row on top.
    checked = driftline("validate", "housing", "--registry", str(registry), "--data", str(folder / "bad.csv"),
                        "--json", check=False)
    assert checked.returncode == 1
    quality = json.loads(checked.stdout)["data_quality"]
    found = kinds_in(quality["violations"])
    assert expected | {(FLAGGED[1], FLAGGED[0])} <= found
    assert {(f, k) for f, k in found if k not in ("above_training_range", "below_training_range")} == expected
    assert quality["rejected_rows"] == len(BAD) and quality["flagged_rows"] >= 1

    # 3. The server refuses the same rows one by one, serves the flagged one, and counts them.
    with running_server(registry) as server:
        client = triton.InferenceServerClient(url=server.address)
        features = list(synthetic.FEATURES)
        for row, (kind, column, value) in enumerate(BAD):
            cells = frame.row(row, named=True)
            text = np.array([[str(cells[f]).encode() for f in features]], dtype=object)
            request = triton.InferInput("input", [1, len(features)], "BYTES")
            request.set_data_from_numpy(text)
            with pytest.raises(InferenceServerException) as refused:
                client.infer("housing", [request])
            assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert f"feature '{column}'" in refused.value.message()
        flagged_row = frame.row(len(BAD), named=True)
        numbers = np.array([[float(flagged_row[f]) for f in features]], dtype=np.float32)
        request = triton.InferInput("input", list(numbers.shape), "FP32")
        request.set_data_from_numpy(numbers)
        response = client.infer("housing", [request]).get_response()
        assert response.parameters["driftline_flagged_rows"].string_param == "0"
        client.close()
        report = json.loads(driftline("drift", "housing", "--server", server.address, "--json").stdout)
        validation = report["validation"]
        assert validation["requests_rejected"] == len(BAD) and validation["rows_flagged"] == 1
        assert kinds_in(validation["counts"]) == expected | {(FLAGGED[1], FLAGGED[0])}


def test_drop_invalid_trains_on_the_rest_and_records_it(setup):
    folder, registry, _ = setup
    result = driftline("train", "kept", "--registry", str(registry), "--data", str(folder / "bad.csv"),
                       "--target", "price", "--schema", str(folder / "schema.yaml"), "--drop-invalid",
                       "--estimator", "linear", "--holdout", "0.4", "--allow", "overfit")  # a small, messy table
    assert "rejected (dropped)" in result.stdout
    meta = json.loads((registry / "kept" / "1" / "metadata.json").read_text())
    assert meta["extra"]["data_quality"]["dropped_rows"] == len(BAD)
    assert meta["data_rows"] == 1 + CLEAN_ROWS


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A housing model trained without any --schema: every hard limit it has was inferred from the data."""
    registry = tmp_path_factory.mktemp("fresh") / "registry"
    driftline("train", "housing", "--registry", str(registry), "--rows", "1000", "--param", "n_estimators=10")
    return registry


def random_rows(rows: int) -> np.ndarray:
    """What perf_analyzer sends by default: uniform floats in [0, 1) for every feature, all finite."""
    return np.random.default_rng(7).random((rows, len(synthetic.FEATURES)), dtype=np.float32)


def infer(client: triton.InferenceServerClient, rows: np.ndarray, version: str = ""):
    request = triton.InferInput("input", list(rows.shape), "FP32")
    request.set_data_from_numpy(rows)
    return client.infer("housing", [request], model_version=version)


def test_random_rows_are_served_and_flagged_by_a_freshly_trained_model(fresh: Path):
    """Fractional bedrooms break only the inferred "whole" limit: flagged and counted, not refused."""
    with running_server(fresh) as server:
        client = triton.InferenceServerClient(url=server.address)
        rows = random_rows(8)
        result = infer(client, rows)
        assert result.as_numpy("prediction").shape[0] == 8
        assert result.get_response().parameters["driftline_flagged_rows"].string_param == "0,1,2,3,4,5,6,7"
        # A non-finite value is refused like a missing one: the training data had neither.
        rows[3, 0] = np.inf
        with pytest.raises(InferenceServerException) as refused:
            infer(client, rows)
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "row 3, feature 'living_area': value inf is not finite" in refused.value.message()
        client.close()
        report = json.loads(driftline("drift", "housing", "--server", server.address, "--json").stdout)
    validation = report["validation"]
    assert validation["rows_flagged"] == 8 and validation["requests_rejected"] == 1
    assert validation["counts"]["bedrooms"]["not_integer"] == 16  # values are counted in refused requests too
    assert validation["counts"]["living_area"]["infinite"] == 1


def test_accepted_limits_refuse(fresh: Path, tmp_path: Path):
    """`driftline schema accept` publishes the same model with the inferred limits declared: now they refuse."""
    registry = tmp_path / "registry"
    shutil.copytree(fresh, registry)
    accepted = driftline("schema", "accept", "housing:1", "--registry", str(registry))
    assert "published housing version 2: version 1 with its inferred limits declared" in accepted.stdout
    assert "bedrooms: integer" in accepted.stdout
    one, two = (registry / "housing" / v for v in ("1", "2"))
    for name in ("model.onnx", "profile.json"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    meta = json.loads((two / "metadata.json").read_text())
    assert meta["extra"]["schema_accepted"]["from_version"] == 1 and meta["source"] == "driftline train"
    schema = json.loads((two / "schema.json").read_text())
    assert {f["name"]: f["declared"] for f in schema["features"]}["bedrooms"] == ["integer"]
    again = driftline("schema", "accept", "housing", "--registry", str(registry), check=False)
    assert again.returncode == 2 and "already declared" in again.stderr
    shown = driftline("schema", "housing", "--registry", str(registry), "--version", "1").stdout
    assert "whole (inferred)" in shown and "driftline schema accept housing:1" in shown

    with running_server(registry) as server:
        client = triton.InferenceServerClient(url=server.address)
        with pytest.raises(InferenceServerException) as refused:
            infer(client, random_rows(2), version="2")
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "is not a whole number" in refused.value.message()
        assert "inferred" not in refused.value.message()
        client.close()
