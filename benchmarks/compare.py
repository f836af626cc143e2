"""driftline against MLServer, PyTriton and KServe on one model, one machine, one client.

    .venv/bin/python benchmarks/compare.py            # ~8 minutes on 2 cores
    .venv/bin/python benchmarks/compare.py --quick    # ~2.5 minutes: one round, shorter phases, fewer chart points

One model: the synthetic housing gradient-boosting model that ``driftline train`` makes (plus a
heavier one, 500 trees of depth 8, for the batching rows). Every server runs onnxruntime on the CPU
with one intra-op thread and listens on 127.0.0.1; every row is measured by the same client,
``driftline bench`` (closed loop, concurrency 32, one row per request unless the row says
otherwise), in its own process, with the server's CPU (its whole process tree, from /proc), the
client's CPU and what other processes used meanwhile reported beside every figure.

The head-to-head rows (c=32: the empty handlers, driftline unary batched and unbatched, streaming,
--workers 2, the heavy model batched and unbatched, MLServer with and without adaptive batching,
PyTriton, KServe) run with all those servers up at once, in --rounds interleaved rounds whose order
rotates, so that the load other tenants put on a shared machine falls on every row alike; their
figures pool the rounds. The peers are installed
on first use into their own virtual environments under benchmarks/.envs/ (one that cannot be
installed or started is skipped, and the results say why). perf_analyzer (Triton's C++ load
generator) measures driftline at the same settings, to show whether the Python client limits the
figures.

Writes benchmarks/RESULTS.md (the part between its compare markers; the rest of the file, the
reading and the pre-batching baseline, is kept), benchmarks/latency_vs_throughput.png and
benchmarks/out/compare.json (every row's exact command and full report). Every run is bounded:
each phase by --duration (or --requests), each server start and each subprocess by a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import sysconfig
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from driftline.cli.bench import sample_rows, tree_cpu_seconds  # noqa: E402
from harness import HOST, OUT, PEERS, EnvUnavailable, Server  # noqa: E402

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
KSERVE_INPUT = ("--input-name", "input", "--width", "11")  # its ModelMetadata lists no inputs


@dataclass
class Row:
    key: str
    label: str
    server: str  # how the server ran, for the table
    report: dict | None = None
    note: str = ""
    skipped: str = ""  # why there is no figure


@dataclass
class ServerSpec:
    """A server of the head-to-head group: how to start it."""

    key: str
    argv: list[str]
    model: str = MODEL
    start: dict = field(default_factory=dict)  # harness.start keyword arguments


@dataclass
class Target:
    """A row of the head-to-head group: which server, and how the client drives it."""

    key: str
    label: str
    text: str  # how the server runs, for the table
    server: str  # a ServerSpec key
    bench: tuple[str, ...] = ()
    model: str = MODEL
    sweep: str = ""  # chart line name; empty: not on the chart
    note: str = ""
    concurrency: int = CONCURRENCY
    chart_with: str = ""  # another target's key whose figure is a point of this one's chart line


@dataclass
class Run:
    args: argparse.Namespace
    rows: list[Row] = field(default_factory=list)
    sweeps: dict[str, list[dict]] = field(default_factory=dict)  # chart line -> reports by concurrency
    skipped: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def say(self, line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    def phase(self, concurrency: int = CONCURRENCY, short: bool = False) -> list[str]:
        a = self.args
        duration, warmup = (a.sweep_duration, min(a.warmup, 1.0)) if short else (a.duration, a.warmup)
        return ["--concurrency", str(concurrency), "--duration", str(duration), "--requests", str(a.requests),
                "--warmup", str(warmup), "--warmup-requests", str(a.warmup_requests)]

    def try_bench(self, label: str, server: Server, model: str, *args: str) -> dict | None:
        """One driftline bench run; a failure is logged with the server's state, and the run goes on."""
        try:
            return harness.bench(server, model, *args)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            alive = server.process.poll() is None
            why = (f"{label}: {str(exc).strip()[-400:]} (server {'alive' if alive else 'exited'}; its last lines: "
                   f"{server.tail(5).strip()[-400:]})")
            self.skipped.setdefault(f"{label} failure {len(self.skipped)}", why)
            self.say(f"  FAILED {why}")
            return None

    def measure(self, key: str, label: str, server: Server, text: str, *extra: str, model: str = MODEL,
                note: str = "") -> dict | None:
        report = self.try_bench(label, server, model, *self.phase(), *extra)
        if report is None:
            self.rows.append(Row(key, label, text, skipped="the run failed (see Skipped)"))
            return None
        self.rows.append(Row(key, label, text, report, note))
        self.show(label, report)
        return report

    def show(self, label: str, report: dict) -> None:
        self.say(f"  {label:<46} {report['infer_per_s']:>8,.0f}/s  p50 {report['latency_ms']['p50'] or 0:6.2f} ms  "
                 f"server {report['server_cpu_us_per_request'] or 0:5.0f} us/req  "
                 f"client {report['client_cpu_us_per_request'] or 0:4.0f} us/req  "
                 f"other {report.get('other_cpu_s') or 0:5.2f} CPU-s  errors {report['errors_total']}")

    def sweep(self, line: str, server: Server, *extra: str, levels: tuple[int, ...], known: list[dict]) -> None:
        """Chart points: the same target at other concurrencies (short phases), besides the ``known`` ones."""
        points = list(known)
        for c in levels:
            report = self.try_bench(f"{line} c={c}", server, MODEL, *self.phase(c, short=True), *extra)
            if report is None:
                continue
            points.append(report)
            self.say(f"    {line:<30} c={c:<3} {report['infer_per_s']:>8,.0f}/s  "
                     f"p50 {report['latency_ms']['p50'] or 0:6.2f} ms  p99 {report['latency_ms']['p99'] or 0:6.2f} ms")
        self.sweeps[line] = sorted(points, key=lambda r: r["config"]["concurrency"])

    def skip(self, key: str, label: str, text: str, why: str) -> None:
        self.rows.append(Row(key, label, text, skipped=why))
        self.skipped.setdefault(key, why)
        self.say(f"  {label}: skipped: {why}")


def pool(reports: list[dict]) -> dict:
    """Interleaved rounds of one target as one figure: rates and CPU over all rounds, latency
    percentiles as the median of the rounds' percentiles, max as the max."""
    done = sum(r["completed"] for r in reports)
    elapsed = sum(r["elapsed_s"] for r in reports)
    pooled = dict(reports[0])

    def total(key: str) -> float | None:
        values = [r.get(key) for r in reports]
        return None if any(v is None for v in values) else sum(values)

    server, client = total("server_cpu_s"), total("client_cpu_s")
    rate = done / elapsed if elapsed else 0.0
    pooled.update(
        completed=done, elapsed_s=round(elapsed, 3), infer_per_s=round(rate, 2),
        rows_per_s=round(rate * reports[0]["config"]["rows_per_request"], 2),
        latency_ms={q: (round(statistics.median(r["latency_ms"][q] for r in reports), 4) if done else None)
                    for q in ("p50", "p90", "p99", "mean")}
        | {"max": max(r["latency_ms"]["max"] or 0 for r in reports)},
        server_cpu_s=server, client_cpu_s=client, other_cpu_s=total("other_cpu_s"),
        machine_busy_cpu_s=total("machine_busy_cpu_s"),
        server_cpu_us_per_request=round(server / done * 1e6, 2) if server is not None and done else None,
        client_cpu_us_per_request=round(client / done * 1e6, 2) if client is not None and done else None,
        errors_total=sum(r["errors_total"] for r in reports),
        rounds=[r["infer_per_s"] for r in reports], round_reports=reports,
    )
    return pooled


# -- the head-to-head group -------------------------------------------------------------------


def headline(run: Run, registry: Path, model_file: Path) -> tuple[list[ServerSpec], list[Target]]:
    serve = harness.driftline_serve_argv
    dl1 = "driftline serve --workers 1 (batching defaults)"
    specs = [
        ServerSpec("empty", [sys.executable, str(harness.BENCH_DIR / "empty_server.py"), "--port", "0",
                             "--model", MODEL]),
        ServerSpec("dl1", serve(registry, MODEL, "--workers", "1")),
        ServerSpec("dl1_unbatched", serve(registry, MODEL, "--workers", "1", "--max-batch-size", "1")),
        ServerSpec("dl2", serve(registry, MODEL, "--workers", "2")),
        ServerSpec("heavy", serve(registry, HEAVY, "--workers", "1"), model=HEAVY),
        ServerSpec("heavy_unbatched", serve(registry, HEAVY, "--workers", "1", "--max-batch-size", "1"), model=HEAVY),
    ]
    targets = [
        Target("empty_unary", "empty grpc.aio ModelInfer handler", "benchmarks/empty_server.py (grpc.aio, no model)",
               "empty", sweep="empty unary handler", chart_with="empty_unary_c1"),
        Target("empty_unary_c1", "empty grpc.aio ModelInfer handler, concurrency 1", "benchmarks/empty_server.py",
               "empty", concurrency=1, note="the empty gRPC round trip"),
        Target("empty_stream", "empty grpc.aio ModelStreamInfer handler", "benchmarks/empty_server.py", "empty",
               ("--stream",), note="1 stream, 32 in flight"),
        Target("dl_unary", "driftline unary, batched, --workers 1", dl1, "dl1", sweep="driftline unary",
               chart_with="dl_unary_c1"),
        Target("dl_unary_c1", "driftline unary, concurrency 1", dl1, "dl1", concurrency=1),
        Target("dl_stream", "driftline streaming, --workers 1", dl1, "dl1", ("--stream",),
               sweep="driftline streaming", note="1 stream, 32 in flight"),
        Target("dl_unbatched", "driftline unary, unbatched (--max-batch-size 1)",
               "driftline serve --workers 1 --max-batch-size 1", "dl1_unbatched"),
        Target("dl_workers2", "driftline unary, batched, --workers 2", "driftline serve --workers 2", "dl2",
               ("--channels", "4"), note="4 channels, so the kernel spreads connections over both workers"),
        Target("heavy_batched", "heavy model (500 trees, depth 8), batched", "driftline serve --workers 1", "heavy",
               model=HEAVY),
        Target("heavy_unbatched", "heavy model (500 trees, depth 8), unbatched",
               "driftline serve --workers 1 --max-batch-size 1", "heavy_unbatched", model=HEAVY),
    ]
    try:
        python = harness.ensure_env("mlserver", PEER_REQUIREMENTS["mlserver"])
        for key, batching in (("ml_off", False), ("ml_adaptive", True)):
            port, home = mlserver_home(key, model_file, batching=batching, parallel_workers=0)
            specs.append(ServerSpec(key, [str(python.parent / "mlserver"), "start", str(home)],
                                    start={"port": port, "cwd": home, "env": {"PYTHONPATH": str(PEERS)}}))
            targets.append(Target(
                key, "MLServer, adaptive batching (max 32, 0.5 ms)" if batching else "MLServer, no batching",
                "mlserver 1.7.1, onnxruntime custom runtime, parallel_workers 0, metrics off"
                + (", adaptive batching" if batching else ""), key,
                sweep="MLServer (adaptive batching)" if batching else "MLServer (no batching)"))
    except EnvUnavailable as exc:
        for key in ("ml_off", "ml_adaptive"):
            run.skip(key, f"MLServer ({key})", "mlserver 1.7.1", str(exc))
    try:
        python = harness.ensure_env("pytriton", PEER_REQUIREMENTS["pytriton"])
        port = harness.free_port()
        # Triton's Python backend stub links libpython dynamically: it must find this interpreter's.
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        specs.append(ServerSpec(
            "pytriton",
            [str(python), str(PEERS / "pytriton_server.py"), "--model", str(model_file), "--grpc-port", str(port),
             "--http-port", str(harness.free_port()), "--metrics-port", str(harness.free_port()),
             "--max-batch-size", "64", "--max-queue-delay-us", "500"],
            start={"env": {"LD_LIBRARY_PATH": ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)},
                   "timeout_s": 240}))
        targets.append(Target("pytriton", "PyTriton, dynamic batching (max 64, 0.5 ms)",
                              "nvidia-pytriton 0.7.0 (Triton 2.51), 1 Python model instance, dynamic batching",
                              "pytriton", sweep="PyTriton (dynamic batching)"))
    except EnvUnavailable as exc:
        run.skip("pytriton", "PyTriton", "nvidia-pytriton 0.7.0", str(exc))
    try:
        python = harness.ensure_env("kserve", PEER_REQUIREMENTS["kserve"])
        port = harness.free_port()
        specs.append(ServerSpec(
            "kserve", [str(python), str(PEERS / "kserve_server.py"), "--model", str(model_file), "--grpc-port",
                       str(port), "--http-port", str(harness.free_port())], start={"port": port}))
        targets.append(Target("kserve", "KServe ModelServer (Python), no batching",
                              "kserve 0.21.0 ModelServer, 1 worker, latency log off", "kserve", KSERVE_INPUT,
                              sweep="KServe"))
    except EnvUnavailable as exc:
        run.skip("kserve", "KServe", "kserve 0.21.0", str(exc))
    return specs, targets


def mlserver_home(key: str, model_file: Path, *, batching: bool, parallel_workers: int | None) -> tuple[int, Path]:
    """An MLServer model repository under benchmarks/out/ for the onnxruntime runtime; its gRPC port."""
    home = OUT / f"mlserver-{key}"
    (home / MODEL).mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    settings = {"host": HOST, "grpc_port": port, "http_port": harness.free_port(), "metrics_port": harness.free_port(),
                "metrics_endpoint": None, "debug": False}
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    model_settings = {
        "name": MODEL, "implementation": "mlserver_onnx.OnnxModel",
        "parameters": {"uri": str(model_file), "version": "1"},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 11]}],
        "outputs": [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}],
        "max_batch_size": CONCURRENCY if batching else 0, "max_batch_time": 0.0005 if batching else 0.0,
    }
    (home / "settings.json").write_text(json.dumps(settings, indent=2))
    (home / MODEL / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return port, home


def start_all(run: Run, stack: ExitStack, specs: list[ServerSpec], targets: list[Target]) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    for spec in specs:
        try:
            servers[spec.key] = stack.enter_context(harness.running(spec.key, spec.argv, model=spec.model,
                                                                    **spec.start))
            run.say(f"  started {spec.key} on {servers[spec.key].address} (pid {servers[spec.key].pid})")
        except (RuntimeError, OSError) as exc:
            run.say(f"  {spec.key} did not start: {str(exc)[-300:]}")
            for t in targets:
                if t.server == spec.key:
                    run.skip(t.key, t.label, t.text, f"did not start: {str(exc)[-300:]}")
    return servers


def interleaved(run: Run, servers: dict[str, Server], live: list[Target]) -> dict[str, dict]:
    """--rounds rounds over every live target, in an order that rotates; each target's rounds pooled."""
    rounds: dict[str, list[dict]] = {t.key: [] for t in live}
    for number in range(run.args.rounds):
        run.say(f"  round {number + 1} of {run.args.rounds}")
        shift = (number * max(len(live) // run.args.rounds, 1)) % max(len(live), 1)
        for t in live[shift:] + live[:shift]:  # nobody always goes first
            report = run.try_bench(t.label, servers[t.server], t.model, *run.phase(t.concurrency), *t.bench)
            if report is not None:
                rounds[t.key].append(report)
                run.show(t.label, report)
    pooled = {}
    for t in live:
        if not rounds[t.key]:
            run.skip(t.key, t.label, t.text, "every round failed (see Skipped)")
            continue
        pooled[t.key] = pool(rounds[t.key])
        spread = (f"{len(rounds[t.key])} interleaved rounds: "
                  + " / ".join(f"{x:,.0f}" for x in pooled[t.key]["rounds"]) + " infer/s")
        note = "; ".join(x for x in (t.note, spread if len(rounds[t.key]) > 1 else "") if x)
        run.rows.append(Row(t.key, t.label, t.text, pooled[t.key], note))
    return pooled


def part_headline(run: Run, registry: Path, model_file: Path) -> None:
    """Every c=32 server up at once; interleaved rounds; then the extra rows and the chart points."""
    specs, targets = headline(run, registry, model_file)
    with ExitStack() as stack:
        servers = start_all(run, stack, specs, targets)
        live = [t for t in targets if t.server in servers]
        pooled = interleaved(run, servers, live)
        if "dl1" in servers:
            run.measure("dl_rows64", "driftline unary, 64 rows/request", servers["dl1"],
                        "driftline serve --workers 1 (batching defaults)", "--rows-per-request", "64")
            perf_analyzer(run, servers["dl1"])
        if "dl2" in servers:
            run.measure("dl_workers2_stream", "driftline streaming, --workers 2", servers["dl2"],
                        "driftline serve --workers 2", "--stream", "--streams", "2", "--channels", "2",
                        note="2 streams on 2 connections, 16 in flight each")
        run.say("  chart points")
        for t in live:
            if t.sweep and t.key in pooled:
                known = [pooled[k] for k in (t.key, t.chart_with) if k in pooled]
                run.sweep(t.sweep, servers[t.server], *t.bench, levels=run.args.sweep, known=known)


def part_ort(run: Run, registry: Path) -> None:
    for model in (MODEL, HEAVY):
        argv = [sys.executable, str(harness.BENCH_DIR / "ort_ceiling.py"), "--model",
                str(harness.latest_model_file(registry, model)), "--batch", "1,64", "--seconds",
                str(max(run.args.duration / 3, 1.0))]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
        run.extra[f"ort_{model}"] = json.loads(result.stdout) | {"command": harness.display_command(argv)}
        for r in run.extra[f"ort_{model}"]["results"]:
            run.say(f"  in-process onnxruntime {model} batch {r['batch']}: {r['calls_per_s']:,.0f} calls/s, "
                    f"{r['rows_per_s']:,.0f} rows/s, {r['cpu_us_per_call']:.1f} us CPU/call")


def part_mlserver_default(run: Run, model_file: Path) -> None:
    """MLServer's default parallel_workers (1: inference in a worker process), for the record."""
    label = "MLServer, adaptive batching, parallel_workers 1 (its default)"
    try:
        python = harness.ensure_env("mlserver", PEER_REQUIREMENTS["mlserver"])
    except EnvUnavailable as exc:
        run.skip("ml_workers1", label, "mlserver 1.7.1", str(exc))
        return
    port, home = mlserver_home("ml_workers1", model_file, batching=True, parallel_workers=None)
    with harness.running("mlserver", [str(python.parent / "mlserver"), "start", str(home)], model=MODEL, port=port,
                         cwd=home, env={"PYTHONPATH": str(PEERS)}) as server:
        run.measure("ml_workers1", label, server, "mlserver 1.7.1, default parallel_workers, metrics off")


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
    # driftline bench right before and right after, so both clients meet the same machine.
    around = [run.try_bench("driftline bench before perf_analyzer", server, MODEL, *run.phase())]
    # The rows driftline bench sends: perf_analyzer's random data fails driftline's input checks.
    data = OUT / "perf_analyzer_rows.json"
    data.write_text(json.dumps({"data": [{"input": r} for r in sample_rows(64, 11, "housing", 0).tolist()]}))
    argv = [str(binary), "-i", "grpc", "-u", server.address, "-m", MODEL, "--concurrency-range", str(CONCURRENCY),
            "--measurement-interval", str(interval_ms), "--max-trials", "6", "--stability-percentage", "25",
            "--input-data", str(data)]
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
        "command": harness.display_command(argv).replace(str(binary),
                                                         "benchmarks/.envs/perf_analyzer/bin/perf_analyzer"),
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
    around.append(run.try_bench("driftline bench after perf_analyzer", server, MODEL, *run.phase()))
    around = [r for r in around if r is not None]
    if around:
        run.rows.append(Row("bench_around_pa", "driftline bench against the same server, right before and after "
                            "perf_analyzer", "driftline serve --workers 1 (batching defaults)", pool(around),
                            f"{len(around)} runs: " + " / ".join(f"{r['infer_per_s']:,.0f}" for r in around)
                            + " infer/s"))
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


# -- targets, table, chart --------------------------------------------------------------------


def by_key(run: Run) -> dict[str, dict]:
    return {r.key: r.report for r in run.rows if r.report}


def targets(run: Run) -> list[tuple[str, str, str]]:
    """(target, measured, status) for each of the issue's targets; 'n/a' where a figure is missing."""
    r = by_key(run)

    def rate(key: str) -> float | None:
        return r[key]["infer_per_s"] if key in r and r[key].get("infer_per_s") else None

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**missed**")

    out = []
    unary_keys = [k for k in ("dl_unary", "dl_workers2") if rate(k)]
    best_dl_key = max(unary_keys, key=rate) if unary_keys else None
    best_dl = rate(best_dl_key) if best_dl_key else None
    ml = [rate(k) for k in ("ml_adaptive", "ml_off") if rate(k)]
    if best_dl and ml:
        x = best_dl / max(ml)
        out.append(("c=32 batch-1 unary: driftline >= 2.5x MLServer (best config)",
                    f"{best_dl:,.0f} vs {max(ml):,.0f}/s = {x:.2f}x ({best_dl_key})", verdict(x >= 2.5)))
    else:
        out.append(("c=32 batch-1 unary: driftline >= 2.5x MLServer", "MLServer not measured", "n/a"))
    if best_dl and rate("ml_workers1"):
        x = best_dl / rate("ml_workers1")
        out.append(("(for reference) driftline vs MLServer's default parallel_workers=1, not interleaved",
                    f"{best_dl:,.0f} vs {rate('ml_workers1'):,.0f}/s = {x:.2f}x", "indicative only"))
    peers = {k: rate(k) for k in ("pytriton", "kserve") if rate(k)}
    if best_dl and peers:
        best_peer = max(peers, key=peers.get)
        x = best_dl / peers[best_peer]
        out.append(("c=32 batch-1 unary: driftline >= 1.2x best of PyTriton/KServe",
                    f"{best_dl:,.0f} vs {peers[best_peer]:,.0f}/s ({best_peer}) = {x:.2f}x", verdict(x >= 1.2)))
    else:
        out.append(("c=32 batch-1 unary: driftline >= 1.2x best of PyTriton/KServe", "peers not measured", "n/a"))
    if "dl_unary" in r and "empty_unary" in r:
        a, b = r["dl_unary"]["server_cpu_us_per_request"], r["empty_unary"]["server_cpu_us_per_request"]
        out.append(("server CPU/request <= 1.15x the empty unary handler's",
                    f"{a:,.0f} vs {b:,.0f} us = {a / b:.2f}x", verdict(a / b <= 1.15)))
    if rate("dl_stream") and rate("dl_unary"):
        x = rate("dl_stream") / rate("dl_unary")
        out.append(("streaming >= 2x driftline unary (both --workers 1)",
                    f"{rate('dl_stream'):,.0f} vs {rate('dl_unary'):,.0f}/s = {x:.2f}x", verdict(x >= 2)))
        cpu = r["dl_stream"]["server_cpu_us_per_request"]
        out.append(("streaming server CPU/request <= 100 us", f"{cpu:,.0f} us", verdict(cpu <= 100)))
    ort = run.extra.get(f"ort_{MODEL}", {}).get("results", [])
    ort64 = next((x["rows_per_s"] for x in ort if x["batch"] == 64), None)
    if "dl_rows64" in r and ort64:
        rows = r["dl_rows64"]["rows_per_s"]
        out.append(("64-row requests >= 50% of in-process onnxruntime rows/s at batch 64 (1 thread)",
                    f"{rows:,.0f} vs {ort64:,.0f} rows/s = {rows / ort64:.0%}", verdict(rows / ort64 >= 0.5)))
    if rate("heavy_batched") and rate("heavy_unbatched"):
        x = rate("heavy_batched") / rate("heavy_unbatched")
        out.append(("heavier model: batched >= 2x unbatched",
                    f"{rate('heavy_batched'):,.0f} vs {rate('heavy_unbatched'):,.0f}/s = {x:.2f}x", verdict(x >= 2)))
    if "dl_unary_c1" in r and "empty_unary_c1" in r:
        a, b = r["dl_unary_c1"]["latency_ms"]["p50"], r["empty_unary_c1"]["latency_ms"]["p50"]
        out.append(("concurrency 1: p50 within 0.3 ms of an empty gRPC round trip",
                    f"{a:.3f} vs {b:.3f} ms = +{a - b:.3f} ms", verdict(a - b <= 0.3)))
    if "perf_analyzer" in r and rate("bench_around_pa") and r["perf_analyzer"].get("infer_per_s"):
        x = rate("bench_around_pa") / r["perf_analyzer"]["infer_per_s"]
        out.append(("client check: driftline bench (right before and after) vs perf_analyzer, same server, c=32",
                    f"{rate('bench_around_pa'):,.0f} vs {r['perf_analyzer']['infer_per_s']:,.0f}/s = {x:.2f}x",
                    "bench not slower" if x >= 0.9 else "**bench slower**"))
    return out


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(run: Run) -> str:
    head = ["row", "server", "infer/s", "rows/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
            "server CPU us/req", "client CPU us/req", "other procs (cores)", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for row in run.rows:
        if row.skipped:
            lines.append(f"| {row.label} | {row.server} | skipped: {row.skipped} |" + " |" * (len(head) - 3))
            continue
        r, lat = row.report, row.report["latency_ms"]
        label = row.label + (f" ({row.note})" if row.note else "")
        lines.append("| " + " | ".join([
            label, row.server, fmt(r["infer_per_s"], ",.0f"), fmt(r["rows_per_s"], ",.0f"), fmt(lat["p50"], ".2f"),
            fmt(lat["p90"], ".2f"), fmt(lat["p99"], ".2f"), fmt(lat["max"], ".1f"),
            fmt(r["server_cpu_us_per_request"], ",.0f"), fmt(r["client_cpu_us_per_request"], ",.0f"),
            fmt(r["other_cpu_s"] / r["elapsed_s"] if r.get("other_cpu_s") is not None and r.get("elapsed_s") else None,
                ".2f"),
            str(r["errors_total"])]) + " |")
    for model in (MODEL, HEAVY):
        ort = run.extra.get(f"ort_{model}")
        for x in (ort or {}).get("results", []):
            lines.append(f"| in-process onnxruntime, {model}, batch {x['batch']} (1 thread, no server) | - | "
                         f"{x['calls_per_s']:,.0f} calls | {x['rows_per_s']:,.0f} | {x['p50_ms']:.3f} | - | - | - "
                         "| - | "
                         f"{x['cpu_us_per_call']:,.1f} per call | - | 0 |")
    return "\n".join(lines)


def sweep_table(run: Run) -> str:
    lines = ["| target | concurrency | infer/s | p50 ms | p99 ms | server CPU us/req | client CPU us/req |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for line, points in run.sweeps.items():
        for p in points:
            lines.append(f"| {line} | {p['config']['concurrency']} | {p['infer_per_s']:,.0f} | "
                         f"{fmt(p['latency_ms']['p50'], '.2f')} | {fmt(p['latency_ms']['p99'], '.2f')} | "
                         f"{fmt(p['server_cpu_us_per_request'], ',.0f')} | "
                         f"{fmt(p['client_cpu_us_per_request'], ',.0f')} |")
    return "\n".join(lines)


def chart(run: Run, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        run.say("matplotlib is not installed (.venv/bin/pip install matplotlib): no chart")
        return False
    fig, (ax50, ax99) = plt.subplots(1, 2, figsize=(13, 5.2))
    for line, points in run.sweeps.items():
        xs = [p["infer_per_s"] for p in points]
        for ax, q in ((ax50, "p50"), (ax99, "p99")):
            ys = [p["latency_ms"][q] for p in points]
            ax.plot(xs, ys, marker="o", label=line, linestyle="--" if "empty" in line else "-")
            for p, x, y in zip(points, xs, ys, strict=True):
                ax.annotate(str(p["config"]["concurrency"]), (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
    for ax, q in ((ax50, "p50"), (ax99, "p99")):
        ax.set_xlabel("throughput (infer/s, 1 row per request)")
        ax.set_ylabel(f"{q} latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{q} latency vs throughput (labels: concurrency)")
    ax50.legend(fontsize=8)
    fig.suptitle(f"{MODEL} model, closed loop, client and servers on one {os.cpu_count()}-core machine "
                 f"(driftline bench)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    import grpc
    import numpy
    import onnxruntime

    return (f"{os.cpu_count()} CPUs ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}, Python "
            f"{platform.python_version()}, grpcio {grpc.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"numpy {numpy.__version__}; load average at the start {load[0]:.2f}")


def code() -> str:
    try:
        from driftline.lineage import code_version

        return code_version()
    except Exception:  # noqa: BLE001 - informational only
        from driftline import __version__

        return __version__


def write_results(run: Run, command: str, elapsed: float, date: str, chart_written: bool) -> None:
    a = run.args
    section = [
        BEGIN,
        "## driftline vs MLServer, PyTriton and KServe (issue 3)",
        "",
        f"- **Date:** {date} UTC; the whole run took {elapsed / 60:.1f} minutes.",
        f"- **Code:** `driftline {run.extra.get('code', '?')}`",
        f"- **Machine:** {run.extra.get('machine', '?')}. Client and every server share these cores.",
        f"- **Model:** `driftline train {MODEL} --synthetic housing --rows 4000 --seed 0` (gradient boosting, "
        f"100 trees of depth 3, 11 FP32 features); heavy: the same data with "
        f"`{' '.join('--param ' + p for p in HEAVY_PARAMS)}`.",
        f"- **Client:** `driftline bench`, closed loop, concurrency {CONCURRENCY}, 1 row per request unless the row "
        f"says otherwise, 1 channel unless noted; each run: warmup <= {a.warmup:g} s, then <= {a.duration:g} s or "
        f"{a.requests:,} requests. The rows noted 'interleaved rounds' ran with all their servers up at once, "
        f"{a.rounds} round(s) in a rotating order, pooled (rates and CPU over all rounds, latency percentiles the "
        "median of the rounds'); the other rows ran once, right after. Chart points besides c=1 and c=32 ran "
        f"{a.sweep_duration:g} s each. Each run's exact command is in `benchmarks/out/compare.json`.",
        "- **CPU columns:** server = utime+stime of the server's whole process tree (/proc) over the measured phase, "
        "divided by the requests answered; client = the `driftline bench` process's own CPU (all its threads) "
        "over the same phase; other procs = cores busy with neither (other processes on the machine), "
        "from /proc/stat.",
        "",
        "### Command",
        "",
        "```",
        command,
        "```",
        "",
        "### Results (concurrency 32 unless the row says otherwise)",
        "",
        table(run),
        "",
        "### Targets",
        "",
        "| target | measured | status |",
        "|---|---|---|",
        *[f"| {t} | {m} | {s} |" for t, m, s in targets(run)],
        "",
        "### Latency vs throughput",
        "",
        ("![latency vs throughput](latency_vs_throughput.png)" if chart_written else "(no chart: matplotlib missing)"),
        "",
        sweep_table(run),
        "",
    ]
    if run.skipped:
        section += ["### Skipped", ""] + [f"- {name}: {why}" for name, why in run.skipped.items()] + [""]
    section.append(END)
    text = RESULTS.read_text() if RESULTS.exists() else ""
    block = "\n".join(section)
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = block + "\n\n" + text
    RESULTS.write_text(text)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one round, short phases, fewer chart points (~2.5 minutes)")
    p.add_argument("--duration", type=float, help="measured seconds per row and round (default 5; quick 2)")
    p.add_argument("--warmup", type=float, help="warmup seconds per row and round (default 1.5; quick 0.5)")
    p.add_argument("--requests", type=int, default=200_000, help="measured requests per row, at most")
    p.add_argument("--warmup-requests", type=int, default=2000, help="warmup requests per row, at most")
    p.add_argument("--sweep", default=None, help="chart concurrencies besides 32 (default 8,64; quick 64)")
    p.add_argument("--sweep-duration", type=float, help="measured seconds per chart point (default 3; quick 1.5)")
    p.add_argument("--registry", type=Path, help="registry to use (default benchmarks/out/registry, trained once)")
    p.add_argument("--rounds", type=int, help="interleaved rounds of the head-to-head rows (default 3; quick 1)")
    p.add_argument("--only", default="", help="comma list of parts: headline,ort,mlserver_default")
    p.add_argument("--no-results", action="store_true", help="do not rewrite RESULTS.md and the chart")
    p.add_argument("--render", type=Path, metavar="COMPARE.json",
                   help="only rewrite RESULTS.md and the chart from a saved benchmarks/out/compare.json")
    args = p.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.5)
    args.sweep_duration = args.sweep_duration or (1.5 if args.quick else 3.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.sweep = tuple(int(c) for c in (args.sweep or ("64" if args.quick else "8,64")).split(",") if c)
    return args


def publish(run: Run, command: str, elapsed: float, date: str) -> None:
    written = chart(run, CHART)
    write_results(run, command, elapsed, date, written)
    also = f" and {CHART.relative_to(harness.ROOT)}" if written else ""
    run.say(f"wrote {RESULTS.relative_to(harness.ROOT)}{also}")


def render(path: Path) -> int:
    """RESULTS.md and the chart again from a saved compare.json (no measuring)."""
    data = json.loads(path.read_text())
    args = argparse.Namespace(**data["args"])
    args.sweep = tuple(args.sweep)
    run = Run(args, rows=[Row(**r) for r in data["rows"]], sweeps=data["sweeps"], extra=data["extra"],
              skipped=data["skipped"])
    publish(run, data["command"], data.get("elapsed_s") or 0.0, data.get("date", "?"))
    for t, m, s in targets(run):
        print(f"- {t}: {m} -> {s}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render)
    command = shlex.join([".venv/bin/python", "benchmarks/compare.py", *(sys.argv[1:] if argv is None else argv)])
    started, date = time.perf_counter(), f"{datetime.now(UTC):%Y-%m-%d %H:%M}"  # when the run began
    run = Run(args)
    run.extra["machine"], run.extra["code"] = machine(), code()
    run.say(f"command: {command}")
    run.say(f"machine: {run.extra['machine']}")
    OUT.mkdir(parents=True, exist_ok=True)
    registry = args.registry or OUT / "registry"
    run.say("training the models (once per registry)")
    model_file = harness.train(registry, MODEL)
    harness.train(registry, HEAVY, *HEAVY_PARAMS)
    parts = {
        "headline": lambda: part_headline(run, registry, model_file),
        "ort": lambda: part_ort(run, registry),
        "mlserver_default": lambda: part_mlserver_default(run, model_file),
    }
    chosen = ([p for p in args.only.split(",") if p]
              or [p for p in parts if not (args.quick and p == "mlserver_default")])
    for name in chosen:
        run.say(f"{name}:")
        try:
            parts[name]()
        except Exception as exc:  # noqa: BLE001 - one broken peer must not lose the other rows
            run.skipped[name] = f"{type(exc).__name__}: {str(exc)[-600:]}"
            run.say(f"  {name} failed: {run.skipped[name]}")
    elapsed = time.perf_counter() - started
    data = {"command": command, "date": date, "elapsed_s": elapsed, "machine": run.extra["machine"],
            "args": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                     for k, v in vars(args).items()},
            "rows": [r.__dict__ for r in run.rows], "sweeps": run.sweeps, "extra": run.extra, "skipped": run.skipped}
    (OUT / "compare.json").write_text(json.dumps(data, indent=2, default=str))
    if not args.no_results:
        publish(run, command, elapsed, date)
    print()
    print(table(run))
    print()
    for t, m, s in targets(run):
        print(f"- {t}: {m} -> {s}")
    run.say(f"done in {(time.perf_counter() - started) / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
