"""ModelStreamInfer and the cheap reads served by the compiled door itself (server/compiled/stream.cc, reads.cc).

Both doors serve the same registry at once and every stream or read goes to both: a stream's answers must be the
same messages in the same order (errors in-band, message by message), and a read's answer the same bytes. The
door takes a stream's messages it can check in C++ into its batches and sends the others, one by one, over a
stream of its own to the Python door behind it; the tests mix both kinds in one stream.

Skipped, with the reason, where the extension is not built (``make setup`` builds it when the gRPC C++
libraries are installed).
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import numpy as np
import onnx_models
import pytest
from driftline.trainer import synthetic
from helpers import door_counts, driftline, table_request, running_server
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

pytest.importorskip("driftline.server.compiled._door",
                    reason="the compiled gRPC front end is not built (make setup, with libgrpc++-dev installed)")

ROWS = synthetic.housing(64, seed=11).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
QUIET = ("--no-http", "--no-metrics")
SERVICE = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("streams") / "registry"
    for seed in ("1", "2"):
        driftline("train", "housing", "--registry", str(root), "--rows", "600", "--seed", seed,
                  "--param", "n_estimators=10")
    onnx_models.publish(root, "tensor3", onnx_models.tensor3())  # not tabular: always the Python door's
    return root


@pytest.fixture(scope="module")
def doors(registry: Path):
    with (running_server(registry, "--front-end", "python", *QUIET) as python,
          running_server(registry, "--front-end", "compiled", *QUIET) as compiled):
        yield python.address, compiled.address


def infer(rows: np.ndarray = ROWS[:1], *, raw: bool = True, **fields) -> pb.ModelInferRequest:
    return table_request(rows, raw=raw, **fields)


def tensor3() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tensor3", id="t3")
    for name, datatype, data in onnx_models.sample_inputs("tensor3"):
        request.inputs.add(name=name, datatype=datatype, shape=list(data.shape))
        request.raw_input_contents.append(np.ascontiguousarray(data).tobytes())
    return request


def stream(address: str, messages: list[bytes], timeout: float = 60) -> tuple[list[pb.ModelStreamInferResponse],
                                                                             object]:
    """The answers of one stream of raw messages, and how it ended (OK, or the error's code and details)."""
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(SERVICE + "ModelStreamInfer")(iter(messages), timeout=timeout)
        answers = []
        try:
            for answer in call:
                answers.append(pb.ModelStreamInferResponse.FromString(answer))
            return answers, grpc.StatusCode.OK
        except grpc.RpcError as error:
            return answers, (error.code(), error.details())


def both_streams(doors, messages: list[pb.ModelInferRequest | bytes]):
    raw = [m if isinstance(m, bytes) else m.SerializeToString() for m in messages]
    return stream(doors[0], raw), stream(doors[1], raw)


def mixed() -> list[pb.ModelInferRequest | bytes]:
    """Messages the door takes, and messages only the Python door answers, interleaved."""
    wrong_width = infer(ROWS[:2, :5])
    parameter = infer(ROWS[:2])
    parameter.parameters["priority"].int64_param = 3
    wanted = infer(ROWS[:4], id="wanted")
    wanted.outputs.add(name="prediction")
    unknown_output = infer()
    unknown_output.outputs.add(name="nope")
    missing = ROWS[:3].copy()
    missing[1, 2] = np.nan  # validation's business: refused or flagged as the version's schema says
    extreme = ROWS[:3].copy()
    extreme[0, 0] = 1e30
    return [infer(ROWS[:1], id="a"), wrong_width, infer(missing, id="nan"), infer(extreme, id="extreme"), infer(ROWS[:5], raw=False, id="b"), parameter, tensor3(),
            infer(ROWS, id="c"), b"\xff" * 10, infer(model_name="nope"), wanted, infer(model_version="9"),
            unknown_output, infer(ROWS[:2], model_version="2", id="d"), infer(model_version="1"),
            infer(ROWS[:3], id="e")]


def test_a_mixed_stream_is_answered_as_the_python_door_answers_it(doors):
    (python, python_end), (compiled, compiled_end) = both_streams(doors, mixed())
    assert python_end == compiled_end == grpc.StatusCode.OK
    assert len(python) == len(mixed())
    assert compiled == python
    # The test means something only if both kinds of answer are there.
    assert sum(bool(a.error_message) for a in python) >= 6
    assert [a.infer_response.id for a in python if not a.error_message][:4] == ["a", "extreme", "b", "t3"]
    assert "missing" in python[2].error_message  # validation refused a row: the door's batch forwarded it
    assert python[3].infer_response.parameters["driftline_flagged_rows"].string_param == "0"


def test_many_messages_come_back_in_order(doors):
    messages = [infer(ROWS[i % 64:i % 64 + 1 + i % 3], id=str(i)) for i in range(200)]
    for i in range(0, 200, 17):  # every 17th goes to the Python door
        messages[i].parameters["priority"].int64_param = 1
    (python, _), (compiled, end) = both_streams(doors, messages)
    assert end == grpc.StatusCode.OK
    assert compiled == python
    assert [a.infer_response.id for a in compiled if not a.error_message] == \
        [str(i) for i in range(200) if i % 17]


def test_a_stream_to_an_unknown_model_is_answered_message_by_message(doors):
    messages = [infer(model_name="nope"), infer(model_name="../x"), infer(model_name="")]
    (python, python_end), (compiled, compiled_end) = both_streams(doors, messages)
    assert python_end == compiled_end == grpc.StatusCode.OK
    assert compiled == python and all(a.error_message for a in python) and len(python) == 3


def test_an_empty_stream_ends_ok(doors):
    assert both_streams(doors, []) == (([], grpc.StatusCode.OK), ([], grpc.StatusCode.OK))


def test_a_stream_cancelled_midway_leaves_the_door_serving(doors):
    with grpc.insecure_channel(doors[1]) as channel:
        more = threading.Event()

        def messages():
            for i in range(5):
                yield infer(ROWS[:2], id=str(i)).SerializeToString()
            more.wait(30)  # the stream stays open, answered so far, until it is cancelled
            for _ in range(1000):
                yield infer(ROWS).SerializeToString()

        call = channel.stream_stream(SERVICE + "ModelStreamInfer")(messages(), timeout=60)
        answers = [pb.ModelStreamInferResponse.FromString(next(call)) for _ in range(5)]
        assert [a.infer_response.id for a in answers] == ["0", "1", "2", "3", "4"]
        more.set()
        call.cancel()
        with pytest.raises(grpc.RpcError) as ended:
            for _ in call:
                pass
        assert ended.value.code() == grpc.StatusCode.CANCELLED
    # The door goes on answering streams and calls.
    (python, _), (compiled, end) = both_streams(doors, mixed()[:4])
    assert end == grpc.StatusCode.OK and compiled == python


def test_reads_answer_the_python_doors_bytes(doors):
    reads = [("ServerLive", pb.ServerLiveRequest()), ("ServerReady", pb.ServerReadyRequest()),
             ("ServerMetadata", pb.ServerMetadataRequest()), ("ModelReady", pb.ModelReadyRequest(name="housing")),
             ("ModelReady", pb.ModelReadyRequest(name="housing", version="2")),
             ("ModelReady", pb.ModelReadyRequest(name="housing", version="1")),
             ("ModelReady", pb.ModelReadyRequest(name="nope")), ("ModelReady", pb.ModelReadyRequest(name="tensor3")),
             ("ModelMetadata", pb.ModelMetadataRequest(name="housing")),
             ("ModelMetadata", pb.ModelMetadataRequest(name="housing", version="2")),
             ("ModelMetadata", pb.ModelMetadataRequest(name="housing", version="1")),
             ("ModelMetadata", pb.ModelMetadataRequest(name="tensor3")),
             ("ModelMetadata", pb.ModelMetadataRequest(name="nope"))]
    for method, request in reads:
        answers = []
        for address in doors:
            with grpc.insecure_channel(address) as channel:
                try:
                    answers.append(channel.unary_unary(SERVICE + method)(request.SerializeToString(), timeout=30))
                except grpc.RpcError as error:
                    answers.append((error.code(), error.details()))
        assert answers[1] == answers[0], (method, request)
    junk = b"\xff" * 4  # not the method's message: the Python door says so
    with grpc.insecure_channel(doors[0]) as a, grpc.insecure_channel(doors[1]) as b:
        refused = []
        for channel in (a, b):
            with pytest.raises(grpc.RpcError) as error:
                channel.unary_unary(SERVICE + "ModelMetadata")(junk, timeout=30)
            refused.append((error.value.code(), error.value.details()))
        assert refused[0] == refused[1]


def test_stream_messages_and_reads_are_served_in_c_and_follow_a_swap(registry: Path):
    with (running_server(registry, "--front-end", "compiled", *QUIET) as server,
          grpc.insecure_channel(server.address) as channel):
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(iter([infer(ROWS[:i % 8 + 1], id=str(i)) for i in range(50)]),
                                             timeout=60))
        assert [a.infer_response.id for a in answers] == [str(i) for i in range(50)]
        assert all(not a.error_message for a in answers)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
        assert stub.ModelMetadata(pb.ModelMetadataRequest(name="housing"), timeout=30).versions == ["2"]
        # A load changes what the reads say, at once.
        stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(
            model_name="housing", parameters={"version": pb.ModelRepositoryParameter(string_param="1")}),
            timeout=60)
        assert stub.ModelMetadata(pb.ModelMetadataRequest(name="housing"), timeout=30).versions == ["1"]
        assert stub.ModelReady(pb.ModelReadyRequest(name="housing", version="1"), timeout=30).ready
        assert not stub.ModelReady(pb.ModelReadyRequest(name="housing", version="2"), timeout=30).ready
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="housing"), timeout=60)
        assert not stub.ModelReady(pb.ModelReadyRequest(name="housing"), timeout=30).ready
        assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
    batched, forwarded = door_counts(server)
    # The stream's 50 messages were batched in C++; forwarded: the load, the unload and the three reads a swap
    # or unload made unknowable in C++ (another version, an unloaded model, a server no longer ready is not).
    assert batched == 50, server.log[-3:]
    assert forwarded == 4, server.log[-3:]
