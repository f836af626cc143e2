"""Each kind of bad request gets its own status code and a message that says what to fix,
and the server keeps answering good requests. Requests are built with tritonclient's own
protocol messages, as a stock client would send them."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from helpers import driftline, running_server

WIDTH = 11


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory):
    registry = tmp_path_factory.mktemp("bad-input") / "registry"
    driftline("train", "housing", "--registry", str(registry), "--rows", "600", "--param", "n_estimators=10")
    with running_server(registry) as server, grpc.insecure_channel(server.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def request(rows: int = 1, width: int = WIDTH, datatype: str = "FP32", name: str = "input",
            model: str = "housing", raw: bytes | None = None, version: str = "") -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model, model_version=version, id="r1")
    message.inputs.add(name=name, datatype=datatype, shape=[rows, width])
    dtype = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}.get(datatype, "<f4")
    message.raw_input_contents.append(raw if raw is not None else np.ones((rows, width), dtype=dtype).tobytes())
    return message


def assert_fails(stub, message, code: grpc.StatusCode, *phrases: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(message, timeout=30)
    assert caught.value.code() == code, caught.value.details()
    for phrase in phrases:
        assert phrase in caught.value.details(), caught.value.details()
    # The server is still serving everyone else.
    good = stub.ModelInfer(request(), timeout=30)
    assert good.model_version == "1"


def test_unknown_model(stub):
    assert_fails(stub, request(model="mansion"), grpc.StatusCode.NOT_FOUND, "'mansion'", "served models: housing")


def test_unknown_version(stub):
    assert_fails(stub, request(version="9"), grpc.StatusCode.NOT_FOUND, "version 9 is not loaded", "loaded versions: 1")


def test_malformed_version(stub):
    assert_fails(stub, request(version="latest"), grpc.StatusCode.INVALID_ARGUMENT, "positive integer")


def test_wrong_input_name(stub):
    assert_fails(stub, request(name="features"), grpc.StatusCode.INVALID_ARGUMENT, "unknown input 'features'",
                 "'input'")


def test_unsupported_datatype(stub):
    message = request(datatype="FP16", raw=np.ones((1, WIDTH), dtype="<f2").tobytes())
    assert_fails(stub, message, grpc.StatusCode.INVALID_ARGUMENT, "datatype FP16", "FP32, FP64, INT32, INT64")


def test_bytes_that_are_not_numbers(stub):
    cells = [b"84", b"400", b"abc"] + [b"1"] * (WIDTH - 3)
    raw = b"".join(len(c).to_bytes(4, "little") + c for c in cells)
    assert_fails(stub, request(datatype="BYTES", raw=raw), grpc.StatusCode.INVALID_ARGUMENT,
                 "row 0, feature 'bedrooms': 'abc' is not a number")


def test_wrong_rank(stub):
    message = request()
    del message.inputs[0].shape[:]
    message.inputs[0].shape.extend([WIDTH])
    message.raw_input_contents[0] = np.ones(WIDTH, dtype="<f4").tobytes()
    assert_fails(stub, message, grpc.StatusCode.INVALID_ARGUMENT, "rank 1", "[rows, 11]")


def test_wrong_width(stub):
    assert_fails(stub, request(width=10), grpc.StatusCode.INVALID_ARGUMENT, "10 features per row", "expects 11",
                 "living_area")


def test_raw_byte_count_does_not_match_shape(stub):
    message = request(rows=2, raw=np.ones(2 * WIDTH - 1, dtype="<f4").tobytes())
    assert_fails(stub, message, grpc.StatusCode.INVALID_ARGUMENT, "holds 84 bytes", "needs 88")


def test_raw_entries_do_not_match_inputs(stub):
    message = request()
    message.raw_input_contents.append(b"extra")
    assert_fails(stub, message, grpc.StatusCode.INVALID_ARGUMENT, "2 entries for 1 input")


def test_contents_count_does_not_match_shape(stub):
    message = pb.ModelInferRequest(model_name="housing")
    tensor = message.inputs.add(name="input", datatype="FP32", shape=[1, WIDTH])
    tensor.contents.fp32_contents.extend([1.0] * (WIDTH + 1))
    assert_fails(stub, message, grpc.StatusCode.INVALID_ARGUMENT, "carries 12 values", "needs 11")


def test_contents_are_accepted(stub):
    message = pb.ModelInferRequest(model_name="housing")
    tensor = message.inputs.add(name="input", datatype="FP64", shape=[2, WIDTH])
    tensor.contents.fp64_contents.extend([1.0] * (2 * WIDTH))
    response = stub.ModelInfer(message, timeout=30)
    assert list(response.outputs[0].shape) == [2, 1]
    assert len(response.raw_output_contents[0]) == 2 * 4


def test_zero_rows(stub):
    assert_fails(stub, request(rows=0, raw=b""), grpc.StatusCode.INVALID_ARGUMENT, "at least one row")


def test_unknown_output(stub):
    message = request()
    message.outputs.add(name="price")
    assert_fails(stub, message, grpc.StatusCode.INVALID_ARGUMENT, "unknown output 'price'", "prediction")


def test_streaming_carries_errors_in_band(stub):
    responses = list(stub.ModelStreamInfer(iter([request(), request(width=3), request()]), timeout=30))
    assert [bool(r.error_message) for r in responses] == [False, True, False]
    assert "3 features per row" in responses[1].error_message
    assert responses[2].infer_response.model_version == "1"
