"""driftline bench: drive an Open Inference Protocol (KServe v2) gRPC server on 127.0.0.1 and report
throughput, latency and the CPU both sides spent per request.

Works against any server that speaks the protocol (driftline, Triton/PyTriton, MLServer, KServe):
it reads the model's input from ModelMetadata and sends FP32 rows. Built to cost the machine little
so that it is not what it measures: every request is serialised once, before the run, and sent as
bytes (no protobuf work per call); only a sample of the answers is parsed (every answer of a stream,
whose ids are matched); the garbage collector is off while a phase runs.

Modes:
  --closed-loop --concurrency C   C requests in flight, each sent when the previous one answers
  --open-loop --rate R            requests arrive at R/s (Poisson or fixed interval), answered or not;
                                  latency counts from the moment a request was due, so a slow server
                                  cannot hide its queueing by slowing the client down
  --stream                        ModelStreamInfer: --streams bidirectional streams carry the load,
                                  in closed loop with concurrency/streams messages in flight on each

Every phase is bounded by --requests and --duration, whichever ends first, after a warmup bounded the
same way. --server-pid PID adds the server's CPU seconds (utime+stime from /proc, the whole process
tree, so --workers children count) per request; the client's own CPU per request is always reported.
Exit status: 0 when every request succeeded, 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

LOCAL_HOST = "127.0.0.1"  # the only address this command sends load to
SERVICE = "/inference.GRPCInferenceService/"
DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}  # datatype -> numpy dtype
VALIDATE_EVERY = 32  # unary answers parsed and checked: one in this many (and every warmup answer)
MAX_ERROR_SAMPLES = 5
MESSAGE_BYTES = 64 * 1024 * 1024


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="load-test an inference server on 127.0.0.1", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=f"{LOCAL_HOST}:8001", metavar="127.0.0.1:PORT",
                   help="server address; only 127.0.0.1 is accepted")
    p.add_argument("--model", default="housing", help="model name (default housing)")
    p.add_argument("--model-version", default="", help="model version to ask for (default: the server's choice)")
    loop = p.add_mutually_exclusive_group()
    loop.add_argument("--closed-loop", dest="mode", action="store_const", const="closed",
                      help="C requests in flight, each sent when one answers (the default)")
    loop.add_argument("--open-loop", dest="mode", action="store_const", const="open",
                      help="requests arrive at --rate per second whether or not earlier ones answered")
    p.set_defaults(mode="closed")
    p.add_argument("--concurrency", type=int, default=32, help="closed loop: requests in flight (default 32)")
    p.add_argument("--rate", type=float, default=1000.0, help="open loop: requests per second (default 1000)")
    p.add_argument("--arrivals", choices=["poisson", "fixed"], default="poisson",
                   help="open loop: Poisson arrivals or a fixed interval (default poisson)")
    p.add_argument("--max-outstanding", type=int, default=10_000,
                   help="open loop: arrivals beyond this many unanswered requests are dropped and counted")
    p.add_argument("--stream", action="store_true", help="ModelStreamInfer instead of unary ModelInfer")
    p.add_argument("--streams", type=int, default=1, help="with --stream: bidirectional streams (default 1)")
    p.add_argument("--rows-per-request", type=int, default=1, help="rows in each request (default 1)")
    p.add_argument("--outputs", default="", metavar="NAME,...",
                   help="outputs each request asks for by name, e.g. prediction,attribution (default: none named, "
                        "so the model's own outputs)")
    p.add_argument("--channels", type=int, default=1, help="gRPC channels (TCP connections) to spread over")
    p.add_argument("--requests", type=int, default=20_000,
                   help="measured requests, at most (default 20000; open loop: arrivals, dropped ones included)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds, at most (default 10)")
    p.add_argument("--warmup-requests", type=int, default=500, help="unmeasured requests first, at most")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first, at most (default 2)")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each call in seconds (default 10)")
    p.add_argument("--server-pid", type=int, help="server process id: report its CPU (children included)")
    p.add_argument("--input-name", help="input tensor name (default: from ModelMetadata)")
    p.add_argument("--width", type=int, help="features per row (default: from ModelMetadata)")
    p.add_argument("--data", choices=["auto", "housing", "random"], default="auto",
                   help="rows: the synthetic housing generator, uniform random, or auto (housing when 11 wide)")
    p.add_argument("--seed", type=int, default=0, help="seed for rows and arrival times")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    server: str
    model: str
    model_version: str = ""
    mode: str = "closed"  # "closed" or "open"
    concurrency: int = 32
    rate: float = 1000.0
    arrivals: str = "poisson"
    max_outstanding: int = 10_000
    stream: bool = False
    streams: int = 1
    rows_per_request: int = 1
    channels: int = 1
    requests: int = 20_000
    duration_s: float = 10.0
    warmup_requests: int = 500
    warmup_s: float = 2.0
    timeout_s: float = 10.0
    server_pid: int | None = None
    input_name: str | None = None
    width: int | None = None
    data: str = "auto"
    seed: int = 0
    outputs: tuple[str, ...] = ()  # outputs each request names (empty: the server's default)

    def check(self) -> None:
        from driftline.errors import InvalidInput

        parse_address(self.server)
        positive = {"--concurrency": self.concurrency, "--streams": self.streams, "--channels": self.channels,
                    "--rows-per-request": self.rows_per_request, "--requests": self.requests,
                    "--max-outstanding": self.max_outstanding}
        bad = [name for name, value in positive.items() if value < 1]
        if bad or self.duration_s <= 0 or self.timeout_s <= 0 or self.rate <= 0:
            raise InvalidInput(f"{', '.join(bad) or '--duration, --timeout and --rate'} must be positive")
        if self.warmup_requests < 0 or self.warmup_s < 0:
            raise InvalidInput("--warmup-requests and --warmup must be >= 0")
        if self.mode not in ("closed", "open") or self.arrivals not in ("poisson", "fixed"):
            raise InvalidInput(f"unknown mode {self.mode!r} or arrivals {self.arrivals!r}")


def parse_address(address: str) -> tuple[str, int]:
    """``127.0.0.1:PORT``; any other host is refused: this tool sends load to this machine only."""
    from driftline.errors import InvalidInput

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"--server must be {LOCAL_HOST}:PORT, got {address!r}")
    if host != LOCAL_HOST:
        raise InvalidInput(f"driftline bench only sends load to {LOCAL_HOST}, not {host!r}")
    return host, int(port)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        server=args.server, model=args.model, model_version=args.model_version, mode=args.mode,
        concurrency=args.concurrency, rate=args.rate, arrivals=args.arrivals, max_outstanding=args.max_outstanding,
        stream=args.stream, streams=args.streams, rows_per_request=args.rows_per_request, channels=args.channels,
        requests=args.requests, duration_s=args.duration, warmup_requests=args.warmup_requests,
        warmup_s=args.warmup, timeout_s=args.timeout, server_pid=args.server_pid, input_name=args.input_name,
        width=args.width, data=args.data, seed=args.seed,
        outputs=tuple(name.strip() for name in args.outputs.split(",") if name.strip()),
    )


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    report = run_bench(config)
    print(json.dumps(report, indent=2) if args.json else format_report(report), flush=True)
    return 1 if report["errors_total"] else 0


# -- CPU accounting ---------------------------------------------------------------------------


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def tree_cpu_seconds(pid: int) -> tuple[float, int]:
    """User+system CPU seconds of ``pid`` and its descendants so far, and how many processes that is."""
    ticks, count = 0, 0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
            count += 1
    if count == 0:
        raise ProcessLookupError(f"no process {pid}")
    return ticks / os.sysconf("SC_CLK_TCK"), count


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (/proc/stat), to see what else ran meanwhile."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# -- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInput:
    name: str
    datatype: str
    width: int


def model_input(config: BenchConfig) -> ModelInput:
    """The model's first input, from ModelMetadata unless --input-name and --width say it."""
    import grpc
    from driftline.proto import grpc_service_pb2 as pb
    from driftline.proto import grpc_service_pb2_grpc as pb_grpc

    from driftline.errors import InvalidInput, Unavailable

    if config.input_name and config.width:
        return ModelInput(config.input_name, "FP32", config.width)
    with grpc.insecure_channel(config.server) as channel:
        try:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=config.model, version=config.model_version),
                                      timeout=config.timeout_s, wait_for_ready=True)
        except grpc.RpcError as exc:
            raise Unavailable(f"ModelMetadata for {config.model!r} at {config.server} failed: "
                              f"{exc.code().name}: {exc.details()}") from None
    if not meta.inputs:
        raise InvalidInput(f"{config.model!r} has no inputs in its metadata")
    tensor = meta.inputs[0]
    width = config.width or (int(tensor.shape[-1]) if tensor.shape and tensor.shape[-1] > 0 else 0)
    if width <= 0:
        raise InvalidInput(f"input {tensor.name!r} has shape {list(tensor.shape)}: give --width")
    datatype = tensor.datatype if tensor.datatype in DTYPES else "FP32"
    return ModelInput(config.input_name or tensor.name, datatype, width)


def sample_rows(count: int, width: int, data: str, seed: int):
    """Rows to send: synthetic housing (the model's own training distribution) or uniform random."""
    import numpy as np

    if data == "housing" or (data == "auto" and width == 11):
        from driftline.trainer import synthetic  # polars: imported only here

        frame = synthetic.housing(max(count, 2), seed=seed + 12345)
        rows = frame.select(list(synthetic.FEATURES)).to_numpy()[:count]
        if rows.shape[1] == width:
            return rows.astype(np.float32)
    return np.random.default_rng(seed).uniform(0, 100, size=(count, width)).astype(np.float32)


def build_payloads(config: BenchConfig, tensor: ModelInput, distinct: int = 64) -> list[tuple[str, bytes]]:
    """``distinct`` different requests, serialised once: (id, bytes). Ids only where a stream needs them."""
    import numpy as np
    from driftline.proto import grpc_service_pb2 as pb

    rows = sample_rows(distinct * config.rows_per_request, tensor.width, config.data, config.seed)
    payloads = []
    for i in range(distinct):
        chunk = rows[i * config.rows_per_request:(i + 1) * config.rows_per_request]
        chunk = np.ascontiguousarray(chunk, dtype=DTYPES[tensor.datatype])
        request = pb.ModelInferRequest(model_name=config.model, model_version=config.model_version,
                                       id=f"b{i}" if config.stream else "")
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(chunk.shape))
        request.raw_input_contents.append(chunk.tobytes())
        for name in config.outputs:
            request.outputs.add(name=name)
        payloads.append((request.id, request.SerializeToString()))
    return payloads


# -- one phase --------------------------------------------------------------------------------


@dataclass
class Phase:
    """What one warmup or measured phase produced."""

    requests: int  # budget
    seconds: float  # budget
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    issued: int = 0
    dropped: int = 0  # open loop: arrivals not sent because --max-outstanding requests were unanswered
    elapsed_s: float = 0.0
    validate_all: bool = False
    _seen: int = 0

    def error(self, code: str, details: str) -> None:
        self.errors[code] += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(f"{code}: {details[:200]}")

    def may_issue(self, deadline: float) -> bool:
        return self.issued < self.requests and time.perf_counter() < deadline

    def due_for_check(self) -> bool:
        self._seen += 1
        return self.validate_all or self._seen % VALIDATE_EVERY == 1


class Driver:
    """Sends one phase of load over already-open channels (asyncio, grpc.aio, bytes in and out)."""

    def __init__(self, config: BenchConfig, channels: list, payloads: list[tuple[str, bytes]]) -> None:
        from driftline.proto import grpc_service_pb2 as pb

        self.config = config
        self.payloads = payloads
        self.pb = pb
        self.unary = [c.unary_unary(SERVICE + "ModelInfer", request_serializer=None, response_deserializer=None)
                      for c in channels]
        self.streaming = [c.stream_stream(SERVICE + "ModelStreamInfer", request_serializer=None,
                                          response_deserializer=None) for c in channels]

    def arrival_offsets(self, phase: Phase):
        """Seconds from the phase start at which open-loop requests are due, lazily."""
        import numpy as np

        rng = np.random.default_rng(self.config.seed + 1)
        t, interval = 0.0, 1.0 / self.config.rate
        while True:
            block = (rng.exponential(interval, 4096) if self.config.arrivals == "poisson"
                     else np.full(4096, interval))
            for gap in block.tolist():
                yield t
                t += gap

    def check_unary(self, phase: Phase, raw: bytes) -> None:
        response = self.pb.ModelInferResponse.FromString(raw)
        if not response.outputs:
            phase.error("BAD_RESPONSE", "answer has no outputs")
        elif response.outputs[0].shape and response.outputs[0].shape[0] != self.config.rows_per_request:
            phase.error("BAD_RESPONSE", f"output shape {list(response.outputs[0].shape)} for "
                        f"{self.config.rows_per_request} rows")

    async def run(self, phase: Phase) -> Phase:
        import gc

        gc.collect()
        gc.disable()  # nothing cyclic is made per request; a collection would only add pauses
        started = time.perf_counter()
        try:
            if self.config.stream:
                await self.streams(phase, started)
            elif self.config.mode == "closed":
                await self.closed_unary(phase, started)
            else:
                await self.open_unary(phase, started)
        finally:
            phase.elapsed_s = time.perf_counter() - started
            gc.enable()
        return phase

    # unary --------------------------------------------------------------------------------------
    async def one_unary(self, phase: Phase, call, payload: bytes, since: float) -> None:
        import grpc

        try:
            raw = await call(payload, timeout=self.config.timeout_s)
        except grpc.aio.AioRpcError as exc:
            phase.error(exc.code().name, exc.details() or "")
            return
        phase.latencies_s.append(time.perf_counter() - since)
        if phase.due_for_check():
            self.check_unary(phase, raw)

    async def closed_unary(self, phase: Phase, started: float) -> None:
        import asyncio

        deadline = started + phase.seconds
        count, payloads, calls = self.config.concurrency, self.payloads, self.unary

        async def worker(index: int) -> None:
            call, turn = calls[index % len(calls)], index
            while phase.may_issue(deadline):  # one event loop thread: check and increment cannot interleave
                phase.issued += 1
                payload = payloads[turn % len(payloads)][1]
                turn += count
                await self.one_unary(phase, call, payload, time.perf_counter())

        await asyncio.gather(*(worker(i) for i in range(count)))

    async def open_unary(self, phase: Phase, started: float) -> None:
        import asyncio

        deadline = started + phase.seconds
        pending: set = set()
        calls, payloads = self.unary, self.payloads
        for offset in self.arrival_offsets(phase):
            due = started + offset
            if not (phase.issued + phase.dropped < phase.requests and due < deadline):
                break
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if len(pending) >= self.config.max_outstanding:
                phase.dropped += 1
                continue
            i = phase.issued
            phase.issued += 1
            task = asyncio.ensure_future(self.one_unary(phase, calls[i % len(calls)], payloads[i % len(payloads)][1],
                                                        due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)

    # streaming ----------------------------------------------------------------------------------
    async def streams(self, phase: Phase, started: float) -> None:
        import asyncio

        count = self.config.streams
        if self.config.mode == "closed":
            windows = [self.config.concurrency // count + (1 if i < self.config.concurrency % count else 0)
                       for i in range(count)]
            await asyncio.gather(*(self.closed_stream(phase, started, i, w) for i, w in enumerate(windows) if w))
        else:
            await self.open_stream(phase, started)

    def open_call(self, index: int, phase: Phase):
        return self.streaming[index % len(self.streaming)](timeout=phase.seconds + self.config.timeout_s + 5)

    async def read_stream(self, phase: Phase, call, sent, on_answer) -> None:
        """Match each answer to its request (by id; in order when the server sends no id)."""
        import grpc

        from_string = self.pb.ModelStreamInferResponse.FromString
        try:
            async for raw in call:
                now = time.perf_counter()
                message = from_string(raw)
                answer_id = message.infer_response.id
                if not sent:
                    phase.error("BAD_RESPONSE", "an answer for no outstanding request")
                    continue
                if not answer_id or sent[0][0] == answer_id:
                    _, since = sent.popleft()
                else:
                    match = next((item for item in sent if item[0] == answer_id), None)
                    if match is None:
                        phase.error("BAD_RESPONSE", f"an answer with unknown id {answer_id!r}")
                        continue
                    sent.remove(match)
                    since = match[1]
                if message.error_message:
                    phase.error("IN_BAND_ERROR", message.error_message)
                elif not message.infer_response.outputs:
                    phase.error("BAD_RESPONSE", "answer has no outputs")
                else:
                    phase.latencies_s.append(now - since)
                on_answer()
        except grpc.aio.AioRpcError as exc:
            lost = len(sent)
            phase.errors[exc.code().name] += max(lost, 1)
            if len(phase.error_samples) < MAX_ERROR_SAMPLES:
                phase.error_samples.append(f"{exc.code().name}: stream ended, {lost} unanswered: {exc.details()}")
            sent.clear()

    async def closed_stream(self, phase: Phase, started: float, index: int, window: int) -> None:
        import asyncio
        from collections import deque

        call = self.open_call(index, phase)
        credit = asyncio.Semaphore(window)
        sent: deque = deque()
        payloads = self.payloads
        deadline = started + phase.seconds

        async def write() -> None:
            turn = index
            try:
                while True:
                    await credit.acquire()
                    if not phase.may_issue(deadline):
                        break
                    phase.issued += 1
                    message_id, payload = payloads[turn % len(payloads)]
                    turn += self.config.streams
                    sent.append((message_id, time.perf_counter()))
                    await call.write(payload)
                await call.done_writing()
            except Exception:  # noqa: BLE001 - the reader reports how the stream ended
                pass

        writer = asyncio.ensure_future(write())
        await self.read_stream(phase, call, sent, credit.release)
        writer.cancel()

    async def open_stream(self, phase: Phase, started: float) -> None:
        import asyncio
        from collections import deque

        count, payloads = self.config.streams, self.payloads
        calls = [self.open_call(i, phase) for i in range(count)]
        sent = [deque() for _ in range(count)]
        outstanding = [0]

        def answered() -> None:
            outstanding[0] -= 1

        readers = [asyncio.ensure_future(self.read_stream(phase, calls[i], sent[i], answered)) for i in range(count)]
        deadline = started + phase.seconds
        try:
            for offset in self.arrival_offsets(phase):
                due = started + offset
                if not (phase.issued + phase.dropped < phase.requests and due < deadline):
                    break
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if outstanding[0] >= self.config.max_outstanding:
                    phase.dropped += 1
                    continue
                i = phase.issued
                phase.issued += 1
                outstanding[0] += 1
                message_id, payload = payloads[i % len(payloads)]
                sent[i % count].append((message_id, due))
                await calls[i % count].write(payload)
            for call in calls:
                await call.done_writing()
        except Exception:  # noqa: BLE001 - a broken stream is reported by its reader
            pass
        await asyncio.gather(*readers)


# -- the whole run ----------------------------------------------------------------------------


async def _run_phases(config: BenchConfig, payloads: list[tuple[str, bytes]]) -> tuple[Phase, Phase, dict]:
    import grpc

    options = [("grpc.use_local_subchannel_pool", 1),  # else channels share one TCP connection
               ("grpc.max_receive_message_length", MESSAGE_BYTES), ("grpc.max_send_message_length", MESSAGE_BYTES)]
    channels = [grpc.aio.insecure_channel(config.server, options=options) for _ in range(config.channels)]
    try:
        for channel in channels:
            await asyncio_wait_ready(channel, config.timeout_s)
        driver = Driver(config, channels, payloads)
        warm = Phase(config.warmup_requests, config.warmup_s, validate_all=True)
        if config.warmup_requests and config.warmup_s:
            await driver.run(warm)
        measured = Phase(config.requests, config.duration_s)
        cpu: dict = {}
        server_before = tree_cpu_seconds(config.server_pid) if config.server_pid else None
        busy_before = machine_busy_seconds()
        client_before = time.process_time()  # every thread of this process, gRPC's own included
        await driver.run(measured)
        cpu["client_cpu_s"] = time.process_time() - client_before
        busy_after = machine_busy_seconds()
        if busy_before is not None and busy_after is not None:
            cpu["machine_busy_cpu_s"] = busy_after - busy_before
        if server_before is not None:
            after, processes = tree_cpu_seconds(config.server_pid)
            cpu["server_cpu_s"] = after - server_before[0]
            cpu["server_processes"] = processes
        return warm, measured, cpu
    finally:
        for channel in channels:
            await channel.close()


async def asyncio_wait_ready(channel, timeout_s: float) -> None:
    import asyncio

    from driftline.errors import Unavailable

    try:
        await asyncio.wait_for(channel.channel_ready(), timeout_s)
    except TimeoutError:
        raise Unavailable(f"could not connect in {timeout_s:g} s") from None


def run_bench(config: BenchConfig) -> dict:
    """Warm up, measure, and return the report (a JSON-ready dict)."""
    import asyncio

    config.check()
    tensor = model_input(config)
    payloads = build_payloads(config, tensor)
    warm, measured, cpu = asyncio.run(_run_phases(config, payloads))
    return make_report(config, tensor, warm, measured, cpu)


def make_report(config: BenchConfig, tensor: ModelInput, warm: Phase, measured: Phase, cpu: dict) -> dict:
    import numpy as np

    done = len(measured.latencies_s)
    latencies = np.asarray(measured.latencies_s) * 1000
    rate = done / measured.elapsed_s if measured.elapsed_s else 0.0

    def pct(q: float) -> float | None:
        return round(float(np.percentile(latencies, q)), 4) if done else None

    def per_request(seconds: float | None) -> float | None:
        return round(seconds / done * 1e6, 2) if seconds is not None and done else None

    errors = Counter(warm.errors) + Counter(measured.errors)
    return {
        "config": asdict(config),
        "input": asdict(tensor),
        "transport": "stream" if config.stream else "unary",
        "mode": config.mode,
        "issued": measured.issued,
        "completed": done,
        "dropped": measured.dropped,
        "errors": dict(measured.errors),
        "errors_total": sum(errors.values()),
        "error_samples": warm.error_samples + measured.error_samples,
        "elapsed_s": round(measured.elapsed_s, 4),
        "infer_per_s": round(rate, 2),
        "rows_per_s": round(rate * config.rows_per_request, 2),
        "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99),
                       "max": round(float(latencies.max()), 4) if done else None,
                       "mean": round(float(latencies.mean()), 4) if done else None},
        "client_cpu_s": round(cpu.get("client_cpu_s", 0.0), 4),
        "client_cpu_us_per_request": per_request(cpu.get("client_cpu_s")),
        "server_cpu_s": round(cpu["server_cpu_s"], 4) if "server_cpu_s" in cpu else None,
        "server_cpu_us_per_request": per_request(cpu.get("server_cpu_s")),
        "server_processes": cpu.get("server_processes"),
        # Busy CPU of the whole machine over the phase; "other" is what neither side used (other processes).
        "machine_busy_cpu_s": round(cpu["machine_busy_cpu_s"], 3) if "machine_busy_cpu_s" in cpu else None,
        "other_cpu_s": (round(cpu["machine_busy_cpu_s"] - cpu["client_cpu_s"] - cpu["server_cpu_s"], 3)
                        if "machine_busy_cpu_s" in cpu and "server_cpu_s" in cpu else None),
        "warmup": {"completed": len(warm.latencies_s), "errors": dict(warm.errors),
                   "elapsed_s": round(warm.elapsed_s, 4)},
        "cpu_count": os.cpu_count(),
    }


def format_report(report: dict) -> str:
    c = report["config"]
    how = (f"closed loop, concurrency {c['concurrency']}" if c["mode"] == "closed"
           else f"open loop, {c['rate']:g}/s {c['arrivals']}")
    via = f"{c['streams']} stream(s)" if c["stream"] else "unary"
    lat = report["latency_ms"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    def us(value: float | None) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.0f} us"

    lines = [
        f"{c['model']} at {c['server']}: {how}, {via}, {c['rows_per_request']} row(s)/request, "
        f"{c['channels']} channel(s)",
        f"  completed  {report['completed']:,} in {report['elapsed_s']:.2f} s"
        + (f"  (dropped {report['dropped']:,})" if report["dropped"] else ""),
        f"  infer/s    {report['infer_per_s']:,.1f}",
        f"  rows/s     {report['rows_per_s']:,.1f}",
        f"  latency ms p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p99 {ms(lat['p99'])}  max {ms(lat['max'])}",
        f"  CPU/req    server {us(report['server_cpu_us_per_request'])}"
        + (f" ({report['server_processes']} process(es))" if report["server_processes"] else " (give --server-pid)")
        + f"  client {us(report['client_cpu_us_per_request'])}",
        f"  machine    {report['cpu_count']} CPUs, busy {report['machine_busy_cpu_s'] or 0:.2f} CPU-s in the phase"
        + (f", of which {report['other_cpu_s']:.2f} by other processes" if report["other_cpu_s"] is not None else ""),
        f"  errors     {report['errors_total']}" + (f" {report['errors']}" if report["errors"] else ""),
    ]
    lines += [f"    {sample}" for sample in report["error_samples"]]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m driftline.cli.bench (same as `driftline bench`)
    from driftline.cli.main import main

    sys.exit(main(["bench", *sys.argv[1:]]))
