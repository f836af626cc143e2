"""Errors that do not amplify (issue 13): what a client sends comes back cut, and a burst of bad requests costs
one log line with a count, not a traceback each. A real server; real gRPC and HTTP clients."""

from __future__ import annotations

import http.client
import json
import re
import time

import grpc
import pytest
from driftline.proto import grpc_service_pb2 as pb
from driftline.server.status import MAX_MESSAGE_WIRE_BYTES
from helpers import driftline, running_server

HTTP_LINE = re.compile(r"; http http://(?P<host>[^ ;/]+):(?P<port>\d+)")
HUGE_CELL = b"9" * 100 + b"x" * (3 * 2**20)  # 3 MiB where a number belongs
BURST = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    registry = tmp_path_factory.mktemp("errors") / "registry"
    driftline("train", "housing", "--registry", str(registry), "--rows", "600", "--param", "n_estimators=10")
    with running_server(registry, "--http-port", "0", "--no-metrics") as running:
        yield running


def text_rows(first: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="housing")
    tensor = request.inputs.add(name="input", datatype="BYTES", shape=[1, 11])
    tensor.contents.bytes_contents.extend([first] + [b"1"] * 10)
    return request


def test_a_3_mib_text_cell_is_invalid_argument_with_a_short_message(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(text_rows(HUGE_CELL), timeout=30)
    error = caught.value
    # Echoed whole, the cell made a status the client could not read: RESOURCE_EXHAUSTED from its own transport.
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert len(error.details()) < 600
    assert error.details().startswith("row 0, feature 'living_area': '9999") and "is not a number" in error.details()


def test_a_3_mib_text_cell_over_http_is_400_with_a_short_message(server):
    host, port = HTTP_LINE.search("".join(server.log)).groups()
    body = json.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1, 11],
                                   "data": [HUGE_CELL.decode()] + ["1"] * 10}]})
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/v2/models/housing/infer", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 400 and "is not a number" in answer["error"] and len(answer["error"]) < 600


def test_any_status_message_fits_grpc_metadata(stub):
    # An input name is echoed in several messages; no one cuts names where they are built, the boundary does.
    request = pb.ModelInferRequest(model_name="housing")
    request.inputs.add(name="é" * 2**20, datatype="FP32", shape=[1, 11]).contents.fp32_contents.extend([1.0] * 11)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert len(caught.value.details().encode()) <= MAX_MESSAGE_WIRE_BYTES
    assert caught.value.details().endswith("characters in all)")


def test_malformed_messages_are_invalid_argument_without_a_traceback(server):
    valid = pb.ModelInferRequest(model_name="housing")
    tensor = valid.inputs.add(name="input", datatype="FP32", shape=[1, 11])
    tensor.contents.fp32_contents.extend([100.0, 500.0, 3, 1, 1, 10.0, 0, 1990, 3, 5.0, 1.0])
    with grpc.insecure_channel(server.address) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                  request_serializer=lambda b: b, response_deserializer=lambda b: b)
        for _ in range(BURST):
            with pytest.raises(grpc.RpcError) as caught:
                raw(b"\xff\xff\xff\xff not a protobuf message", timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
            assert "not a valid protobuf message" in caught.value.details()
        # On a stream, an unreadable message is answered in-band, and the next one is served.
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                       request_serializer=lambda b: b,
                                       response_deserializer=pb.ModelStreamInferResponse.FromString)
        answers = list(stream(iter([b"\xff\xff\xff\xff not a protobuf message", valid.SerializeToString()]),
                              timeout=30))
    assert "not a valid ModelInferRequest" in answers[0].error_message
    assert answers[1].infer_response.model_name == "housing" and not answers[1].error_message
    assert "Traceback" not in "".join(server.log)


def test_identical_warnings_are_logged_once_per_interval_with_a_count():
    import logging

    from driftline.server.logs import Repeats

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("driftline.test.repeats")
    logger.propagate = False
    logger.addHandler(Collect())
    # The burst must fall within one interval: 3 s, so a busy machine pausing the loop cannot split it in two.
    logger.addFilter(Repeats(interval_s=3))
    for _ in range(BURST):
        logger.warning("bad request from a client")
    deadline = time.monotonic() + 60
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen[0] == "bad request from a client"
    assert seen[1].startswith(f"bad request from a client (repeated {BURST - 1} more times")
    assert len(seen) == 2
