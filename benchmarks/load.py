"""Closed-loop gRPC load test: driftline against a 60-line grpc.aio + onnxruntime baseline.

Trains a synthetic housing model into a temporary registry (unless ``--registry`` is given),
starts ``driftline serve`` and ``benchmarks/baseline_server.py`` on free loopback ports, and
drives both with ``driftline bench`` (the one load generator; see ``driftline bench --help``), in
closed loop at each ``--concurrency``. Rounds alternate between the two servers (baseline,
driftline, baseline, driftline, ...) so slow drift in a shared machine's load hits both alike.
Every run is bounded: at most ``--requests`` measured requests or ``--duration`` seconds per
round, whichever comes first, and a per-call deadline.

    .venv/bin/python benchmarks/load.py --concurrency 1,32 --duration 8

``--before-python PATH`` adds a third server, ``before``: the driftline installed for that interpreter (e.g.
a venv holding an earlier commit, ``pip install --no-deps -e`` of a worktree), to see what a change cost;
that install then trains the model, so that both read it.

For the comparison with MLServer, PyTriton and KServe, see ``benchmarks/compare.py``.
Exit status: 0 when every request succeeded, 1 when any failed (the table still prints).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from compare import pool  # noqa: E402

TARGETS = ("baseline", "driftline")  # also the order within a round


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="32", help="requests in flight; a comma list sweeps, e.g. 1,8,32")
    p.add_argument("--requests", type=int, default=5000, help="measured requests per round, at most (default 5000)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per round, at most (default 10)")
    p.add_argument("--rows-per-request", type=int, default=1, help="rows in each request (default 1)")
    p.add_argument("--channels", type=int, default=1, help="gRPC channels (TCP connections) to spread over")
    p.add_argument("--stream", action="store_true", help="drive driftline with ModelStreamInfer (baseline: unary)")
    p.add_argument("--target", choices=["driftline", "baseline", "both"], default="both")
    p.add_argument("--before-python", metavar="PATH",
                   help="also serve the driftline of this interpreter (an earlier install) as target 'before'")
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


HEADER = ["target", "conc", "requests", "infer/s", "rows/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
          "server CPU us/req", "client CPU us/req", "errors", "infer/s vs base", "p50 vs base", "p99 vs base"]


def table_rows(pooled: dict[tuple[int, str], dict], concurrencies: Sequence[int], targets: Sequence[str]
               ) -> list[list[str]]:
    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a is not None and b else "-"

    rows = []
    for c in concurrencies:
        for t in targets:
            r = pooled[(c, t)]
            base = pooled.get((c, "baseline")) if t != "baseline" else None
            lat = r["latency_ms"]
            rows.append([
                t, str(c), str(r["completed"]), f"{r['infer_per_s']:,.0f}", f"{r['rows_per_s']:,.0f}",
                f"{lat['p50']:.2f}", f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", f"{lat['max']:.1f}",
                f"{r['server_cpu_us_per_request'] or 0:.0f}", f"{r['client_cpu_us_per_request'] or 0:.0f}",
                str(r["errors_total"]),
                ratio(r["infer_per_s"], base["infer_per_s"]) if base else "",
                ratio(lat["p50"], base["latency_ms"]["p50"]) if base else "",
                ratio(lat["p99"], base["latency_ms"]["p99"]) if base else "",
            ])
    return rows


def render(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(HEADER) - 2)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]

    def line(cells: Sequence[str]) -> str:  # names left-aligned, numbers right-aligned
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs)

    return "\n".join([line(HEADER), line(["-" * w for w in widths])] + [line(r) for r in rows])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(["load.py", *argv])
    targets = TARGETS if args.target == "both" else (args.target,)
    if args.before_python:
        targets = (*targets, "before")
    print(f"command: {command}", flush=True)
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp, ExitStack() as stack:
        registry = args.registry or Path(tmp) / "registry"
        model_file = harness.train(registry, args.model, rows=args.train_rows,
                                   python=args.before_python or sys.executable)
        argvs = {
            "baseline": [sys.executable, str(harness.BENCH_DIR / "baseline_server.py"), "--model", str(model_file),
                         "--host", harness.HOST, "--port", "0"],
            "driftline": harness.driftline_serve_argv(registry, args.model, *shlex.split(args.driftline_args)),
            "before": harness.driftline_serve_argv(registry, args.model, *shlex.split(args.driftline_args),
                                                   python=args.before_python or sys.executable),
        }
        servers = {t: stack.enter_context(harness.running(t, argvs[t], model=args.model)) for t in targets}
        print("servers: " + ", ".join(f"{t} on {s.address} (pid {s.pid})" for t, s in servers.items()), flush=True)
        reports: dict[tuple[int, str], list[dict]] = {}
        for c in args.concurrencies:
            for round_no in range(1, args.rounds + 1):
                for target, server in servers.items():  # alternate targets within every round
                    extra = ["--stream"] if args.stream and target != "baseline" else []
                    report = harness.bench(
                        server, args.model, "--concurrency", str(c), "--channels", str(min(args.channels, c)),
                        "--rows-per-request", str(args.rows_per_request), "--requests", str(args.requests),
                        "--duration", str(args.duration), "--warmup-requests", str(args.warmup_requests),
                        "--warmup", str(args.warmup_seconds), "--timeout", str(args.timeout), *extra)
                    reports.setdefault((c, target), []).append(report)
                    print(f"  conc {c:>3} round {round_no} {target:<9}: {report['completed']:>6} ok in "
                          f"{report['elapsed_s']:5.2f} s = {report['infer_per_s']:8,.0f}/s  "
                          f"errors {report['errors_total']}", flush=True)
                    for sample in report["error_samples"]:
                        print(f"    error: {sample}", flush=True)
    pooled = {key: pool(rounds) for key, rounds in reports.items()}
    print()
    print(f"{args.rows_per_request} row(s)/request, {args.channels} channel(s), {args.rounds} interleaved round(s)"
          f" per target, each <= {args.requests} requests or {args.duration:g} s after a warmup; latency percentiles"
          " are the median of the rounds'")
    print(render(table_rows(pooled, args.concurrencies, targets), args.markdown))
    print(f"\ncommand: {command}")
    failed = sum(r["errors_total"] for r in pooled.values())
    if failed:
        print(f"FAILED: {failed} request(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
