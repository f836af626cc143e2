"""A model trained elsewhere: exported to ONNX in the test, imported with ``driftline publish``, served."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest
import skl2onnx
import tritonclient.grpc as triton
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.ensemble import ExtraTreesRegressor
from tritonclient.utils import InferenceServerException

from driftline.registry.schema import Schema
from driftline.trainer.data import read_table
from driftline.trainer.publish import estimator_of
from driftline.trainer.validation import prepare_training_data
from helpers import driftline, published_version, running_server


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory):
    """An ExtraTrees model (not one driftline trains) with its own input name, and its reference data."""
    folder = tmp_path_factory.mktemp("external")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 4)).astype(np.float32)
    y = X[:, 0] * 3 + np.sin(X[:, 1]) - X[:, 2] * X[:, 3]
    model = ExtraTreesRegressor(n_estimators=15, random_state=0).fit(X, y)
    onnx_model = to_onnx(model, X[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    (folder / "model.onnx").write_bytes(onnx_model.SerializeToString())
    frame = pl.DataFrame({"alpha": X[:, 0], "beta": X[:, 1], "gamma": X[:, 2], "delta": X[:, 3], "y": y})
    frame.write_csv(folder / "reference.csv")
    return folder, model, X


def test_published_onnx_is_served_like_the_original(external, tmp_path: Path):
    folder, model, X = external
    registry = tmp_path / "registry"
    result = driftline("publish", "extra", "--onnx", str(folder / "model.onnx"),
                       "--reference", str(folder / "reference.csv"), "--target", "y", "--registry", str(registry))
    assert published_version(result) == 1
    with running_server(registry) as server:
        client = triton.InferenceServerClient(url=server.address)
        meta = client.get_model_metadata("extra")
        (input_meta,) = meta.inputs
        assert (input_meta.name, input_meta.datatype, list(input_meta.shape)) == ("X", "FP32", [-1, 4])
        # A tree ensemble from elsewhere gets node cover at publish, hence exact attributions too.
        assert [o.name for o in meta.outputs][1:] == ["attribution", "attribution_base"]
        assert [o.datatype for o in meta.outputs] == ["FP32"] * 3
        request = triton.InferInput("X", [50, 4], "FP32")
        request.set_data_from_numpy(X[:50])
        result = client.infer("extra", [request])
        assert result.get_response().model_version == "1"
        output = meta.outputs[0].name
        np.testing.assert_allclose(result.as_numpy(output).reshape(-1), model.predict(X[:50]), rtol=1e-4, atol=1e-5)
        client.close()


def test_publish_refuses_reference_data_of_the_wrong_width(external, tmp_path: Path):
    folder, _, _ = external
    result = driftline("publish", "extra", "--onnx", str(folder / "model.onnx"),
                       "--reference", str(folder / "reference.csv"), "--registry", str(tmp_path / "r"), check=False)
    assert result.returncode == 2
    assert "takes 4 features but the reference data has 5 columns" in result.stderr
    assert not (tmp_path / "r" / "extra").exists() or not any((tmp_path / "r" / "extra").iterdir())


def test_publish_refuses_a_file_that_is_not_onnx(tmp_path: Path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"not a model")
    reference = tmp_path / "ref.csv"
    pl.DataFrame({"a": [1.0]}).write_csv(reference)
    result = driftline("publish", "m", "--onnx", str(bogus), "--reference", str(reference),
                       "--registry", str(tmp_path / "r"), check=False)
    assert result.returncode == 2 and "not a valid ONNX model" in result.stderr


def test_published_onnx_gets_the_protection_of_a_trained_model(external, tmp_path: Path):
    """The schema is inferred from the reference by the trainer's function, --schema declares limits on top, the
    server refuses NaN, inf and declared limits and flags values far out, and lineage names the estimator."""
    folder, _, X = external
    registry = tmp_path / "registry"
    (tmp_path / "limits.yaml").write_text("alpha: {min: -10}\n")
    driftline("publish", "extra", "--onnx", str(folder / "model.onnx"), "--reference", str(folder / "reference.csv"),
              "--target", "y", "--schema", str(tmp_path / "limits.yaml"), "--registry", str(registry))
    stored = Schema.from_json((registry / "extra" / "1" / "schema.json").read_text())
    reference = read_table(folder / "reference.csv").drop("y")
    inferred = prepare_training_data(reference, reference.columns, overrides={"alpha": {"min": -10}}).schema
    assert stored == inferred and stored.names == ["alpha", "beta", "gamma", "delta"]
    assert stored.feature("alpha").declared == ("min",) and stored.feature("beta").min is None
    meta = json.loads((registry / "extra" / "1" / "metadata.json").read_text())
    assert meta["estimator"] == f"ExtraTreesRegressor (TreeEnsembleRegressor, skl2onnx {skl2onnx.__version__})"
    assert meta["extra"]["data_quality"]["rows"] == len(X)
    shown = driftline("schema", "extra", "--registry", str(registry)).stdout
    assert "alpha" in shown and "[-10, -] (declared)" in shown

    with running_server(registry) as server:
        client = triton.InferenceServerClient(url=server.address)

        def send(row: list[float]):
            request = triton.InferInput("X", [1, 4], "FP32")
            request.set_data_from_numpy(np.array([row], dtype=np.float32))
            return client.infer("extra", [request])

        for row, message in (([np.nan, 0, 0, 0], "feature 'alpha': the value is missing"),
                             ([0, np.inf, 0, 0], "feature 'beta': value inf is not finite"),
                             ([0, 0, -np.inf, 0], "feature 'gamma': value -inf is not finite"),
                             ([-20, 0, 0, 0], "feature 'alpha': value -20 is below the minimum -10")):
            with pytest.raises(InferenceServerException) as refused:
                send(row)
            assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert message in refused.value.message()
        far = send([0, 0, 0, 100.0])  # 100 standard deviations out: served, flagged
        assert far.get_response().parameters["driftline_flagged_rows"].string_param == "0"
        assert "driftline_flagged_rows" not in send([0.1, 0.2, 0.3, 0.4]).get_response().parameters
        client.close()


def test_publish_stops_on_reference_rows_breaking_declared_limits(external, tmp_path: Path):
    folder, _, X = external
    (tmp_path / "limits.yaml").write_text("alpha: {min: 0}\n")
    args = ["publish", "extra", "--onnx", str(folder / "model.onnx"), "--reference", str(folder / "reference.csv"),
            "--target", "y", "--schema", str(tmp_path / "limits.yaml"), "--registry", str(tmp_path / "r")]
    stopped = driftline(*args, check=False)
    assert stopped.returncode == 2 and "alpha: below_min" in stopped.stderr
    assert not (tmp_path / "r" / "extra" / "1").exists()
    driftline(*args, "--drop-invalid")
    meta = json.loads((tmp_path / "r" / "extra" / "1" / "metadata.json").read_text())
    assert meta["data_rows"] == int((X[:, 0] >= 0).sum())


def test_estimator_is_read_from_the_graph() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    linear = helper.make_node("LinearRegressor", ["x"], ["y"], domain="ai.onnx.ml", coefficients=[1.0, 2.0])
    model = helper.make_model(helper.make_graph([linear], "main_graph", [x], [y]), producer_name="onnxmltools",
                              producer_version="1.12.0")
    assert estimator_of(model) == "LinearRegressor (onnxmltools 1.12.0)"
    model.producer_name = "skl2onnx"
    model.graph.name = "ONNX(Ridge)"
    assert estimator_of(model) == "Ridge (LinearRegressor, skl2onnx 1.12.0)"
    relu = helper.make_node("Relu", ["x"], ["y"])
    net = helper.make_model(helper.make_graph([relu], "ONNX(Ridge)", [x], [y]), producer_name="pytorch")
    assert estimator_of(net) == "ONNX graph (pytorch)"  # a graph name is trusted only from skl2onnx
    onnx.checker.check_model(net)
