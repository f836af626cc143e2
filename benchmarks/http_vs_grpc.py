"""HTTP beside gRPC: one server, one model, batch-1 requests at concurrency 32, through each front end.

One ``driftline serve --workers 1`` (the housing model, CPU) serves both doors; each load generator runs
against it in turn, for ``--duration`` seconds after a short warm-up, and each run reports infer/s,
p50/p99 latency and the server's CPU per request: utime+stime of the server's process tree (/proc)
over the measured run, divided by the requests answered. Client CPU is the load generator's own
(``driftline bench`` reports it; for the others, the children's rusage over the run).

Load generators (each row says which):

- gRPC, ``driftline bench``: the project's harness, a Python grpc.aio client, unary ModelInfer.
- gRPC, ``h2load`` (if installed: Debian's nghttp2-client): a C client sending one pre-framed
  ModelInferRequest on 32 streams of one connection; it reports mean latency, not percentiles.
- HTTP JSON and HTTP binary (the binary tensor extension, binary output), ``wrk`` (if installed:
  ``apt-get install wrk``): a C client, 32 keep-alive connections, one thread.
- HTTP JSON, ``aiohttp``: a Python client in a process of its own, for a like-for-like comparison
  with the Python gRPC client on a small machine where the client's CPU is part of the picture.

Everything listens on and is driven at 127.0.0.1 only; every run is bounded in time, and the server
is stopped in ``finally``. The markdown table goes to stdout, the raw numbers to
``benchmarks/out/http_vs_grpc.json``.

    .venv/bin/python benchmarks/http_vs_grpc.py                  # ~2.5 minutes: 20 s per row
    .venv/bin/python benchmarks/http_vs_grpc.py --duration 5     # a quick look
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import harness
from driftline.cli.bench import machine_busy_seconds, sample_rows, tree_cpu_seconds

MODEL = "housing"
CONCURRENCY = 32
HTTP_LINE = re.compile(r"; http http://(?P<host>[^ ;/]+):(?P<port>\d+)")
WIDTH = 11
DISTINCT = 16  # different rows the HTTP clients cycle through
WARMUP_S = 2


def rows() -> list[list[float]]:
    """The rows ``driftline bench`` sends (synthetic housing, the model's training distribution), so that every
    door is asked the same kind of question. A row outside the training range would be flagged by validation
    on every request, a slower path than the common one (issue 14: 1,500 m2 houses cost 300 us, not 150)."""
    return sample_rows(DISTINCT, WIDTH, "housing", 0).astype(float).tolist()


def json_bodies() -> list[bytes]:
    return [json.dumps({"inputs": [{"name": "input", "shape": [1, WIDTH], "datatype": "FP32", "data": row}]}).encode()
            for row in rows()]


def binary_bodies() -> tuple[list[bytes], int]:
    """Bodies of the binary tensor extension (binary input, binary output), and their common JSON header length."""
    bodies, header = [], b""
    for row in rows():
        raw = np.asarray([row], dtype="<f4").tobytes()
        header = json.dumps({"inputs": [{"name": "input", "shape": [1, WIDTH], "datatype": "FP32",
                                         "parameters": {"binary_data_size": len(raw)}}],
                             "parameters": {"binary_data_output": True}}).encode()
        bodies.append(header + raw)
    return bodies, len(header)


def grpc_frame() -> bytes:
    """A ModelInferRequest as it travels in an HTTP/2 DATA frame: a 5-byte gRPC prefix, then the message."""
    from driftline.proto import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP32", shape=[1, WIDTH])
    request.raw_input_contents.append(np.asarray(rows()[:1], dtype="<f4").tobytes())
    message = request.SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


# -- one measured run -------------------------------------------------------------------------------------
def measured(server: harness.Server, run: Callable[[], dict]) -> dict:
    """``run`` (a load generator in a child process) with the server's CPU measured around it.

    ``run`` returns the measured requests and latencies; ``answered``, when the server also answered a
    warm-up inside the window, and its own CPU figures, when it measures them itself."""
    server_before, _ = tree_cpu_seconds(server.pid)
    busy_before = machine_busy_seconds()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = run()
    elapsed = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = tree_cpu_seconds(server.pid)[0] - server_before
    client_cpu = (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    answered = result.get("answered", result["requests"])
    busy = machine_busy_seconds()
    other = None if busy is None or busy_before is None else (busy - busy_before - server_cpu - client_cpu) / elapsed
    return {"server_cpu_us_per_request": server_cpu / answered * 1e6 if answered else None,
            "client_cpu_us_per_request": client_cpu / answered * 1e6 if answered else None,
            "other_cores": other, "server_cpu_s": server_cpu, "client_cpu_s": client_cpu, "elapsed_s": elapsed,
            "answered": answered, **result}


def run_driftline_bench(server: harness.Server, duration: float) -> dict:
    report = harness.bench(server, MODEL, "--concurrency", str(CONCURRENCY), "--duration", str(duration),
                           "--warmup", str(WARMUP_S), "--requests", "100000000", timeout_s=duration + 120)
    return {"requests": report["completed"], "infer_per_s": report["infer_per_s"],
            "p50_ms": report["latency_ms"]["p50"], "p99_ms": report["latency_ms"]["p99"],
            "errors": report["errors_total"], "command": report["command"],
            # its own figures, over its measured phase only (not its start and warm-up)
            "server_cpu_us_per_request": report["server_cpu_us_per_request"],
            "client_cpu_us_per_request": report["client_cpu_us_per_request"]}


def run_wrk(url: str, bodies: Sequence[bytes] | None, headers: dict[str, str], duration: float, folder: Path,
            name: str = "request") -> Callable[[], dict]:
    """wrk POSTing ``bodies`` in turn (None: GET) to ``url``; ``name`` names its script."""
    script = folder / f"{name}.lua"
    lines = [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    if bodies:
        files = []
        for i, body in enumerate(bodies):
            files.append(folder / f"{name}-{i}.bin")
            files[-1].write_bytes(body)
        # Each request is formatted once, in init; request() only picks the next (no Lua work per request).
        lines += ['wrk.method = "POST"', "local requests, at = {}, 0", "function init(args)",
                  *(f'  local f = io.open("{f}", "rb"); requests[{i + 1}] = wrk.format(nil, nil, nil, f:read("*all"));'
                    " f:close()" for i, f in enumerate(files)),
                  "end", f"function request() at = at % {len(files)} + 1; return requests[at] end"]
    script.write_text("\n".join(lines) + "\n")
    argv = ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{duration:g}s", "--latency", "-s", str(script), url]
    subprocess.run([*argv[:3], f"-d{WARMUP_S}s", *argv[4:]], capture_output=True, timeout=WARMUP_S + 30, check=True)

    def run() -> dict:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
        return {**parse_wrk(out), "command": " ".join(argv[:-3] + ["-s", script.name, url])}

    return run


def parse_wrk(out: str) -> dict:
    ms = milliseconds
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {"requests": requests, "infer_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # the Latency Distribution lines,
            "p99_ms": ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # not a +/- Stdev column
            "errors": (int(failed.group(1)) if failed else 0) + (1 if socket_errors else 0)}


def run_h2load(address: str, duration: float, folder: Path) -> Callable[[], dict]:
    frame = folder / "model_infer.grpc"
    frame.write_bytes(grpc_frame())
    argv = ["h2load", "-c", "1", "-m", str(CONCURRENCY), "-D", f"{duration:g}",
            "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(frame),
            f"http://{address}/inference.GRPCInferenceService/ModelInfer"]
    subprocess.run([*argv[:6], str(WARMUP_S), *argv[7:]], capture_output=True, timeout=WARMUP_S + 30, check=True)

    def run() -> dict:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
        mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1)
        return {"requests": int(done.group(2)), "infer_per_s": float(re.search(r"([\d.]+) req/s", out).group(1)),
                "mean_ms": milliseconds(mean), "errors": int(done.group(3)),
                "command": " ".join(argv[:-3] + ["-d", frame.name, argv[-1]])}

    return run


def milliseconds(text: str) -> float:
    """A duration as wrk and h2load write it (``812.50us``, ``19.45ms``, ``1.02s``)."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


# -- a Python HTTP client, in a process of its own ----------------------------------------------------------
AIOHTTP_CLIENT = """
import asyncio, json, sys, time
import aiohttp

async def main(url, bodies, concurrency, warmup, duration):
    latencies, errors, warm_count = [], 0, [0]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker(until, record, at):
            nonlocal errors
            while time.monotonic() < until:
                started = time.perf_counter()
                at = (at + 1) % len(bodies)
                async with session.post(url, data=bodies[at], headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    if record:
                        latencies.append(time.perf_counter() - started)
                        errors += response.status != 200
                    else:
                        warm_count[0] += 1
        await asyncio.gather(*(worker(time.monotonic() + warmup, False, i) for i in range(concurrency)))
        warm = warm_count[0]
        started, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(worker(started + duration, True, i) for i in range(concurrency)))
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print(json.dumps({"requests": len(latencies), "answered": warm + len(latencies),
                      "infer_per_s": len(latencies) / elapsed, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                      "errors": errors, "client_cpu_us_per_request": cpu / max(len(latencies), 1) * 1e6}))

asyncio.run(main(sys.argv[1], [b.encode() for b in json.loads(sys.argv[2])], int(sys.argv[3]), float(sys.argv[4]),
                 float(sys.argv[5])))
"""


def run_aiohttp(url: str, duration: float) -> Callable[[], dict]:
    argv = [sys.executable, "-c", AIOHTTP_CLIENT, url, json.dumps([b.decode() for b in json_bodies()]),
            str(CONCURRENCY), str(WARMUP_S), f"{duration:g}"]

    def run() -> dict:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + WARMUP_S + 60, check=True)
        return {**json.loads(out.stdout.strip().splitlines()[-1]),
                "command": f"python -c AIOHTTP_CLIENT {url} <json bodies> {CONCURRENCY} {WARMUP_S} {duration:g}"}

    return run


# -- the run ----------------------------------------------------------------------------------------------
def check_http_answers_as_grpc(http_address: str, grpc_address: str) -> None:
    """Before any load: both doors answer the same row with the same prediction."""
    import urllib.request

    import tritonclient.grpc as grpcclient

    with urllib.request.urlopen(urllib.request.Request(f"http://{http_address}/v2/models/{MODEL}/infer",
                                                       data=json_bodies()[0], method="POST"), timeout=30) as response:
        over_http = json.loads(response.read())["outputs"][0]["data"]
    client = grpcclient.InferenceServerClient(grpc_address)
    tensor = grpcclient.InferInput("input", [1, WIDTH], "FP32")
    tensor.set_data_from_numpy(np.asarray(rows()[:1], dtype=np.float32))
    over_grpc = client.infer(MODEL, [tensor]).as_numpy("prediction").reshape(-1).tolist()
    client.close()
    # JSON writes an FP32 as its shortest decimal (517421.7), which reads back as the same FP32 (517421.6875)
    if not np.array_equal(np.asarray(over_http, np.float32), np.asarray(over_grpc, np.float32)):
        raise RuntimeError(f"HTTP answered {over_http}, gRPC {over_grpc}")


def check_grpc_frame(grpc_address: str) -> None:
    """h2load counts HTTP statuses only, and gRPC reports errors in trailers: prove the frame it sends is answered."""
    import grpc

    from driftline.proto import grpc_service_pb2 as pb

    with grpc.insecure_channel(grpc_address) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
        answer = pb.ModelInferResponse.FromString(call(grpc_frame()[5:], timeout=30))
    if [o.name for o in answer.outputs] != ["prediction"]:
        raise RuntimeError(f"the pre-framed ModelInferRequest was answered with {answer}")


def table(rows: list[dict]) -> str:
    def number(value, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = ["| front end | load generator | infer/s | p50 ms | p99 ms | server CPU us/req | client CPU us/req "
             "| other procs (cores) | errors |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        p50 = number(row.get("p50_ms"), 2) if "mean_ms" not in row else f"(mean {row['mean_ms']:.2f})"
        lines.append(f"| {row['front']} | {row['client']} | {number(row['infer_per_s'])} | {p50} | "
                     f"{number(row.get('p99_ms'), 2)} | {number(row['server_cpu_us_per_request'])} | "
                     f"{number(row['client_cpu_us_per_request'])} | {number(row['other_cores'], 2)} | "
                     f"{row['errors']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per row (default 20)")
    args = parser.parse_args(argv)
    registry = harness.OUT / "http_vs_grpc" / "registry"
    harness.train(registry, MODEL)
    serve = harness.driftline_serve_argv(registry, MODEL, "--workers", "1", "--http-port", "0")
    rows: list[dict] = []
    with harness.running("driftline", serve, model=MODEL) as server, tempfile.TemporaryDirectory() as tmp:
        match = next(m for line in server.log if (m := HTTP_LINE.search(line)))
        http_address = f"{match.group('host')}:{match.group('port')}"
        check_http_answers_as_grpc(http_address, server.address)
        url = f"http://{http_address}/v2/models/{MODEL}/infer"
        binary, header_length = binary_bodies()
        plan: list[tuple[str, str, Callable[[], dict]]] = [
            ("gRPC unary", "driftline bench (Python grpc.aio)", lambda: run_driftline_bench(server, args.duration))]
        if shutil.which("h2load"):
            check_grpc_frame(server.address)
            plan.append(("gRPC unary", "h2load (C), 1 connection, 32 streams",
                         run_h2load(server.address, args.duration, Path(tmp))))
        if shutil.which("wrk"):
            plan.append(("HTTP JSON", "wrk (C), 32 connections",
                         run_wrk(url, json_bodies(), {"Content-Type": "application/json"}, args.duration, Path(tmp),
                                 "json")))
            plan.append(("HTTP binary tensors", "wrk (C), 32 connections",
                         run_wrk(url, binary, {"Inference-Header-Content-Length": str(header_length)},
                                 args.duration, Path(tmp), "binary")))
        plan.append(("HTTP JSON", "aiohttp (Python), 32 connections", run_aiohttp(url, args.duration)))
        if shutil.which("wrk"):  # the floor: the HTTP front end alone, no model (what routing and uvicorn cost)
            plan.append(("HTTP GET /v2/health/live", "wrk (C), 32 connections",
                         run_wrk(f"http://{http_address}/v2/health/live", None, {}, args.duration, Path(tmp),
                                 "live")))
        for front, client, run in plan:
            print(f"running {front} with {client} for {args.duration:g} s ...", file=sys.stderr, flush=True)
            rows.append({"front": front, "client": client, **measured(server, run)})
    harness.OUT.mkdir(parents=True, exist_ok=True)
    (harness.OUT / "http_vs_grpc.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
