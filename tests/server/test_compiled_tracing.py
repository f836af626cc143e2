"""A trace through the compiled door reads as one through the Python door.

Both doors serve the same registry with tracing on (the standard OpenTelemetry variables, OTLP to a real
receiver on loopback) and are sent the same ModelInfer calls, each with its own W3C ``traceparent``. Each
call's spans, as a tree of names with their attributes (ids and times aside), must be the same: the SERVER span
continuing the caller's trace, ``driftline.validate`` and ``driftline.queue`` under it, the batch's
``driftline.batch`` with ``driftline.inference`` and ``driftline.drift_update`` linked to it. A call whose caller
did not sample gets no spans from either door. The compiled door's calls were batched in C++ (its last log line).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import numpy as np
import pytest
from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc
from driftline.trainer import synthetic
from otlp_receiver import Receiver, receiving
from helpers import door_counts, driftline, running_server, wait_until

pytest.importorskip("driftline.server.compiled._door",
                    reason="the compiled gRPC front end is not built (make setup, with libgrpc++-dev installed)")

ROWS = synthetic.housing(16, seed=9).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
MODEL_INFER = "inference.GRPCInferenceService/ModelInfer"
DOORS = ("python", "compiled")


@pytest.fixture(scope="module")
def receiver():
    with receiving() as collector:
        yield collector


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compiled-tracing") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "600", "--param", "n_estimators=10")
    return root


def traced(address: str, headers: list[str]) -> None:
    """One ModelInfer per traceparent, sent together (several may share a batch)."""
    with grpc.insecure_channel(address) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        calls = []
        for i, header in enumerate(headers):
            request = pb.ModelInferRequest(model_name="housing")
            rows = ROWS[: 1 + i % 4]
            request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
            request.raw_input_contents.append(rows.tobytes())
            calls.append(stub.ModelInfer.future(request, metadata=[("traceparent", header)], timeout=60))
        for call in calls:
            assert call.result().model_version == "1"


def tree(spans: list[dict], trace_id: str) -> dict:
    """A call's spans as the trace viewer shows them, without ids and times: the SERVER span, its children, and
    the batch that served it (with the batch's children)."""
    [request] = [s for s in spans if s["name"] == MODEL_INFER and s["trace"] == trace_id]
    children = sorted((s["name"], sorted(s["attributes"].items())) for s in spans  # a batch is the child of the
                      if s["parent"] == request["id"] and s["name"] != "driftline.batch")  # first request it served
    [batch] = [s for s in spans if s["name"] == "driftline.batch" and (trace_id, request["id"]) in s["links"]]
    under_batch = sorted((s["name"], sorted((k, v) for k, v in s["attributes"].items() if k != "driftline.rows"))
                         for s in spans if s["parent"] == batch["id"])
    queue = next(s for s in spans if s["parent"] == request["id"] and s["name"] == "driftline.queue")
    assert queue["links"] == [(batch["trace"], batch["id"])]  # the queue span links to the batch that ran it
    assert (batch["trace"], batch["parent"]) in set(batch["links"])  # in the trace of a request it served
    return {"server": (request["kind"], request["status"], sorted(request["attributes"].items())),
            "parent": request["parent"], "children": children, "batch": sorted(
                (k, v) for k, v in batch["attributes"].items() if k not in ("driftline.batch.rows",
                                                                             "driftline.batch.requests")),
            "under batch": under_batch}


def complete(spans: list[dict], traces: set[str]) -> bool:
    """Every call's SERVER span arrived, and each batch that served one has its drift update (exported last)."""
    requests = {(s["trace"], s["id"]) for s in spans if s["name"] == MODEL_INFER and s["trace"] in traces}
    batches = [s for s in spans if s["name"] == "driftline.batch" and set(s["links"]) & requests]
    updated = {s["parent"] for s in spans if s["name"] == "driftline.drift_update"}
    served = {link for batch in batches for link in batch["links"]}
    return len(requests) == len(traces) and requests <= served and all(b["id"] in updated for b in batches)


def test_a_trace_reads_the_same_through_both_doors(registry: Path, receiver: Receiver):
    callers = [(os.urandom(16).hex(), os.urandom(8).hex()) for _ in range(12)]
    traces = {trace for trace, _ in callers}
    unsampled = os.urandom(16).hex()
    servers = {}
    for door in DOORS:
        with pytest.MonkeyPatch.context() as patch:  # the server process inherits this environment
            for key, value in {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                               "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_BSP_SCHEDULE_DELAY": "50",
                               "OTEL_SERVICE_NAME": f"door-{door}"}.items():
                patch.setenv(key, value)
            with running_server(registry, "--front-end", door, "--no-http", "--no-metrics") as server:
                servers[door] = server
                traced(server.address, [f"00-{unsampled}-{os.urandom(8).hex()}-00"])  # the caller did not sample
                traced(server.address, [f"00-{trace}-{parent}-01" for trace, parent in callers])
                wait_until(lambda: complete(receiver.of(f"door-{door}"), traces),  # noqa: B023
                           f"{door}: every call's spans", 60)
    trees = {door: {} for door in DOORS}
    for door in DOORS:
        spans = receiver.of(f"door-{door}")
        assert unsampled not in {s["trace"] for s in spans}
        for trace, parent in callers:
            shape = tree(spans, trace)
            assert shape.pop("parent") == parent  # the caller's span is the server span's parent
            trees[door][trace] = shape
    for trace in traces:
        assert trees["compiled"][trace] == trees["python"][trace]
    assert trees["compiled"][callers[0][0]]["server"][0] == 2  # SERVER
    assert door_counts(servers["compiled"])[0] == len(callers) + 1, servers["compiled"].log[-3:]
