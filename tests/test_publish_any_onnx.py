"""``driftline publish NAME --onnx FILE`` for any ONNX model (issue 11, point 1): without a reference the model is
served, timed and counted and the drift report says there is no baseline; with a ``.npz`` reference of named
tensors every output gets a prediction-drift baseline."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import onnx_models as m
from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from helpers import driftline, published_version, running_server

ROWS = 600


def drift_report(address: str, model: str) -> dpb.DriftReportResponse:
    with grpc.insecure_channel(address) as channel:
        return driftline_pb2_grpc.MonitoringStub(channel).DriftReport(dpb.DriftRequest(name=model), timeout=30)


def test_every_example_model_publishes_without_a_reference(tmp_path_factory: pytest.TempPathFactory):
    registry = m.example_registry(tmp_path_factory)  # each publish there must succeed
    listed = driftline("models", "list", "--registry", str(registry)).stdout
    assert all(name in listed for name in m.BUILDERS), listed


def test_publishing_the_fixed_batch_model_does_not_crash(tmp_path: Path):
    result = m.publish(tmp_path / "registry", "fixed16", m.fixed16(), check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert published_version(result) == 1


@pytest.fixture(scope="module")
def unmonitored(tmp_path_factory: pytest.TempPathFactory):
    """The example models, published without a reference, on a server with metrics."""
    with running_server(m.example_registry(tmp_path_factory), "--metrics-port", "0", *m.serve_flags()) as server:
        yield server


def test_without_a_reference_the_drift_report_says_there_is_no_baseline(unmonitored):
    with pytest.raises(grpc.RpcError) as caught:
        drift_report(unmonitored.address, "simple")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "baseline" in caught.value.details().lower() and "simple" in caught.value.details()
    cli = driftline("drift", "simple", "--server", unmonitored.address, "--json", check=False)
    assert cli.returncode != 0 and "baseline" in cli.stderr.lower(), cli.stderr
    assert "Traceback" not in cli.stderr


def test_without_a_reference_inference_statistics_and_metrics_work(unmonitored):
    with grpcclient.InferenceServerClient(url=unmonitored.address) as client:
        before = client.get_inference_statistics("simple").model_stats[0]
        samples = m.sample_inputs("simple", rows=5)
        result = client.infer("simple", m.grpc_inputs(samples))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), samples[0][2] + samples[1][2])
        after = client.get_inference_statistics("simple").model_stats[0]
        assert after.inference_count == before.inference_count + 5
        assert after.execution_count >= before.execution_count + 1
        assert after.inference_stats.success.count == before.inference_stats.success.count + 1
    text = urllib.request.urlopen(m.metrics_url(unmonitored), timeout=30).read().decode()
    rows = [line for line in text.splitlines()
            if line.startswith("driftline_inference_rows") and 'model="simple"' in line]
    assert rows and float(rows[0].rsplit(" ", 1)[1]) >= 5, rows


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def with_npz_reference(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("npz")
    registry = folder / "registry"
    rng = np.random.default_rng(5)
    simple_ref = write_npz(folder / "simple.npz", INPUT0=rng.integers(0, 50, size=(ROWS, 16), dtype=np.int32),
                           INPUT1=rng.integers(0, 50, size=(ROWS, 16), dtype=np.int32))
    softmax_ref = write_npz(folder / "softmax3.npz", x=rng.normal(size=(ROWS, 4)).astype(np.float32))
    assert published_version(m.publish(registry, "simple", m.simple(), "--reference", str(simple_ref))) == 1
    assert published_version(m.publish(registry, "softmax3", m.softmax3(), "--reference", str(softmax_ref))) == 1
    with running_server(registry, "--drift-window-rows", "100000", *m.serve_flags()) as server:
        yield server


def send(address: str, model: str, batches: list[list[tuple[str, str, np.ndarray]]]) -> int:
    with grpcclient.InferenceServerClient(url=address) as client:
        for samples in batches:
            client.infer(model, m.grpc_inputs(samples))
    return sum(len(samples[0][2]) for samples in batches)


def settled(address: str, model: str, rows: int) -> dpb.DriftReportResponse:
    """The report once every sent row has reached the monitor (it is updated off the response path)."""
    deadline = time.monotonic() + 60
    while (report := drift_report(address, model)).current.rows < rows and time.monotonic() < deadline:
        time.sleep(0.05)
    return report


def covers(columns: list[str], output: str) -> bool:
    # Assumption: a tensor is monitored either as one column named after it or as several whose names start with
    # its name (e.g. "OUTPUT0[3]").
    return any(c == output or c.startswith(output) for c in columns)


def test_an_npz_reference_gives_every_output_a_prediction_baseline(with_npz_reference):
    rng = np.random.default_rng(9)
    batches = [[("INPUT0", "INT32", rng.integers(0, 50, size=(50, 16), dtype=np.int32)),
                ("INPUT1", "INT32", rng.integers(0, 50, size=(50, 16), dtype=np.int32))] for _ in range(4)]
    sent = send(with_npz_reference.address, "simple", batches)
    report = settled(with_npz_reference.address, "simple", sent)
    assert report.current.rows == sent
    outputs = [c.name for c in report.current.outputs]
    assert covers(outputs, "OUTPUT0") and covers(outputs, "OUTPUT1"), outputs
    # ...and summary statistics per input, reported as the "features" of a model that is not tabular.
    inputs = [c.name for c in report.current.features]
    assert covers(inputs, "INPUT0") and covers(inputs, "INPUT1"), inputs
    summary = json.loads(driftline("drift", "simple", "--server", with_npz_reference.address, "--json").stdout)
    assert covers([c["name"] for c in summary["prediction"]], "OUTPUT1"), summary


def test_npz_baseline_alarms_when_the_predictions_move(with_npz_reference):
    rng = np.random.default_rng(11)
    shifted = [[("x", "FP32", (rng.normal(size=(100, 4)) + [4.0, -4.0, 4.0, -4.0]).astype(np.float32))]
               for _ in range(6)]
    sent = send(with_npz_reference.address, "softmax3", shifted)
    report = settled(with_npz_reference.address, "softmax3", sent)
    assert covers([c.name for c in report.current.outputs], "probabilities")
    assert any(c.alarm for c in report.current.outputs if c.name.startswith("probabilities")), report.current


def test_an_npz_reference_must_name_every_input(tmp_path: Path):
    reference = write_npz(tmp_path / "partial.npz", INPUT0=np.zeros((10, 16), dtype=np.int32))
    result = m.publish(tmp_path / "registry", "simple", m.simple(), "--reference", str(reference), check=False)
    # Assumption: refused like any other bad argument (exit 2), naming the missing input and speaking of the
    # reference; nothing is published.
    message = result.stderr.replace(str(tmp_path), "")  # the folder's name holds this test's name
    assert result.returncode == 2 and "INPUT1" in message, result.stderr
    assert "partial.npz" in message or "reference" in message.lower(), result.stderr
    assert not (tmp_path / "registry" / "simple").exists() or not any((tmp_path / "registry" / "simple").iterdir())
