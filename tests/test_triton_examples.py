"""Triton's gRPC example clients (triton-inference-server/client, src/python/examples), mirrored: the same
tritonclient calls with the same arguments and the same checks, against driftline serving ONNX models
equivalent to Triton's example models under the same names (see ``onnx_models``).

Not mirrored: the sequence clients (simple_grpc_sequence_*, simple_grpc_aio_sequence_stream_*: driftline has
no sequence batching; ``test_sequence_requests_are_refused_on_a_stream`` checks the refusal instead), the
shared-memory clients (*_shm_*, *_cudashm_*), the decoupled ``simple_grpc_custom_repeat`` and the image and
ensemble clients. Model control is in test_triton_model_control.py.
"""

from __future__ import annotations

import asyncio
import queue
from functools import partial

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient import utils
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from helpers import running_server
from onnx_models import DENSENET_W, example_registry, serve_flags

WAIT_S = 60  # for a callback to arrive; a generous bound, never a measured time


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_server(example_registry(tmp_path_factory), *serve_flags()) as running:
        yield running


@pytest.fixture
def client(server):
    with grpcclient.InferenceServerClient(url=server.address) as triton_client:
        yield triton_client


def simple_inputs(module=grpcclient):
    input0_data = np.expand_dims(np.arange(start=0, stop=16, dtype=np.int32), axis=0)
    input1_data = np.ones(shape=(1, 16), dtype=np.int32)
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(input0_data)
    inputs[1].set_data_from_numpy(input1_data)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    return inputs, outputs, input0_data, input1_data


def check_sum_and_difference(results, input0_data, input1_data) -> None:
    output0_data, output1_data = results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1")
    for i in range(16):
        assert input0_data[0][i] + input1_data[0][i] == output0_data[0][i], "incorrect sum"
        assert input0_data[0][i] - input1_data[0][i] == output1_data[0][i], "incorrect difference"


# simple_grpc_infer_client.py (its -C flag chooses the compression: none by default, gzip or deflate)
@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_simple_grpc_infer_client(client, compression):
    inputs, outputs, input0_data, input1_data = simple_inputs()
    results = client.infer(model_name="simple", inputs=inputs, outputs=outputs, client_timeout=None,
                           headers={"test": "1"}, compression_algorithm=compression)
    statistics = client.get_inference_statistics(model_name="simple")
    assert len(statistics.model_stats) == 1, "Inference Statistics"
    check_sum_and_difference(results, input0_data, input1_data)
    # No outputs named: every output comes back.
    results = client.infer(model_name="simple", inputs=inputs, outputs=None, compression_algorithm=compression)
    check_sum_and_difference(results, input0_data, input1_data)


# simple_grpc_string_infer_client.py
def test_simple_grpc_string_infer_client(client):
    in0 = np.expand_dims(np.arange(start=0, stop=16, dtype=np.int32), axis=0)
    in1 = np.ones(shape=(1, 16), dtype=np.int32)
    expected_sum, expected_diff = np.add(in0, in1), np.subtract(in0, in1)
    in0n = np.array([str(x).encode("utf-8") for x in in0.reshape(in0.size)], dtype=np.object_)
    input0_data = in0n.reshape(in0.shape)
    in1n = np.array([str(x).encode("utf-8") for x in in1.reshape(in1.size)], dtype=np.object_)
    input1_data = in1n.reshape(in1.shape)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "BYTES"), grpcclient.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_data_from_numpy(input0_data)
    inputs[1].set_data_from_numpy(input1_data)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    results = client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
    output0_data, output1_data = results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1")
    for i in range(16):
        assert expected_sum[0][i] == int(output0_data[0][i]), "incorrect sum"
        assert expected_diff[0][i] == int(output1_data[0][i]), "incorrect difference"

    # Identity of strings holding NUL characters, as objects and as a numpy bytes array.
    null_char_data = np.array(["he\x00llo".encode("utf-8") for _ in range(16)], dtype=np.object_).reshape([1, 16])
    identity_inference(client, null_char_data)
    bytes_data = np.array([b"\x00\x01\x02\x03" for _ in range(16)], dtype=np.bytes_).reshape([1, 16])
    identity_inference(client, bytes_data)


def identity_inference(client, np_array) -> None:
    inputs = [grpcclient.InferInput("INPUT0", np_array.shape, "BYTES")]
    inputs[0].set_data_from_numpy(np_array)
    results = client.infer(model_name="simple_identity", inputs=inputs,
                           outputs=[grpcclient.InferRequestedOutput("OUTPUT0")])
    if np_array.dtype == np.object_:
        assert np.array_equal(np_array, results.as_numpy("OUTPUT0")), results.as_numpy("OUTPUT0")
    else:
        encoded_results = np.char.encode(results.as_numpy("OUTPUT0").astype(str))
        assert np.array_equal(np_array, encoded_results), encoded_results


# simple_grpc_async_infer_client.py
def test_simple_grpc_async_infer_client(client):
    inputs, outputs, input0_data, input1_data = simple_inputs()
    user_data: queue.Queue = queue.Queue()

    def callback(user_data, result, error):
        user_data.put(error if error else result)

    client.async_infer(model_name="simple", inputs=inputs, callback=partial(callback, user_data), outputs=outputs,
                       client_timeout=None)
    answer = user_data.get(timeout=WAIT_S)
    assert not isinstance(answer, InferenceServerException), answer
    check_sum_and_difference(answer, input0_data, input1_data)
    assert user_data.empty()


# simple_grpc_aio_infer_client.py
def test_simple_grpc_aio_infer_client(server):
    async def main():
        triton_client = grpcclient_aio.InferenceServerClient(url=server.address)
        try:
            inputs, outputs, input0_data, input1_data = simple_inputs(grpcclient_aio)
            results = await triton_client.infer(model_name="simple", inputs=inputs, outputs=outputs,
                                                client_timeout=None, headers={"test": "1"}, compression_algorithm=None)
            statistics = await triton_client.get_inference_statistics(model_name="simple")
            assert len(statistics.model_stats) == 1, "Inference Statistics"
            check_sum_and_difference(results, input0_data, input1_data)
            result_1, result_2 = await asyncio.gather(
                triton_client.infer(model_name="simple", inputs=inputs, outputs=None, compression_algorithm=None),
                triton_client.infer(model_name="simple", inputs=inputs, outputs=None, compression_algorithm=None))
            check_sum_and_difference(result_1, input0_data, input1_data)
            check_sum_and_difference(result_2, input0_data, input1_data)
        finally:
            await triton_client.close()

    asyncio.run(main())


# simple_grpc_custom_args_client.py and simple_grpc_keepalive_client.py: the same request over a channel
# built with custom channel arguments / keepalive options.
@pytest.mark.parametrize("how", ["channel_args", "keepalive_options"])
def test_custom_args_and_keepalive_clients(server, how):
    if how == "channel_args":
        options = {"channel_args": [
            ("grpc.max_send_message_length", 1024 * 1024), ("grpc.max_receive_message_length", 1024 * 1024),
            ("grpc.keepalive_time_ms", 2**31 - 1), ("grpc.keepalive_timeout_ms", 20000),
            ("grpc.keepalive_permit_without_calls", False), ("grpc.http2.max_pings_without_data", 2),
            ("grpc.dns_enable_srv_queries", 1)]}
    else:
        options = {"keepalive_options": grpcclient.KeepAliveOptions(
            keepalive_time_ms=2**31 - 1, keepalive_timeout_ms=20000, keepalive_permit_without_calls=False,
            http2_max_pings_without_data=2)}
    with grpcclient.InferenceServerClient(url=server.address, **options) as triton_client:
        inputs, outputs, input0_data, input1_data = simple_inputs()
        results = triton_client.infer(model_name="simple", inputs=inputs, outputs=outputs, headers={"test": "1"})
        check_sum_and_difference(results, input0_data, input1_data)


# simple_grpc_health_metadata.py. Not mirrored: its check that the server's metadata name is "triton"
# (driftline names itself).
def test_simple_grpc_health_metadata(client):
    assert client.is_server_live(headers={"test": "1", "dummy": "2"})
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_server_metadata().name
    metadata = client.get_model_metadata("simple", headers={"test": "1", "dummy": "2"})
    assert metadata.name == "simple"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("wrong_model_name")
    # Triton's wording, which the example checks for.
    assert "Request for unknown model" in caught.value.message()
    config = client.get_model_config("simple")
    assert config.config.name == "simple"


def explicit_request(model: str, name_datatype_values: list[tuple[str, str, list]]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, model_version="")
    for name, datatype, values in name_datatype_values:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1, 16])
        if datatype == "BYTES":
            tensor.contents.bytes_contents.extend(values)
        else:
            tensor.contents.int_contents[:] = values
    request.outputs.add(name="OUTPUT0")
    request.outputs.add(name="OUTPUT1")
    return request


def outputs_of(response, decode) -> list[np.ndarray]:
    return [np.resize(decode(response.raw_output_contents[i]), list(o.shape)) for i, o in enumerate(response.outputs)]


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


# grpc_explicit_int_content_client.py and grpc_explicit_int8_content_client.py: tensors in the typed
# contents fields, outputs read from raw_output_contents.
@pytest.mark.parametrize(("model", "datatype", "dtype"),
                         [("simple", "INT32", np.int32), ("simple_int8", "INT8", np.int8)])
def test_grpc_explicit_int_content_clients(stub, model, datatype, dtype):
    input0_data, input1_data = list(range(16)), [1] * 16
    request = explicit_request(model, [("INPUT0", datatype, input0_data), ("INPUT1", datatype, input1_data)])
    results = outputs_of(stub.ModelInfer(request), partial(np.frombuffer, dtype=dtype))
    assert len(results) == 2
    for i in range(16):
        assert input0_data[i] + input1_data[i] == results[0][0][i], "incorrect sum"
        assert input0_data[i] - input1_data[i] == results[1][0][i], "incorrect difference"
    if model == "simple":
        # Half of INPUT0 raw, half in contents (and one raw entry for two inputs): refused (Triton: "contents field
        # must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'"; its example only
        # prints). Either complaint, about the mix or about the count of raw entries, is right.
        request.raw_input_contents.extend([np.array(input0_data[0:8]).tobytes()])
        request.inputs[0].contents.int_contents[:] = input0_data[8:]
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents" in caught.value.details()
    else:
        # A version that is no number: refused, naming it (Triton: "failed to get model version from specified
        # version string 'wrong_specification'"; its example only prints PASS when the message matches).
        request.model_version = "wrong_specification"
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "wrong_specification" in caught.value.details()


# grpc_explicit_byte_content_client.py
def test_grpc_explicit_byte_content_client(stub):
    request = explicit_request("simple_string", [("INPUT0", "BYTES", [str(i).encode("utf-8") for i in range(16)]),
                                                 ("INPUT1", "BYTES", [b"1"] * 16)])
    results = outputs_of(stub.ModelInfer(request), utils.deserialize_bytes_tensor)
    assert len(results) == 2
    for i in range(16):
        assert i + 1 == int(results[0][0][i]), "incorrect sum"
        assert i - 1 == int(results[1][0][i]), "incorrect difference"


# grpc_client.py: the raw stubs, against a stand-in for densenet_onnx (FP32 [3, 224, 224], no batch dimension).
def test_grpc_client(stub):
    assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
    assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready
    assert stub.ModelReady(service_pb2.ModelReadyRequest(name="densenet_onnx", version="")).ready
    assert stub.ServerMetadata(service_pb2.ServerMetadataRequest()).name
    metadata = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="densenet_onnx", version=""))
    assert [(t.name, list(t.shape)) for t in metadata.inputs] == [("data_0", [3, 224, 224])]
    config = stub.ModelConfig(service_pb2.ModelConfigRequest(name="densenet_onnx", version="")).config
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [3, 224, 224]
    request = service_pb2.ModelInferRequest(model_name="densenet_onnx", model_version="", id="my request id")
    request.inputs.add(name="data_0", datatype="FP32", shape=[3, 224, 224])
    request.outputs.add(name="fc6_1")
    request.raw_input_contents.extend([bytes(602112 * "a", "utf-8")])
    response = stub.ModelInfer(request)
    assert response.id == "my request id"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("fc6_1", "FP32", [1000, 1, 1])]
    value = np.frombuffer(b"aaaa", dtype="<f4")[0].astype(np.float64)  # every element of the input
    expected = value * DENSENET_W.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(np.frombuffer(response.raw_output_contents[0], "<f4"), expected, rtol=1e-4)


# The streaming pattern of simple_grpc_sequence_stream_infer_client.py (start_stream, async_stream_infer with
# request ids, results through the callback, in order), with the simple model and no sequence.
def test_stream_infer_client(client):
    completed: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: completed.put(error if error else result), stream_timeout=None)
    sent = []
    for count in range(1, 9):
        data = np.full((count, 16), count, dtype=np.int32)
        inputs = [grpcclient.InferInput("INPUT0", list(data.shape), "INT32"),
                  grpcclient.InferInput("INPUT1", list(data.shape), "INT32")]
        inputs[0].set_data_from_numpy(data)
        inputs[1].set_data_from_numpy(np.ones_like(data))
        client.async_stream_infer(model_name="simple", inputs=inputs, request_id=f"stream_{count}",
                                  outputs=[grpcclient.InferRequestedOutput("OUTPUT0")])
        sent.append(data)
    received = [completed.get(timeout=WAIT_S) for _ in sent]
    client.stop_stream()
    for data, item in zip(sent, received, strict=True):
        assert not isinstance(item, InferenceServerException), item
        assert item.get_response().id == f"stream_{data[0][0]}"
        np.testing.assert_array_equal(item.as_numpy("OUTPUT0"), data + 1)
        assert item.as_numpy("OUTPUT1") is None  # only what was asked


def test_sequence_requests_are_refused_on_a_stream(client):
    """What the sequence examples meet: driftline has no sequence batcher, so a sequence request is refused
    in-band, naming the parameter, and the stream carries on."""
    completed: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: completed.put(error if error else result))
    inputs, outputs, input0_data, input1_data = simple_inputs()
    client.async_stream_infer(model_name="simple", inputs=inputs, outputs=outputs, request_id="1000_1",
                              sequence_id=1000, sequence_start=True, sequence_end=False)
    client.async_stream_infer(model_name="simple", inputs=inputs, outputs=outputs, request_id="plain")
    refused, answered = completed.get(timeout=WAIT_S), completed.get(timeout=WAIT_S)
    client.stop_stream()
    assert isinstance(refused, InferenceServerException) and "sequence_id" in refused.message(), refused
    check_sum_and_difference(answered, input0_data, input1_data)
