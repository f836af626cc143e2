"""End to end: the CLI trains and publishes, the real server serves, tritonclient asks.

Predictions must equal scikit-learn's ``predict`` on the same rows: the test retrains in-process
with the same configuration (training is deterministic) to get the estimator to compare with.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as triton

from helpers import driftline, published_version, running_server
from driftline.trainer.train import TrainConfig, train

# (model name, estimator, target, small parameters so the suite stays quick)
CASES = [
    ("gb", "gradient_boosting", "price", {"n_estimators": 40}),
    ("hgb", "hist_gradient_boosting", "price", {"max_iter": 40}),
    ("rf", "random_forest", "price", {"n_estimators": 20, "max_depth": 8}),
    ("lin", "linear", "price", {}),
    ("logit", "logistic", "price_segment", {}),
    ("rfc", "random_forest", "price_segment", {"n_estimators": 20, "max_depth": 8}),
    ("hgbc", "hist_gradient_boosting", "price_segment", {"max_iter": 30}),
]
ROWS, SEED = 1500, 7


def config(name: str, estimator: str, target: str, params: dict) -> TrainConfig:
    return TrainConfig(model=name, estimator=estimator, rows=ROWS, seed=SEED, target=target, params=params)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    registry = tmp_path_factory.mktemp("trained") / "registry"
    for name, estimator, target, params in CASES:
        args = ["train", name, "--registry", str(registry), "--estimator", estimator, "--target", target,
                "--rows", str(ROWS), "--seed", str(SEED)]
        for key, value in params.items():
            args += ["--param", f"{key}={value}"]
        assert published_version(driftline(*args)) == 1
    with running_server(registry) as server:
        client = triton.InferenceServerClient(url=server.address)
        yield client
        client.close()


@pytest.mark.parametrize(("name", "estimator", "target", "params"), CASES, ids=[c[0] for c in CASES])
def test_predictions_match_scikit_learn(served, name, estimator, target, params):
    trained = train(config(name, estimator, target, params))
    rows = trained.dataset.X[trained.holdout_rows][:64]
    request = triton.InferInput("input", list(rows.shape), "FP32")
    request.set_data_from_numpy(rows)
    result = served.infer(name, [request], request_id="req-42")
    response = result.get_response()
    assert response.model_version == "1"
    assert response.id == "req-42"
    if trained.task == "regression":
        served_prices = result.as_numpy("prediction").reshape(-1)
        np.testing.assert_allclose(served_prices, trained.estimator.predict(rows), rtol=1e-4, atol=1e-3)
    else:
        np.testing.assert_array_equal(result.as_numpy("label").reshape(-1), trained.estimator.predict(rows))
        np.testing.assert_allclose(result.as_numpy("probabilities"), trained.estimator.predict_proba(rows),
                                   rtol=1e-4, atol=1e-5)


def test_metadata_lists_inputs_and_outputs(served):
    meta = served.get_model_metadata("gb")
    assert meta.name == "gb" and meta.versions == ["1"] and meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input", "FP32", [-1, 11])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("prediction", "FP32", [-1, 1]), ("attribution", "FP32", [-1, 11]), ("attribution_base", "FP32", [-1, 1])]
    classifier = served.get_model_metadata("logit")
    assert [(t.name, t.datatype, list(t.shape)) for t in classifier.outputs] == [
        ("label", "INT64", [-1, 1]), ("probabilities", "FP32", [-1, 3])]  # a logistic pipeline: no attributions


def test_health_and_server_metadata(served):
    assert served.is_server_live() and served.is_server_ready()
    assert served.is_model_ready("gb") and served.is_model_ready("gb", "1")
    assert not served.is_model_ready("gb", "2") and not served.is_model_ready("nope")
    server = served.get_server_metadata()
    assert server.name == "driftline" and "model_repository" in server.extensions


@pytest.mark.parametrize("datatype", ["FP64", "INT32", "INT64"])
def test_other_numeric_datatypes_are_converted(served, datatype):
    rows = np.array([[84, 400, 3, 1, 1, 18, 0, 1995, 3, 8, 1]], dtype={"FP64": np.float64, "INT32": np.int32,
                                                                      "INT64": np.int64}[datatype])
    request = triton.InferInput("input", list(rows.shape), datatype)
    request.set_data_from_numpy(rows)
    converted = served.infer("gb", [request]).as_numpy("prediction")
    reference = triton.InferInput("input", list(rows.shape), "FP32")
    reference.set_data_from_numpy(rows.astype(np.float32))
    np.testing.assert_array_equal(converted, served.infer("gb", [reference]).as_numpy("prediction"))


def test_only_requested_outputs_come_back(served):
    rows = np.ones((2, 11), dtype=np.float32)
    request = triton.InferInput("input", [2, 11], "FP32")
    request.set_data_from_numpy(rows)
    result = served.infer("logit", [request], outputs=[triton.InferRequestedOutput("probabilities")])
    assert [o.name for o in result.get_response().outputs] == ["probabilities"]
    assert result.as_numpy("probabilities").shape == (2, 3)


def test_statistics_and_repository_index(served):
    before = served.get_inference_statistics("gb").model_stats[0]
    request = triton.InferInput("input", [3, 11], "FP32")
    request.set_data_from_numpy(np.ones((3, 11), dtype=np.float32))
    served.infer("gb", [request])
    after = served.get_inference_statistics("gb").model_stats[0]
    assert after.inference_count == before.inference_count + 3
    assert after.execution_count == before.execution_count + 1
    assert after.inference_stats.success.count == before.inference_stats.success.count + 1
    index = {(m.name, m.version): m.state for m in served.get_model_repository_index().models}
    assert index[("gb", "1")] == "READY" and len(index) == len(CASES)
