"""`driftline serve` started as KServe starts a runtime answers KServe's clients and probes.

The runtime's args are taken from deploy/kserve/servingruntime.yaml itself ({{.Name}} filled in, the
ports swapped for free ones), and passed to the image's entrypoint script, as the kubelet would.
"""

from __future__ import annotations

import shutil
import signal
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy_support import ROOT, entrypoint_env, free_port, run_entrypoint
from helpers import driftline

RUNTIME = ROOT / "deploy" / "kserve" / "servingruntime.yaml"


def kserve_args(name: str, model_dir: Path, http_port: int, grpc_port: int) -> list[str]:
    """The ServingRuntime's container args as KServe renders them for an InferenceService called ``name``."""
    container = yaml.safe_load(RUNTIME.read_text())["spec"]["containers"][0]
    swaps = {"{{.Name}}": name, "/mnt/models": str(model_dir), "=8080": f"={http_port}",
             "=8081": f"={grpc_port}", "=8002": "=0"}
    rendered = []
    for arg in container["args"]:
        for old, new in swaps.items():
            arg = arg.replace(old, new)
        rendered.append(arg)
    return rendered


def test_the_runtime_passes_kserve_spellings():
    args = yaml.safe_load(RUNTIME.read_text())["spec"]["containers"][0]["args"]
    assert {"--model_name={{.Name}}", "--model_dir=/mnt/models", "--http_port=8080", "--grpc_port=8081"} <= set(args)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as refused:
        return refused.code


def health(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=10).status


def test_kserve_args_serve_a_downloaded_version_over_both_protocols(registry, tmp_path):
    # What the storage initializer leaves in /mnt/models for storageUri s3://.../registry/housing/1.
    mnt_models = tmp_path / "mnt" / "models"
    shutil.copytree(registry / "housing" / "1", mnt_models)
    http_port, grpc_port = free_port(), free_port()
    args = [*kserve_args("housing-isvc", mnt_models, http_port, grpc_port), "--model-version=1"]
    with run_entrypoint(*args, env=entrypoint_env(DRIFTLINE_HOST="127.0.0.1")) as server:
        assert server.port == grpc_port

        # KServe's probes: gRPC health checking for the server and the model; the protocol's HTTP health.
        assert health(grpc_port, "") == health_pb2.HealthCheckResponse.SERVING
        assert health(grpc_port, "housing-isvc") == health_pb2.HealthCheckResponse.SERVING
        base = f"http://127.0.0.1:{http_port}/v2"
        assert http_status(f"{base}/health/live") == 200
        assert http_status(f"{base}/health/ready") == 200
        assert http_status(f"{base}/models/housing-isvc/ready") == 200
        assert http_status(f"{base}/models/no-such-model/ready") != 200

        # The same rows through tritonclient.http on the HTTP port and tritonclient.grpc on the gRPC port.
        over_http = httpclient.InferenceServerClient(url=f"127.0.0.1:{http_port}")
        over_grpc = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
        try:
            assert over_http.is_model_ready("housing-isvc") and over_grpc.is_model_ready("housing-isvc")
            metadata = over_http.get_model_metadata("housing-isvc")
            assert metadata["versions"] == ["1"]
            width = int(metadata["inputs"][0]["shape"][1])
            rows = np.random.default_rng(0).uniform(1, 5, size=(8, width)).astype(np.float32)
            http_input = httpclient.InferInput(metadata["inputs"][0]["name"], list(rows.shape), "FP32")
            http_input.set_data_from_numpy(rows)
            grpc_input = grpcclient.InferInput(metadata["inputs"][0]["name"], list(rows.shape), "FP32")
            grpc_input.set_data_from_numpy(rows)
            by_http = over_http.infer("housing-isvc", [http_input]).as_numpy("prediction")
            by_grpc = over_grpc.infer("housing-isvc", [grpc_input]).as_numpy("prediction")
        finally:
            over_http.close()
            over_grpc.close()
        assert by_http.shape[0] == 8 and np.isfinite(by_http).all()
        np.testing.assert_array_equal(by_http, by_grpc)

        # SIGTERM reaches the server itself (the entrypoint execs it), which stops gracefully.
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert (mnt_models / "model.onnx").is_file()  # the view is removed, never what it points at


def test_kserve_args_serve_a_model_folder_at_production(registry):
    # storageUri pvc://claim/housing: the model folder, mounted as it is; served at its production version.
    args = kserve_args("housing-pvc", registry / "housing", free_port(), free_port())
    with run_entrypoint(*args, env=entrypoint_env(DRIFTLINE_HOST="127.0.0.1")) as server:
        with grpcclient.InferenceServerClient(url=server.address) as client:
            assert client.get_model_metadata("housing-pvc").versions == ["1"]
        assert health(server.port, "") == health_pb2.HealthCheckResponse.SERVING


def test_a_registry_root_serves_the_model_named(registry):
    args = kserve_args("housing", registry, free_port(), free_port())
    with run_entrypoint(*args, env=entrypoint_env(DRIFTLINE_HOST="127.0.0.1")) as server:
        with grpcclient.InferenceServerClient(url=server.address) as client:
            assert client.get_model_metadata("housing").versions == ["1"]


@pytest.mark.parametrize("layout", ["empty", "not-a-model"])
def test_a_model_dir_without_the_model_is_refused_in_words(registry, tmp_path, layout):
    folder = tmp_path / "models"
    folder.mkdir()
    if layout == "not-a-model":
        (folder / "model.onnx").write_bytes(b"not a registry version")
    result = driftline("serve", "--model_name=housing", f"--model_dir={folder}", "--grpc_port=0", "--http_port=0",
                       "--no-metrics", check=False)
    assert result.returncode == 2
    assert "holds no model 'housing'" in result.stderr and "storageUri" in result.stderr


@pytest.mark.parametrize(("args", "said"), [
    (["--model-version=3"], "pass --model-dir too"),
    (["--model-dir={dir}", "--model=a", "--model=b"], "serves one model"),
    (["--model-dir={dir}"], "serves one model"),
])
def test_model_dir_flags_misused_are_refused_in_words(registry, args, said):
    args = [a.format(dir=registry / "housing" / "1") for a in args]
    result = driftline("serve", *args, "--grpc_port=0", "--http_port=0", "--no-metrics", check=False)
    assert result.returncode == 2 and said in result.stderr, result.stderr
