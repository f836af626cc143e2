"""A model trained elsewhere: exported to ONNX in the test, imported with ``driftline publish``, served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tritonclient.grpc as triton
from skl2onnx import to_onnx
from sklearn.ensemble import ExtraTreesRegressor

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
