"""The HTTP/REST front end, end to end: a real ``driftline serve`` with ``--http-port 0``, asked by
tritonclient.http, KServe's InferenceRESTClient and plain HTTP. Answers must equal gRPC's for the same
rows: both doors share one request path."""

from __future__ import annotations

import gzip
import http.client
import importlib.util
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from driftline.server import http_server
from driftline.server.settings import ServerSettings
from driftline.trainer.synthetic import housing
from helpers import START_TIMEOUT_S, driftline, running_server

HTTP_LINE = re.compile(r"; http http://(?P<host>[^ ;/]+):(?P<port>\d+)")
WIDTH = 11
TOKEN = "http-admin-token"


def http_address(log: list[str]) -> str:
    for line in list(log):
        if match := HTTP_LINE.search(line):
            return f"{match.group('host')}:{match.group('port')}"
    raise AssertionError("the start line names no HTTP port:\n" + "".join(log))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("http") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "800", "--param", "n_estimators=20")
    return root


@pytest.fixture(scope="module")
def server(registry):
    with running_server(registry, "--http-port", "0") as running:
        yield running


@pytest.fixture(scope="module")
def address(server) -> str:
    return http_address(server.log)


@pytest.fixture
def client(address) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(url=address)
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return housing(8, seed=11).to_numpy()[:, :WIDTH].astype(np.float32)


@pytest.fixture(scope="module")
def over_grpc(server, rows) -> np.ndarray:
    """What gRPC answers for ``rows``: HTTP must answer the same."""
    triton = grpcclient.InferenceServerClient(url=server.address)
    tensor = grpcclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    prediction = triton.infer("housing", [tensor]).as_numpy("prediction")
    triton.close()
    return prediction


def call(address: str, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(address, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def infer_body(rows: np.ndarray, **changes) -> bytes:
    tensor = {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.reshape(-1).tolist()}
    return json.dumps({"inputs": [{**tensor, **changes}]}).encode()


def assert_error(answer: tuple[int, dict[str, str], bytes], code: int, *phrases: str) -> None:
    status, headers, body = answer
    assert status == code, body
    assert headers["content-type"] == "application/json"
    message = json.loads(body)["error"]
    for phrase in phrases:
        assert phrase in message, message


# -- health, metadata, configuration ---------------------------------------------------------------
def test_server_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "driftline"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(metadata["extensions"])


def test_model_metadata_and_config(client):
    metadata = client.get_model_metadata("housing")
    assert metadata["versions"] == ["1"] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, WIDTH]}]
    assert metadata["outputs"][0] == {"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}
    assert client.get_model_metadata("housing", "1")["name"] == "housing"
    config = client.get_model_config("housing")
    assert config["name"] == "housing" and isinstance(config["max_batch_size"], int)
    assert config["input"][0]["dims"] == [WIDTH] and config["input"][0]["data_type"] == "TYPE_FP32"


def test_readiness_of_known_and_unknown_models(client, address):
    assert client.is_model_ready("housing") and client.is_model_ready("housing", "1")
    assert not client.is_model_ready("no_such_model")
    assert not client.is_model_ready("housing", "9")
    assert_error(call(address, "GET", "/v2/models/no_such_model/ready"), 404, "'no_such_model'")
    assert_error(call(address, "GET", "/v2/models/no_such_model"), 404, "'no_such_model'")


# -- inference ---------------------------------------------------------------------------------------
def test_json_tensors_answer_as_grpc_does(client, rows, over_grpc):
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=False)
    result = client.infer("housing", [tensor], request_id="json-1",
                          outputs=[httpclient.InferRequestedOutput("prediction", binary_data=False)])
    assert result.get_response()["id"] == "json-1" and result.get_response()["model_version"] == "1"
    assert "data" in result.get_output("prediction")
    np.testing.assert_array_equal(result.as_numpy("prediction"), over_grpc)


def test_binary_tensors_answer_as_grpc_does(client, rows, over_grpc):
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    result = client.infer("housing", [tensor])  # no outputs named: every output, binary
    assert result.get_output("prediction")["parameters"]["binary_data_size"] == rows.shape[0] * 4
    np.testing.assert_array_equal(result.as_numpy("prediction"), over_grpc)
    asked = client.infer("housing", [tensor], model_version="1",
                         outputs=[httpclient.InferRequestedOutput("attribution", binary_data=True)])
    assert asked.as_numpy("attribution").shape == (rows.shape[0], WIDTH)


def test_compressed_request_and_response(client, address, rows, over_grpc):
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    for algorithm in ("gzip", "deflate"):
        result = client.infer("housing", [tensor], request_compression_algorithm=algorithm,
                              response_compression_algorithm="gzip")
        np.testing.assert_array_equal(result.as_numpy("prediction"), over_grpc)
    big = np.tile(rows, (40, 1))  # an answer large enough to be worth compressing
    status, headers, body = call(address, "POST", "/v2/models/housing/infer", gzip.compress(infer_body(big)),
                                 {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(body))["outputs"][0]["data"]) == len(big)


# KServe's client registers the protocol's messages (inference.*) in protobuf's default pool, as tritonclient.grpc
# does: the two cannot share a process, so KServe's runs in one of its own.
KSERVE_SESSION = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

async def main(base, rows):
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    seen = {"live": await client.is_server_live(base), "ready": await client.is_server_ready(base),
            "model_ready": await client.is_model_ready(base, "housing"),
            "unknown_ready": await client.is_model_ready(base, "no_such_model")}
    for binary in (False, True):
        tensor = InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        request = InferRequest("housing", [tensor], request_id=f"kserve-{binary}",
                               parameters={"binary_data_output": True} if binary else None)
        response = await client.infer(base, request, model_name="housing")
        outputs = {o.name: np.asarray(o.as_numpy(), np.float32).reshape(-1).tolist() for o in response.outputs}
        seen[f"binary={binary}"] = {"id": response.id, "prediction": outputs["prediction"]}
    await client.close()
    print(json.dumps(seen))

asyncio.run(main(sys.argv[1], np.asarray(json.loads(sys.argv[2]), np.float32)))
"""


def test_kserve_rest_client_metadata_readiness_and_inference(address, rows, over_grpc):
    if importlib.util.find_spec("kserve") is None:  # importing it here would break tritonclient.grpc
        pytest.skip("kserve is not installed (pip install -e '.[test]')")
    done = subprocess.run([sys.executable, "-c", KSERVE_SESSION, f"http://{address}", json.dumps(rows.tolist())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["live"] and seen["ready"] and seen["model_ready"] and not seen["unknown_ready"]
    for binary in (False, True):
        assert seen[f"binary={binary}"]["id"] == f"kserve-{binary}"
        np.testing.assert_array_equal(np.asarray(seen[f"binary={binary}"]["prediction"], np.float32),
                                      over_grpc.reshape(-1))


def test_statistics_count_http_requests(client, rows):
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    before = client.get_inference_statistics("housing")["model_stats"][0]
    client.infer("housing", [tensor])
    after = client.get_inference_statistics("housing", "1")["model_stats"][0]
    assert isinstance(after["inference_count"], int) and isinstance(after["inference_stats"]["success"]["ns"], int)
    assert after["inference_count"] == before["inference_count"] + rows.shape[0]
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert client.get_inference_statistics()["model_stats"][0]["name"] == "housing"


# -- errors --------------------------------------------------------------------------------------------
def test_errors_carry_the_grpc_status_as_an_http_code(address, rows):
    path = "/v2/models/housing/infer"
    assert_error(call(address, "POST", "/v2/models/mansion/infer", infer_body(rows)), 404, "'mansion'")
    assert_error(call(address, "POST", path, infer_body(rows, shape=[rows.shape[0], 12])), 400, "'input'", "12")
    assert_error(call(address, "POST", path, infer_body(rows, datatype="BOOL")), 400, "'input'")
    assert_error(call(address, "POST", path, infer_body(rows, name="features")), 400, "unknown input 'features'")
    assert_error(call(address, "POST", path, b'{"inputs": [ nope'), 400, "not valid JSON")
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, WIDTH], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 40}}]}).encode()
    assert_error(call(address, "POST", path, header + bytes(40), {"Inference-Header-Content-Length": str(len(header))}),
                 400, "input 'input'", "needs 44 bytes")
    unknown = json.loads(infer_body(rows))
    unknown["parameters"] = {"no_such_parameter": 1}
    assert_error(call(address, "POST", path, json.dumps(unknown).encode()), 400, "'no_such_parameter'")
    bomb = gzip.compress(bytes(65 * 1024 * 1024))  # inflates past the 64 MiB a request may have
    assert_error(call(address, "POST", path, bomb, {"Content-Encoding": "gzip"}), 413, "inflates past")
    assert_error(call(address, "POST", path, infer_body(rows), {"Content-Encoding": "br"}), 415, "'br'")
    assert_error(call(address, "GET", path), 405, "takes POST")
    assert_error(call(address, "GET", "/v2/no/such/path"), 404, "no such path")
    assert_error(call(address, "GET", "/metrics"), 404, "no such path")


def test_tritonclient_sees_the_error_message(client, rows):
    tensor = httpclient.InferInput("input", [rows.shape[0], 10], "FP32")
    tensor.set_data_from_numpy(rows[:, :10])
    with pytest.raises(InferenceServerException, match="expects 11") as caught:
        client.infer("housing", [tensor])
    assert caught.value.status() == "400"


# -- repository extension (changes what is served: last in this module) --------------------------------
def test_repository_index_unload_and_load(client, rows):
    assert client.get_model_repository_index() == [{"name": "housing", "version": "1", "state": "READY",
                                                   "reason": ""}]
    client.unload_model("housing")
    assert not client.is_model_ready("housing")
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("housing", [tensor])
    assert caught.value.status() == "503"
    client.load_model("housing")
    assert client.is_model_ready("housing")
    assert client.infer("housing", [tensor]).as_numpy("prediction").shape == (rows.shape[0], 1)


# -- servers of their own ----------------------------------------------------------------------------------
@contextmanager
def serving(registry, *flags: str) -> Iterator[tuple[str, str]]:
    """A server with ``flags``; yields (gRPC address, HTTP address)."""
    with running_server(registry, "--http-port", "0", *flags) as running:
        yield running.address, http_address(running.log)


def test_admin_calls_over_http_pass_the_same_guard_as_grpc(registry):
    with serving(registry, "--admin-token", TOKEN) as (_, address):
        assert_error(call(address, "POST", "/v2/repository/models/housing/unload"), 401, "Bearer")
        assert_error(call(address, "POST", "/v2/repository/models/housing/unload",
                          headers={"Authorization": "Bearer wrong"}), 403, "refused")
        client = httpclient.InferenceServerClient(url=address)
        assert client.is_model_ready("housing")  # nothing was unloaded
        client.load_model("housing", headers={"Authorization": f"Bearer {TOKEN}"})
        client.close()


def test_workers_share_the_http_port(registry, rows):
    with serving(registry, "--workers", "2") as (_, address):
        for _ in range(12):  # a fresh connection each time: the kernel spreads them over both workers
            client = httpclient.InferenceServerClient(url=address)
            tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            assert client.infer("housing", [tensor]).as_numpy("prediction").shape == (rows.shape[0], 1)
            client.close()
        client = httpclient.InferenceServerClient(url=address)
        stats = client.get_inference_statistics("housing")["model_stats"]  # every worker's, merged
        assert sum(s["inference_count"] for s in stats) == 12 * rows.shape[0]
        client.close()


def test_a_busy_default_port_is_skipped_with_a_warning_an_explicit_one_refused(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = ServerSettings(registry=str(tmp_path), http_port=port, http_optional=True)
        assert http_server.start(settings, app=None) == (None, "; http off (port busy)")
        with pytest.raises(OSError, match=f"cannot serve HTTP on 127.0.0.1:{port}"):
            http_server.start(ServerSettings(registry=str(tmp_path), http_port=port), app=None)
        with pytest.raises(OSError):  # workers: the parent's check sees the listener too
            http_server.reserve("127.0.0.1", port)


def test_no_http_and_a_taken_port(registry):
    with running_server(registry, "--no-http") as running:
        assert "; http" not in "".join(running.log)
    with serving(registry) as (_, taken):
        # A second server asked for the same port explicitly must refuse to start.
        port = taken.rsplit(":", 1)[1]
        process = subprocess.run(
            [sys.executable, "-m", "driftline", "serve", "--registry", str(registry), "--port", "0",
             "--workers", "1", "--http-port", port, "--no-metrics"],
            capture_output=True, text=True, timeout=START_TIMEOUT_S)
        assert process.returncode != 0
        assert f"cannot serve HTTP on 127.0.0.1:{port}" in process.stdout + process.stderr
