"""Serving any ONNX model (issue 11, point 1): many inputs, every datatype, any rank, dynamic or fixed batch
dimension; metadata and errors speak of each input by name."""

from __future__ import annotations

import asyncio
import re

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

import onnx_models as m
from helpers import running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_server(m.example_registry(tmp_path_factory), *m.serve_flags()) as running:
        yield running


def test_metadata_names_every_input_and_output(client):
    meta = client.get_model_metadata("simple")
    assert meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("INPUT0", "INT32", [-1, 16]), ("INPUT1", "INT32", [-1, 16])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("OUTPUT0", "INT32", [-1, 16]), ("OUTPUT1", "INT32", [-1, 16])]
    strings = client.get_model_metadata("simple_identity")
    assert [(t.name, t.datatype, list(t.shape)) for t in strings.inputs] == [("INPUT0", "BYTES", [-1, -1])]
    fixed = client.get_model_metadata("fixed16")
    assert [(t.name, t.datatype, list(t.shape)) for t in fixed.inputs] == [("FIXED_IN", "FP32", [1, 16])]
    config = client.get_model_config("simple").config
    assert config.max_batch_size > 0 and [list(i.dims) for i in config.input] == [[16], [16]]


def test_every_datatype_round_trips(client):
    samples = m.sample_inputs("all_types", rows=3)
    result = client.infer("all_types", m.grpc_inputs(samples))
    for name, datatype, data in samples:
        output = next(o for o in result.get_response().outputs if o.name == f"{datatype}_OUT")
        assert (output.datatype, list(output.shape)) == (datatype, [3, 4])
        answer = result.as_numpy(output.name)
        assert answer.dtype == data.dtype, (datatype, answer.dtype)
        np.testing.assert_array_equal(answer, m.all_types_expected(datatype, data))


def test_rank_three_and_four_inputs(client):
    samples = m.sample_inputs("tensor3", rows=2)
    result = client.infer("tensor3", m.grpc_inputs(samples))
    np.testing.assert_array_equal(result.as_numpy("ROW_SUM"), samples[0][2].sum(axis=2))
    np.testing.assert_array_equal(result.as_numpy("H_TWICE"), samples[1][2] * 2)
    assert result.as_numpy("H_TWICE").dtype == np.float16


def test_concurrent_requests_are_batched_and_split_back(server):
    """Requests of different sizes at once: whatever batches they share, each gets its own rows back."""
    async def one(client, rows: int, seed: int):
        x = np.random.default_rng(seed).normal(size=(rows, 3, 4))
        h = np.full((rows, 2, 2, 2), seed, dtype=np.float16)
        inputs = [grpcclient_aio.InferInput("X", list(x.shape), "FP64"),
                  grpcclient_aio.InferInput("H", list(h.shape), "FP16")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(h)
        result = await client.infer("tensor3", inputs)
        np.testing.assert_allclose(result.as_numpy("ROW_SUM"), x.sum(axis=2), rtol=1e-12)
        np.testing.assert_array_equal(result.as_numpy("H_TWICE"), h * 2)

    async def main():
        client = grpcclient_aio.InferenceServerClient(url=server.address)
        try:
            await asyncio.gather(*(one(client, 1 + i % 5, i) for i in range(40)))
        finally:
            await client.close()

    asyncio.run(main())


# -- a model without a batch dimension (Triton: max_batch_size 0) -------------------------------------------------
def test_fixed_batch_model_answers_its_one_shape(client):
    (sample,) = m.sample_inputs("fixed16")
    result = client.infer("fixed16", m.grpc_inputs([sample]))
    np.testing.assert_allclose(result.as_numpy("FIXED_OUT"), 2 * sample[2] + 1)
    config = client.get_model_config("fixed16").config
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [1, 16] and list(config.output[0].dims) == [1, 16]


def test_fixed_batch_model_refuses_two_rows_naming_the_input_and_its_shape(client):
    data = np.zeros((2, 16), dtype=np.float32)
    message = refused(lambda: client.infer("fixed16", m.grpc_inputs([("FIXED_IN", "FP32", data)])), "FIXED_IN")
    assert re.search(r"\[1, ?16\]", message), message


# -- errors name the input --------------------------------------------------------------------------------------
def refused(call, *names: str) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", caught.value
    for name in names:
        assert name in caught.value.message(), caught.value.message()
    return caught.value.message()


def simple_with(**changes) -> list:
    """The inputs of a valid request to ``simple``, with ``changes`` by input name: a (datatype, array) pair,
    or None to leave the input out."""
    inputs = []
    for name, datatype, data in m.sample_inputs("simple", rows=1):
        datatype, data = changes.pop(name, (datatype, data)) or (None, None)
        if data is not None:
            inputs.append((name, datatype, data))
    inputs += [(name, datatype, data) for name, (datatype, data) in changes.items()]
    return m.grpc_inputs(inputs)


def test_unknown_input_is_named(client):
    ones = np.ones((1, 16), dtype=np.int32)
    refused(lambda: client.infer("simple", simple_with(INPUT9=("INT32", ones))), "INPUT9")


def test_missing_input_is_named(client):
    refused(lambda: client.infer("simple", simple_with(INPUT1=None)), "INPUT1")


def test_an_input_sent_twice_is_named(client):
    # Assumption: refused like a repeated output (Triton refuses duplicate inputs too).
    inputs = simple_with()
    refused(lambda: client.infer("simple", inputs + inputs[1:]), "INPUT1")


def test_wrong_datatype_is_named(client):
    # Assumption: a model other than driftline's tabular one takes exactly its own datatypes (as Triton does);
    # the numeric conversions into a tabular model's single float input stay as they are.
    refused(lambda: client.infer("simple", simple_with(INPUT1=("FP32", np.ones((1, 16), np.float32)))),
            "INPUT1", "INT32")
    numbers = np.ones((1, 16), dtype=np.int32)
    refused(lambda: client.infer("simple_string", m.grpc_inputs(
        [("INPUT0", "BYTES", np.full((1, 16), b"1", dtype=object)), ("INPUT1", "INT32", numbers)])), "INPUT1", "BYTES")


@pytest.mark.parametrize("shape", [(1, 15), (16,), (1, 16, 1)], ids=str)
def test_wrong_shape_is_named(client, shape):
    data = np.ones(shape, dtype=np.int32)
    refused(lambda: client.infer("simple", simple_with(INPUT0=("INT32", data))), "INPUT0")


def test_inputs_with_different_batch_sizes_are_refused(client):
    refused(lambda: client.infer("simple", simple_with(INPUT1=("INT32", np.ones((2, 16), np.int32)))), "INPUT")


def raw_request(sizes: dict[str, int]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(bytes(sizes.get(name, 64)))
    return request


@pytest.mark.parametrize("name", ["INPUT0", "INPUT1"])
def test_wrong_byte_count_is_named(stub, name):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(raw_request({name: 60}))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert name in caught.value.details() and "60" in caught.value.details(), caught.value.details()


def test_wrong_count_of_typed_contents_is_named(stub):
    request = service_pb2.ModelInferRequest(model_name="simple")
    for name, count in (("INPUT0", 16), ("INPUT1", 15)):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16]).contents.int_contents[:] = [1] * count
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "INPUT1" in caught.value.details()
