"""Closed-loop gRPC load test: driftline against a 60-line grpc.aio + onnxruntime baseline.

Trains a synthetic housing model into a temporary registry (unless ``--registry`` is given),
starts ``driftline serve`` and ``benchmarks/baseline_server.py`` on free loopback ports, and
drives both with the same pre-built ModelInfer requests from C asyncio workers, each sending its
next request as soon as the previous one answers. Rounds alternate between the two servers
(baseline, driftline, baseline, driftline, ...) so slow drift in a shared machine's load hits
both alike. Every run is bounded: at most ``--requests`` measured requests or ``--duration``
seconds per round, whichever comes first, and a per-call deadline.

    .venv/bin/python benchmarks/load.py --concurrency 1,32 --duration 8

Exit status: 0 when every request succeeded, 1 when any failed (the table still prints).
The client runs on the same machine as the servers and competes with them for CPU; its CPU
time per request is reported so that cost is visible rather than hidden.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc as pb_grpc

HOST = "127.0.0.1"  # the only address this script ever connects to
BENCH_DIR = Path(__file__).resolve().parent
READY_LINE = re.compile(r"serving .* on (?P<host>[^ ]+):(?P<port>\d+) ")
START_TIMEOUT_S = 120.0  # a cold start imports onnxruntime; a shared 2-core machine is slow
STOP_TIMEOUT_S = 10.0
TARGETS = ("baseline", "driftline")  # also the order within a round
DISTINCT_REQUESTS = 64  # a few different rows, so no cache anywhere sees one input only


# -- servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[str]
    port: int
    log: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far (Linux /proc; 0 elsewhere)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)", which may contain spaces
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")


def start_server(name: str, argv: list[str]) -> Server:
    """Start a server subprocess and wait for the line that names its port."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = Server(name, process, port=0)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"{name} exited before listening:\n" + "".join(server.log))
        server.log.append(line)
        match = READY_LINE.search(line)
        if match:
            if match.group("host") != HOST:
                raise RuntimeError(f"{name} listens on {match.group('host')}, expected {HOST}")
            server.port = int(match.group("port"))
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start in {START_TIMEOUT_S:.0f} s:\n" + "".join(server.log))
    # Keep draining its output, so a chatty server never blocks on a full pipe.
    threading.Thread(target=lambda: server.log.extend(process.stdout), daemon=True).start()
    return server


def stop_server(server: Server) -> None:
    """SIGTERM (graceful), then SIGKILL if it has not exited in time."""
    if server.process.poll() is not None:
        return
    server.process.terminate()
    try:
        server.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"warning: {server.name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; killing it", file=sys.stderr)
        server.process.kill()
        server.process.wait()


@contextmanager
def running(name: str, argv: list[str]) -> Iterator[Server]:
    server: Server | None = None
    try:
        server = start_server(name, argv)
        yield server
    finally:
        if server is not None:
            stop_server(server)


def driftline_argv(registry: Path, model: str, extra: Sequence[str]) -> list[str]:
    # --device cpu: the baseline runs on the CPU provider, so both must, even on a GPU machine.
    return [sys.executable, "-m", "driftline", "serve", "--registry", str(registry), "--model", model,
            "--host", HOST, "--port", "0", "--device", "cpu", *extra]


def baseline_argv(model_file: Path) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "baseline_server.py"), "--model", str(model_file), "--host", HOST,
            "--port", "0"]


# -- model and requests -----------------------------------------------------------------------


def train_registry(root: Path, model: str, rows: int) -> Path:
    """Publish a freshly trained housing model with the real CLI, as a user would."""
    registry = root / "registry"
    argv = [sys.executable, "-m", "driftline", "train", model, "--registry", str(registry),
            "--rows", str(rows), "--seed", "0"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"training failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return registry


def latest_model_file(registry: Path, model: str) -> Path:
    """REGISTRY/MODEL/<highest version>/model.onnx: what ``driftline serve`` serves by default."""
    versions = [int(p.name) for p in (registry / model).iterdir() if p.name.isdigit()]
    if not versions:
        raise RuntimeError(f"no published versions of {model!r} in {registry}")
    return registry / model / str(max(versions)) / "model.onnx"


def sample_rows(count: int) -> np.ndarray:
    """Realistic feature rows from the same synthetic generator the model was trained on."""
    from driftline.trainer import synthetic  # imported late: polars is slow to import

    frame = synthetic.housing(count, seed=12345)
    return frame.select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)


def build_requests(model: str, rows_per_request: int) -> list[pb.ModelInferRequest]:
    """Serialized once, up front, so the measured loop spends no client CPU building messages."""
    rows = sample_rows(DISTINCT_REQUESTS * rows_per_request)
    requests = []
    for i in range(DISTINCT_REQUESTS):
        chunk = np.ascontiguousarray(rows[i * rows_per_request:(i + 1) * rows_per_request], dtype="<f4")
        request = pb.ModelInferRequest(model_name=model, id=f"bench-{i}")
        request.inputs.add(name="input", datatype="FP32", shape=list(chunk.shape))
        request.raw_input_contents.append(chunk.tobytes())
        requests.append(request)
    return requests


# -- the load loop ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    requests: int
    seconds: float


@dataclass
class Phase:
    """What one warmup or measured run of C workers against one server produced."""

    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies_s)


@dataclass(frozen=True)
class LoadConfig:
    concurrency: int
    channels: int
    rows_per_request: int
    call_timeout_s: float


def open_channels(address: str, count: int) -> list[grpc.aio.Channel]:
    # A local subchannel pool per channel: otherwise gRPC reuses one TCP connection for all of
    # them and --channels would change nothing.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    return [grpc.aio.insecure_channel(address, options=options) for _ in range(count)]


async def drive(stubs: Sequence[pb_grpc.GRPCInferenceServiceStub], requests: Sequence[pb.ModelInferRequest],
                config: LoadConfig, budget: Budget) -> Phase:
    """C workers in a closed loop until the request budget is issued or the time is up."""
    phase = Phase()
    issued = 0
    expected_bytes = 4 * config.rows_per_request  # one FP32 prediction per row
    deadline = time.perf_counter() + budget.seconds

    async def worker(index: int) -> None:
        nonlocal issued
        stub = stubs[index % len(stubs)]
        turn = index
        # Single-threaded event loop: the check and the increment cannot interleave.
        while issued < budget.requests and time.perf_counter() < deadline:
            issued += 1
            request = requests[turn % len(requests)]
            turn += config.concurrency
            started = time.perf_counter()
            try:
                response = await stub.ModelInfer(request, timeout=config.call_timeout_s)
            except grpc.aio.AioRpcError as exc:
                record_error(phase, exc.code().name, exc.details() or "")
                continue
            latency = time.perf_counter() - started
            if len(response.raw_output_contents) != 1 or len(response.raw_output_contents[0]) != expected_bytes:
                record_error(phase, "BAD_RESPONSE", f"{len(response.raw_output_contents)} raw outputs")
                continue
            phase.latencies_s.append(latency)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(config.concurrency)))
    phase.elapsed_s = time.perf_counter() - started
    return phase


def record_error(phase: Phase, code: str, details: str) -> None:
    phase.errors[code] += 1
    if len(phase.error_samples) < 5:
        phase.error_samples.append(f"{code}: {details[:200]}")


async def measure_async(server: Server, requests: Sequence[pb.ModelInferRequest], config: LoadConfig,
                        warmup: Budget, measured: Budget) -> tuple[Phase, Phase]:
    channels = open_channels(server.address, config.channels)
    try:
        stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in channels]
        # Warmup is not measured: it opens connections and warms onnxruntime, the loop and caches.
        warm = await drive(stubs, requests, config, warmup)
        client_before, server_before = time.process_time(), server.cpu_seconds()
        phase = await drive(stubs, requests, config, measured)
        phase.client_cpu_s = time.process_time() - client_before  # includes gRPC's own threads
        phase.server_cpu_s = server.cpu_seconds() - server_before
        return warm, phase
    finally:
        for channel in channels:
            await channel.close()


async def check_same_predictions(servers: dict[str, Server], request: pb.ModelInferRequest) -> None:
    """Both servers must answer with the same numbers, or the comparison means nothing."""

    async def ask(server: Server) -> np.ndarray:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            response = await stub.ModelInfer(request, timeout=30)
            return np.frombuffer(response.raw_output_contents[0], dtype="<f4")

    answers = {name: await ask(server) for name, server in servers.items()}
    first, *others = answers.values()
    for other in others:
        if not np.allclose(first, other, rtol=1e-5):
            raise RuntimeError(f"servers disagree on the same request: {answers}")


# -- results ----------------------------------------------------------------------------------


@dataclass
class Summary:
    """Measured rounds of one target at one concurrency, pooled."""

    target: str
    concurrency: int
    rows_per_request: int
    rounds: list[Phase] = field(default_factory=list)
    warmup_errors: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return sum(p.completed for p in self.rounds)

    @property
    def errors(self) -> Counter[str]:
        total = Counter(self.warmup_errors)
        for p in self.rounds:
            total.update(p.errors)
        return total

    @property
    def infer_per_s(self) -> float:
        elapsed = sum(p.elapsed_s for p in self.rounds)
        return self.requests / elapsed if elapsed else 0.0

    def round_rates(self) -> list[float]:
        return [p.completed / p.elapsed_s if p.elapsed_s else 0.0 for p in self.rounds]

    def percentile_ms(self, q: float) -> float:
        latencies = [x for p in self.rounds for x in p.latencies_s]
        return float(np.percentile(latencies, q) * 1000) if latencies else float("nan")

    def max_ms(self) -> float:
        return max((max(p.latencies_s) for p in self.rounds if p.latencies_s), default=float("nan")) * 1000

    def cpu_us_per_request(self, side: str) -> float:
        spent = sum(p.server_cpu_s if side == "server" else p.client_cpu_s for p in self.rounds)
        return spent / self.requests * 1e6 if self.requests else float("nan")


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "-"


def table_rows(summaries: dict[tuple[int, str], Summary], concurrencies: Sequence[int],
               targets: Sequence[str]) -> list[list[str]]:
    rows = []
    for c in concurrencies:
        for t in targets:
            s = summaries[(c, t)]
            base = summaries.get((c, "baseline")) if t == "driftline" else None
            rows.append([
                t, str(c), str(s.requests), f"{s.infer_per_s:,.0f}", f"{s.infer_per_s * s.rows_per_request:,.0f}",
                f"{s.percentile_ms(50):.2f}", f"{s.percentile_ms(90):.2f}", f"{s.percentile_ms(99):.2f}",
                f"{s.max_ms():.1f}", f"{s.cpu_us_per_request('server'):.0f}", f"{s.cpu_us_per_request('client'):.0f}",
                str(sum(s.errors.values())),
                ratio(s.infer_per_s, base.infer_per_s) if base else "",
                ratio(s.percentile_ms(50), base.percentile_ms(50)) if base else "",
                ratio(s.percentile_ms(99), base.percentile_ms(99)) if base else "",
            ])
    return rows


HEADER = ["target", "conc", "requests", "infer/s", "rows/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
          "server CPU us/req", "client CPU us/req", "errors", "infer/s vs base", "p50 vs base", "p99 vs base"]


def render(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(HEADER) - 2)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]

    def line(cells: Sequence[str]) -> str:  # names left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(HEADER), line(["-" * w for w in widths])] + [line(r) for r in rows])


# -- the whole run ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="32", help="workers in flight; a comma list sweeps, e.g. 1,8,32")
    p.add_argument("--requests", type=int, default=5000, help="measured requests per round, at most (default 5000)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per round, at most (default 10)")
    p.add_argument("--rows-per-request", type=int, default=1, help="rows in each request's batch (default 1)")
    p.add_argument("--channels", type=int, default=1, help="gRPC channels (TCP connections) the workers share")
    p.add_argument("--target", choices=["driftline", "baseline", "both"], default="both")
    p.add_argument("--rounds", type=int, default=2, help="measured rounds per target, interleaved (default 2)")
    p.add_argument("--warmup-requests", type=int, default=200, help="unmeasured requests first, at most")
    p.add_argument("--warmup-seconds", type=float, default=1.0, help="unmeasured seconds first, at most")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, in seconds (default 10)")
    p.add_argument("--registry", type=Path, help="use this registry instead of training one in a temp dir")
    p.add_argument("--model", default="housing", help="model name in the registry (default housing)")
    p.add_argument("--train-rows", type=int, default=4000, help="rows to train on when no --registry (default 4000)")
    p.add_argument("--driftline-args", default="", help="extra 'driftline serve' arguments, one shell-quoted string")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = p.parse_args(argv)
    args.concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.concurrencies or min(args.concurrencies) < 1 or args.channels < 1 or args.rows_per_request < 1:
        p.error("--concurrency, --channels and --rows-per-request must be positive")
    return args


async def run(args: argparse.Namespace, servers: dict[str, Server], requests: list[pb.ModelInferRequest],
              ) -> dict[tuple[int, str], Summary]:
    """Every concurrency level, every round, every target in turn; one event loop for all of it."""
    await check_same_predictions(servers, requests[0])
    warmup = Budget(args.warmup_requests, args.warmup_seconds)
    measured = Budget(args.requests, args.duration)
    summaries = {(c, t): Summary(t, c, args.rows_per_request) for c in args.concurrencies for t in servers}
    for c in args.concurrencies:
        config = LoadConfig(c, min(args.channels, c), args.rows_per_request, args.timeout)
        for round_no in range(1, args.rounds + 1):
            for target, server in servers.items():  # alternate targets within every round
                warm, phase = await measure_async(server, requests, config, warmup, measured)
                summary = summaries[(c, target)]
                summary.rounds.append(phase)
                summary.warmup_errors.update(warm.errors)
                print(f"  conc {c:>3} round {round_no} {target:<9}: {phase.completed:>6} ok in {phase.elapsed_s:5.2f} s"
                      f" = {phase.completed / phase.elapsed_s if phase.elapsed_s else 0:8,.0f}/s"
                      f"  errors {sum(phase.errors.values()) + sum(warm.errors.values())}", flush=True)
                for sample in warm.error_samples + phase.error_samples:
                    print(f"    error: {sample}", flush=True)
                if server.process.poll() is not None:
                    raise RuntimeError(f"{target} exited ({server.process.returncode}):\n" + "".join(server.log[-40:]))
    return summaries


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["load.py", *argv])
    targets = TARGETS if args.target == "both" else (args.target,)
    worst = len(args.concurrencies) * args.rounds * len(targets) * (args.warmup_seconds + args.duration + args.timeout)
    print(f"command: {command}")
    print(f"machine: {os.cpu_count()} CPUs, shared by client and servers; worst-case run ~{worst:.0f} s plus startup")
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp, ExitStack() as stack:
        registry = args.registry or train_registry(Path(tmp), args.model, args.train_rows)
        model_file = latest_model_file(registry, args.model)
        argvs = {"baseline": baseline_argv(model_file),
                 "driftline": driftline_argv(registry, args.model, shlex.split(args.driftline_args))}
        # Both stay up for the whole run (the idle one costs ~nothing); ExitStack stops them on any exit.
        servers = {t: stack.enter_context(running(t, argvs[t])) for t in targets}
        print("servers: " + ", ".join(f"{t} on {s.address} (pid {s.process.pid})" for t, s in servers.items()))
        requests = build_requests(args.model, args.rows_per_request)
        summaries = asyncio.run(run(args, servers, requests))
    print()
    print(f"{args.rows_per_request} row(s)/request, {args.channels} channel(s), {args.rounds} interleaved round(s)"
          f" per target, each <= {args.requests} requests or {args.duration:g} s after a warmup")
    print(render(table_rows(summaries, args.concurrencies, targets), args.markdown))
    print(f"\ncommand: {command}")
    errors = Counter()
    for s in summaries.values():
        errors.update(s.errors)
    if errors:
        print(f"FAILED: {sum(errors.values())} request(s) failed: {dict(errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
