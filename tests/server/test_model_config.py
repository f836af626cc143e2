"""``--model-config models.toml``: per-model validation policy and drift thresholds take effect, for the models
they name only.

Three copies of the housing model: ``strict`` refuses values above the training range (the default only flags
them), ``watched`` alarms after 100 rows on tiny drift (the default needs 500 rows), ``plain`` is not in the file
and keeps the defaults. The same traffic goes to each.
"""

from __future__ import annotations

import json
import time

import grpc
import numpy as np
import pytest
from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.trainer import synthetic
from helpers import driftline, running_server
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

CONFIG = """
[strict.validation]
above_training_range = "reject"
inferred_limits = "reject"

[watched.drift]
min_rows = 100
psi = 0.001
"""
TRAFFIC = 300
ROWS = synthetic.housing(TRAFFIC, seed=0).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
GARAGE = list(synthetic.FEATURES).index("garage_area")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("model-config")
    for name in ("strict", "watched", "plain"):
        driftline("train", name, "--registry", str(root / "registry"), "--rows", "1000", "--param", "n_estimators=10")
    config = root / "models.toml"
    config.write_text(CONFIG)
    with running_server(root / "registry", "--model-config", str(config)) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as open_channel:
        yield open_channel


def infer(channel: grpc.Channel, model: str, rows: np.ndarray) -> pb.ModelInferResponse:
    message = pb.ModelInferRequest(model_name=model)
    message.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    message.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    return service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=60)


def big_garage() -> np.ndarray:
    row = ROWS[:1].copy()
    row[0, GARAGE] = 400.0  # m2: far above any training garage
    return row


def test_the_configured_model_refuses_values_above_the_training_range(channel):
    with pytest.raises(grpc.RpcError) as refused:
        infer(channel, "strict", big_garage())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert "garage_area" in refused.value.details()
    # An unconfigured model serves the same row, flagged (the default policy).
    served = infer(channel, "plain", big_garage())
    assert served.parameters["driftline_flagged_rows"].string_param == "0"


def report(channel: grpc.Channel, model: str) -> dpb.DriftReportResponse:
    """The drift report once all TRAFFIC rows reached the monitor (it updates off the response path)."""
    stub = driftline_pb2_grpc.MonitoringStub(channel)
    deadline = time.monotonic() + 60
    while True:
        response = stub.DriftReport(dpb.DriftRequest(name=model), timeout=30)
        if response.current.rows >= TRAFFIC or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_the_configured_model_alarms_on_its_own_thresholds(channel):
    for model in ("watched", "plain"):
        for chunk in np.array_split(ROWS, 6):
            infer(channel, model, chunk)
    watched, plain = report(channel, "watched"), report(channel, "plain")
    assert watched.current.rows >= TRAFFIC and TRAFFIC <= plain.current.rows < 500  # (plain also had one row above)
    assert json.loads(watched.thresholds_json)["psi"] == 0.001
    assert json.loads(watched.thresholds_json)["min_rows"] == 100
    assert json.loads(plain.thresholds_json)["min_rows"] == 500
    # 300 ordinary rows: above 100 rows and PSI 0.001 for the watched model, too few rows for the default.
    assert watched.current.alarm
    assert any("psi" in column.alarms for column in watched.current.features)
    assert not plain.current.alarm
    assert all(not column.alarm for column in plain.current.features)
