"""Triton's model-control examples (simple_grpc_model_control.py, simple_http_model_control.py), mirrored against
driftline: repository index, load (driftline: serve the latest version), load with a config override, unload.
Each test has a server of its own over a copy of the example registry, since it changes what is served.

Where driftline differs on purpose:
- the index has one entry per model version of the registry here (Triton's examples count 8 and 7 models of
  their own repository);
- file overrides are refused with INVALID_ARGUMENT naming the file (Triton's example expects INTERNAL "failed to
  poll from model repository" for an oversized file name).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import onnx_models as m
from helpers import running_server

NOT_JSON = '"parameters": {"config": {{"max_batch_size": "16"}}}'  # the examples' invalid override
MODELS = len(m.BUILDERS) + 1  # the ONNX models and the trained classifier, one version each


@pytest.fixture
def registry(tmp_path_factory: pytest.TempPathFactory, tmp_path):
    return m.copy_registry(m.example_registry(tmp_path_factory), tmp_path)


@pytest.fixture
def grpc_client(registry):
    """A server of the test's own over its registry, and tritonclient.grpc's client of it."""
    with running_server(registry, *m.serve_flags()) as server, \
            grpcclient.InferenceServerClient(url=server.address) as triton_client:
        yield triton_client


def assert_load_fails(triton_client, name: str, **load_arguments) -> None:
    with pytest.raises(InferenceServerException) as caught:
        triton_client.load_model(name, **load_arguments)
    assert "failed to load" in caught.value.message()


def load_override_unload(triton_client, max_batch_size_in: Callable) -> None:
    """What both examples do to ``simple``: load it; a config override that is no JSON, refused; a valid one,
    applied (``max_batch_size_in`` reads it from the protocol's answer to get_model_config); unload it."""
    triton_client.load_model("simple")
    assert triton_client.is_model_ready("simple")
    assert_load_fails(triton_client, "simple", config=NOT_JSON)
    triton_client.load_model("simple", config='{"max_batch_size":"16"}')
    assert max_batch_size_in(triton_client.get_model_config("simple")) == 16
    triton_client.unload_model("simple")
    assert not triton_client.is_model_ready("simple")


def test_simple_grpc_model_control(grpc_client):
    assert len(grpc_client.get_model_repository_index().models) == MODELS
    load_override_unload(grpc_client, lambda answer: answer.config.max_batch_size)

    long_path = "file:" + ("A" * 256)
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.load_model("simple", config="{}", files={long_path: b"a"})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert long_path in caught.value.message()
    assert grpc_client.is_server_live()

    assert_load_fails(grpc_client, "wrong_model_name")


def test_simple_http_model_control(registry):
    with running_server(registry, "--http-port", "0") as server:
        triton_client = httpclient.InferenceServerClient(url=m.http_url(server))
        try:
            assert len(triton_client.get_model_repository_index()) == MODELS
            load_override_unload(triton_client, lambda answer: answer["max_batch_size"])
            assert_load_fails(triton_client, "wrong_model_name")
        finally:
            triton_client.close()


def test_load_after_unload_serves_again(grpc_client):
    # Beyond the examples: the model comes back, with the batching it was given before it was unloaded or the
    # default (either is fine), and answers.
    grpc_client.unload_model("simple")
    grpc_client.load_model("simple")
    assert grpc_client.is_model_ready("simple")
    result = grpc_client.infer("simple", m.grpc_inputs(m.sample_inputs("simple", rows=2)))
    assert result.as_numpy("OUTPUT0").shape == (2, 16)
