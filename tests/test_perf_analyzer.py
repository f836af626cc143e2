"""The README's perf_analyzer command line against a freshly trained model, with perf_analyzer's own random data.

perf_analyzer (Triton's C++ load generator) is not a Python package: it ships in some tritonclient wheels
(``benchmarks/compare.py`` installs the 2.47.0 one into ``benchmarks/.envs/perf_analyzer``). Without it, or
without the shared libraries it needs, the test is skipped and says why.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import driftline, running_server

ROOT = Path(__file__).resolve().parent.parent
# The line README.md documents (only the address differs: the test's server listens on a free port).
README_COMMAND = "perf_analyzer -m housing -i grpc -u localhost:8001"
# Keep the run short: one concurrency level, short windows, stability not required (this is not a benchmark).
SHORT_RUN = ["--measurement-interval", "1000", "--max-trials", "3", "--stability-percentage", "999"]


def perf_analyzer() -> tuple[str, dict[str, str]]:
    """The perf_analyzer binary and the environment it runs in, or skip."""
    candidates = [shutil.which("perf_analyzer"), str(Path(sys.executable).parent / "perf_analyzer"),
                  str(ROOT / "benchmarks" / ".envs" / "perf_analyzer" / "bin" / "perf_analyzer")]
    binary = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if binary is None:
        pytest.skip("perf_analyzer is not installed (benchmarks/compare.py installs it from tritonclient 2.47.0)")
    env = dict(os.environ)
    # The wheel's binary links libcudart; the nvidia-cuda-runtime wheel beside it provides one.
    cudart = next(Path(binary).parent.parent.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"), None)
    if cudart is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(cudart), env.get("LD_LIBRARY_PATH")]))
    probe = subprocess.run([binary, "--version"], capture_output=True, text=True, env=env, timeout=60)
    if "error while loading shared libraries" in probe.stderr:
        pytest.skip(f"perf_analyzer cannot start here: {probe.stderr.strip()}")
    return binary, env


def test_readme_perf_analyzer_line_with_random_data(tmp_path: Path) -> None:
    binary, env = perf_analyzer()
    registry = tmp_path / "registry"
    driftline("train", "housing", "--registry", str(registry), "--rows", "1000", "--param", "n_estimators=10")
    with running_server(registry) as server:
        argv = shlex.split(README_COMMAND.replace("localhost:8001", server.address))
        result = subprocess.run([binary, *argv[1:], *SHORT_RUN], capture_output=True, text=True, env=env,
                                timeout=300)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "Throughput:" in output, output
        report = json.loads(driftline("drift", "housing", "--server", server.address, "--json").stdout)
    validation = report["validation"]
    # Random floats in [0, 1) break the inferred limits (whole bedrooms, the training range): flagged, served.
    assert validation["requests_rejected"] == 0 and validation["rows_flagged"] > 0
    assert validation["counts"]["bedrooms"]["not_integer"] > 0
