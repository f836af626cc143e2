"""Triton's HTTP example clients (triton-inference-server/client, src/python/examples/simple_http_*), mirrored
against driftline's HTTP front end: the same tritonclient.http calls, arguments and checks, against the
equivalent ONNX models of ``onnx_models`` under Triton's model names.

The server is started with ``--http-port 0``; its start line says where HTTP listens ("; http http://HOST:PORT").
Not mirrored: the examples' optional flags for SSL and for request/response compression (their defaults, used
here, send neither), the server metadata name check ("triton") and the shared-memory clients.
Model control is in test_triton_model_control.py.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as httpclient_aio
from tritonclient.utils import InferenceServerException

import onnx_models as m
from helpers import running_server

WAIT_S = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_server(m.example_registry(tmp_path_factory), "--http-port", "0") as running:
        yield running


@pytest.fixture(scope="module")
def url(server) -> str:
    return m.http_url(server)


@pytest.fixture
def client(url):
    triton_client = httpclient.InferenceServerClient(url=url)
    yield triton_client
    triton_client.close()


QUERY = {"test_1": 1, "test_2": 2}  # the examples send these query parameters; they must be tolerated


def mixed_request(client_module, case: m.AddSub, with_outputs: bool = True) -> tuple[list, list | None]:
    """``case`` as the infer examples send it: INPUT0 as JSON, INPUT1 binary; OUTPUT0 asked for binary, OUTPUT1 as
    JSON, or no outputs named."""
    outputs = case.outputs(client_module, binary=(True, False)) if with_outputs else None
    return case.inputs(client_module, binary=(False, True)), outputs


def assert_unknown_model(caught: pytest.ExceptionInfo) -> None:
    # Triton's wording, which the examples check for.
    assert caught.value.message().startswith("Request for unknown model"), caught.value.message()


# simple_http_infer_client.py
def test_simple_http_infer_client(client):
    case = m.AddSub(second=-1)
    inputs, outputs = mixed_request(httpclient, case)
    results = client.infer("simple", inputs, outputs=outputs, query_params=QUERY, headers=None,
                           request_compression_algorithm=None, response_compression_algorithm=None)
    statistics = client.get_inference_statistics(model_name="simple", headers=None)
    assert len(statistics["model_stats"]) == 1
    case.check(results)
    inputs, _ = mixed_request(httpclient, case, with_outputs=False)
    case.check(client.infer("simple", inputs, outputs=None, query_params=QUERY, headers=None))
    with pytest.raises(InferenceServerException) as caught:
        inputs, outputs = mixed_request(httpclient, case)
        client.infer("wrong_model_name", inputs, outputs=outputs, query_params=QUERY).get_response()
    assert_unknown_model(caught)


# simple_http_string_infer_client.py: sum and difference as decimal text, then strings with NUL bytes echoed,
# each both as binary tensors and as JSON.
def test_simple_http_string_infer_client(client):
    case = m.AddSub("simple_string")
    results = client.infer(model_name="simple_string", inputs=case.inputs(httpclient, binary=(True, False)),
                           outputs=case.outputs(httpclient, binary=(True, False)))
    case.check(results)
    for strings in m.identity_samples():
        for binary in (True, False):
            inputs, outputs = m.identity_request(httpclient, strings, binary)
            echo = client.infer(model_name="simple_identity", inputs=inputs, outputs=outputs)
            m.assert_echoed(strings, echo.as_numpy("OUTPUT0"), as_json=not binary)


# simple_http_async_infer_client.py
def test_simple_http_async_infer_client(url):
    request_count = 2
    triton_client = httpclient.InferenceServerClient(url=url, concurrency=request_count)
    try:
        case = m.AddSub()
        inputs = case.inputs(httpclient, binary=(True, True))
        outputs = case.outputs(httpclient, binary=(True, True))
        pending = [triton_client.async_infer(model_name="simple", inputs=inputs, outputs=outputs)
                   for _ in range(request_count)]
        for request in pending:
            case.check(request.get_result(timeout=WAIT_S))
    finally:
        triton_client.close()


# simple_http_aio_infer_client.py
def test_simple_http_aio_infer_client(url):
    case = m.AddSub(second=-1)

    async def infer(triton_client, model_name, with_outputs=True):
        inputs, outputs = mixed_request(httpclient_aio, case, with_outputs)
        return await triton_client.infer(model_name, inputs, outputs=outputs, query_params=QUERY, headers=None,
                                         request_compression_algorithm=None, response_compression_algorithm=None)

    async def main():
        triton_client = httpclient_aio.InferenceServerClient(url=url)
        try:
            results = await infer(triton_client, "simple")
            statistics = await triton_client.get_inference_statistics(model_name="simple", headers=None)
            assert len(statistics["model_stats"]) == 1
            case.check(results)
            case.check(await infer(triton_client, "simple", with_outputs=False))
            with pytest.raises(InferenceServerException) as caught:
                (await infer(triton_client, "wrong_model_name")).get_response()
            assert_unknown_model(caught)
            # Two at once, one naming its outputs and one not.
            for results in await asyncio.gather(infer(triton_client, "simple"),
                                                infer(triton_client, "simple", with_outputs=False)):
                case.check(results)
        finally:
            await triton_client.close()

    asyncio.run(main())


# simple_http_health_metadata.py (not mirrored: its check that the server calls itself "triton")
def test_simple_http_health_metadata(client):
    assert client.is_server_live(query_params=QUERY)
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_server_metadata()["name"]
    metadata = client.get_model_metadata("simple", query_params=QUERY)
    assert metadata["name"] == "simple"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in caught.value.message()  # Triton's wording, which the example checks for
    assert not client.is_model_ready("wrong_model_name")


# Beyond the examples: every datatype both ways. FP16 goes binary only: Triton refuses FP16 as JSON
# (server src/http_server.cc: "receiving FP16 data via JSON is not supported"), so a client cannot rely on it.
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype_over_http(client, binary):
    inputs, outputs, sent = [], [], {}
    for datatype, (_, dtype) in m.ALL_TYPES.items():
        values = (np.arange(8) % 3 == 0) if datatype == "BOOL" else (np.arange(8) + 1).astype(dtype)
        sent[datatype] = values.reshape(2, 4)
        as_binary = binary or datatype == "FP16"
        inputs.append(m.tensor(httpclient, f"{datatype}_IN", sent[datatype], datatype, as_binary))
        outputs.append(m.requested(httpclient, f"{datatype}_OUT", as_binary))
    results = client.infer("all_types", inputs, outputs=outputs)
    for datatype, (_, dtype) in m.ALL_TYPES.items():
        answer = results.as_numpy(f"{datatype}_OUT")
        assert answer.dtype == dtype and answer.shape == (2, 4), (datatype, answer)
        np.testing.assert_array_equal(answer, m.all_types_expected(datatype, sent[datatype]))


def test_rank_three_and_four_over_http(client):
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 7
    h = np.linspace(-1, 1, 16).astype(np.float16).reshape(2, 2, 2, 2)
    inputs = [m.tensor(httpclient, "X", x, "FP64", binary=False), m.tensor(httpclient, "H", h, "FP16", binary=True)]
    results = client.infer("tensor3", inputs)
    np.testing.assert_allclose(results.as_numpy("ROW_SUM"), x.sum(axis=2), rtol=1e-12)
    np.testing.assert_array_equal(results.as_numpy("H_TWICE"), h + h)
    metadata = client.get_model_metadata("tensor3")
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("X", "FP64", [-1, 3, 4]), ("H", "FP16", [-1, 2, 2, 2])]
