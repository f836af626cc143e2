"""Deadlines and the bounded queue, end to end, behind work that is slow on purpose.

``spin`` (tests/onnx_models.py) is an ONNX model whose run time is set by the request: it loops ``max(N)`` times
(about a microsecond per turn in onnxruntime) and answers ``Y = N``. With ``--max-concurrent-batches 1
--max-batch-size 1`` a request with a large N occupies the version while the next requests wait in its queue.
Nothing here waits for a time window: a test waits until the server *says* the slow request started
(ModelStatistics counts a request's queue time when its batch starts), and the slow request is long enough
(seconds) that what follows reaches the queue while it runs.

Also here, because ``spin`` was published without a reference: a drift report on such a version is refused with
FAILED_PRECONDITION (no baseline), not NOT_FOUND.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnx_models
from onnx_models import SLOW_TURNS
import pytest
from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from helpers import driftline, hold_the_version, running_server, wait_until
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

SERIAL = ("--max-concurrent-batches", "1", "--max-batch-size", "1")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deadlines") / "registry"
    onnx_models.publish(root, "spin", onnx_models.spin())  # no --reference: served, no baseline
    return root


def request(turns: int, **parameters: int) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="spin")
    message.inputs.add(name="N", datatype="INT64", shape=[1, 1])
    message.raw_input_contents.append(np.array([[turns]], dtype="<i8").tobytes())
    for key, value in parameters.items():
        message.parameters[key].int64_param = value
    return message


def answer(response: pb.ModelInferResponse) -> int:
    return int(np.frombuffer(response.raw_output_contents[0], "<i8")[0])


def statistics(stub) -> pb.ModelStatistics:
    return stub.ModelStatistics(pb.ModelStatisticsRequest(name="spin"), timeout=30).model_stats[0]


def hold(stub):
    """The slow request, once the server has started running it (helpers.hold_the_version)."""
    return hold_the_version(lambda: stub.ModelInfer.future(request(SLOW_TURNS), timeout=300), lambda: statistics(stub))


@pytest.fixture(scope="module")
def serial(registry: Path):
    """One onnxruntime call at a time, one request per call."""
    with running_server(registry, *SERIAL) as server, grpc.insecure_channel(server.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel), channel, server


def test_a_request_whose_timeout_passes_in_the_queue_is_refused_by_the_server_and_never_run(serial):
    stub, _, _ = serial
    slow, before = hold(stub)
    # Triton's per-request "timeout" (microseconds): the server's own deadline, checked when the queue is taken;
    # the transport's deadline is far away, so DEADLINE_EXCEEDED can only come from the server.
    with pytest.raises(grpc.RpcError) as late:
        stub.ModelInfer(request(7, timeout=1000), timeout=300)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, late.value.details()
    assert "in the queue; nothing was run" in late.value.details()
    assert answer(slow.result()) == SLOW_TURNS
    after = statistics(stub)
    assert after.execution_count - before.execution_count == 1  # the slow request only: the late one never ran
    assert after.inference_count - before.inference_count == 1
    assert answer(stub.ModelInfer(request(5), timeout=60)) == 5  # and the version serves on


def test_a_request_whose_grpc_deadline_passes_in_the_queue_never_runs(serial):
    stub, _, _ = serial
    slow, before = hold(stub)
    with pytest.raises(grpc.RpcError) as late:
        stub.ModelInfer(request(7), timeout=0.2)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert answer(slow.result()) == SLOW_TURNS
    assert answer(stub.ModelInfer(request(5), timeout=60)) == 5
    after = statistics(stub)
    # Two calls ran (the slow one and the last one); the expired one left the queue without costing compute.
    assert after.execution_count - before.execution_count == 2
    assert after.inference_count - before.inference_count == 2
    assert {b.batch_size for b in after.batch_stats} == {1}


def test_a_request_cancelled_in_the_queue_never_runs(serial):
    stub, _, _ = serial
    slow, before = hold(stub)
    queued = stub.ModelInfer.future(request(7))  # no deadline: only the cancellation can keep it from running
    # the server counts the cancelled call as failed once the cancellation reaches it; cancel first, every turn
    queued.cancel()
    wait_until(lambda: statistics(stub).inference_stats.fail.count != before.inference_stats.fail.count
               or queued.done(), "the cancellation never reached the server", 120, queued.cancel)
    assert queued.cancelled()
    assert answer(slow.result()) == SLOW_TURNS
    assert answer(stub.ModelInfer(request(5), timeout=60)) == 5
    after = statistics(stub)
    assert after.execution_count - before.execution_count == 2  # the slow one and the last one
    assert after.inference_count - before.inference_count == 2


def test_a_full_queue_answers_unavailable_at_once(registry: Path):
    with running_server(registry, *SERIAL, "--max-queue-size", "1") as server, \
            grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        slow, before = hold(stub)
        # Two more while the slow one runs: one waits in the queue (its only place), the other is refused.
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(stub.ModelInfer, request(turns), timeout=300) for turns in (11, 12)]
            refused = None
            while refused is None:
                done = [c for c in calls if c.done()]
                refused = done[0] if done else None
                time.sleep(0.001)
            error = refused.exception()
            assert isinstance(error, grpc.RpcError), refused.result()
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert "queue full" in error.details()
            # "at once": the refusal came back while the slow request was still running
            assert statistics(stub).execution_count == before.execution_count
            waiting = next(c for c in calls if c is not refused)
            assert answer(waiting.result()) in (11, 12)
        assert answer(slow.result()) == SLOW_TURNS


def test_drift_report_of_a_version_without_reference_is_a_failed_precondition(serial):
    _, channel, _ = serial
    with pytest.raises(grpc.RpcError) as refused:
        driftline_pb2_grpc.MonitoringStub(channel).DriftReport(dpb.DriftRequest(name="spin"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value.details()
    assert "no baseline" in refused.value.details()


def test_drift_cli_says_why_a_version_without_reference_has_no_report(serial):
    result = driftline("drift", "spin", "--server", serial[2].address, check=False)
    assert result.returncode == 1
    assert "FAILED_PRECONDITION" in result.stderr and "no baseline" in result.stderr
