"""The compiled gRPC front end (``--front-end compiled``, server/compiled/) against the Python door.

Both doors serve the same registry at once; every request here goes to both and the answers are compared:
successes byte for byte (as messages), refusals by code and message. The door batches a tabular version's
well-formed ModelInfer requests in C++ and forwards everything else to the Python door behind it, so the
refusals also show that forwarding keeps the Python door's words.

The rest of the protocol suite runs against the compiled door with ``DRIFTLINE_TEST_FRONT_END=compiled``
(tests/helpers.py), e.g. ``DRIFTLINE_TEST_FRONT_END=compiled pytest tests/test_triton_examples.py``.

Skipped, with the reason, where the extension is not built (``make setup`` builds it when the gRPC C++
libraries are installed).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import onnx_models
import pytest
import tritonclient.grpc as triton
from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.trainer import synthetic
from helpers import door_counts, driftline, hold_the_version, table_request, running_server, wait_until
from onnx_models import spin_answer, spin_request
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

pytest.importorskip("driftline.server.compiled._door",
                    reason="the compiled gRPC front end is not built (make setup, with libgrpc++-dev installed)")


ROWS = synthetic.housing(64, seed=7).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
QUIET = ("--no-http", "--no-metrics")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("doors") / "registry"
    for seed in ("1", "2"):
        driftline("train", "housing", "--registry", str(root), "--rows", "600", "--seed", seed,
                  "--param", "n_estimators=10")
    onnx_models.publish(root, "tensor3", onnx_models.tensor3())  # not tabular: always the Python door's
    onnx_models.publish_spin_table(root)  # slow on purpose, when a test needs the queue to fill
    return root


@pytest.fixture(scope="module")
def doors(registry: Path):
    with (running_server(registry, "--front-end", "python", *QUIET) as python,
          running_server(registry, "--front-end", "compiled", *QUIET) as compiled,
          grpc.insecure_channel(python.address) as a, grpc.insecure_channel(compiled.address) as b):
        assert "compiled gRPC front end" in compiled.log[-1] and "compiled" not in python.log[-1]
        yield (service_pb2_grpc.GRPCInferenceServiceStub(a), service_pb2_grpc.GRPCInferenceServiceStub(b),
               python.address, compiled.address)


def infer(rows: np.ndarray = ROWS[:1], *, raw: bool = True, **fields) -> pb.ModelInferRequest:
    return table_request(rows, raw=raw, **fields)


def both(doors, request: pb.ModelInferRequest) -> tuple[object, object]:
    answers = []
    for stub in doors[:2]:
        try:
            answers.append(stub.ModelInfer(request, timeout=30))
        except grpc.RpcError as error:
            answers.append((error.code(), error.details()))
    return answers[0], answers[1]


def test_answers_equal_the_python_doors(doors):
    requests = [infer(), infer(ROWS), infer(ROWS[:5], raw=False), infer(ROWS[:3], id="req-7"),
                infer(ROWS[:2], model_version="2")]
    with_outputs = infer(ROWS[:4])
    with_outputs.outputs.add(name="prediction")
    requests.append(with_outputs)
    for request in requests:
        python, compiled = both(doors, request)
        assert isinstance(python, pb.ModelInferResponse), python
        assert compiled == python


def refusals() -> list[pb.ModelInferRequest]:
    wrong_width = infer(ROWS[:2, :5])
    wrong_dtype = infer()
    wrong_dtype.inputs[0].datatype = "FP64"
    short = infer(ROWS[:2])
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    no_rows = infer(ROWS[:0])
    negative = infer()
    negative.inputs[0].shape[0] = -1
    unknown_model = infer(model_name="nope")
    unknown_version = infer(model_version="9")
    not_loaded = infer(model_version="1")
    bad_version = infer(model_version="one")
    unknown_input = infer()
    unknown_input.inputs[0].name = "features"
    unknown_output = infer()
    unknown_output.outputs.add(name="nope")
    twice = infer()
    twice.outputs.add(name="prediction")
    twice.outputs.add(name="prediction")
    parameter = infer()
    parameter.parameters["priority"].int64_param = 3
    both_contents = infer()
    both_contents.inputs[0].contents.fp32_contents.extend([1.0] * 11)
    too_few_values = infer(raw=False)
    del too_few_values.inputs[0].contents.fp32_contents[-1]
    return [wrong_width, wrong_dtype, short, no_rows, negative, unknown_model, unknown_version, not_loaded, bad_version,
            unknown_input, unknown_output, twice, parameter, both_contents, too_few_values]


def test_refusals_carry_the_python_doors_codes_and_messages(doors):
    for request in refusals():
        python, compiled = both(doors, request)
        assert isinstance(python, tuple), f"the Python door answered {request}"
        assert compiled == python


def test_other_models_and_rpcs_are_answered_by_the_python_door_behind(doors):
    request = pb.ModelInferRequest(model_name="tensor3")
    for name, datatype, data in onnx_models.sample_inputs("tensor3"):
        request.inputs.add(name=name, datatype=datatype, shape=list(data.shape))
        request.raw_input_contents.append(np.ascontiguousarray(data).tobytes())
    python, compiled = both(doors, request)
    assert compiled == python and isinstance(python, pb.ModelInferResponse)
    for method, message in (("ModelMetadata", pb.ModelMetadataRequest(name="housing")),
                            ("ServerMetadata", pb.ServerMetadataRequest()),
                            ("ModelConfig", pb.ModelConfigRequest(name="housing")),
                            ("ModelReady", pb.ModelReadyRequest(name="nope"))):
        assert getattr(doors[1], method)(message, timeout=30) == getattr(doors[0], method)(message, timeout=30)


def test_tritonclient_works_unchanged(registry: Path):
    with running_server(registry, "--front-end", "compiled", *QUIET) as server:
        client = triton.InferenceServerClient(url=server.address)
        assert client.is_server_ready() and client.is_model_ready("housing")
        tensor = triton.InferInput("input", list(ROWS.shape), "FP32")
        tensor.set_data_from_numpy(ROWS)
        answer = client.infer("housing", [tensor])
        assert answer.as_numpy("prediction").shape == (len(ROWS), 1)
        received: list = []
        client.start_stream(callback=lambda result, error: received.append(error or result))
        for _ in range(3):
            client.async_stream_infer("housing", [tensor])
        wait_until(lambda: len(received) == 3, "three stream answers", 60)
        client.stop_stream()
        for result in received:
            np.testing.assert_array_equal(result.as_numpy("prediction"), answer.as_numpy("prediction"))
        client.close()
    # The calls were batched in C++ (the unary call and the stream's messages; the reads were answered there too).
    assert door_counts(server)[0] != 0, server.log[-3:]


def test_swaps_under_load_through_the_compiled_door_fail_no_request(registry: Path, tmp_path: Path):
    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    with running_server(copy, "--front-end", "compiled", *QUIET, "--model", "housing:1") as server:
        stop, failures, versions, timeline, swaps = threading.Event(), [], [], [], []

        def caller() -> None:
            with grpc.insecure_channel(server.address) as channel:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        answer = stub.ModelInfer(infer(ROWS[:8]), timeout=60)
                        versions.append(answer.model_version)
                        timeline.append((sent, time.monotonic(), answer.model_version))
                    except grpc.RpcError as error:
                        failures.append((error.code(), error.details()))

        threads = [threading.Thread(target=caller) for _ in range(8)]
        for thread in threads:
            thread.start()
        admin = driftline_pb2_grpc.AdminStub(grpc.insecure_channel(server.address))
        try:
            for target in ("2", "1", "2"):
                seen = len(versions)
                wait_until(lambda: len(versions) > seen + 100, "answers between swaps", 120)  # noqa: B023
                asked = time.monotonic()
                assert admin.Swap(dpb.SwapRequest(name="housing", version=target), timeout=60).version == target
                swaps.append((asked, time.monotonic(), target))
            seen = len(versions)
            wait_until(lambda: len(versions) > seen + 100, "answers after the last swap", 120)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
    assert failures == []
    assert set(versions) == {"1", "2"}
    # Once a swap has returned, every request sent after it gets the new version, though it may have waited in the
    # C++ queue (the version is chosen when its batch reaches Python), unless it was still unanswered when the next
    # swap was asked (then that swap may have reached its batch first).
    for (_, returned, target), (following, _, _) in zip(swaps, [*swaps[1:], (float("inf"), 0, "")], strict=True):
        after = {version for sent, answered, version in list(timeline) if returned < sent and answered < following}
        assert after == {target}, (target, after)


def test_malformed_bytes_get_the_python_doors_answer_and_the_door_serves_on(doors):
    for junk in (b"\xff" * 10, b"\x0a\xff\xff\xff\xff\x0f", infer(ROWS[:3]).SerializeToString()[:-3], b"",
                 infer().SerializeToString() + b"\x00"):
        answers = []
        for address in doors[2:]:
            with grpc.insecure_channel(address) as channel:
                try:
                    answers.append(channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(junk, timeout=30))
                except grpc.RpcError as error:
                    answers.append((error.code(), error.details()))
        assert answers[1] == answers[0], junk
    assert doors[1].ServerLive(pb.ServerLiveRequest(), timeout=30).live


def queued(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=30).read().decode()
    return sum(float(m) for m in re.findall(r"^driftline_queue_depth_requests\{[^}]*\} (\S+)$", text, re.M))


def test_connections_share_the_c_queue_by_rows(registry: Path):
    """One connection queues slow requests; another's request goes next, not behind them all (as the Python
    batcher shares its queue: server/batcher.py). The order of the answers says it, not the time."""
    own = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own: callers are connections
    with (running_server(registry, "--front-end", "compiled", "--no-http", "--metrics-port", "0", "--no-drift",
                         "--model", "spin:1", "--max-concurrent-batches", "1", "--max-batch-size", "1") as server,
          grpc.insecure_channel(server.address, options=own) as flooding,
          grpc.insecure_channel(server.address, options=own) as other):
        metrics_url = re.search(r"metrics (http://\S+/metrics)", "".join(server.log)).group(1)
        flood = service_pb2_grpc.GRPCInferenceServiceStub(flooding)
        done: list[str] = []

        def statistics() -> pb.ModelStatistics:
            return flood.ModelStatistics(pb.ModelStatisticsRequest(name="spin"), timeout=30).model_stats[0]

        # The flooding connection's first request holds the version (seconds), so nothing leaves the queue while
        # the others line up behind it and the small request arrives.
        held, _ = hold_the_version(lambda: flood.ModelInfer.future(spin_request(5_000_000), timeout=300), statistics)
        # The rest take a fraction of a second each: the order their answers arrive in is the order they ran.
        rest = range(300_000, 300_007)
        floods = [held] + [flood.ModelInfer.future(spin_request(turns), timeout=300) for turns in rest]
        for call in floods:
            call.add_done_callback(lambda _: done.append("big"))
        wait_until(lambda: queued(metrics_url) >= 7, "the slow requests never queued up", 120)
        assert not held.done(), "the request holding the version ended before the small one was sent"
        assert spin_answer(service_pb2_grpc.GRPCInferenceServiceStub(other).ModelInfer(spin_request(0),
                                                                                        timeout=300)) == 0
        done.append("small")
        assert [spin_answer(call.result()) for call in floods] == [5_000_000, *rest]
    # First come, first served would answer the small request after all 8; shared by rows, it goes right after the
    # request that held the version (or after the next one too, where the two connections' shares tie).
    assert done.count("big") == 8 and done.index("small") <= 2, done
