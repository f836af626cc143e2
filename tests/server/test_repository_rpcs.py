"""Loading, unloading and corrupt artifacts, seen through the protocol."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from helpers import driftline, running_server

ROW = np.array([[84, 400, 3, 1, 1, 18, 0, 1995, 3, 8, 1]], dtype=np.float32)


def infer(client: triton.InferenceServerClient, model: str, version: str = "") -> triton.InferResult:
    request = triton.InferInput("input", list(ROW.shape), "FP32")
    request.set_data_from_numpy(ROW)
    return client.infer(model, [request], model_version=version)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    registry = tmp_path_factory.mktemp("repo") / "registry"
    for seed in ("1", "2"):
        driftline("train", "housing", "--registry", str(registry), "--rows", "500", "--seed", seed,
                  "--param", "n_estimators=10")
    driftline("train", "other", "--registry", str(registry), "--rows", "500", "--estimator", "linear")
    return registry


def corrupt(registry: Path, model: str, version: int) -> None:
    path = registry / model / str(version) / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_load_a_version_then_unload(two_versions: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    shutil.copytree(two_versions, registry)
    with running_server(registry, "--model", "housing:1") as server:
        client = triton.InferenceServerClient(url=server.address)
        assert infer(client, "housing").get_response().model_version == "1"
        client.load_model("housing", config=None)  # no version parameter: the latest
        assert infer(client, "housing").get_response().model_version == "2"
        with pytest.raises(InferenceServerException, match="version 1 is not loaded"):
            infer(client, "housing", "1")  # swapped out and released
        index = {(m.name, m.version): m.state for m in client.get_model_repository_index().models}
        assert index == {("housing", "1"): "UNAVAILABLE", ("housing", "2"): "READY", ("other", "1"): "UNAVAILABLE"}
        client.unload_model("housing")
        with pytest.raises(InferenceServerException, match="not available: unloaded"):
            infer(client, "housing")
        assert not client.is_model_ready("housing")
        client.close()


def test_corrupt_versions_at_start_leave_the_others_serving(two_versions: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    shutil.copytree(two_versions, registry)
    corrupt(registry, "housing", 2)  # with v1 intact the server would fall back to it (test_intact_fallback.py)
    corrupt(registry, "housing", 1)
    with running_server(registry) as server:
        client = triton.InferenceServerClient(url=server.address)
        with pytest.raises(InferenceServerException) as caught:
            infer(client, "housing")
        assert caught.value.status() == "StatusCode.UNAVAILABLE"
        assert "does not match its sha256" in caught.value.message()
        assert infer(client, "other").get_response().model_version == "1"
        assert not client.is_server_ready()
        client.close()
    assert any("cannot serve housing" in line for line in server.log)


def test_loading_a_corrupt_version_keeps_the_previous_one(two_versions: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    shutil.copytree(two_versions, registry)
    corrupt(registry, "housing", 2)
    with running_server(registry, "--model", "housing:1") as server:
        client = triton.InferenceServerClient(url=server.address)
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("housing")
        assert caught.value.status() == "StatusCode.DATA_LOSS"
        assert "version 2" in caught.value.message()
        assert infer(client, "housing").get_response().model_version == "1"
        client.close()


def test_explicitly_requested_corrupt_model_refuses_to_start(two_versions: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    shutil.copytree(two_versions, registry)
    corrupt(registry, "housing", 1)
    result = driftline("serve", "--registry", str(registry), "--port", "0", "--model", "housing:1", check=False)
    assert result.returncode == 2 and "does not match its sha256" in result.stderr
