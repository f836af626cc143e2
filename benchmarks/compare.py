"""driftline against MLServer, PyTriton and KServe on one model, one machine, one client.

    .venv/bin/python benchmarks/compare.py            # ~8 minutes on 2 cores
    .venv/bin/python benchmarks/compare.py --quick    # ~3 minutes, shorter phases, fewer chart points

One model: the synthetic housing gradient-boosting model that ``driftline train`` makes (plus a
heavier one, 500 trees of depth 8, for the batching rows). Every server runs onnxruntime on the CPU
with one intra-op thread and listens on 127.0.0.1; every row is measured by the same client,
``driftline bench`` (closed loop, concurrency 32, one row per request unless the row says
otherwise), in its own process, with the server's CPU (its whole process tree, from /proc) and the
client's CPU reported beside every figure. The peers are installed on first use into their own
virtual environments under benchmarks/.envs/ (one that cannot be installed is skipped, and the
results say so). perf_analyzer (Triton's C++ load generator) measures driftline at the same
settings, to show whether the Python client limits the figures.

Writes benchmarks/RESULTS.md (the part between its compare markers; the rest of the file, the
reading and the pre-batching baseline, is kept), benchmarks/latency_vs_throughput.png and
benchmarks/out/compare.json. Every run is bounded: each phase by --duration (or requests), each
server start by a timeout, each subprocess by a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import HOST, OUT, PEERS, EnvUnavailable, Server  # noqa: E402

from driftline.cli.bench import tree_cpu_seconds  # noqa: E402

MODEL = "housing"
HEAVY = "housing_heavy"
HEAVY_PARAMS = ("n_estimators=500", "max_depth=8")
CONCURRENCY = 32
RESULTS = harness.BENCH_DIR / "RESULTS.md"
CHART = harness.BENCH_DIR / "latency_vs_throughput.png"
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"

PEER_REQUIREMENTS = {
    "mlserver": ["mlserver==1.7.1", "uvloop<0.22", "onnxruntime", "numpy"],
    "pytriton": ["nvidia-pytriton==0.7.0", "onnxruntime", "numpy"],
    "kserve": ["kserve==0.21.0", "onnxruntime", "numpy"],
    "perf_analyzer": ["tritonclient==2.47.0", "nvidia-cuda-runtime-cu12"],
}


@dataclass
class Row:
    key: str
    label: str
    server: str  # how the server ran, for the table
    report: dict | None = None
    note: str = ""
    skipped: str = ""  # why there is no figure


@dataclass
class Run:
    args: argparse.Namespace
    rows: list[Row] = field(default_factory=list)
    sweeps: dict[str, list[dict]] = field(default_factory=dict)  # chart line -> reports by concurrency
    skipped: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {line}", flush=True)
        self.log.append(line)

    def phase_args(self, *extra: str) -> list[str]:
        a = self.args
        return ["--duration", str(a.duration), "--requests", str(a.requests), "--warmup", str(a.warmup),
                "--warmup-requests", str(a.warmup_requests), *extra]

    def measure(self, key: str, label: str, server: Server, server_text: str, *extra: str,
                model: str = MODEL, note: str = "") -> dict | None:
        report = harness.bench(server, model, *self.phase_args("--concurrency", str(CONCURRENCY), *extra))
        self.rows.append(Row(key, label, server_text, report, note))
        self.say(f"  {label:<44} {report['infer_per_s']:>9,.0f}/s  p50 {report['latency_ms']['p50'] or 0:6.2f} ms  "
                 f"server {report['server_cpu_us_per_request'] or 0:5.0f} us/req  "
                 f"client {report['client_cpu_us_per_request'] or 0:4.0f} us/req  errors {report['errors_total']}")
        return report

    def sweep(self, line: str, server: Server, *extra: str, levels: tuple[int, ...] | None = None,
              at_32: dict | None = None) -> None:
        """Chart points: the same target at other concurrencies (short phases)."""
        a = self.args
        points = [at_32] if at_32 else []
        for c in levels or a.sweep:
            report = harness.bench(server, MODEL, "--concurrency", str(c), "--duration", str(a.sweep_duration),
                                   "--requests", str(a.requests), "--warmup", str(min(a.warmup, 1.0)),
                                   "--warmup-requests", "200", *extra)
            points.append(report)
            self.say(f"    sweep {line:<28} c={c:<3} {report['infer_per_s']:>9,.0f}/s  "
                     f"p50 {report['latency_ms']['p50'] or 0:6.2f} ms  p99 {report['latency_ms']['p99'] or 0:6.2f} ms")
        self.sweeps[line] = sorted(points, key=lambda r: r["config"]["concurrency"])

    def skip(self, key: str, label: str, server_text: str, why: str) -> None:
        self.rows.append(Row(key, label, server_text, skipped=why))
        self.say(f"  {label}: skipped: {why}")


# -- the parts --------------------------------------------------------------------------------


def part_empty(run: Run) -> None:
    argv = [sys.executable, str(harness.BENCH_DIR / "empty_server.py"), "--port", "0", "--model", MODEL]
    with harness.running("empty", argv, model=MODEL) as server:
        text = "benchmarks/empty_server.py (grpc.aio, no model)"
        unary = run.measure("empty_unary", "empty grpc.aio ModelInfer handler", server, text)
        run.measure("empty_stream", "empty grpc.aio ModelStreamInfer handler", server, text, "--stream")
        run.sweep("empty unary handler", server, levels=(1, *run.args.sweep), at_32=unary)


def part_driftline(run: Run, registry: Path) -> None:
    serve = harness.driftline_serve_argv
    text = "driftline serve --workers 1 (batching defaults)"
    with harness.running("driftline", serve(registry, MODEL, "--workers", "1"), model=MODEL) as server:
        unary = run.measure("dl_unary", "driftline unary, batched, --workers 1", server, text)
        stream = run.measure("dl_stream", "driftline streaming (1 stream, 32 in flight)", server, text, "--stream")
        run.measure("dl_rows64", "driftline unary, 64 rows/request", server, text, "--rows-per-request", "64")
        run.sweep("driftline unary", server, levels=(1, *run.args.sweep), at_32=unary)
        run.sweep("driftline streaming", server, "--stream", at_32=stream)
        perf_analyzer(run, server)
    text = "driftline serve --workers 1 --max-batch-size 1"
    with harness.running("driftline", serve(registry, MODEL, "--workers", "1", "--max-batch-size", "1"),
                         model=MODEL) as server:
        run.measure("dl_unbatched", "driftline unary, unbatched (--max-batch-size 1)", server, text)
    text = "driftline serve --workers 2"
    with harness.running("driftline", serve(registry, MODEL, "--workers", "2"), model=MODEL) as server:
        run.measure("dl_workers2", "driftline unary, batched, --workers 2", server, text, "--channels", "4",
                    note="4 channels, so the kernel spreads connections over both workers")
        run.measure("dl_workers2_stream", "driftline streaming, --workers 2", server, text, "--stream",
                    "--streams", "2", "--channels", "2", note="2 streams on 2 connections (16 in flight each)")
    for batching, label, extra in (("batched", "batched", ()), ("unbatched", "unbatched", ("--max-batch-size", "1"))):
        text = f"driftline serve --workers 1 {' '.join(extra)}".strip()
        with harness.running("driftline", serve(registry, HEAVY, "--workers", "1", *extra), model=HEAVY) as server:
            run.measure(f"heavy_{batching}", f"heavy model (500 trees, depth 8), {label}", server, text,
                        model=HEAVY)


def part_ort(run: Run, registry: Path) -> None:
    for model in (MODEL, HEAVY):
        argv = [sys.executable, str(harness.BENCH_DIR / "ort_ceiling.py"), "--model",
                str(harness.latest_model_file(registry, model)), "--batch", "1,64", "--seconds",
                str(max(run.args.duration / 3, 1.0))]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
        run.extra[f"ort_{model}"] = json.loads(result.stdout)
        run.extra[f"ort_{model}"]["command"] = harness.display_command(argv)
        for r in run.extra[f"ort_{model}"]["results"]:
            run.say(f"  in-process onnxruntime {model} batch {r['batch']}: {r['calls_per_s']:,.0f} calls/s, "
                    f"{r['rows_per_s']:,.0f} rows/s, {r['cpu_us_per_call']:.1f} us CPU/call")


def part_mlserver(run: Run, model_file: Path) -> None:
    try:
        python = harness.ensure_env("mlserver", PEER_REQUIREMENTS["mlserver"])
    except EnvUnavailable as exc:
        run.skipped["mlserver"] = str(exc)
        for key, label in (("ml_adaptive", "MLServer, adaptive batching"), ("ml_off", "MLServer, no batching")):
            run.skip(key, label, "mlserver 1.7.1", str(exc))
        return
    for key, batching in (("ml_adaptive", True), ("ml_off", False)):
        home = OUT / f"mlserver-{key}"
        (home / MODEL).mkdir(parents=True, exist_ok=True)
        port = harness.free_port()
        settings = {"host": HOST, "grpc_port": port, "http_port": harness.free_port(),
                    "metrics_port": harness.free_port(), "metrics_endpoint": None, "parallel_workers": 0,
                    "debug": False}
        model_settings = {
            "name": MODEL, "implementation": "mlserver_onnx.OnnxModel",
            "parameters": {"uri": str(model_file), "version": "1"},
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 11]}],
            "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}],
            "max_batch_size": CONCURRENCY if batching else 0, "max_batch_time": 0.0005 if batching else 0.0,
        }
        (home / "settings.json").write_text(json.dumps(settings, indent=2))
        (home / MODEL / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        argv = [str(python.parent / "mlserver"), "start", str(home)]
        text = ("mlserver 1.7.1, custom onnxruntime runtime, parallel_workers 0, metrics off, "
                + ("adaptive batching max 32 / 0.5 ms" if batching else "no adaptive batching"))
        label = "MLServer, adaptive batching" if batching else "MLServer, no batching"
        with harness.running("mlserver", argv, model=MODEL, port=port, cwd=home,
                             env={"PYTHONPATH": str(PEERS)}) as server:
            report = run.measure(key, label, server, text)
            if batching:
                run.sweep("MLServer (adaptive batching)", server, at_32=report)
    run.extra["mlserver_note"] = mlserver_workers_note(run, python, model_file)


def mlserver_workers_note(run: Run, python: Path, model_file: Path) -> str:
    """parallel_workers 0 was chosen because it was MLServer's best here; the default (1) is measured too."""
    home = OUT / "mlserver-default-workers"
    (home / MODEL).mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    settings = {"host": HOST, "grpc_port": port, "http_port": harness.free_port(), "metrics_port": harness.free_port(),
                "metrics_endpoint": None, "debug": False}
    model_settings = {"name": MODEL, "implementation": "mlserver_onnx.OnnxModel",
                      "parameters": {"uri": str(model_file), "version": "1"},
                      "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 11]}],
                      "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}],
                      "max_batch_size": CONCURRENCY, "max_batch_time": 0.0005}
    (home / "settings.json").write_text(json.dumps(settings, indent=2))
    (home / MODEL / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    text = "mlserver 1.7.1, parallel_workers 1 (its default: inference in a worker process), adaptive batching"
    with harness.running("mlserver", [str(python.parent / "mlserver"), "start", str(home)], model=MODEL, port=port,
                         cwd=home, env={"PYTHONPATH": str(PEERS)}) as server:
        run.measure("ml_workers1", "MLServer, adaptive batching, parallel_workers 1", server, text)
    return text


def part_pytriton(run: Run, model_file: Path) -> None:
    label = "PyTriton, dynamic batching (max 64, 0.5 ms)"
    try:
        python = harness.ensure_env("pytriton", PEER_REQUIREMENTS["pytriton"])
    except EnvUnavailable as exc:
        run.skipped["pytriton"] = str(exc)
        run.skip("pytriton", label, "nvidia-pytriton 0.7.0", str(exc))
        return
    port = harness.free_port()
    argv = [str(python), str(PEERS / "pytriton_server.py"), "--model", str(model_file), "--grpc-port", str(port),
            "--http-port", str(harness.free_port()), "--metrics-port", str(harness.free_port()),
            "--max-batch-size", "64", "--max-queue-delay-us", "500"]
    # Triton's Python backend stub links libpython dynamically: it must find this interpreter's.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env = {"LD_LIBRARY_PATH": ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)}
    text = "nvidia-pytriton 0.7.0 (Triton 2.51), 1 Python model instance, dynamic batching max 64 / 500 us"
    try:
        with harness.running("pytriton", argv, model=MODEL, env=env, timeout_s=240) as server:
            report = run.measure("pytriton", label, server, text)
            run.sweep("PyTriton (dynamic batching)", server, at_32=report)
    except RuntimeError as exc:
        run.skipped["pytriton"] = f"did not start: {str(exc)[-400:]}"
        run.skip("pytriton", label, text, "did not start (see compare.json)")


def part_kserve(run: Run, model_file: Path) -> None:
    label = "KServe ModelServer (Python)"
    try:
        python = harness.ensure_env("kserve", PEER_REQUIREMENTS["kserve"])
    except EnvUnavailable as exc:
        run.skipped["kserve"] = str(exc)
        run.skip("kserve", label, "kserve 0.21.0", str(exc))
        return
    port = harness.free_port()
    argv = [str(python), str(PEERS / "kserve_server.py"), "--model", str(model_file), "--grpc-port", str(port),
            "--http-port", str(harness.free_port())]
    text = "kserve 0.21.0 ModelServer, 1 worker, latency logging off, no batching (it has none)"
    with harness.running("kserve", argv, model=MODEL, port=port) as server:
        # KServe's ModelMetadata lists no inputs for a custom Model: name the input for the client.
        report = run.measure("kserve", label, server, text, "--input-name", "input", "--width", "11")
        run.sweep("KServe", server, "--input-name", "input", "--width", "11", at_32=report)


# -- perf_analyzer ----------------------------------------------------------------------------


def perf_analyzer_binary() -> tuple[Path, dict] | None:
    """perf_analyzer from the tritonclient 2.47.0 wheel and the env it needs, or None (reason printed)."""
    python = harness.ensure_env("perf_analyzer", PEER_REQUIREMENTS["perf_analyzer"])
    binary = python.parent / "perf_analyzer"
    cudart = next(python.parent.parent.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"), None)
    env = {"LD_LIBRARY_PATH": str(cudart)} if cudart else {}
    missing = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env={**os.environ, **env})
    if "libb64" in missing.stdout and "not found" in missing.stdout.split("libb64", 1)[1].split("\n", 1)[0]:
        raise EnvUnavailable("perf_analyzer needs Debian's libb64-0d: apt-get update && apt-get install -y libb64-0d")
    return binary, env


def perf_analyzer(run: Run, server: Server) -> None:
    label = "perf_analyzer (C++) against driftline unary, batched"
    try:
        binary, env = perf_analyzer_binary()
    except EnvUnavailable as exc:
        run.skipped["perf_analyzer"] = str(exc)
        run.skip("perf_analyzer", label, "", str(exc))
        return
    interval_ms = int(max(run.args.duration / 2, 1.0) * 1000)
    argv = [str(binary), "-i", "grpc", "-u", server.address, "-m", MODEL, "--concurrency-range", str(CONCURRENCY),
            "--measurement-interval", str(interval_ms), "--max-trials", "6", "--stability-percentage", "25"]
    before_server, _ = tree_cpu_seconds(server.pid)
    before_count = success_count(server)
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)  # perf_analyzer's CPU lands here once reaped
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **env})
    try:
        output, _ = process.communicate(timeout=max(60, 12 * interval_ms / 1000))
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    elapsed = time.perf_counter() - started
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after_children.ru_utime + after_children.ru_stime
                  - before_children.ru_utime - before_children.ru_stime)
    served = success_count(server) - before_count
    server_cpu = tree_cpu_seconds(server.pid)[0] - before_server
    parsed = parse_perf_analyzer(output)
    report = {
        "command": harness.display_command(argv).replace(str(binary), "benchmarks/.envs/perf_analyzer/bin/perf_analyzer"),
        "returncode": process.returncode, "output_tail": output[-3000:], "elapsed_s": round(elapsed, 2),
        "infer_per_s": parsed.get("throughput"), "rows_per_s": parsed.get("throughput"),
        "latency_ms": {k: parsed.get(k) for k in ("p50", "p90", "p99")} | {"max": None},
        "completed": parsed.get("count"), "errors_total": 0 if parsed.get("throughput") else 1,
        # CPU over the whole perf_analyzer run (all its passes), divided by the requests the server answered.
        "server_cpu_us_per_request": round(server_cpu / served * 1e6, 1) if served else None,
        "client_cpu_us_per_request": round(client_cpu / served * 1e6, 1) if served and client_cpu else None,
        "config": {"concurrency": CONCURRENCY, "rows_per_request": 1, "stream": False},
    }
    note = "throughput of perf_analyzer's last stable window; CPU over all its passes"
    if process.returncode:
        note += f"; it exited {process.returncode} after reporting: " + " ".join(output.strip().splitlines()[-1:])
    run.rows.append(Row("perf_analyzer", label, "same server as the 'driftline unary, batched' row", report, note))
    run.say(f"  {label:<44} {report['infer_per_s'] or 0:>9,.0f}/s  p50 {report['latency_ms']['p50'] or 0:6.2f} ms  "
            f"rc {process.returncode}")


def success_count(server: Server) -> int:
    import grpc

    from driftline.proto import grpc_service_pb2 as pb
    from driftline.proto import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.address) as channel:
        stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(pb.ModelStatisticsRequest(name=MODEL),
                                                                           timeout=10)
    return sum(m.inference_stats.success.count for m in stats.model_stats)


def parse_perf_analyzer(output: str) -> dict:
    found = {}
    patterns = {"throughput": r"Throughput: ([\d.]+) infer/sec", "p50": r"p50 latency: (\d+) usec",
                "p90": r"p90 latency: (\d+) usec", "p99": r"p99 latency: (\d+) usec",
                "count": r"Request count: (\d+)"}
    client = output.split("Client:", 1)[-1]
    for key, pattern in patterns.items():
        match = re.search(pattern, client)
        if match:
            value = float(match.group(1))
            found[key] = int(value) if key == "count" else round(value / 1000, 4) if key != "throughput" else value
    return found
