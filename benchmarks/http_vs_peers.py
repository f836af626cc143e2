"""driftline's HTTP door against the Python peers' gRPC doors, in one run (issue 14).

Every server is up at once: MLServer (with and without adaptive batching), PyTriton and KServe's
Python server, as ``benchmarks/compare.py`` installs and starts them (each in ``benchmarks/.envs/<name>``,
created on first use; one that cannot be installed or started is skipped and the output says why),
and driftline twice, serving with its defaults (drift monitoring, validation and attribution sampling
on, metrics recorded, ``--workers`` one per core) and with ``--workers 1``. Batch-1 requests at
concurrency 32, every row for ``--duration`` seconds after a 2 s warm-up, in ``--rounds`` interleaved
rounds whose order rotates, so that what other tenants of a shared machine take falls on every row
alike; each row's figures pool its rounds (rates and CPU over all rounds, latency percentiles the
median of the rounds').

Rows:

- each peer over gRPC, driven by ``driftline bench`` (Python grpc.aio, unary ModelInfer), as compare.py does;
- driftline over gRPC with the same client (4 channels, so the kernel spreads them over the workers), for reference;
- driftline over HTTP, JSON body, driven by ``wrk`` (C, 32 keep-alive connections, one thread);
- driftline over HTTP, binary tensor extension (binary input and output), ``wrk``;
- driftline over HTTP, JSON body, ``aiohttp`` (a Python client, like for like with the Python gRPC client);
- driftline ``--workers 1`` over HTTP, JSON, ``wrk``: which worker count serves wrk best on this machine.

Every client sends the rows ``driftline bench`` sends (synthetic housing, the model's training
distribution). Server CPU is utime+stime of the server's whole process tree (/proc) over the measured
run, per request answered; client CPU is the load generator's own. The ratio column divides each row's
rate by the best peer's gRPC rate of the same run.

    .venv/bin/python benchmarks/http_vs_peers.py                       # 2 rounds x 9 rows x 12 s: ~4-5 minutes
    .venv/bin/python benchmarks/http_vs_peers.py --rounds 1 --duration 5 --peers kserve   # a quick look

The markdown goes to stdout; every row's rounds and commands to ``benchmarks/out/http_vs_peers.json``.
Everything listens on and is driven at 127.0.0.1 only; every run is bounded in time and every server
is stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402
import harness  # noqa: E402
import http_vs_grpc as doors  # noqa: E402

MODEL = compare.MODEL
PEERS = {"mlserver": ("ml_off", "ml_adaptive"), "pytriton": ("pytriton",), "kserve": ("kserve",)}
TARGET_RATIO = 4.0  # issue 14: driftline's HTTP JSON at least 4x the best peer's gRPC


@dataclass
class Row:
    key: str
    door: str  # "gRPC" or "HTTP ..."
    label: str
    client: str
    measure: Callable[[], dict]  # one round: a normalised result (see normalise_*)
    peer: bool = False
    rounds: list[dict] = field(default_factory=list)


def normalise_bench(report: dict) -> dict:
    return {"requests": report["completed"], "elapsed_s": report["elapsed_s"], "answered": report["completed"],
            "p50_ms": report["latency_ms"]["p50"], "p99_ms": report["latency_ms"]["p99"],
            "server_cpu_s": report["server_cpu_s"], "client_cpu_s": report["client_cpu_s"],
            "other_cpu_s": report.get("other_cpu_s"), "errors": report["errors_total"], "command": report["command"]}


def normalise_measured(result: dict) -> dict:
    """http_vs_grpc.measured()'s result: wrk's rate over its own clock; aiohttp reports its own client CPU."""
    requests = result["requests"]
    elapsed = requests / result["infer_per_s"] if result["infer_per_s"] else result["elapsed_s"]
    client = result["client_cpu_s"]
    if result["answered"] != requests:  # aiohttp answered its warm-up inside the window; its own CPU figure
        client = result["client_cpu_us_per_request"] * requests / 1e6  # covers its measured phase only
    other = None if result.get("other_cores") is None else result["other_cores"] * elapsed
    return {"requests": requests, "elapsed_s": elapsed, "answered": result["answered"], "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"], "server_cpu_s": result["server_cpu_s"], "client_cpu_s": client,
            "other_cpu_s": other, "errors": result["errors"], "command": result["command"]}


def pooled(rounds: list[dict]) -> dict:
    """Rounds as one figure: rate and CPU over all rounds, latency percentiles the median of the rounds'."""
    requests = sum(r["requests"] for r in rounds)
    elapsed = sum(r["elapsed_s"] for r in rounds)
    answered = sum(r["answered"] for r in rounds)

    def per_request(key: str, count: int) -> float | None:
        values = [r[key] for r in rounds]
        return None if None in values or not count else sum(values) / count * 1e6

    others = [r["other_cpu_s"] for r in rounds]
    return {"infer_per_s": requests / elapsed if elapsed else 0.0, "requests": requests,
            "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
            "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
            "server_cpu_us_per_request": per_request("server_cpu_s", answered),
            "client_cpu_us_per_request": per_request("client_cpu_s", requests),
            "other_cores": None if None in others or not elapsed else sum(others) / elapsed,
            "errors": sum(r["errors"] for r in rounds), "rounds": [r["requests"] / r["elapsed_s"] for r in rounds]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per row and round (default 10)")
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma list of {', '.join(PEERS)} (default all)")
    p.add_argument("--registry", type=Path,
                   help="registry (default benchmarks/out/registry, compare.py's, trained once)")
    p.add_argument("--no-workers1", action="store_true", help="skip the driftline --workers 1 row")
    args = p.parse_args(argv)
    unknown = set(args.peers.split(",")) - set(PEERS) - {""}
    if unknown:
        p.error(f"unknown peers: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "benchmarks/http_vs_peers.py", *(sys.argv[1:] if argv is None else argv)])
    date = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    if not shutil.which("wrk"):
        print("wrk is not installed (apt-get install wrk): the HTTP rows need it", file=sys.stderr)
        return 2
    registry = args.registry or harness.OUT / "registry"
    model_file = harness.train(registry, MODEL)
    # compare.py's own peer set-up (install on first use, settings, ports); its Run records what was skipped.
    run = compare.Run(argparse.Namespace(duration=args.duration, warmup=doors.WARMUP_S, requests=10**8,
                                         warmup_requests=10**8, sweep_duration=args.duration, rounds=args.rounds))
    run.say(f"command: {command}")
    wanted = {key for name in args.peers.split(",") if name for key in PEERS[name]}
    specs, targets = compare.headline(run, registry, model_file)
    specs = [s for s in specs if s.key in wanted]
    targets = [t for t in targets if t.key in wanted]
    serve = harness.driftline_serve_argv
    # The CLI's defaults, but every port chosen by the OS: metrics on (recorded), drift, validation, attribution
    # sampling on, --workers one per core.
    specs.append(compare.ServerSpec("dl", serve(registry, MODEL, "--http-port", "0", "--metrics-port", "0")))
    if not args.no_workers1:
        specs.append(compare.ServerSpec("dl1", serve(registry, MODEL, "--workers", "1", "--http-port", "0",
                                                     "--metrics-port", "0")))
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        servers = compare.start_all(run, stack, specs, targets)
        if "dl" not in servers:
            print(f"driftline did not start: {run.skipped}", file=sys.stderr)
            return 1
        rows = [Row(t.key, "gRPC", t.label, "driftline bench (Python grpc.aio)",
                    peer_measure(run, servers[t.server], t), peer=True) for t in targets if t.server in servers]
        rows += driftline_rows(run, servers, Path(tmp))
        for number in range(args.rounds):
            run.say(f"round {number + 1} of {args.rounds}")
            shift = number * max(len(rows) // args.rounds, 1) % len(rows)
            for row in rows[shift:] + rows[:shift]:  # nobody always goes first
                try:
                    result = row.measure()
                except (RuntimeError, subprocess.SubprocessError, OSError, ValueError, AttributeError) as exc:
                    run.skipped.setdefault(f"{row.key} round {number + 1}", f"{type(exc).__name__}: {str(exc)[-400:]}")
                    run.say(f"  {row.label}: FAILED {str(exc)[-300:]}")
                    continue
                row.rounds.append(result)
                rate = result["requests"] / result["elapsed_s"]
                cpu = result["server_cpu_s"] / result["answered"] * 1e6 if result["server_cpu_s"] is not None else 0
                run.say(f"  {row.door:<20} {row.label:<52} {rate:>8,.0f}/s  server {cpu:5.0f} us/req  "
                        f"errors {result['errors']}")
    report = {"command": command, "date": date, "machine": compare.machine(), "code": compare.code(),
              "rows": [{"key": r.key, "door": r.door, "label": r.label, "client": r.client, "peer": r.peer,
                        "pooled": pooled(r.rounds) if r.rounds else None, "rounds": r.rounds} for r in rows],
              "skipped": run.skipped}
    harness.OUT.mkdir(parents=True, exist_ok=True)
    (harness.OUT / "http_vs_peers.json").write_text(json.dumps(report, indent=2, default=str))
    print()
    print(markdown(report, args))
    return 0


def peer_measure(run: compare.Run, server: harness.Server, target: compare.Target) -> Callable[[], dict]:
    def measure() -> dict:
        report = harness.bench(server, target.model, *run.phase(target.concurrency), *target.bench)
        return normalise_bench(report)

    return measure


def driftline_rows(run: compare.Run, servers: dict[str, harness.Server], folder: Path) -> list[Row]:
    default, json_bodies = servers["dl"], doors.json_bodies()
    binary, header_length = doors.binary_bodies()
    url = f"http://{http_address(default)}/v2/models/{MODEL}/infer"
    doors.check_http_answers_as_grpc(http_address(default), default.address)
    wrk = "wrk (C), 32 connections"

    def bench(server: harness.Server, *extra: str) -> Callable[[], dict]:
        return lambda: normalise_bench(harness.bench(server, MODEL, *run.phase(), *extra))

    def measured(server: harness.Server, runner: Callable[[], Callable[[], dict]]) -> Callable[[], dict]:
        # The runner is made each round: making it runs the warm-up, outside the measured window.
        return lambda: normalise_measured(doors.measured(server, runner()))

    duration = run.args.duration
    rows = [
        Row("dl_grpc", "gRPC", "driftline, defaults", "driftline bench (Python grpc.aio), 4 channels",
            bench(default, "--channels", "4")),
        Row("dl_http_json", "HTTP JSON", "driftline, defaults", wrk,
            measured(default, lambda: doors.run_wrk(url, json_bodies, {"Content-Type": "application/json"}, duration,
                                                    folder, "json"))),
        Row("dl_http_binary", "HTTP binary tensors", "driftline, defaults", wrk,
            measured(default, lambda: doors.run_wrk(url, binary,
                                                    {"Inference-Header-Content-Length": str(header_length)},
                                                    duration, folder, "binary"))),
        Row("dl_http_aiohttp", "HTTP JSON", "driftline, defaults", "aiohttp (Python), 32 connections",
            measured(default, lambda: doors.run_aiohttp(url, duration))),
    ]
    if "dl1" in servers:
        url1 = f"http://{http_address(servers['dl1'])}/v2/models/{MODEL}/infer"
        rows.append(Row("dl1_http_json", "HTTP JSON", "driftline, --workers 1", wrk, measured(
            servers["dl1"], lambda: doors.run_wrk(url1, json_bodies, {"Content-Type": "application/json"}, duration,
                                                  folder, "json1"))))
    return rows


def http_address(server: harness.Server) -> str:
    match = next(m for line in list(server.log) if (m := doors.HTTP_LINE.search(line)))
    return f"{match.group('host')}:{match.group('port')}"


def markdown(report: dict, args: argparse.Namespace) -> str:
    def number(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    rows = [r for r in report["rows"] if r["pooled"]]
    peers = [r for r in rows if r["peer"]]
    best = max(peers, key=lambda r: r["pooled"]["infer_per_s"], default=None)
    lines = [f"- **Date:** {report['date']}. **Code:** `{report['code']}`.", f"- **Machine:** {report['machine']}.",
             f"- **Command:** `{report['command']}`: {args.rounds} interleaved round(s), {args.duration:g} s per row "
             f"and round after a {doors.WARMUP_S} s warm-up, batch-1 requests, 32 in flight.", "",
             "| door | server | load generator | infer/s | p50 ms | p99 ms | server CPU us/req | client CPU us/req "
             "| other procs (cores) | errors | vs best peer gRPC |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p = r["pooled"]
        ratio = "-" if best is None else f"{p['infer_per_s'] / best['pooled']['infer_per_s']:.2f}x"
        spread = " / ".join(f"{x:,.0f}" for x in p["rounds"])
        lines.append(f"| {r['door']} | {r['label']} | {r['client']} | {number(p['infer_per_s'])} ({spread}) | "
                     f"{number(p['p50_ms'], 2)} | {number(p['p99_ms'], 2)} | "
                     f"{number(p['server_cpu_us_per_request'])} | {number(p['client_cpu_us_per_request'])} | "
                     f"{number(p['other_cores'], 2)} | {p['errors']} | {ratio} |")
    lines.append("")
    if best is None:
        lines.append("No peer was measured, so there is no ratio (see Skipped).")
    else:
        target = next((r for r in rows if r["key"] == "dl_http_json"), None)
        if target is not None:
            ratio = target["pooled"]["infer_per_s"] / best["pooled"]["infer_per_s"]
            lines.append(f"Target (issue 14): driftline HTTP JSON via wrk, defaults, >= {TARGET_RATIO:g}x the best "
                         f"peer's gRPC ({best['label']}): {target['pooled']['infer_per_s']:,.0f} vs "
                         f"{best['pooled']['infer_per_s']:,.0f}/s = {ratio:.2f}x: "
                         f"**{'met' if ratio >= TARGET_RATIO else 'missed'}**.")
    if report["skipped"]:
        lines += ["", "Skipped or failed:", *(f"- {k}: {v}" for k, v in report["skipped"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
