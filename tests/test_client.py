"""``driftline.client``: tables in and out of a real server, over gRPC and HTTP.

Two models: ``housing``, trained by ``driftline train`` (one FP32 [-1, 11] input the client stacks in feature
order, explainable), and ``mixed``, any ONNX model with one input per column (``living_area`` FP32 [-1, 1],
``district`` BYTES [-1, 1]) published without a reference.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

import onnx_models as m
from driftline.client import Client, ServerError, channel_args
from driftline.trainer import synthetic
from helpers import driftline, running_server

FEATURES = list(synthetic.FEATURES)
DRIFT_WAIT_S = 30  # drift updates run off the response path; a loaded machine may take a while


def mixed_model():
    """doubled = living_area * 2, district_out = district: per-column inputs [-1, 1], one numeric, one text."""
    column = ["batch", 1]
    graph = helper.make_graph(
        [helper.make_node("Add", ["living_area", "living_area"], ["doubled"]),
         helper.make_node("Identity", ["district"], ["district_out"])],
        "mixed",
        [helper.make_tensor_value_info("living_area", TensorProto.FLOAT, column),
         helper.make_tensor_value_info("district", TensorProto.STRING, column)],
        [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, column),
         helper.make_tensor_value_info("district_out", TensorProto.STRING, column)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", m.OPSET)], ir_version=m.IR_VERSION)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "600", "--param", "n_estimators=10")
    m.publish(root, "mixed", mixed_model())
    return root


@pytest.fixture(scope="module")
def server(registry: Path):
    with running_server(registry, "--metrics-port", "0", *m.serve_flags()) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with Client(server.address) as grpc_client:
        yield grpc_client


@pytest.fixture(scope="module")
def http_client(server):
    with Client(m.http_url(server), protocol="http") as rest_client:
        yield rest_client


@pytest.fixture(scope="module")
def houses() -> pl.DataFrame:
    return synthetic.housing(8, seed=11)


def raw_call(server, rows: np.ndarray) -> tuple[np.ndarray, list[bool]]:
    """(predictions, flagged per row) of tritonclient's own call with ``rows`` as the one input."""
    with grpcclient.InferenceServerClient(server.address) as triton:
        tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        result = triton.infer("housing", [tensor])
    parameters = result.get_response().parameters
    flagged = parameters["driftline_flagged_rows"].string_param if "driftline_flagged_rows" in parameters else ""
    indices = {int(i) for i in flagged.split(",") if i}
    return result.as_numpy("prediction").reshape(-1), [i in indices for i in range(len(rows))]


# -- (a) a trained tabular model: columns stacked in feature order ------------------------------------------
def test_feature_names_come_from_the_server(client):
    assert client.feature_names("housing") == FEATURES


@pytest.mark.parametrize("form", ["dict", "rows", "polars", "pandas"])
def test_tabular_predictions_equal_a_raw_call_with_the_stacked_matrix(client, server, houses, form):
    # Columns in an order of their own: the client must put them in the model's.
    table = houses.select(list(reversed(FEATURES)))
    data = {"dict": {c: table[c].to_list() for c in table.columns}, "rows": table.to_dicts(), "polars": table,
            "pandas": table.to_pandas()}[form]
    frame = client.infer("housing", data)
    predictions, flagged = raw_call(server, houses.select(FEATURES).to_numpy().astype(np.float32))
    assert frame.columns == ["prediction", "version", "flagged"]
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), predictions)
    assert frame["version"].to_list() == ["1"] * len(houses)
    assert frame["flagged"].to_list() == flagged


def test_pandas_out(client, houses):
    frame = client.infer_pandas("housing", houses.select(FEATURES).to_pandas())
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["prediction", "version", "flagged"]
    assert len(frame) == len(houses) and (frame["version"] == "1").all()


def test_explain_adds_attributions_that_sum_to_the_prediction(client, houses):
    frame = client.infer("housing", houses.select(FEATURES), explain=True)
    columns = [f"attribution[{f}]" for f in FEATURES]
    assert frame.columns == ["prediction", *columns, "attribution_base", "version", "flagged"]
    total = frame.select(columns).to_numpy().astype(np.float64).sum(axis=1) + frame["attribution_base"].to_numpy()
    np.testing.assert_allclose(total, frame["prediction"].to_numpy(), rtol=1e-3)


def test_rows_validation_flags_come_back_per_row(client, houses):
    ordinary = synthetic.housing(200, seed=0).select(FEATURES).head(3)  # rows the model was trained on
    table = ordinary.with_columns(pl.Series("living_area", [84.0, 5000.0, 90.0]))
    frame = client.infer("housing", table)
    assert frame["flagged"].to_list() == [False, True, False]


# -- (b) a model with one input per column --------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_per_column_inputs_from_a_dataframe(client, http_client, protocol):
    chosen = client if protocol == "grpc" else http_client
    table = pl.DataFrame({"district": ["Mokotów", None, "Wola"], "living_area": [42.5, 60.0, None]})
    frame = chosen.infer("mixed", table)
    assert frame.columns == ["doubled", "district_out", "version", "flagged"]
    np.testing.assert_array_equal(frame["doubled"].to_numpy(), np.array([85.0, 120.0, np.nan], dtype=np.float32))
    assert frame["district_out"].to_list() == ["Mokotów", "", "Wola"]  # None goes as ""
    assert frame["version"].to_list() == ["1", "1", "1"]


def test_per_column_inputs_from_rows_and_pandas(client):
    rows = [{"living_area": 10, "district": "a"}, {"living_area": 11.5, "district": "b"}]
    assert client.infer("mixed", rows)["doubled"].to_list() == [20.0, 23.0]
    assert client.infer_pandas("mixed", pd.DataFrame(rows))["district_out"].tolist() == ["a", "b"]


# -- (c) columns the model does not take, or lacks ------------------------------------------------------
def test_extra_columns_are_an_error_unless_dropped(client, houses):
    with pytest.raises(ValueError, match=r"unknown keys \['price', 'price_segment'\]"):
        client.infer("housing", houses)
    dropped = client.infer("housing", houses, drop_extra=True)
    assert dropped["prediction"].to_list() == client.infer("housing", houses.select(FEATURES))["prediction"].to_list()


def test_missing_columns_are_named(client, houses):
    with pytest.raises(ValueError, match=r"missing columns \['garage_area'\]"):
        client.infer("housing", houses.select(FEATURES).drop("garage_area"))
    with pytest.raises(ValueError, match=r"missing columns \['district'\]"):
        client.infer("mixed", {"living_area": [1.0]})


def test_explain_on_a_model_without_attributions_says_so(client):
    with pytest.raises(ValueError, match="mixed offers no attributions"):
        client.infer("mixed", {"living_area": [1.0], "district": ["a"]}, explain=True)


def test_over_http_a_stacked_model_reads_its_feature_names_from_the_driftline_route(client, http_client, houses):
    sent = houses.select(FEATURES)
    assert http_client.infer("housing", sent)["prediction"].to_list() == client.infer("housing", sent)[
        "prediction"].to_list()


# -- (d) server errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_unknown_model_is_a_server_error_with_its_status(client, http_client, protocol):
    chosen = client if protocol == "grpc" else http_client
    with pytest.raises(ServerError) as caught:
        chosen.infer("nope", {"x": [1.0]})
    assert caught.value.status == "NOT_FOUND"
    assert "nope" in caught.value.message


# -- (e) retries ----------------------------------------------------------------------------------------
def test_channel_args_carry_a_retry_policy_for_unavailable():
    options = dict(channel_args(4))
    assert options["grpc.enable_retries"] == 1
    [method] = json.loads(options["grpc.service_config"])["methodConfig"]
    assert {"service": "inference.GRPCInferenceService"} in method["name"]
    assert method["retryPolicy"] == {"maxAttempts": 5, "initialBackoff": "0.05s", "maxBackoff": "1.0s",
                                     "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
    assert dict(channel_args(0))["grpc.enable_retries"] == 0  # maxAttempts 1 would void the whole config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def server_starting_later(registry: Path, delay_s: float) -> Iterator[tuple[int, int]]:
    """(gRPC port, HTTP port) of a server that starts listening only after ``delay_s`` and its own start-up."""
    ports = free_port(), free_port()
    stop, failed = threading.Event(), []

    def serve() -> None:
        time.sleep(delay_s)
        try:
            with running_server(registry, "--port", str(ports[0]), "--http-port", str(ports[1]),
                                "--metrics-port", "0"):
                stop.wait()
        except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in the thread
            failed.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield ports
    finally:
        stop.set()
        thread.join()
    assert not failed, failed


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_call_made_before_the_server_listens_succeeds_through_retries(registry: Path, protocol):
    with server_starting_later(registry, delay_s=0.5) as (grpc_port, http_port):
        port = grpc_port if protocol == "grpc" else http_port
        # Backoff tops out at 1 s: 150 retries wait as long as the tests wait for any server to start (a cold
        # start imports onnxruntime; a busy CI machine is slow).
        with Client(f"127.0.0.1:{port}", protocol=protocol, retries=150) as late:
            frame = late.infer("mixed", {"living_area": [2.0], "district": ["x"]})
    assert frame["doubled"].to_list() == [4.0] and frame["version"].to_list() == ["1"]


def test_without_retries_a_server_that_is_not_there_is_unavailable():
    with Client(f"127.0.0.1:{free_port()}", retries=0, timeout=5) as nobody, pytest.raises(ServerError) as caught:
        nobody.infer("mixed", {"living_area": [2.0], "district": ["x"]})
    assert caught.value.status == "UNAVAILABLE"


# -- (f) drift ------------------------------------------------------------------------------------------
def test_drift_report_has_the_feature_columns_after_traffic(client, houses):
    sent = synthetic.housing(64, seed=12).select(FEATURES)
    client.infer("housing", sent)
    deadline = time.monotonic() + DRIFT_WAIT_S
    report = client.drift("housing")
    while report.current_rows < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
        report = client.drift("housing")
    assert report.model == "housing" and report.version == "1" and report.window
    assert report.current_rows >= len(sent)
    assert [c.name for c in report.columns] == FEATURES
    assert all(c.kind in ("numeric", "categorical") and c.rows >= len(sent) for c in report.columns)
    assert all(np.isfinite(c.psi) and isinstance(c.alarms, tuple) for c in report.columns)
    assert [c.name for c in report.current.outputs] == ["prediction"]
    assert report.since_live.rows >= report.current_rows


def test_drift_over_http_is_the_same_report(client, http_client, houses):
    client.infer("housing", houses.select(FEATURES).head(8))
    over_http, over_grpc = http_client.drift("housing"), client.drift("housing")
    assert [c.name for c in over_http.columns] == [c.name for c in over_grpc.columns] == FEATURES
    assert over_http.version == over_grpc.version == "1"


def test_drift_of_a_model_without_a_baseline_is_a_server_error(client):
    with pytest.raises(ServerError) as caught:
        client.drift("mixed")
    assert caught.value.status == "FAILED_PRECONDITION" and "baseline" in caught.value.message.lower()
