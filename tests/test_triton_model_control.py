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


def test_simple_grpc_model_control(registry):
    with running_server(registry, *m.serve_flags()) as server, \
            grpcclient.InferenceServerClient(url=server.address) as triton_client:
        assert len(triton_client.get_model_repository_index().models) == MODELS
        triton_client.load_model("simple")
        assert triton_client.is_model_ready("simple")
        with pytest.raises(InferenceServerException) as caught:
            triton_client.load_model("simple", config=NOT_JSON)
        assert "failed to load" in caught.value.message()
        triton_client.load_model("simple", config='{"max_batch_size":"16"}')
        assert triton_client.get_model_config("simple").config.max_batch_size == 16
        triton_client.unload_model("simple")
        assert not triton_client.is_model_ready("simple")

        long_path = "file:" + ("A" * 256)
        with pytest.raises(InferenceServerException) as caught:
            triton_client.load_model("simple", config="{}", files={long_path: b"a"})
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert long_path in caught.value.message()
        assert triton_client.is_server_live()

        with pytest.raises(InferenceServerException) as caught:
            triton_client.load_model("wrong_model_name")
        assert "failed to load" in caught.value.message()


def test_simple_http_model_control(registry):
    with running_server(registry, "--http-port", "0") as server:
        triton_client = httpclient.InferenceServerClient(url=m.http_url(server))
        try:
            assert len(triton_client.get_model_repository_index()) == MODELS
            triton_client.load_model("simple")
            assert triton_client.is_model_ready("simple")
            with pytest.raises(InferenceServerException) as caught:
                triton_client.load_model("simple", config=NOT_JSON)
            assert "failed to load" in caught.value.message()
            triton_client.load_model("simple", config='{"max_batch_size":"16"}')
            assert triton_client.get_model_config("simple")["max_batch_size"] == 16
            triton_client.unload_model("simple")
            assert not triton_client.is_model_ready("simple")
            with pytest.raises(InferenceServerException) as caught:
                triton_client.load_model("wrong_model_name")
            assert "failed to load" in caught.value.message()
        finally:
            triton_client.close()


def test_load_after_unload_serves_again(registry):
    # Beyond the examples: the model comes back, with the batching it was given before it was unloaded or the
    # default (either is fine), and answers.
    with running_server(registry, *m.serve_flags()) as server, \
            grpcclient.InferenceServerClient(url=server.address) as triton_client:
        triton_client.unload_model("simple")
        triton_client.load_model("simple")
        assert triton_client.is_model_ready("simple")
        result = triton_client.infer("simple", m.grpc_inputs(m.sample_inputs("simple", rows=2)))
        assert result.as_numpy("OUTPUT0").shape == (2, 16)
