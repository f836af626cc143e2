"""The doors into driftline in a hostile world: a registry with folders that are not names, malformed
names and versions over gRPC and HTTP, a missing registry folder, a reader that hangs up early."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from helpers import READY_LINE, RunningServer, driftline, running_server

ROW = {"living_area": 84, "lot_area": 400, "bedrooms": 3, "bathrooms": 1, "stories": 1, "garage_area": 18,
       "has_basement": 0, "year_built": 1995, "condition": 3, "distance_to_center": 8, "transit_distance": 1.2}
HTTP_LINE = re.compile(r"http http://[^:]+:(?P<port>\d+)")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained model beside a folder '²' (isdigit() is true, int() fails), a version folder '²' and a stray file."""
    root = tmp_path_factory.mktemp("doors") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "300", "--estimator", "linear")
    (root / "²").mkdir()
    (root / "housing" / "²").mkdir()
    (root / "notes.txt").write_text("not a model")
    return root


@pytest.fixture(scope="module")
def server(registry: Path) -> Iterator[RunningServer]:
    with running_server(registry, "--http-port", "0", "--no-metrics") as running:
        yield running


def warnings_about(stderr: str, entry: str) -> int:
    return sum(1 for line in stderr.splitlines() if f"skipping {entry!r}" in line)


def test_models_list_and_train_skip_what_is_not_a_name_and_warn_once(registry: Path):
    listing = driftline("models", "list", "--registry", str(registry))
    assert [line.split()[0] for line in listing.stdout.splitlines()] == ["MODEL", "housing"]
    for entry in ("²", "housing/²", "notes.txt"):
        assert warnings_about(listing.stderr, entry) == 1, listing.stderr
    assert "Traceback" not in listing.stderr

    trained = driftline("train", "housing", "--registry", str(registry), "--rows", "300", "--estimator", "linear")
    assert "published housing version 2" in trained.stdout
    assert warnings_about(trained.stderr, "housing/²") == 1, trained.stderr


def test_serve_skips_them_too_and_serves_the_rest(server: RunningServer):
    log = "".join(server.log)
    assert "driftline serving housing:" in log and "Traceback" not in log
    assert warnings_about(log, "²") == 1 and warnings_about(log, "housing/²") == 1


@pytest.mark.parametrize(("model", "version", "says"), [
    ("housing", "²", "ASCII digits"), ("housing", "0", "positive integer"),
    ("../x", "", "ASCII letters"), (".", "", "ASCII letters"), ("²", "1", "ASCII letters"),
])
def test_malformed_names_and_versions_over_grpc_are_invalid_argument(server: RunningServer, model: str,
                                                                    version: str, says: str):
    infer = pb.ModelInferRequest(model_name=model, model_version=version)
    infer.inputs.add(name="input", datatype="FP32", shape=[1, len(ROW)])
    infer.raw_input_contents.append(np.ones((1, len(ROW)), dtype="<f4").tobytes())
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for call, message in ((stub.ModelInfer, infer), (stub.ModelMetadata, pb.ModelMetadataRequest(
                name=model, version=version))):
            with pytest.raises(grpc.RpcError) as caught:
                call(message, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
            assert says in caught.value.details()


@pytest.mark.parametrize(("path", "says"), [
    ("/v2/models/housing/versions/%C2%B2", "ASCII digits"),
    ("/v2/models/housing/versions/%C2%B2/ready", "ASCII digits"),
    ("/v2/models/%2E%2E", "ASCII letters"),
    ("/v2/models/%C2%B2/versions/1", "ASCII letters"),
])
def test_malformed_names_and_versions_over_http_are_400(server: RunningServer, path: str, says: str):
    port = next(m.group("port") for line in server.log if (m := HTTP_LINE.search(line)))
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30)
    assert caught.value.code == 400
    assert says in json.loads(caught.value.read())["error"]


@pytest.mark.parametrize(("cell", "code", "says"), [
    ("abc", 2, "column 'living_area' holds String"),  # refused by the client, before sending: bad input
    (None, 1, "INVALID_ARGUMENT"),  # sent, and refused by the server
])
def test_infer_with_a_text_or_null_cell_says_why_in_one_line(server: RunningServer, cell: object, code: int,
                                                             says: str):
    result = driftline("infer", "housing", "--server", server.address, "--json",
                       json.dumps({**ROW, "living_area": cell}),
                       check=False)
    assert result.returncode == code and len(result.stderr.splitlines()) == 1, result.stderr
    assert says in result.stderr and "living_area" in result.stderr


def test_cli_arguments_are_checked_before_any_work(tmp_path: Path):
    # Each command would fail later for another reason (no such data file, nothing listening on port 1):
    # the name or version is what it must complain about, having done nothing yet.
    nowhere = ["--server", "127.0.0.1:1", "--timeout", "1"]
    for args in (["train", "../x", "--registry", str(tmp_path), "--data", str(tmp_path / "none.csv"), "--target", "y"],
                 ["infer", "../x", "--json", "{}", *nowhere], ["infer", "housing", "--version", "²", "--json", "{}",
                                                               *nowhere],
                 ["models", "show", "²", "--registry", str(tmp_path)],
                 ["promote", "housing", "²", "--registry", str(tmp_path)]):
        result = driftline(*args, check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "ASCII" in result.stderr.splitlines()[-1], result.stderr
    assert not any(tmp_path.iterdir())


def test_an_os_error_a_command_leaves_uncaught_ends_in_one_line(tmp_path: Path):
    (tmp_path / "file").write_text("a file, not a folder")
    result = driftline("data", "housing", "--rows", "3", "--out", str(tmp_path / "file" / "rows.csv"), check=False)
    assert result.returncode == 2 and result.stderr.startswith("driftline data: error: "), result.stderr
    assert len(result.stderr.splitlines()) == 1 and str(tmp_path / "file") in result.stderr


def test_a_server_error_a_command_leaves_uncaught_still_ends_in_one_line(registry: Path, tmp_path: Path):
    # retrain --on-drift asks the server first, on a raw gRPC stub; nothing listens on port 1.
    result = driftline("retrain", "housing", "--data", str(tmp_path / "new.csv"), "--on-drift",
                       "--server", "127.0.0.1:1", "--registry", str(registry), check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("driftline retrain: UNAVAILABLE: ") and len(result.stderr.splitlines()) == 1


def test_a_closed_stdout_ends_a_command_quietly_with_141(registry: Path):
    # The read end is closed before the command starts, so its first write meets a broken pipe every time,
    # as `driftline models list | head -1` does once head has its line.
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([sys.executable, "-m", "driftline", "models", "list", "--registry", str(registry)],
                                stdout=write, stderr=subprocess.PIPE, text=True, timeout=600)
    finally:
        os.close(write)
    assert result.returncode == 141, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


def test_serve_refuses_a_registry_folder_that_does_not_exist(tmp_path: Path):
    missing = tmp_path / "no-such-registry"
    process = subprocess.Popen([sys.executable, "-m", "driftline", "serve", "--registry", str(missing), "--port", "0",
                                "--workers", "1", "--no-http", "--no-metrics"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:  # ends when the process exits; a server that starts is a failure
            lines.append(line)
            assert not READY_LINE.search(line), "served a registry that does not exist"
        assert process.wait() == 2
    finally:
        process.kill()
        process.wait()
    assert lines == [f"driftline serve: error: registry {missing} does not exist; check --registry (or "
                     "$DRIFTLINE_REGISTRY), or pass --create-registry to serve it empty and load models "
                     "published there later\n"]
    assert not missing.exists()


def test_serve_creates_the_registry_folder_when_asked(tmp_path: Path):
    wanted = tmp_path / "new" / "registry"
    with running_server(wanted, "--create-registry", "--no-http", "--no-metrics") as running:
        assert wanted.is_dir() and running.port > 0
