"""Requests the compiled door's C++ queue refuses are counted as the Python door counts its batcher's refusals.

A full queue through either door shows up the same in ModelStatistics (the version's ``fail`` count) and in the
Prometheus failure series (``driftline_requests{status="UNAVAILABLE"}``): the door counts its refusals in C++ and
Python adds them to the version's figures every 0.25 s. The queue is filled for certain, not by a burst that may
or may not outrun the batches: a slow ``spin`` request holds the version (one batch at a time, one request a batch)
while two more arrive. ``--max-queued-bytes`` is one budget for both doors: bytes
the Python door holds count against a request the C++ queue is asked to take, and the other way round.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import onnx_models
import pytest
from driftline.errors import Unavailable
from driftline.server.front_end_messages import QUEUE_FULL
from driftline.trainer import synthetic
from onnx_models import SLOW_TURNS, spin_answer, spin_request
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from helpers import door_counts, hold_the_version, running_server, table_request, wait_until

pytest.importorskip("driftline.server.compiled._door",
                    reason="the compiled gRPC front end is not built (make setup, with libgrpc++-dev installed)")

from driftline.server import front_end, front_end_messages  # noqa: E402
from driftline.server.compiled import _door  # noqa: E402

ROWS = synthetic.housing(64, seed=11).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compiled-refusals") / "registry"
    onnx_models.publish_spin_table(root)  # a table, so the compiled door batches its requests itself
    return root


def failures(metrics_url: str, status: str) -> float:
    """driftline_requests_total of spin version 1 with this status (labels in whatever order they come)."""
    text = urllib.request.urlopen(metrics_url, timeout=30).read().decode()
    total = 0.0
    for labels, value in re.findall(r"^driftline_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        if set(labels.split(",")) == {'model="spin"', 'version="1"', f'status="{status}"'}:
            total += float(value)
    return total


@pytest.mark.parametrize("door", ["python", "compiled"])
def test_a_full_queue_is_refused_and_counted_in_statistics_and_metrics_through_either_door(registry: Path, door: str):
    with (running_server(registry, "--front-end", door, "--no-http", "--metrics-port", "0", "--max-queue-size", "1",
                         "--max-concurrent-batches", "1", "--max-batch-size", "1") as server,
          grpc.insecure_channel(server.address) as channel):
        metrics_url = re.search(r"metrics (http://\S+/metrics)", "".join(server.log)).group(1)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def statistics() -> pb.ModelStatistics:
            return stub.ModelStatistics(pb.ModelStatisticsRequest(name="spin"), timeout=30).model_stats[0]

        slow, before = hold_the_version(lambda: stub.ModelInfer.future(spin_request(SLOW_TURNS), timeout=300),
                                        statistics)
        # Two more while the slow one runs: one waits in the queue (its only place), the other is refused at once.
        calls = [stub.ModelInfer.future(spin_request(turns), timeout=300) for turns in (11, 12)]
        wait_until(lambda: any(call.done() for call in calls), "neither request was answered", 120)
        refused = next(call for call in calls if call.done())
        error = refused.exception()
        assert isinstance(error, grpc.RpcError), refused.result()
        assert (error.code(), error.details()) == (
            grpc.StatusCode.UNAVAILABLE, QUEUE_FULL.format(model="spin", version=1, waiting=1))
        waiting = next(call for call in calls if call is not refused)
        assert spin_answer(waiting.result()) in (11, 12)
        assert spin_answer(slow.result()) == SLOW_TURNS

        # The door's refusals reach Python's figures every 0.25 s: wait for them, then they must be exact.
        wait_until(lambda: statistics().inference_stats.fail.count > before.inference_stats.fail.count,
                   "the refusal in ModelStatistics", 60)
        stats = statistics()
        assert stats.inference_stats.fail.count - before.inference_stats.fail.count == 1
        assert stats.inference_stats.success.count - before.inference_stats.success.count == 2
        assert failures(metrics_url, "UNAVAILABLE") == 1
    if door == "compiled":  # and the slow and the waiting request went through the C++ queue
        assert door_counts(server)[0] >= 2, server.log[-3:]


@pytest.fixture
def door():
    """A compiled door on a free port, serving nothing but its queue (its private socket leads nowhere)."""
    opened = _door.Door("127.0.0.1:0", "unix:/nonexistent/driftline.sock", 1 << 20, 1000, False,
                        front_end_messages.table(), lambda *batch: None)
    opened.set_model("housing", "1", "input", ROWS.shape[1], [("prediction", "FP32", 4)], (256, 500, 1024, 2))
    yield opened
    opened.shutdown(0)


def test_max_queued_bytes_is_one_budget_for_both_doors(door):
    budget = front_end.SharedBudget(door)  # what the Python door's request path draws on behind the door
    budget.admit(600)
    with pytest.raises(Unavailable) as busy:
        budget.admit(600)
    assert str(busy.value) == front_end_messages.SERVER_BUSY.format(
        held="0.0 MiB", size="0.0 MiB", limit="0.0 MiB")
    # The C++ queue counts what the Python door holds: 20 rows (880 bytes) on top of 600 are over the bound of 1,000.
    with grpc.insecure_channel(f"127.0.0.1:{door.port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(table_request(ROWS[:20]), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details().startswith("server busy: queued requests already hold 0.0 MiB")
        [(model, version, code, count, ns, expired)] = door.refused()
        assert (model, version, code, count, expired) == ("housing", "1", grpc.StatusCode.UNAVAILABLE.value[0], 1, 0)
        assert ns >= 0 and door.refused() == []  # read once: each refusal is counted once
    budget.release(600)
    budget.admit(600)  # released: the budget has room again
    budget.release(600)
