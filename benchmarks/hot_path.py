"""The hot path (issue 14): driftline's configurations beside the plain per-request server, same run, same client.

Trains a synthetic housing model into a temporary registry (unless ``--registry``), starts every target once,
then runs each load against every target, rounds interleaved (plain, driftline, ..., plain, driftline, ...) so
that a shared machine's drift hits all alike. Every row reports its ratio to the reference target (``plain``
unless ``--reference``) from the same run. Targets:

- ``plain``: ``baseline_server.py``, a 120-line grpc.aio server calling onnxruntime per request in a thread pool;
- ``plain-inline``: the same calling onnxruntime on the event loop (faster for a microsecond model);
- ``empty``: ``empty_server.py``, handlers that answer a constant: the transport's floor;
- ``empty-cpp``: ``empty_cpp_server.py``, the same constants from a gRPC C++ callback-API server that does not
  parse the request (built on first use with g++ and the system's grpc++): the floor of issue 18's "within 3x";
- ``driftline``: ``driftline serve`` with its defaults (drift, validation, attribution sampling, metrics) on the
  Python gRPC door (``--front-end python``);
- ``compiled``: the same with ``--front-end compiled`` (the C++ door of server/compiled/, built by ``make setup``;
  what ``auto``, the default, serves on where it is built);
- ``NAME=ARGS`` (``--driftline``, repeatable): ``driftline serve ARGS``, e.g. ``off="--no-drift"``;
- ``before`` (``--before PYTHON``): ``driftline serve`` of another install (an earlier commit), to see what changed.

Loads (``--load``, repeatable): ``b1`` batch-1 unary at ``--concurrency`` (32); ``r64`` 64-row requests at c=8;
``r64-shap`` the same asking for every row's exact attributions (driftline targets only);
``stream`` batch-1 ModelStreamInfer at ``--concurrency`` over ``--streams`` streams (default one per 16 in flight;
the plain servers get unary calls: a target without a stream handler is measured the way it can be driven).

    .venv/bin/python benchmarks/hot_path.py --load b1 --load r64 --driftline "off=--no-drift" --rounds 3
    .venv/bin/python benchmarks/hot_path.py --load b1 --driftline "w1=--workers 1" --driftline "w2=--workers 2"

``--ceiling`` adds in-process onnxruntime (``ort_ceiling.py``) at 1 and 64 rows; ``--h2load`` adds batch-1 unary driven by
h2load (nghttp2's C load generator: ``apt-get install nghttp2-client``), whose own cost does not bound the rate. Prints markdown tables; ``--json
PATH`` keeps every round. Exit status 1 when any request failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from compare import pool  # noqa: E402

LOADS = {
    "b1": ("batch-1 unary", ["--rows-per-request", "1"], None),
    "r64": ("64-row unary, c=8", ["--rows-per-request", "64"], 8),
    "stream": ("batch-1 stream", ["--rows-per-request", "1", "--stream"], None),
    # exact attributions for every row: driftline targets only (the plain and empty servers have none)
    "r64-shap": ("64-row unary asking for every row's attributions, c=8",
                 ["--rows-per-request", "64", "--outputs", "prediction,attribution"], 8),
}
# compiled: driftline's --front-end compiled; empty-cpp: empty_cpp_server.py
BUILTIN = ("plain", "plain-inline", "empty", "empty-cpp", "driftline", "compiled")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", choices=BUILTIN, help="built-in targets (default: plain, driftline)")
    p.add_argument("--driftline", action="append", default=[], metavar="NAME=ARGS",
                   help="a driftline configuration: a name and its 'driftline serve' arguments")
    p.add_argument("--before", metavar="PYTHON", help="add target 'before': the driftline installed for this "
                   "interpreter (e.g. a venv holding an earlier commit), with the same arguments as 'driftline'")
    p.add_argument("--load", action="append", choices=sorted(LOADS), help="loads to run (default: b1)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight for b1 and stream (default 32)")
    p.add_argument("--channels", type=int, default=1, help="gRPC connections the client spreads over (default 1; "
                   "the kernel hands each connection to one worker, so --workers N needs N or more to be used)")
    p.add_argument("--streams", type=int, help="streams carrying the stream load (default: one per 16 in flight)")
    p.add_argument("--reference", default="plain", help="the target every ratio is against (default plain)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=6.0, help="measured seconds per round (default 6)")
    p.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each round (default 1.5)")
    p.add_argument("--registry", type=Path, help="serve this registry instead of training one")
    p.add_argument("--model", default="housing")
    p.add_argument("--ceiling", action="store_true", help="add in-process onnxruntime at 1 and 64 rows")
    p.add_argument("--json", type=Path, help="write every round's report here")
    p.add_argument("--h2load", action="store_true", help="also drive batch-1 unary with h2load (a C load generator: "
                   "one connection, --concurrency streams), reporting infer/s and server CPU per request")
    args = p.parse_args(argv)
    args.targets = list(dict.fromkeys(args.target or ["plain", "driftline"]))
    args.variants = {}
    for spec in args.driftline:
        name, sep, extra = spec.partition("=")
        if not sep or not name or name in BUILTIN:
            p.error(f"--driftline wants NAME=ARGS with a new name, got {spec!r}")
        args.variants[name] = shlex.split(extra)
        args.targets.append(name)
    if args.before:
        args.targets.append("before")
    args.loads = list(dict.fromkeys(args.load or ["b1"]))
    if args.reference not in args.targets:
        p.error(f"--reference {args.reference!r} is not among the targets {args.targets}")
    return args


def argvs(args: argparse.Namespace, registry: Path, model_file: Path) -> dict[str, list[str]]:
    plain = [sys.executable, str(harness.BENCH_DIR / "baseline_server.py"), "--model", str(model_file),
             "--host", harness.HOST, "--port", "0"]
    known = {
        "plain": plain,
        "plain-inline": [*plain, "--inline"],
        "empty": [sys.executable, str(harness.BENCH_DIR / "empty_server.py"), "--host", harness.HOST, "--port", "0",
                  "--model", args.model],
        "empty-cpp": [sys.executable, str(harness.BENCH_DIR / "empty_cpp_server.py"), "--host", harness.HOST,
                      "--port", "0", "--model", args.model],
        "driftline": harness.driftline_serve_argv(registry, args.model, "--metrics-port", "0", "--http-port", "0",
                                                  "--front-end", "python"),
        "compiled": harness.driftline_serve_argv(registry, args.model, "--metrics-port", "0", "--http-port", "0",
                                                 "--front-end", "compiled"),
    }
    if args.before:
        known["before"] = harness.driftline_serve_argv(registry, args.model, "--metrics-port", "0", "--http-port", "0",
                                                       python=args.before)
    for name, extra in args.variants.items():
        known[name] = harness.driftline_serve_argv(registry, args.model, "--metrics-port", "0", "--http-port", "0",
                                                   *extra)
    return {t: known[t] for t in args.targets}


def bench_args(load: str, target: str, args: argparse.Namespace) -> list[str]:
    _, extra, concurrency = LOADS[load]
    concurrency = concurrency or args.concurrency
    if "--stream" in extra:
        if target.startswith("plain"):  # no stream handler: driven with unary calls
            extra = [e for e in extra if e != "--stream"]
        else:
            extra = [*extra, "--streams", str(args.streams or max(1, concurrency // 16))]
    return ["--concurrency", str(concurrency), "--channels", str(min(args.channels, concurrency)),
            "--requests", "10000000", "--duration", str(args.duration),
            "--warmup", str(args.warmup), "--warmup-requests", "100000", "--timeout", "10", *extra]


def table(load: str, pooled: dict[str, dict], reference: str) -> str:
    ref = pooled[reference]
    head = ("| target | infer/s | rows/s | p50 ms | p99 ms | server CPU us/req | client CPU us/req | other cores | "
            f"errors | vs {reference} |")
    lines = [f"**{LOADS[load][0]}**", "", head, "|---|" + "---:|" * 9]
    for name, r in pooled.items():
        lat = r["latency_ms"]
        other = (r.get("other_cpu_s") or 0) / r["elapsed_s"] if r["elapsed_s"] else 0
        ratio = r["infer_per_s"] / ref["infer_per_s"] if ref["infer_per_s"] else 0
        lines.append(f"| {name} | {r['infer_per_s']:,.0f} | {r['rows_per_s']:,.0f} | {lat['p50']:.2f} | "
                     f"{lat['p99']:.2f} | {r['server_cpu_us_per_request'] or 0:.0f} | "
                     f"{r['client_cpu_us_per_request'] or 0:.0f} | {other:.2f} | {r['errors_total']} | {ratio:.2f}x |")
    return "\n".join(lines)


def ceiling(model_file: Path) -> str:
    out = subprocess.run([sys.executable, str(harness.BENCH_DIR / "ort_ceiling.py"), "--model", str(model_file),
                          "--batch", "1,64", "--seconds", "3"], capture_output=True, text=True, check=True)
    results = json.loads(out.stdout)["results"]
    return "in-process onnxruntime (one thread): " + "; ".join(
        f"{r['batch']} rows: {r['calls_per_s']:,.0f} calls/s = {r['rows_per_s']:,.0f} rows/s" for r in results)


def h2load(server: harness.Server, args: argparse.Namespace, tmp: Path) -> dict:
    """One h2load run of batch-1 ModelInfer calls (one connection, --concurrency streams); h2load does not read
    grpc-status, so the calls answered OK are counted as the rest: the report's ``grpc_errors`` says how many
    of a sample of the same request failed."""
    import grpc
    import numpy as np

    from driftline.cli.bench import tree_cpu_seconds
    from driftline.proto import grpc_service_pb2 as pb
    from driftline.trainer import synthetic

    row = synthetic.housing(1, seed=1).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
    request = pb.ModelInferRequest(model_name=args.model)
    request.inputs.add(name="input", datatype="FP32", shape=list(row.shape))
    request.raw_input_contents.append(row.tobytes())
    message = request.SerializeToString()
    body = tmp / "h2load-request.bin"
    body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)  # gRPC's length-prefixed frame
    with grpc.insecure_channel(server.address) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        errors = 0
        for _ in range(20):
            try:
                call(message, timeout=10)
            except grpc.RpcError:
                errors += 1
    # Whole seconds (h2load takes no fractions); no warm-up of its own: the loads before warmed the server.
    argv = ["h2load", "-c", "1", "-m", str(args.concurrency), "-D", str(max(1, round(args.duration))), "-d", str(body),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"http://{server.address}/inference.GRPCInferenceService/ModelInfer"]
    before, _ = tree_cpu_seconds(server.pid)
    started = time.monotonic()
    output = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 60).stdout
    took = time.monotonic() - started
    after, _ = tree_cpu_seconds(server.pid)
    match = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", output)
    if match is None:
        raise RuntimeError(f"h2load gave no request counts:\n{output[-2000:]}")
    done = int(match.group(2))
    return {"infer_per_s": done / took, "server_cpu_us_per_request": (after - before) / max(done, 1) * 1e6,
            "requests": done, "seconds": took, "grpc_errors": f"{errors}/20", "command": harness.display_command(argv)}


def h2load_table(reports: dict, args: argparse.Namespace) -> str:
    rows = ["| target | infer/s (h2load) | server CPU us/req | sample gRPC errors |", "|---|---:|---:|---:|"]
    for name in args.targets:
        runs = reports.get(("h2load", name), [])
        if runs:
            done = sum(r["requests"] for r in runs)
            cpu = sum(r["server_cpu_us_per_request"] * r["requests"] for r in runs) / max(done, 1)
            rate = done / sum(r["seconds"] for r in runs)
            rows.append(f"| {name} | {rate:,.0f} | {cpu:,.0f} | {runs[-1]['grpc_errors']} |")
    return f"### batch-1 unary with h2load, one connection, {args.concurrency} streams\n\n" + "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print("command: " + shlex.join([os.path.relpath(sys.executable), *(sys.argv if argv is None else argv)]))
    reports: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="driftline-hot-") as tmp, ExitStack() as stack:
        registry = args.registry or Path(tmp) / "registry"
        model_file = harness.train(registry, args.model)
        servers = {t: stack.enter_context(harness.running(t, a, model=args.model))
                   for t, a in argvs(args, registry, model_file).items()}
        for load in args.loads:
            for round_no in range(1, args.rounds + 1):
                for name, server in servers.items():
                    if load == "r64-shap" and name.startswith(("plain", "empty")):
                        continue
                    report = harness.bench(server, args.model, *bench_args(load, name, args))
                    reports.setdefault((load, name), []).append(report)
                    print(f"  {load} round {round_no} {name:<14} {report['infer_per_s']:9,.0f} infer/s  "
                          f"server {report.get('server_cpu_us_per_request') or 0:5.0f} us/req  "
                          f"errors {report['errors_total']}", flush=True)
        if args.h2load:
            for round_no in range(1, args.rounds + 1):
                for name, server in servers.items():
                    reports.setdefault(("h2load", name), []).append(h2load(server, args, Path(tmp)))
                    print(f"  h2load round {round_no} {name:<14} {reports[('h2load', name)][-1]}", flush=True)
        limit = ceiling(model_file) if args.ceiling else ""
    failed = 0
    print()
    if args.h2load:
        print(h2load_table(reports, args) + "\n")
    for load in args.loads:
        pooled = {name: pool(reports[(load, name)]) for name in args.targets if (load, name) in reports}
        failed += sum(r["errors_total"] for r in pooled.values())
        reference = args.reference if args.reference in pooled else next(iter(pooled))
        print(table(load, pooled, reference) + "\n")
    if limit:
        print(limit + "\n")
    print(f"{args.rounds} interleaved rounds of {args.duration:g} s per target and load, after {args.warmup:g} s of "
          "warm-up; rates over all rounds, latency percentiles the median of the rounds'")
    if args.json:
        args.json.write_text(json.dumps({f"{k[0]}/{k[1]}": v for k, v in reports.items()}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
