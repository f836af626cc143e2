"""The C++ empty server (benchmarks/empty_cpp_server.py): same answers as the Python one, streams, clean stop."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from driftline.proto import grpc_service_pb2 as pb

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import empty_cpp_server  # noqa: E402
from empty_server import answers  # noqa: E402

SERVICE = "/inference.GRPCInferenceService/"
reason = empty_cpp_server.missing()  # g++, pkg-config, grpc++
pytestmark = pytest.mark.skipif(reason is not None, reason=f"cannot build the C++ empty server: {reason}")


@pytest.fixture
def server():
    process = subprocess.Popen([sys.executable, str(BENCH / "empty_cpp_server.py"), "--port", "0", "--model", "m",
                                "--width", "3"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("serving empty-cpp on 127.0.0.1:"), line + process.stdout.read()
        yield process, line.rsplit(":", 1)[1].strip()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_answers_match_the_python_empty_server_and_sigterm_stops_it(server):
    process, port = server
    expected = {method: message.SerializeToString() for method, message in answers("m", 3).items()}
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 3])
    request.raw_input_contents.append(bytes(12))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        def unary(method, body):
            return channel.unary_unary(SERVICE + method)(body, timeout=10)

        assert unary("ModelMetadata", pb.ModelMetadataRequest(name="m").SerializeToString()) == expected["ModelMetadata"]
        assert unary("ModelInfer", request.SerializeToString()) == expected["ModelInfer"]
        assert pb.ModelReadyResponse.FromString(unary("ModelReady", b"")).ready
        stream = channel.stream_stream(SERVICE + "ModelStreamInfer")
        got = list(stream(iter([request.SerializeToString()] * 3), timeout=10))
        assert got == [expected["ModelStreamInfer"]] * 3
        with pytest.raises(grpc.RpcError) as error:
            unary("ModelControl", b"")
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
