"""driftline bench against a real server, and perf_analyzer (Triton's C++ client) against driftline.

No timing asserts: the machine is shared, so only counts, shapes and exit codes are checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import driftline, running_server

ROOT = Path(__file__).resolve().parent.parent
PERF_ANALYZER_ENV = ROOT / "benchmarks" / ".envs" / "perf_analyzer"
# perf_analyzer 2.47 aborts after printing its results when ModelStatistics' compute_input,
# compute_infer and compute_output counts differ (a Triton invariant driftline does not keep yet).
KNOWN_STATS_ABORT = "Server side statistics compute counts must be the same"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "800", "--param", "n_estimators=20")
    return root


@pytest.fixture(scope="module")
def server(registry: Path):
    with running_server(registry) as running:
        yield running


def bench(server, *args: str) -> dict:
    result = driftline("bench", "--server", server.address, "--model", "housing", "--server-pid",
                       str(server.process.pid), "--json", "--warmup-requests", "20", "--warmup", "120",
                       "--duration", "120", *args)  # bounded by the counts: the times only stop a hung run
    return json.loads(result.stdout)


def test_closed_loop_unary_counts(server):
    report = bench(server, "--concurrency", "8", "--requests", "300")
    assert report["issued"] == 300
    assert report["completed"] == 300
    assert report["errors_total"] == 0 and report["errors"] == {}
    assert report["warmup"]["completed"] == 20
    assert report["transport"] == "unary" and report["mode"] == "closed"
    assert report["input"] == {"name": "input", "datatype": "FP32", "width": 11}
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert report["infer_per_s"] > 0 and report["rows_per_s"] == report["infer_per_s"]
    assert report["server_cpu_s"] is not None and report["server_cpu_s"] >= 0
    assert report["server_processes"] >= 1
    assert report["client_cpu_us_per_request"] > 0


def test_named_outputs_are_asked_for_and_unknown_ones_fail(server):
    # --outputs drives the exact-attribution load of benchmarks/hot_path.py: every row's attributions asked for.
    report = bench(server, "--concurrency", "2", "--requests", "40", "--rows-per-request", "4",
                   "--outputs", "prediction,attribution")
    assert report["completed"] == 40 and report["errors_total"] == 0
    result = driftline("bench", "--server", server.address, "--model", "housing", "--json", "--warmup-requests", "0",
                       "--concurrency", "1", "--requests", "5", "--outputs", "no_such_output", check=False)
    refused = json.loads(result.stdout)
    assert result.returncode == 1 and refused["completed"] == 0 and refused["errors_total"] == 5
    assert "INVALID_ARGUMENT" in refused["errors"]


def test_streaming_rows_and_channels_counts(server):
    report = bench(server, "--stream", "--streams", "2", "--channels", "2", "--concurrency", "16",
                   "--rows-per-request", "4", "--requests", "200")
    assert report["transport"] == "stream"
    assert report["completed"] == 200 and report["errors_total"] == 0
    assert report["rows_per_s"] == pytest.approx(4 * report["infer_per_s"], abs=0.1)  # both rounded


def test_open_loop_counts(server):
    report = bench(server, "--open-loop", "--rate", "400", "--arrivals", "fixed", "--requests", "100")
    assert report["mode"] == "open"
    assert report["issued"] + report["dropped"] == 100
    assert report["completed"] == report["issued"] and report["errors_total"] == 0


def test_text_report(server):
    result = driftline("bench", "--server", server.address, "--model", "housing", "--requests", "50",
                       "--warmup-requests", "0", "--concurrency", "2", "--duration", "120")
    assert "completed  50 in" in result.stdout
    assert "errors     0" in result.stdout


@pytest.mark.parametrize("address", ["192.0.2.1:8001", "localhost:8001", "[::1]:8001", "127.0.0.1"])
def test_refuses_anything_but_loopback_ip(address):
    result = driftline("bench", "--server", address, "--requests", "1", check=False)
    assert result.returncode == 2
    assert "127.0.0.1" in result.stderr


def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """The binary (DRIFTLINE_PERF_ANALYZER, else benchmarks/.envs/perf_analyzer) and its library path."""
    configured = os.environ.get("DRIFTLINE_PERF_ANALYZER")
    binary = Path(configured) if configured else PERF_ANALYZER_ENV / "bin" / "perf_analyzer"
    if not binary.is_file():
        pytest.skip(f"perf_analyzer is not installed ({binary} missing): set DRIFTLINE_PERF_ANALYZER, or run "
                    "benchmarks/compare.py once, which installs it into benchmarks/.envs/perf_analyzer")
    env = dict(os.environ)
    cudart = sorted(binary.parent.parent.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    if cudart:  # it links libcudart even without a GPU
        env["LD_LIBRARY_PATH"] = ":".join(p for p in (str(cudart[0]), env.get("LD_LIBRARY_PATH")) if p)
    if shutil.which("ldd"):
        linked = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env).stdout
        missing = [line.split()[0] for line in linked.splitlines() if "not found" in line]
        if missing:
            pytest.skip(f"perf_analyzer cannot run here, missing {missing} (libb64.so.0d: apt-get install libb64-0d;"
                        " libcudart.so.12: pip install nvidia-cuda-runtime-cu12 beside it)")
    return binary, env


def test_perf_analyzer_drives_driftline(server, tmp_path):
    from driftline.cli.bench import sample_rows

    binary, env = perf_analyzer()
    # Real rows: perf_analyzer's random data fails driftline's input checks (e.g. fractional bedrooms).
    data = tmp_path / "rows.json"
    data.write_text(json.dumps({"data": [{"input": row} for row in sample_rows(16, 11, "housing", 0).tolist()]}))
    def measure(interval_ms: int, trials: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary), "-i", "grpc", "-u", server.address, "-m", "housing", "--concurrency-range", "4",
             "--measurement-interval", str(interval_ms), "--max-trials", str(trials), "--stability-percentage",
             "100", "--input-data", str(data)],
            capture_output=True, text=True, timeout=300, env=env)

    result = measure(1000, 4)
    if "Failed to obtain stable measurement" in result.stdout + result.stderr:
        # A shared machine can make latency swing by more than 100% between windows: what this test checks is
        # that perf_analyzer can drive driftline at all, so give it longer windows once.
        result = measure(3000, 10)
    output = result.stdout + result.stderr
    client = output.split("Client:", 1)
    assert len(client) == 2, output[-3000:]
    count = re.search(r"Request count: (\d+)", client[1])
    throughput = re.search(r"Throughput: ([\d.]+) infer/sec", client[1])
    assert count and int(count.group(1)) > 0, output[-3000:]
    assert throughput and float(throughput.group(1)) > 0, output[-3000:]
    if result.returncode != 0 and KNOWN_STATS_ABORT in output:
        pytest.xfail("perf_analyzer measured driftline, then aborted: ModelStatistics reports compute_infer but "
                     "not compute_input/compute_output counts, which Triton's tools require to be equal")
    assert result.returncode == 0, output[-3000:]
