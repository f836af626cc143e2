"""One owner per port: a second server on a served port, or on any busy port, fails with one clean line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as triton

from helpers import driftline, running_server

REFUSAL_TIMEOUT_S = 120  # a refused server exits long before; one that starts anyway would serve forever


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ports") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "400", "--param", "n_estimators=5")
    return root


def serve(registry: Path, *args: str) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen([sys.executable, "-m", "driftline", "serve", "--registry", str(registry), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=REFUSAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.terminate()
        out, err = process.communicate()
        raise AssertionError(f"the second server started instead of refusing:\n{out}\n{err}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def assert_clean_refusal(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode == 2, result
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "add_port.cc" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_server_on_a_served_port_is_refused(registry: Path, workers: str):
    with running_server(registry, "--workers", "2", "--no-http") as first:
        result = serve(registry, "--port", str(first.port), "--workers", workers, "--no-http", "--no-metrics")
        assert_clean_refusal(result, f"cannot serve gRPC on 127.0.0.1:{first.port}")
        for _ in range(8):  # and the first server still answers every new connection
            client = triton.InferenceServerClient(url=first.address)
            assert client.is_model_ready("housing")
            client.close()


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("which", ["--port", "--http-port", "--metrics-port"])
def test_every_busy_port_is_one_clean_line(registry: Path, workers: str, which: str):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        ports = {"--port": "0", "--http-port": "0", "--metrics-port": "0", which: busy}
        result = serve(registry, "--workers", workers, *(a for pair in ports.items() for a in pair))
    assert_clean_refusal(result, f"on 127.0.0.1:{busy}: the port is in use")
