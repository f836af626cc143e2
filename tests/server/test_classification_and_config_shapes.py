"""Issue 11, point 4, continued: Triton's classification extension, and ModelConfig shapes that match the
responses (by Triton's rules), for imported ONNX models and a driftline-trained classifier."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

import onnx_models as m
from helpers import running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_server(m.example_registry(tmp_path_factory), *m.serve_flags()) as running:
        yield running


def parse(cell: bytes) -> tuple[float, int, str | None]:
    """One classification element: "score:index" or "score:index:label"."""
    parts = cell.decode().split(":")
    assert len(parts) in (2, 3), cell
    return float(parts[0]), int(parts[1]), parts[2] if len(parts) == 3 else None


def classify(client, model: str, k: int, rows: int = 4):
    inputs = m.grpc_inputs(m.sample_inputs(model, rows=rows))
    plain = client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput("probabilities")])
    ranked = client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=k)])
    return plain.as_numpy("probabilities"), ranked


@pytest.mark.parametrize("k", [1, 2, 3])
def test_classification_of_an_imported_model_without_labels(client, k):
    probabilities, ranked = classify(client, "softmax3", k)
    (output,) = ranked.get_response().outputs
    assert (output.name, output.datatype, list(output.shape)) == ("probabilities", "BYTES", [4, k])
    cells = ranked.as_numpy("probabilities")
    for row, expected in zip(cells, probabilities, strict=True):
        parsed = [parse(cell) for cell in row]
        assert all(label is None for _, _, label in parsed), row  # no classes known: "score:index"
        order = np.argsort(-expected, kind="stable")[:k]
        assert [index for _, index, _ in parsed] == order.tolist()
        np.testing.assert_allclose([score for score, _, _ in parsed], expected[order], rtol=1e-5, atol=1e-6)
        assert [score for score, _, _ in parsed] == sorted((score for score, _, _ in parsed), reverse=True)


def test_classification_of_a_trained_classifier_carries_its_labels(client):
    probabilities, ranked = classify(client, m.CLASSIFIER, 2, rows=3)
    cells = ranked.as_numpy("probabilities")
    assert cells.shape == (3, 2)
    for row, expected in zip(cells, probabilities, strict=True):
        parsed = [parse(cell) for cell in row]
        order = np.argsort(-expected, kind="stable")[:2]
        assert [index for _, index, _ in parsed] == order.tolist()
        # The classes of the synthetic price segments are 0, 1, 2: the label of class i is "i".
        assert [label for _, _, label in parsed] == [str(i) for i in order]
        np.testing.assert_allclose([score for score, _, _ in parsed], expected[order], rtol=1e-5, atol=1e-6)


def test_classification_beside_the_plain_tensor(client):
    inputs = m.grpc_inputs(m.sample_inputs(m.CLASSIFIER, rows=2))
    outputs = [grpcclient.InferRequestedOutput("label"),
               grpcclient.InferRequestedOutput("probabilities", class_count=1)]
    result = client.infer(m.CLASSIFIER, inputs, outputs=outputs)
    top = [parse(row[0]) for row in result.as_numpy("probabilities")]
    assert [label for _, _, label in top] == [str(v) for v in result.as_numpy("label").reshape(-1)]


def test_more_classes_than_the_output_has_are_refused(client):
    with pytest.raises(InferenceServerException) as caught:
        classify(client, "softmax3", 4)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "probabilities" in caught.value.message() and "4" in caught.value.message()


# -- ModelConfig shapes ---------------------------------------------------------------------------------------
def api_dims(tensor) -> list[int]:
    """The shape (without a batch dimension) clients see for a ModelConfig input or output: Triton returns an
    output reshaped from ``reshape.shape`` (what the model produces) to ``dims`` (core src/infer_response.cc,
    InferenceResponse::Output::Reshape), so ``dims`` is what the response carries, reshape or not."""
    return list(tensor.dims)


def agrees(dims: list[int], shape: list[int]) -> bool:
    return len(dims) == len(shape) and all(d in (-1, s) for d, s in zip(dims, shape, strict=True))


def test_classifier_label_config_matches_its_responses(client):
    """Triton describes an output that is only a batch dimension (driftline's label, [N] from onnxruntime) as
    dims [1] with reshape { shape: [] } (onnxruntime_backend src/onnxruntime.cc, AutoCompleteIO: "If dims are empty
    then must use a reshape"), and by that config answers it as [N, 1]. Metadata says the same shape."""
    config = client.get_model_config(m.CLASSIFIER).config
    assert config.max_batch_size > 0
    label = next(o for o in config.output if o.name == "label")
    assert list(label.dims) == [1] and label.HasField("reshape") and list(label.reshape.shape) == []
    result = client.infer(m.CLASSIFIER, m.grpc_inputs(m.sample_inputs(m.CLASSIFIER, rows=5)))
    shapes = {o.name: list(o.shape) for o in result.get_response().outputs}
    assert shapes["label"] == [5, *api_dims(label)]  # [5, 1]
    probabilities = next(o for o in config.output if o.name == "probabilities")
    assert list(probabilities.dims) == [3] and shapes["probabilities"] == [5, 3]
    metadata = {t.name: list(t.shape) for t in client.get_model_metadata(m.CLASSIFIER).outputs}
    assert metadata["label"] == [-1, 1] and metadata["probabilities"] == [-1, 3]


@pytest.mark.parametrize("model", list(m.BUILDERS) + [m.CLASSIFIER])
def test_config_shapes_match_requests_and_responses(client, model):
    config = client.get_model_config(model).config
    metadata = client.get_model_metadata(model)
    batching = config.max_batch_size > 0
    assert batching == (model not in ("fixed16", "densenet_onnx")), config.max_batch_size
    samples = m.sample_inputs(model, rows=3)
    assert [i.name for i in config.input] == [name for name, _, _ in samples]
    for tensor, (_, datatype, data) in zip(config.input, samples, strict=True):
        shape = list(data.shape)
        assert agrees(api_dims(tensor), shape[1:] if batching else shape), (tensor, shape)
        assert model_config_pb2.DataType.Name(tensor.data_type) == (
            "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")
    result = client.infer(model, m.grpc_inputs(samples))
    answered = {o.name: o for o in result.get_response().outputs}
    assert list(answered) == [o.name for o in config.output] == [o.name for o in metadata.outputs]
    for tensor, meta in zip(config.output, metadata.outputs, strict=True):
        shape = list(answered[tensor.name].shape)
        assert agrees(api_dims(tensor), shape[1:] if batching else shape), (tensor, shape)
        assert agrees(list(meta.shape), shape), (meta, shape)
        assert meta.datatype == answered[tensor.name].datatype
