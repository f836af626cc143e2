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


def simple_data():
    input0_data = np.expand_dims(np.arange(start=0, stop=16, dtype=np.int32), axis=0)
    input1_data = np.full(shape=(1, 16), fill_value=-1, dtype=np.int32)
    return input0_data, input1_data


def simple_request(module, input0_data, input1_data, with_outputs: bool):
    """The inputs (INPUT0 as JSON, INPUT1 binary) and outputs (OUTPUT0 binary, OUTPUT1 as JSON) the examples send."""
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(input0_data, binary_data=False)
    inputs[1].set_data_from_numpy(input1_data, binary_data=True)
    outputs = None
    if with_outputs:
        outputs = [module.InferRequestedOutput("OUTPUT0", binary_data=True),
                   module.InferRequestedOutput("OUTPUT1", binary_data=False)]
    return inputs, outputs


def check_sum_and_difference(results, input0_data, input1_data) -> None:
    output0_data, output1_data = results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1")
    for i in range(16):
        assert input0_data[0][i] + input1_data[0][i] == output0_data[0][i], "incorrect sum"
        assert input0_data[0][i] - input1_data[0][i] == output1_data[0][i], "incorrect difference"


QUERY = {"test_1": 1, "test_2": 2}  # the examples send these query parameters; they must be tolerated


# simple_http_infer_client.py
def test_simple_http_infer_client(client):
    input0_data, input1_data = simple_data()
    inputs, outputs = simple_request(httpclient, input0_data, input1_data, with_outputs=True)
    results = client.infer("simple", inputs, outputs=outputs, query_params=QUERY, headers=None,
                           request_compression_algorithm=None, response_compression_algorithm=None)
    statistics = client.get_inference_statistics(model_name="simple", headers=None)
    assert len(statistics["model_stats"]) == 1
    check_sum_and_difference(results, input0_data, input1_data)
    inputs, _ = simple_request(httpclient, input0_data, input1_data, with_outputs=False)
    results = client.infer("simple", inputs, outputs=None, query_params=QUERY, headers=None)
    check_sum_and_difference(results, input0_data, input1_data)
    with pytest.raises(InferenceServerException) as caught:
        inputs, outputs = simple_request(httpclient, input0_data, input1_data, with_outputs=True)
        client.infer("wrong_model_name", inputs, outputs=outputs, query_params=QUERY).get_response()
    # Triton's wording, which the example checks for.
    assert caught.value.message().startswith("Request for unknown model"), caught.value.message()


# simple_http_string_infer_client.py
def test_simple_http_string_infer_client(client):
    in0 = np.expand_dims(np.arange(start=0, stop=16, dtype=np.int32), axis=0)
    in1 = np.ones(shape=(1, 16), dtype=np.int32)
    expected_sum, expected_diff = np.add(in0, in1), np.subtract(in0, in1)
    in0n = np.array([str(x).encode("utf-8") for x in in0.reshape(in0.size)], dtype=np.object_)
    input0_data = in0n.reshape(in0.shape)
    in1n = np.array([str(x).encode("utf-8") for x in in1.reshape(in1.size)], dtype=np.object_)
    input1_data = in1n.reshape(in1.shape)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "BYTES"), httpclient.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_data_from_numpy(input0_data, binary_data=True)
    inputs[1].set_data_from_numpy(input1_data, binary_data=False)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
    results = client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
    output0_data, output1_data = results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1")
    for i in range(16):
        assert expected_sum[0][i] == int(output0_data[0][i]), "incorrect sum"
        assert expected_diff[0][i] == int(output1_data[0][i]), "incorrect difference"

    null_char_data = np.array(["he\x00llo".encode("utf-8") for _ in range(16)], dtype=np.object_).reshape([1, 16])
    bytes_data = np.array([b"\x00\x01\x02\x03" for _ in range(16)], dtype=np.bytes_).reshape([1, 16])
    for data in (null_char_data, bytes_data):
        identity_inference(client, data, True)  # binary tensors
        identity_inference(client, data, False)  # JSON


def identity_inference(client, np_array, binary_data: bool) -> None:
    inputs = [httpclient.InferInput("INPUT0", np_array.shape, "BYTES")]
    inputs[0].set_data_from_numpy(np_array, binary_data=binary_data)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_data)]
    results = client.infer(model_name="simple_identity", inputs=inputs, outputs=outputs)
    if np_array.dtype == np.object_:
        if binary_data:
            assert np.array_equal(np_array, results.as_numpy("OUTPUT0")), results.as_numpy("OUTPUT0")
        else:
            expected_array = np.array([bytes(str(x), encoding="utf-8") for x in results.as_numpy("OUTPUT0").flatten()],
                                      dtype=np.object_).reshape([1, 16])
            assert np.array_equal(np_array, expected_array), expected_array
    else:
        encoded_results = np.char.encode(results.as_numpy("OUTPUT0").astype(str))
        assert np.array_equal(np_array, encoded_results), encoded_results


# simple_http_async_infer_client.py
def test_simple_http_async_infer_client(url):
    request_count = 2
    triton_client = httpclient.InferenceServerClient(url=url, concurrency=request_count)
    try:
        input0_data = np.expand_dims(np.arange(start=0, stop=16, dtype=np.int32), axis=0)
        input1_data = np.ones(shape=(1, 16), dtype=np.int32)
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(input0_data, binary_data=True)
        inputs[1].set_data_from_numpy(input1_data, binary_data=True)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
                   httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)]
        async_requests = [triton_client.async_infer(model_name="simple", inputs=inputs, outputs=outputs)
                          for _ in range(request_count)]
        for async_request in async_requests:
            check_sum_and_difference(async_request.get_result(timeout=WAIT_S), input0_data, input1_data)
    finally:
        triton_client.close()


# simple_http_aio_infer_client.py
def test_simple_http_aio_infer_client(url):
    async def infer(triton_client, model_name, input0_data, input1_data, with_outputs=True):
        inputs, outputs = simple_request(httpclient_aio, input0_data, input1_data, with_outputs)
        return await triton_client.infer(model_name, inputs, outputs=outputs, query_params=QUERY, headers=None,
                                         request_compression_algorithm=None, response_compression_algorithm=None)

    async def main():
        triton_client = httpclient_aio.InferenceServerClient(url=url)
        try:
            input0_data, input1_data = simple_data()
            results = await infer(triton_client, "simple", input0_data, input1_data)
            statistics = await triton_client.get_inference_statistics(model_name="simple", headers=None)
            assert len(statistics["model_stats"]) == 1
            check_sum_and_difference(results, input0_data, input1_data)
            results = await infer(triton_client, "simple", input0_data, input1_data, with_outputs=False)
            check_sum_and_difference(results, input0_data, input1_data)
            with pytest.raises(InferenceServerException) as caught:
                (await infer(triton_client, "wrong_model_name", input0_data, input1_data)).get_response()
            assert caught.value.message().startswith("Request for unknown model"), caught.value.message()
            result_1, result_2 = await asyncio.gather(
                infer(triton_client, "simple", input0_data, input1_data),
                infer(triton_client, "simple", input0_data, input1_data, with_outputs=False))
            check_sum_and_difference(result_1, input0_data, input1_data)
            check_sum_and_difference(result_2, input0_data, input1_data)
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
    assert "Request for unknown model" in caught.value.message()
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
        tensor = httpclient.InferInput(f"{datatype}_IN", [2, 4], datatype)
        tensor.set_data_from_numpy(sent[datatype], binary_data=as_binary)
        inputs.append(tensor)
        outputs.append(httpclient.InferRequestedOutput(f"{datatype}_OUT", binary_data=as_binary))
    results = client.infer("all_types", inputs, outputs=outputs)
    for datatype, (_, dtype) in m.ALL_TYPES.items():
        answer = results.as_numpy(f"{datatype}_OUT")
        assert answer.dtype == dtype and answer.shape == (2, 4), (datatype, answer)
        np.testing.assert_array_equal(answer, m.all_types_expected(datatype, sent[datatype]))


def test_rank_three_and_four_over_http(client):
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 7
    h = np.linspace(-1, 1, 16).astype(np.float16).reshape(2, 2, 2, 2)
    inputs = [httpclient.InferInput("X", [2, 3, 4], "FP64"), httpclient.InferInput("H", [2, 2, 2, 2], "FP16")]
    inputs[0].set_data_from_numpy(x, binary_data=False)
    inputs[1].set_data_from_numpy(h, binary_data=True)
    results = client.infer("tensor3", inputs)
    np.testing.assert_allclose(results.as_numpy("ROW_SUM"), x.sum(axis=2), rtol=1e-12)
    np.testing.assert_array_equal(results.as_numpy("H_TWICE"), h + h)
    metadata = client.get_model_metadata("tensor3")
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("X", "FP64", [-1, 3, 4]), ("H", "FP16", [-1, 2, 2, 2])]
