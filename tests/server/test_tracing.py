"""Traces end to end: a real server exports OTLP over gRPC to a real trace receiver on loopback.

The server is configured only through the standard OpenTelemetry variables. Requests carry a W3C
``traceparent``; the test checks the spans that arrive: names, parents, the batch span's links, and
the model version attribute. JSON log lines of a traced call carry its trace id.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc
from driftline.trainer import synthetic
from otlp_receiver import Receiver, receiving
from helpers import driftline, running_server

ROWS = synthetic.housing(64, seed=5).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
MODEL_INFER = "inference.GRPCInferenceService/ModelInfer"
STREAM_INFER = "inference.GRPCInferenceService/ModelStreamInfer"
WAIT_S = 60


@pytest.fixture(scope="module")
def receiver():
    with receiving() as collector:
        yield collector


def otel_env(receiver: Receiver, service: str) -> dict[str, str]:
    return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": service}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver):
    root = tmp_path_factory.mktemp("tracing") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "2000", "--seed", "1",
              "--param", "n_estimators=15")
    with pytest.MonkeyPatch.context() as patch:  # the server process inherits this environment
        for key, value in otel_env(receiver, "driftline-test").items():
            patch.setenv(key, value)
        with running_server(root, "--log-format", "json", "--metrics-port", "0") as running:
            yield running


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def ask(client: triton.InferenceServerClient, rows: np.ndarray, header: str, *outputs: str) -> None:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    client.infer("housing", [tensor], headers={"traceparent": header},
                 outputs=[triton.InferRequestedOutput(n) for n in outputs] or None)


def test_request_spans_continue_the_callers_trace_and_batches_link_to_them(server, receiver):
    callers = [traceparent() for _ in range(24)]

    def call(i: int) -> None:
        client = triton.InferenceServerClient(url=server.address)
        ask(client, ROWS[: 1 + i % 5], callers[i][2])
        client.close()

    with ThreadPoolExecutor(8) as pool:  # concurrent, so some batches may serve several requests
        list(pool.map(call, range(len(callers))))
    ours = {trace for trace, _, _ in callers}

    def complete(spans):
        requests = [s for s in spans if s["name"] == MODEL_INFER and s["trace"] in ours]
        linked = {link for s in spans if s["name"] == "driftline.batch" for link in s["links"]}
        updates = {s["parent"] for s in spans if s["name"] == "driftline.drift_update"}
        batches = [s for s in spans if s["name"] == "driftline.batch" and {r["id"] for r in requests} & {
            span for _, span in s["links"]}]
        done = (len(requests) == len(callers) and all((r["trace"], r["id"]) in linked for r in requests)
                and all(b["id"] in updates for b in batches))
        return done and spans

    spans = receiver.wait_for(complete)
    assert spans, "spans did not all arrive"
    for trace_id, parent_id, _ in callers:
        [request] = [s for s in spans if s["name"] == MODEL_INFER and s["trace"] == trace_id]
        assert request["parent"] == parent_id  # the caller's span is the server span's parent
        assert request["kind"] == 2 and request["service"] == "driftline-test"  # SERVER
        assert request["attributes"]["driftline.model"] == "housing"
        assert request["attributes"]["driftline.model_version"] == 1
        assert request["attributes"]["rpc.grpc.status_code"] == 0
        children = {s["name"]: s for s in spans if s["parent"] == request["id"]}
        assert {"driftline.validate", "driftline.queue"} <= set(children), children
        [batch] = [s for s in spans if s["name"] == "driftline.batch" and (trace_id, request["id"]) in s["links"]]
        assert children["driftline.queue"]["links"] == [(batch["trace"], batch["id"])]
    request_ids = {(s["trace"], s["id"]) for s in spans if s["name"] == MODEL_INFER and s["trace"] in ours}
    batches = [s for s in spans if s["name"] == "driftline.batch" and set(s["links"]) & request_ids]
    served = [link for b in batches for link in b["links"]]
    assert sorted(served) == sorted(request_ids)  # each request served by exactly one batch
    for batch in batches:
        assert batch["attributes"]["driftline.batch.requests"] == len(batch["links"])
        assert batch["attributes"]["driftline.model_version"] == 1
        # A batch lives in the trace of the first request it served, as that request's span's child.
        assert (batch["trace"], batch["parent"]) in set(batch["links"])
        assert batch["attributes"]["driftline.batch.rows"] >= batch["attributes"]["driftline.batch.requests"]
        [inference] = [s for s in spans if s["name"] == "driftline.inference" and s["parent"] == batch["id"]]
        assert inference["attributes"]["driftline.model_version"] == 1
        assert inference["attributes"]["driftline.execution_provider"] == "CPUExecutionProvider"
        assert inference["attributes"]["driftline.rows"] == batch["attributes"]["driftline.batch.rows"]
        [update] = [s for s in spans if s["name"] == "driftline.drift_update" and s["parent"] == batch["id"]]
        assert update["trace"] == batch["trace"]


def test_stream_messages_get_their_own_spans(server, receiver):
    trace_id, parent_id, header = traceparent()
    with grpc.insecure_channel(server.address) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def messages():
            for i in range(6):
                request = pb.ModelInferRequest(model_name="housing", id=str(i))
                request.inputs.add(name="input", datatype="FP32", shape=[2, 11])
                request.raw_input_contents.append(ROWS[2 * i: 2 * i + 2].tobytes())
                yield request

        answers = list(stub.ModelStreamInfer(messages(), metadata=[("traceparent", header)]))
    assert [a.infer_response.id for a in answers] == [str(i) for i in range(6)]

    def complete(spans):
        mine = [s for s in spans if s["trace"] == trace_id]
        return mine if len([s for s in mine if s["name"] == "driftline.infer"]) == 6 and any(
            s["name"] == STREAM_INFER for s in mine) else None

    spans = receiver.wait_for(complete)
    assert spans, "stream spans did not arrive"
    [stream] = [s for s in spans if s["name"] == STREAM_INFER]
    assert stream["parent"] == parent_id
    messages = [s for s in spans if s["name"] == "driftline.infer"]
    assert {m["parent"] for m in messages} == {stream["id"]}
    assert all(m["attributes"]["driftline.model_version"] == 1 for m in messages)
    linked = receiver.wait_for(lambda all_spans: {link for s in all_spans if s["name"] == "driftline.batch"
                                                  for link in s["links"]} >= {(trace_id, m["id"]) for m in messages})
    assert linked, "every message is linked from the batch that served it"


def test_attributions_and_errors_show_in_the_trace(server, receiver):
    client = triton.InferenceServerClient(url=server.address)
    explained, _, header = traceparent()
    ask(client, ROWS[:4], header, "prediction", "attribution")
    refused, _, bad = traceparent()
    tensor = triton.InferInput("wrong_name", list(ROWS[:1].shape), "FP32")
    tensor.set_data_from_numpy(ROWS[:1])
    with pytest.raises(triton.InferenceServerException):
        client.infer("housing", [tensor], headers={"traceparent": bad})
    client.close()
    spans = receiver.wait_for(lambda s: s if any(x["trace"] == explained and x["name"] == "driftline.attribution"
                                                 for x in s) and any(x["trace"] == refused for x in s) else None)
    assert spans, "spans did not arrive"
    [request] = [s for s in spans if s["trace"] == explained and s["name"] == MODEL_INFER]
    [attribution] = [s for s in spans if s["trace"] == explained and s["name"] == "driftline.attribution"]
    assert attribution["parent"] == request["id"] and attribution["attributes"]["driftline.rows"] == 4
    [failed] = [s for s in spans if s["trace"] == refused and s["name"] == MODEL_INFER]
    assert failed["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert failed["status"] == 2  # STATUS_CODE_ERROR
    assert not [s for s in spans if s["trace"] == refused and s["name"] == "driftline.batch"]  # nothing was run


def test_json_log_lines_of_a_request_carry_its_trace_id(server):
    trace_id, _, header = traceparent()
    with grpc.insecure_channel(server.address) as channel:
        swap = driftline_pb2_grpc.AdminStub(channel).Swap
        swap(dpb.SwapRequest(name="housing", version="1", force=True), metadata=[("traceparent", header)])
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in list(server.log) if line.startswith("{")]
        swapped = [line for line in lines if "now serving version 1" in line["message"]]
        if swapped:
            break
        time.sleep(0.05)
    assert swapped and swapped[-1]["trace_id"] == trace_id and len(swapped[-1]["span_id"]) == 16
    assert {"time", "level", "logger", "message"} <= set(swapped[-1])
    started = [line for line in lines if "loaded housing version 1" in line["message"]]
    assert started and "trace_id" not in started[0]  # start-up is no request


def test_driftline_infer_sends_its_client_span(server, receiver, tmp_path: Path):
    row = json.dumps(dict(zip(synthetic.FEATURES, ROWS[0].tolist(), strict=True)))
    result = driftline("infer", "housing", "--server", server.address, "--json", row,
                       env=otel_env(receiver, "driftline-client-test"))
    trace_id = result.stderr.split("trace ", 1)[1].split()[0]
    spans = receiver.wait_for(lambda s: (lambda mine: mine if {x["name"] for x in mine} >= {
        "driftline infer", MODEL_INFER} else None)([x for x in s if x["trace"] == trace_id]))
    assert spans, f"no client and server spans in trace {trace_id}"
    [client] = [s for s in spans if s["name"] == "driftline infer"]
    [request] = [s for s in spans if s["name"] == MODEL_INFER]
    assert client["kind"] == 3 and client["service"] == "driftline-client-test"  # CLIENT
    assert request["parent"] == client["id"] and request["service"] == "driftline-test"


def test_driftline_infer_trace_flag_without_an_exporter(server, receiver):
    row = json.dumps(dict(zip(synthetic.FEATURES, ROWS[1].tolist(), strict=True)))
    result = driftline("infer", "housing", "--server", server.address, "--json", row, "--trace",
                       env={"OTEL_TRACES_EXPORTER": "none"})
    trace_id = result.stderr.split("trace ", 1)[1].split()[0]
    spans = receiver.wait_for(lambda s: [x for x in s if x["trace"] == trace_id and x["name"] == MODEL_INFER])
    assert spans and spans[0]["service"] == "driftline-test"
