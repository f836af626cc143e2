"""Where driftline's per-request CPU goes: four servers, same client, interleaved rounds.

    .venv/bin/python benchmarks/overhead.py [--duration 4] [--rounds 2] [--concurrency 1,32]

1. ``empty_server.py``: grpc.aio parsing a request and answering a constant (the floor);
2. ``baseline_server.py --inline``: + np.frombuffer, onnxruntime on the event loop thread, encode;
3. ``baseline_server.py``: the same with onnxruntime in a thread pool (``run_in_executor``);
4. ``driftline serve --workers 1``: the real server (batcher, checks, statistics, monitoring).

The differences between neighbours are the cost of one step: the model call, the hop to a thread
and back, and everything else driftline does per request. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from compare import pool  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--stream", action="store_true", help="drive empty and driftline with ModelStreamInfer too")
    p.add_argument("--registry", type=Path, default=harness.OUT / "registry")
    args = p.parse_args()
    model_file = harness.train(args.registry, "housing")
    base = [sys.executable, str(harness.BENCH_DIR / "baseline_server.py"), "--model", str(model_file), "--port", "0"]
    servers_argv = {
        "empty handler": [sys.executable, str(harness.BENCH_DIR / "empty_server.py"), "--port", "0"],
        "baseline, onnxruntime inline": [*base, "--inline"],
        "baseline, onnxruntime in a thread pool": base,
        "driftline serve --workers 1": harness.driftline_serve_argv(args.registry, "housing", "--workers", "1"),
    }
    variants = [(name, ()) for name in servers_argv]
    if args.stream:
        variants += [("empty handler", ("--stream",)), ("driftline serve --workers 1", ("--stream",))]
    results: dict[tuple[int, str, tuple], list[dict]] = {}
    with ExitStack() as stack:
        servers = {n: stack.enter_context(harness.running(n, a, model="housing")) for n, a in servers_argv.items()}
        for c in (int(x) for x in args.concurrency.split(",")):
            for r in range(args.rounds):
                order = variants[r % len(variants):] + variants[:r % len(variants)]
                for name, extra in order:
                    report = harness.bench(servers[name], "housing", "--concurrency", str(c), "--duration",
                                           str(args.duration), "--warmup", "1", "--requests", "1000000", *extra)
                    results.setdefault((c, name, extra), []).append(report)
                    print(f"c={c} {name} {' '.join(extra)}: {report['infer_per_s']:,.0f}/s "
                          f"p50 {report['latency_ms']['p50']:.3f} ms server {report['server_cpu_us_per_request']:.0f}"
                          f" us/req", flush=True)
    print("\n| server | transport | concurrency | infer/s | p50 ms | p99 ms | server CPU us/req | client CPU us/req |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (c, name, extra), reports in results.items():
        r = pool(reports)
        print(f"| {name} | {'stream' if extra else 'unary'} | {c} | {r['infer_per_s']:,.0f} | "
              f"{r['latency_ms']['p50']:.3f} | {r['latency_ms']['p99']:.3f} | {r['server_cpu_us_per_request']:.0f} | "
              f"{r['client_cpu_us_per_request']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
