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
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

import onnx_models as m
from helpers import running_server

WAIT_S = 60  # for a callback to arrive; a generous bound, never a measured time


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_server(m.example_registry(tmp_path_factory), *m.serve_flags()) as running:
        yield running


def deliver(arrivals: queue.Queue, result, error) -> None:
    """A callback for tritonclient, bound to a queue with ``partial``: what arrives, answer or error, goes in."""
    arrivals.put(error if error else result)


# simple_grpc_infer_client.py (its -C flag chooses the compression: none by default, gzip or deflate)
@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_simple_grpc_infer_client(client, compression):
    case = m.AddSub()
    inputs = case.inputs(grpcclient)
    results = client.infer(model_name="simple", inputs=inputs, outputs=case.outputs(grpcclient), client_timeout=None,
                           headers={"test": "1"}, compression_algorithm=compression)
    statistics = client.get_inference_statistics(model_name="simple")
    assert len(statistics.model_stats) == 1, "Inference Statistics"
    case.check(results)
    # No outputs named: every output comes back.
    case.check(client.infer(model_name="simple", inputs=inputs, outputs=None, compression_algorithm=compression))


# simple_grpc_string_infer_client.py: sum and difference as decimal text, then strings with NUL bytes echoed.
def test_simple_grpc_string_infer_client(client):
    case = m.AddSub("simple_string")
    case.check(client.infer(model_name="simple_string", inputs=case.inputs(grpcclient),
                            outputs=case.outputs(grpcclient)))
    for strings in m.identity_samples():
        inputs, outputs = m.identity_request(grpcclient, strings)
        echo = client.infer(model_name="simple_identity", inputs=inputs, outputs=outputs)
        m.assert_echoed(strings, echo.as_numpy("OUTPUT0"))


# simple_grpc_async_infer_client.py
def test_simple_grpc_async_infer_client(client):
    case = m.AddSub()
    arrivals: queue.Queue = queue.Queue()
    client.async_infer(model_name="simple", inputs=case.inputs(grpcclient), callback=partial(deliver, arrivals),
                       outputs=case.outputs(grpcclient), client_timeout=None)
    answer = arrivals.get(timeout=WAIT_S)
    assert not isinstance(answer, InferenceServerException), answer
    case.check(answer)
    assert arrivals.empty()


# simple_grpc_aio_infer_client.py
def test_simple_grpc_aio_infer_client(server):
    case = m.AddSub()

    async def main():
        triton_client = grpcclient_aio.InferenceServerClient(url=server.address)
        try:
            inputs = case.inputs(grpcclient_aio)
            results = await triton_client.infer(model_name="simple", inputs=inputs,
                                                outputs=case.outputs(grpcclient_aio), client_timeout=None,
                                                headers={"test": "1"}, compression_algorithm=None)
            statistics = await triton_client.get_inference_statistics(model_name="simple")
            assert len(statistics.model_stats) == 1, "Inference Statistics"
            case.check(results)
            # Two at once, every output of each.
            together = [triton_client.infer(model_name="simple", inputs=inputs, outputs=None,
                                            compression_algorithm=None) for _ in range(2)]
            for results in await asyncio.gather(*together):
                case.check(results)
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
    case = m.AddSub()
    with grpcclient.InferenceServerClient(url=server.address, **options) as triton_client:
        case.check(triton_client.infer(model_name="simple", inputs=case.inputs(grpcclient),
                                       outputs=case.outputs(grpcclient), headers={"test": "1"}))


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


def explicit_request(case: m.AddSub) -> service_pb2.ModelInferRequest:
    """``case``'s request as a protocol message with its inputs in the typed contents fields (int_contents,
    bytes_contents for BYTES) rather than raw_input_contents; both outputs asked for."""
    request = service_pb2.ModelInferRequest(model_name=case.model, model_version="")
    for name, data in case.sent():
        contents = request.inputs.add(name=name, datatype=case.datatype, shape=list(data.shape)).contents
        values = data.ravel().tolist()
        if case.datatype == "BYTES":
            contents.bytes_contents.extend(values)
        else:
            contents.int_contents.extend(values)
    request.outputs.add(name="OUTPUT0")
    request.outputs.add(name="OUTPUT1")
    return request


def outputs_of(response, decode) -> list[np.ndarray]:
    """Each output of ``response``, its raw_output_contents decoded and shaped as the response says."""
    return [np.resize(decode(raw), list(output.shape))
            for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)]


def refused_as_invalid(stub, request, naming: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert naming in caught.value.details()


# grpc_explicit_int_content_client.py and grpc_explicit_int8_content_client.py: tensors in the typed
# contents fields, outputs read from raw_output_contents.
@pytest.mark.parametrize(("model", "dtype"), [("simple", np.int32), ("simple_int8", np.int8)])
def test_grpc_explicit_int_content_clients(stub, model, dtype):
    case = m.AddSub(model)
    request = explicit_request(case)
    results = outputs_of(stub.ModelInfer(request), partial(np.frombuffer, dtype=dtype))
    assert len(results) == 2
    case.check_outputs(*results)
    if model == "simple":
        # Half of INPUT0 raw, half in contents (and one raw entry for two inputs): refused (Triton: "contents field
        # must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'"; its example only
        # prints). Either complaint, about the mix or about the count of raw entries, is right.
        counting = case.first.ravel().tolist()
        request.raw_input_contents.extend([np.array(counting[:8]).tobytes()])
        request.inputs[0].contents.int_contents[:] = counting[8:]
        refused_as_invalid(stub, request, "raw_input_contents")
    else:
        # A version that is no number: refused, naming it (Triton: "failed to get model version from specified
        # version string 'wrong_specification'"; its example only prints PASS when the message matches).
        request.model_version = "wrong_specification"
        refused_as_invalid(stub, request, "wrong_specification")


# grpc_explicit_byte_content_client.py
def test_grpc_explicit_byte_content_client(stub):
    case = m.AddSub("simple_string")
    results = outputs_of(stub.ModelInfer(explicit_request(case)), utils.deserialize_bytes_tensor)
    assert len(results) == 2
    case.check_outputs(*results)


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
    expected = value * m.DENSENET_W.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(np.frombuffer(response.raw_output_contents[0], "<f4"), expected, rtol=1e-4)


# The streaming pattern of simple_grpc_sequence_stream_infer_client.py (start_stream, async_stream_infer with
# request ids, results through the callback, in order), with the simple model and no sequence.
def test_stream_infer_client(client):
    arrivals: queue.Queue = queue.Queue()
    client.start_stream(callback=partial(deliver, arrivals), stream_timeout=None)
    sent = [m.AddSub(first=np.full((rows, 16), rows, dtype=np.int32)) for rows in range(1, 9)]
    for case in sent:
        client.async_stream_infer(model_name="simple", inputs=case.inputs(grpcclient),
                                  request_id=f"stream_{len(case.first)}",
                                  outputs=[grpcclient.InferRequestedOutput("OUTPUT0")])
    received = [arrivals.get(timeout=WAIT_S) for _ in sent]
    client.stop_stream()
    for case, item in zip(sent, received, strict=True):
        assert not isinstance(item, InferenceServerException), item
        assert item.get_response().id == f"stream_{len(case.first)}"
        np.testing.assert_array_equal(item.as_numpy("OUTPUT0"), case.first + 1)
        assert item.as_numpy("OUTPUT1") is None  # only what was asked


def test_sequence_requests_are_refused_on_a_stream(client):
    """What the sequence examples meet: driftline has no sequence batcher, so a sequence request is refused
    in-band, naming the parameter, and the stream carries on."""
    arrivals: queue.Queue = queue.Queue()
    client.start_stream(callback=partial(deliver, arrivals))
    case = m.AddSub()
    inputs, outputs = case.inputs(grpcclient), case.outputs(grpcclient)
    client.async_stream_infer(model_name="simple", inputs=inputs, outputs=outputs, request_id="1000_1",
                              sequence_id=1000, sequence_start=True, sequence_end=False)
    client.async_stream_infer(model_name="simple", inputs=inputs, outputs=outputs, request_id="plain")
    refused, answered = arrivals.get(timeout=WAIT_S), arrivals.get(timeout=WAIT_S)
    client.stop_stream()
    assert isinstance(refused, InferenceServerException) and "sequence_id" in refused.message(), refused
    case.check(answered)
