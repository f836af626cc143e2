"""No silent ignores (issue 11, point 4): every request field or parameter driftline does not honour is refused
with INVALID_ARGUMENT naming it; what it does honour works. Classification and ModelConfig shapes are in
test_classification_and_config_shapes.py.

Requests go through tritonclient as a stock client sends them, or through tritonclient's own protocol messages
where tritonclient has no call for the field.
"""

from __future__ import annotations

import json
import queue
import re
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

import onnx_models as m
from helpers import running_server

WAIT_S = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    # A copy: the load tests below change what this server serves.
    registry = m.copy_registry(m.example_registry(tmp_path_factory), tmp_path_factory.mktemp("no-silent-ignores"))
    with running_server(registry, *m.serve_flags()) as running:
        yield running


def simple_request() -> service_pb2.ModelInferRequest:
    """A valid request to ``simple`` as tritonclient's protocol message."""
    request = service_pb2.ModelInferRequest(model_name="simple", id="r")
    for name, datatype, data in m.sample_inputs("simple", rows=1):
        request.inputs.add(name=name, datatype=datatype, shape=list(data.shape))
        request.raw_input_contents.append(data.tobytes())
    return request


def refused(call, *names: str) -> str:
    """Run ``call``; it must fail with INVALID_ARGUMENT and a message naming each of ``names``."""
    with pytest.raises((InferenceServerException, grpc.RpcError)) as caught:
        call()
    error = caught.value
    if isinstance(error, grpc.RpcError):
        code, message = error.code().name, error.details()
    else:
        code, message = str(error.status()).removeprefix("StatusCode."), error.message()
    assert code == "INVALID_ARGUMENT", (code, message)
    for name in names:
        assert name in message, message
    return message


def infer_simple(client, **kwargs):
    return client.infer("simple", m.grpc_inputs(m.sample_inputs("simple", rows=1)), **kwargs)


# -- request parameters ------------------------------------------------------------------------------------
def test_an_unknown_request_parameter_is_refused_by_name(client):
    refused(lambda: infer_simple(client, parameters={"foo": 1}), "foo")
    assert infer_simple(client).as_numpy("OUTPUT0") is not None  # and the next request is served


@pytest.mark.parametrize("sequence_id", [42, "a-sequence"])
def test_sequence_requests_are_refused(client, sequence_id):
    # driftline has no sequence batcher: a sequence id cannot be honoured.
    refused(lambda: infer_simple(client, sequence_id=sequence_id, sequence_start=True), "sequence_id")


def test_a_priority_is_refused(client):
    # One priority level only: a request asking for another is told so (priority 0 = default is never sent).
    refused(lambda: infer_simple(client, priority=1), "priority")


def test_a_generous_timeout_is_honoured(client):
    # 'timeout' is Triton's per-request deadline in microseconds; a minute is plenty (what a too-short one does is
    # a matter of timing, so it is not tested here).
    result = infer_simple(client, timeout=60_000_000)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.arange(16).reshape(1, 16) + 1)


def test_unknown_input_and_output_parameters_are_refused_by_name(stub):
    request = simple_request()
    request.inputs[1].parameters["foo"].int64_param = 1
    refused(lambda: stub.ModelInfer(request), "foo")
    request = simple_request()
    request.outputs.add(name="OUTPUT0").parameters["bar"].string_param = "x"
    refused(lambda: stub.ModelInfer(request), "bar")


def test_shared_memory_is_refused_by_name(client):
    # No shared-memory extension: tensors that say they live in a region must not be read as empty.
    shared = re.compile(r"shared_memory_(region|byte_size|offset)")
    inputs = m.grpc_inputs(m.sample_inputs("simple", rows=1))
    output = grpcclient.InferRequestedOutput("OUTPUT0")
    output.set_shared_memory("output0_region", 64)
    assert shared.search(refused(lambda: client.infer("simple", inputs, outputs=[output]), "OUTPUT0"))
    inputs[0].set_shared_memory("input0_region", 64)
    assert shared.search(refused(lambda: client.infer("simple", inputs), "INPUT0"))


def test_the_same_output_twice_is_refused(client):
    twice = [grpcclient.InferRequestedOutput("OUTPUT1"), grpcclient.InferRequestedOutput("OUTPUT1")]
    refused(lambda: infer_simple(client, outputs=twice), "OUTPUT1")


# -- streams -------------------------------------------------------------------------------------------------
def test_enable_empty_final_response_is_honoured(client):
    """Triton (server src/grpc/stream_infer_handler.cc, StreamInferResponseComplete) sets the response parameter
    ``triton_final_response`` on every streamed response: true on a non-decoupled model's one response, and sends
    an extra *empty* final response only for a decoupled model that completes without one. So with
    ``enable_empty_final_response`` each request gets exactly one response, flagged final, and nothing else."""
    completed: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: completed.put(error if error else result))
    for i in range(3):
        client.async_stream_infer("simple", m.grpc_inputs(m.sample_inputs("simple", rows=i + 1)), request_id=f"r{i}",
                                  enable_empty_final_response=True)
    client.stop_stream()  # returns once the server has closed its side: every response has arrived
    answers = []
    while not completed.empty():
        answers.append(completed.get_nowait())
    assert len(answers) == 3, answers
    for i, answer in enumerate(answers):
        assert not isinstance(answer, InferenceServerException), answer
        response = answer.get_response()
        assert response.id == f"r{i}" and answer.as_numpy("OUTPUT0").shape == (i + 1, 16)
        assert response.parameters["triton_final_response"].bool_param is True


# -- RepositoryModelLoad's config and file overrides -----------------------------------------------------------
def test_load_honours_batching_settings_in_the_config(client):
    client.load_model("simple_int8", config=json.dumps({"max_batch_size": 8}))
    assert client.get_model_config("simple_int8").config.max_batch_size == 8
    client.load_model("simple_int8", config=json.dumps(
        {"max_batch_size": 32, "dynamic_batching": {"max_queue_delay_microseconds": 1500}}))
    config = client.get_model_config("simple_int8").config
    assert config.max_batch_size == 32
    assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    result = client.infer("simple_int8", m.grpc_inputs(m.sample_inputs("simple_int8", rows=3)))
    assert result.as_numpy("OUTPUT1").shape == (3, 16)


@pytest.mark.parametrize(("override", "field"), [
    ({"platform": "tensorflow_savedmodel"}, "platform"),
    ({"backend": "tensorrt"}, "backend"),
    ({"input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [16]}]}, "input"),
    ({"output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [16]}]}, "output"),
    # No GPU 99 anywhere, so this can be honoured on no machine.
    ({"instance_group": [{"kind": "KIND_GPU", "count": 1, "gpus": [99]}]}, "instance_group"),
    ({"sequence_batching": {}}, "sequence_batching"),
    ({"max_batch_sz": 4}, "max_batch_sz"),  # a misspelt field is not a setting to skip
], ids=lambda v: v if isinstance(v, str) else None)
def test_load_refuses_config_it_cannot_honour_by_name(client, override, field):
    before = client.get_model_config("simple").config
    refused(lambda: client.load_model("simple", config=json.dumps(override)), field)
    after = client.get_model_config("simple").config
    assert after.max_batch_size == before.max_batch_size and client.is_model_ready("simple")


def test_load_refuses_batching_for_a_model_without_a_batch_dimension(client):
    # fixed16's input is [1, 16]: there is no dimension along which to batch (assumption: refused, not clamped).
    refused(lambda: client.load_model("fixed16", config=json.dumps({"max_batch_size": 16})), "max_batch_size")
    assert client.get_model_config("fixed16").config.max_batch_size == 0


def test_load_refuses_file_overrides_by_name(client, tmp_path: Path):
    model = m.write(m.simple(), tmp_path / "model.onnx").read_bytes()
    refused(lambda: client.load_model("simple", config="{}", files={"file:1/model.onnx": model}), "file:1/model.onnx")
    assert client.is_model_ready("simple")


def test_load_refuses_unknown_parameters_by_name(stub):
    request = service_pb2.RepositoryModelLoadRequest(model_name="simple")
    request.parameters["foo"].bool_param = True
    refused(lambda: stub.RepositoryModelLoad(request), "foo")


def test_load_refuses_a_config_that_is_not_json(client):
    # Triton's model-control example expects "failed to load" in this message.
    not_json = '"parameters": {"config": {{"max_batch_size": "16"}}}'  # the examples' invalid override
    message = refused(lambda: client.load_model("simple", config=not_json))
    assert "failed to load" in message
