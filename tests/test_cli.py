"""The commands a user types: train, models list, data, infer, and their error messages."""

from __future__ import annotations

import argparse
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.cli import main as cli
from helpers import driftline, published_version, running_server


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "600", "--param", "n_estimators=10")
    driftline("train", "segments", "--registry", str(root), "--rows", "600", "--estimator", "logistic")
    return root


def test_models_list_shows_a_table(registry: Path):
    lines = driftline("models", "list", "--registry", str(registry)).stdout.splitlines()
    assert lines[0].split()[:5] == ["MODEL", "VERSIONS", "LATEST", "ESTIMATOR", "METRIC"]
    housing = next(line for line in lines if line.startswith("housing"))
    assert "gradient_boosting" in housing and "r2=" in housing
    segments = next(line for line in lines if line.startswith("segments"))
    assert "logistic" in segments and "accuracy=" in segments


def test_registry_comes_from_the_environment(registry: Path):
    listing = driftline("models", "list", env={"DRIFTLINE_REGISTRY": str(registry)}).stdout
    assert "housing" in listing and "segments" in listing


def test_metadata_records_lineage(registry: Path):
    meta = json.loads((registry / "housing" / "1" / "metadata.json").read_text())
    assert meta["data_version"].startswith("sha256:") and len(meta["data_version"]) == 71
    assert meta["code_version"].startswith("0.1.0")
    assert meta["estimator"] == "gradient_boosting" and meta["parameters"]["n_estimators"] == 10
    assert set(meta["metrics"]) >= {"r2", "mae", "rmse"}
    assert [f["name"] for f in meta["features"]][:2] == ["living_area", "lot_area"]


def test_infer_prints_predictions_from_json_and_csv(registry: Path, tmp_path: Path):
    csv = tmp_path / "houses.csv"
    driftline("data", "housing", "--rows", "3", "--seed", "5", "--out", str(csv))
    row = {"living_area": 84, "lot_area": 400, "bedrooms": 3, "bathrooms": 1, "stories": 1, "garage_area": 18,
           "has_basement": 0, "year_built": 1995, "condition": 3, "distance_to_center": 8, "transit_distance": 1.2}
    with running_server(registry) as server:
        one = driftline("infer", "housing", "--server", server.address, "--json", json.dumps(row)).stdout
        assert "housing version 1" in one and "row 0: prediction=" in one
        many = driftline("infer", "segments", "--server", server.address, "--csv", str(csv)).stdout
        assert many.count("label=") == 3 and "probabilities=[" in many
        typo = driftline("infer", "housing", "--server", server.address,
                         "--json", json.dumps({**row, "garage": 1}), check=False)
        assert typo.returncode == 2 and "unknown keys ['garage']" in typo.stderr
        missing = driftline("infer", "nope", "--server", server.address, "--json", "{}", check=False)
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_training_on_a_file_and_the_same_data_version_for_csv_and_parquet(tmp_path: Path):
    csv, parquet = tmp_path / "houses.csv", tmp_path / "houses.parquet"
    driftline("data", "housing", "--rows", "400", "--out", str(csv))
    driftline("data", "housing", "--rows", "400", "--out", str(parquet))
    root = tmp_path / "registry"
    for path in (csv, parquet):
        result = driftline("train", "h", "--registry", str(root), "--data", str(path), "--target", "price",
                           "--features", "living_area,lot_area,distance_to_center", "--estimator", "linear")
        assert "published h version" in result.stdout
    first, second = (json.loads((root / "h" / v / "metadata.json").read_text()) for v in ("1", "2"))
    assert first["data_version"] == second["data_version"]
    assert [f["name"] for f in first["features"]] == ["living_area", "lot_area", "distance_to_center"]


@pytest.mark.parametrize(("args", "message"), [
    (["--estimator", "linear", "--target", "price_segment", "--task", "classification"], "does not do classification"),
    (["--data", "missing.csv", "--target", "y"], "does not exist"),
    (["--target", "nope"], "target column 'nope' is not in the data"),
    (["--param", "n_estimators=-3"], "n_estimators"),
])
def test_train_errors_say_what_to_fix(tmp_path: Path, args: list[str], message: str):
    result = driftline("train", "m", "--registry", str(tmp_path / "r"), "--rows", "200", *args, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert not (tmp_path / "r" / "m").exists() or not any((tmp_path / "r" / "m").iterdir())


def test_train_prints_the_version_number(tmp_path: Path):
    for expected in (1, 2):
        result = driftline("train", "m", "--registry", str(tmp_path), "--rows", "300", "--estimator", "linear")
        assert published_version(result) == expected


def _command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and nested subcommand of ``parser``, as the words a user types."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _command_paths(child, (*path, name))


def test_every_command_and_subcommand_answers_help(capsys: pytest.CaptureFixture[str]):
    paths = list(_command_paths(cli.parser()))
    assert {path[0] for path in paths if path} == set(cli.COMMANDS)
    assert any(len(path) == 2 for path in paths)  # the walk reached nested subcommands (models list, ...)
    failures = {}
    for path in paths:
        # In-process, as the console script runs it: a help string argparse cannot format raises here.
        try:
            with pytest.raises(SystemExit) as exit:
                cli.main([*path, "--help"])
        except Exception as exc:  # noqa: BLE001 - collect every broken command, not just the first
            failures[" ".join(path)] = repr(exc)
            continue
        out = capsys.readouterr().out
        if exit.value.code != 0 or "usage: driftline" not in out:
            failures[" ".join(path)] = f"exit {exit.value.code}: {out[:200]!r}"
    assert not failures, failures


def test_serve_on_a_busy_port_says_so_without_a_traceback(tmp_path: Path):
    driftline("train", "m", "--registry", str(tmp_path), "--rows", "300", "--estimator", "linear")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = driftline("serve", "--registry", str(tmp_path), "--port", str(port), "--workers", "1",
                           "--no-http", "--no-metrics", check=False)
    assert result.returncode == 2, result.stderr
    assert f"cannot serve gRPC on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "Traceback" not in result.stderr
