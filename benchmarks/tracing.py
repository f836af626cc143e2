"""What tracing and metrics cost: one model, four servers, the same client, interleaved rounds.

    .venv/bin/python benchmarks/tracing.py [--duration 8] [--rounds 3] [--concurrency 32]

Servers (each ``driftline serve --workers 1 --device cpu``, started once, set up only through the
standard OpenTelemetry variables):

1. tracing off (``OTEL_TRACES_EXPORTER=none``, the default), metrics on (the default): the baseline;
2. tracing off, ``--no-metrics``: what recording the Prometheus metrics costs;
3. tracing at 1%: ``OTEL_TRACES_EXPORTER=otlp``, ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, 0.01;
4. tracing at 100%: the same sampler at 1.0.

Traced servers export over OTLP/gRPC to a receiver in this process on 127.0.0.1 that counts the spans
and drops them. ``driftline bench`` drives each server in a closed loop (``--concurrency`` unary calls
in flight, no traceparent sent, so the server's sampler decides) for ``--duration`` seconds per round,
bounded by ``--requests``; the order of servers rotates between rounds. Also printed: the per-request
cost of the tracing-off checks on the request path, timed in-process.
"""

from __future__ import annotations

import argparse
import sys
import threading
import timeit
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from compare import pool  # noqa: E402


class SpanCounter:
    """An OTLP/gRPC trace receiver that only counts what it is sent."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        self.spans: dict[str, int] = {}  # service.name -> spans received
        self.lock = threading.Lock()
        counter = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                with counter.lock:
                    for resource in request.resource_spans:
                        service = next((a.value.string_value for a in resource.resource.attributes
                                        if a.key == "service.name"), "")
                        counter.spans[service] = counter.spans.get(service, 0) + sum(
                            len(s.spans) for s in resource.scope_spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(ThreadPoolExecutor(2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port(f"{harness.HOST}:0")
        self.server.start()

    def env(self, ratio: float) -> dict[str, str]:
        return {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{harness.HOST}:{self.port}",
                "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": str(ratio), "OTEL_SERVICE_NAME": f"driftline-bench-{ratio:g}"}

    def taken(self, ratio: float) -> int:
        with self.lock:
            return self.spans.get(f"driftline-bench-{ratio:g}", 0)


def off_path_ns() -> dict[str, float]:
    """The statements the request path runs when tracing is off, timed one by one (ns per call)."""
    from driftline.server import telemetry

    assert telemetry.tracer is None
    n = 1_000_000
    check = timeit.timeit("telemetry.tracer is not None", globals={"telemetry": telemetry}, number=n) / n * 1e9
    span = timeit.timeit("with span('driftline.validate'): pass", globals={"span": telemetry.span},
                         number=n) / n * 1e9
    # Per request: _infer (stream messages), _answer and Batcher.submit test the global once each, the
    # validation runs under span(); per batch _execute tests it once more.
    return {"check_ns": check, "span_ns": span, "per_request_ns": 4 * check + span}


def server_figures(server: harness.Server) -> tuple[float | None, float]:
    """From the server's own metrics: the spans a fully sampled request should yield (SERVER and queue
    per request, validate when the version has a schema, plus batch, inference and drift update per
    executed batch), and the spans it dropped because its export queue was full."""
    import re
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    match = re.search(r"metrics http://([^/]+)/metrics", "".join(server.log))
    if not match:
        return None, 0.0
    with urllib.request.urlopen(f"http://{match.group(1)}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    sums = {s.name: s.value for s in samples if s.name in (
        "driftline_batch_requests_sum", "driftline_batch_requests_count", "driftline_trace_spans_dropped_total")}
    validated = any(s.name == "driftline_validation_rejected_requests_total" for s in samples)  # has a schema
    dropped = sums.get("driftline_trace_spans_dropped_total", 0.0)
    if not sums.get("driftline_batch_requests_count"):
        return None, dropped
    per_batch = sums["driftline_batch_requests_sum"] / sums["driftline_batch_requests_count"]
    return (3 if validated else 2) + 3 / per_batch, dropped


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per round and server")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=200_000, help="measured requests per round, at most")
    p.add_argument("--registry", type=Path, default=harness.OUT / "registry")
    args = p.parse_args()
    harness.train(args.registry, "housing")
    receiver = SpanCounter()
    serve = harness.driftline_serve_argv(args.registry, "housing", "--workers", "1")
    off = {"OTEL_TRACES_EXPORTER": "none"}
    servers_argv = {  # name -> (argv, environment, sampling ratio)
        "tracing off (metrics on)": ([*serve, "--metrics-port", "0"], off, None),
        "tracing off, --no-metrics": ([*serve, "--no-metrics"], off, None),
        "tracing 1%": ([*serve, "--metrics-port", "0"], receiver.env(0.01), 0.01),
        "tracing 100%": ([*serve, "--metrics-port", "0"], receiver.env(1.0), 1.0),
    }
    names = list(servers_argv)
    results: dict[str, list[dict]] = {}
    with ExitStack() as stack:  # leaving it stops the servers, which export the spans they still hold
        servers = {name: stack.enter_context(harness.running(name, argv, model="housing", env=env))
                   for name, (argv, env, _) in servers_argv.items()}
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                report = harness.bench(servers[name], "housing", "--concurrency", str(args.concurrency),
                                       "--duration", str(args.duration), "--warmup", "1",
                                       "--requests", str(args.requests))
                results.setdefault(name, []).append(report)
                print(f"round {r + 1} {name}: {report['infer_per_s']:,.0f}/s p50 {report['latency_ms']['p50']:.3f} ms "
                      f"p99 {report['latency_ms']['p99']:.3f} ms server {report['server_cpu_us_per_request']:.0f} "
                      f"us/req", flush=True)
        figures = {name: server_figures(servers[name]) for name in names if servers_argv[name][2] is not None}
    command = results[names[0]][0]["command"]
    off_path = off_path_ns()
    print(f"\ncommand per round: {command}")
    print(f"tracing-off checks on the request path: {off_path['check_ns']:.0f} ns per global test, "
          f"{off_path['span_ns']:.0f} ns per span() that makes no span; ~{off_path['per_request_ns']:.0f} ns "
          "per request")
    baseline = pool(results[names[0]])
    print("\n| server | infer/s | vs off | p50 ms | p99 ms | server CPU us/req | vs off | per round | "
          "spans received per request (expected at 100%) | spans dropped per request |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for name in names:
        r = pool(results[name])
        ratio = servers_argv[name][2]
        sent = sum(x["completed"] + x["warmup"]["completed"] for x in results[name])  # warmups were traced too
        received = receiver.taken(ratio) / sent if ratio is not None else 0.0
        expected, dropped = figures.get(name, (None, 0.0))
        spans = f"{received:.2f}" + (f" ({expected:.2f})" if ratio == 1.0 and expected else "")
        rounds = ", ".join(str(round(x["server_cpu_us_per_request"])) for x in results[name])
        print(f"| {name} | {r['infer_per_s']:,.0f} | {r['infer_per_s'] / baseline['infer_per_s']:.2f}x | "
              f"{r['latency_ms']['p50']:.3f} | {r['latency_ms']['p99']:.3f} | {r['server_cpu_us_per_request']:.0f} | "
              f"{r['server_cpu_us_per_request'] / baseline['server_cpu_us_per_request']:.2f}x | "
              f"{rounds} | {spans} | {dropped / sent:.2f} |")
    receiver.server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
