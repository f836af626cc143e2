"""Soak: valid calls beside hostile traffic, over gRPC and HTTP, for a bounded time (issue 13).

One run starts its own server (``driftline serve`` on free loopback ports: a trained housing model and the
``simple`` INT32 ONNX model), then runs three client processes until ``--seconds`` pass:

- valid: paced unary calls (``--valid-rate`` per thread) over gRPC and HTTP; each answer is checked (model,
  version, output shape); their latencies give p50/p99, and any error on a valid call counts (must be 0);
- hostile: closed-loop bad requests over gRPC and HTTP: invalid shapes and datatypes, raw contents of the wrong
  length, unknown models and versions, bad parameters, broken JSON, and valid requests with tiny deadlines
  (they may expire anywhere); every answer's status is tallied and an INTERNAL/UNKNOWN (gRPC) or 500 (HTTP) is
  reported;
- streams: ModelStreamInfer streams cancelled midway (a few answers read, then cancelled) and streams that send
  but never read (held for ``--hold-seconds``, then cancelled).

First the valid callers run alone for ``--baseline-seconds`` (the latencies to compare with), then everything
together for ``--seconds``. Reported: valid p50/p99/max per protocol in both phases, errors on valid calls,
hostile answers by status, streams opened, housing rows computed beyond the valid calls' (stream messages), server
RSS at start (after warm-up), peak and end, and whether the server still answers health and a valid call
at the end. Exit status 1 when a valid call failed, a hostile call met INTERNAL/UNKNOWN/500, or the server was
no longer serving.

Run: .venv/bin/python benchmarks/soak.py --seconds 60 [--workers 1] [--json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

HOUSE_ROWS = 4


# -- requests ----------------------------------------------------------------------------------------------------
def housing_rows() -> np.ndarray:
    from driftline.trainer import synthetic

    return synthetic.housing(HOUSE_ROWS, seed=3).select(list(synthetic.FEATURES)).to_numpy().astype("<f4")


def grpc_request(model: str = "housing", rows: np.ndarray | None = None, datatype: str = "FP32",
                 shape: list[int] | None = None, raw: bytes | None = None, version: str = "", name: str = "input"):
    from tritonclient.grpc import service_pb2 as pb

    rows = housing_rows() if rows is None else rows
    message = pb.ModelInferRequest(model_name=model, model_version=version)
    message.inputs.add(name=name, datatype=datatype, shape=list(rows.shape) if shape is None else shape)
    message.raw_input_contents.append(rows.tobytes() if raw is None else raw)
    return message


def simple_request():
    from tritonclient.grpc import service_pb2 as pb

    message = pb.ModelInferRequest(model_name="simple")
    for name in ("INPUT0", "INPUT1"):
        message.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        message.raw_input_contents.append(np.arange(16, dtype="<i4").tobytes())
    return message


def http_body(rows: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape),
                                   "data": rows.reshape(-1).tolist()}]}).encode()


def hostile_grpc_requests() -> list[tuple[str, object, float]]:
    """(kind, request, timeout seconds)."""
    rows = housing_rows()
    bad = [
        ("shape", grpc_request(shape=[HOUSE_ROWS, 12])),
        ("shape", grpc_request(shape=[-1, 11])),
        ("shape", grpc_request(shape=[2**40, 11])),
        ("shape", grpc_request(shape=[0, 11], raw=b"")),
        ("datatype", grpc_request(datatype="FP64")),
        ("datatype", grpc_request(datatype="FLOAT")),
        ("raw", grpc_request(raw=rows.tobytes()[:-3])),
        ("raw", grpc_request(raw=b"\x00" * 10_000)),
        ("name", grpc_request(name="features")),
        ("model", grpc_request(model="mansion")),
        ("model", grpc_request(model="../housing")),
        ("version", grpc_request(version="9")),
        ("version", grpc_request(version="latest")),
        ("version", grpc_request(version="²")),
        ("nan", grpc_request(rows=np.full_like(rows, np.nan))),
    ]
    with_parameter = grpc_request()
    with_parameter.parameters["sequence_id"].int64_param = 7
    bad.append(("parameter", with_parameter))
    out: list[tuple[str, object, float]] = [(kind, message, 30.0) for kind, message in bad]
    out.append(("tiny_deadline", grpc_request(), 0.0005))
    out.append(("tiny_deadline", simple_request(), 0.002))
    return out


def hostile_http_requests() -> list[tuple[str, str, bytes]]:
    rows = housing_rows()
    good = json.loads(http_body(rows))
    wrong_shape = json.loads(json.dumps(good))
    wrong_shape["inputs"][0]["shape"] = [HOUSE_ROWS, 12]
    wrong_type = json.loads(json.dumps(good))
    wrong_type["inputs"][0]["datatype"] = "BYTES"
    strings = json.loads(json.dumps(good))
    strings["inputs"][0]["data"] = ["x"] * rows.size
    return [
        ("json", "/v2/models/housing/infer", b"{not json"),
        ("json", "/v2/models/housing/infer", b"\xff\xfe"),
        ("json", "/v2/models/housing/infer", b"[]"),
        ("shape", "/v2/models/housing/infer", json.dumps(wrong_shape).encode()),
        ("datatype", "/v2/models/housing/infer", json.dumps(wrong_type).encode()),
        ("data", "/v2/models/housing/infer", json.dumps(strings).encode()),
        ("model", "/v2/models/mansion/infer", http_body(rows)),
        ("model", "/v2/models/%2E%2E%2Fhousing/infer", http_body(rows)),
        ("version", "/v2/models/housing/versions/%C2%B2/infer", http_body(rows)),
        ("path", "/v2/models/housing/infer/more", http_body(rows)),
    ]


# -- client processes --------------------------------------------------------------------------------------------
def _valid_grpc(address: str, until: float, rate: float, out: dict) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    message = grpc_request()
    latencies, errors = [], Counter()
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        next_at = time.monotonic()
        while time.monotonic() < until:
            next_at += 1.0 / rate
            sent = time.perf_counter()
            try:
                answer = stub.ModelInfer(message, timeout=30)
                if answer.model_name != "housing" or len(answer.raw_output_contents[0]) != 4 * HOUSE_ROWS:
                    errors["wrong answer"] += 1
                else:
                    latencies.append(time.perf_counter() - sent)
            except grpc.RpcError as exc:
                errors[f"{exc.code().name}: {exc.details()[:80]}"] += 1
            time.sleep(max(0.0, next_at - time.monotonic()))
    out["latencies"], out["errors"] = latencies, errors


def _valid_http(url: str, until: float, rate: float, out: dict) -> None:
    body = http_body(housing_rows())
    latencies, errors = [], Counter()
    connection = http.client.HTTPConnection(url, timeout=30)
    next_at = time.monotonic()
    while time.monotonic() < until:
        next_at += 1.0 / rate
        sent = time.perf_counter()
        try:
            connection.request("POST", "/v2/models/housing/infer", body=body,
                               headers={"content-type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                errors[f"HTTP {response.status}: {payload[:80]!r}"] += 1
            elif len(json.loads(payload)["outputs"][0]["data"]) != HOUSE_ROWS:
                errors["wrong answer"] += 1
            else:
                latencies.append(time.perf_counter() - sent)
        except (OSError, http.client.HTTPException) as exc:
            errors[f"{type(exc).__name__}: {exc}"[:100]] += 1
            connection.close()
            connection = http.client.HTTPConnection(url, timeout=30)
        time.sleep(max(0.0, next_at - time.monotonic()))
    connection.close()
    out["latencies"], out["errors"] = latencies, errors


def valid_process(address: str, url: str, until: float, threads: int, rate: float, queue) -> None:
    results: list[tuple[str, dict]] = []
    workers = []
    for i in range(threads):
        protocol = "grpc" if i % 3 != 2 else "http"  # two gRPC callers for each HTTP one
        out: dict = {}
        target = _valid_grpc if protocol == "grpc" else _valid_http
        workers.append(threading.Thread(target=target, args=(address if protocol == "grpc" else url, until, rate, out)))
        results.append((protocol, out))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    merged: dict = {"grpc": {"latencies": [], "errors": Counter()}, "http": {"latencies": [], "errors": Counter()}}
    for protocol, out in results:
        merged[protocol]["latencies"] += out.get("latencies", [])
        merged[protocol]["errors"].update(out.get("errors", Counter()))
    queue.put(("valid", merged))


def _hostile_grpc(address: str, until: float, tally: Counter) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    requests = hostile_grpc_requests()
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        i = 0
        while time.monotonic() < until:
            kind, message, timeout = requests[i % len(requests)]
            i += 1
            try:
                stub.ModelInfer(message, timeout=timeout)
                tally[f"grpc {kind}: OK"] += 1
            except grpc.RpcError as exc:
                tally[f"grpc {kind}: {exc.code().name}"] += 1


def _hostile_http(url: str, until: float, tally: Counter) -> None:
    requests = hostile_http_requests()
    i = 0
    while time.monotonic() < until:
        kind, path, body = requests[i % len(requests)]
        i += 1
        connection = http.client.HTTPConnection(url, timeout=30)
        try:
            connection.request("POST", path, body=body, headers={"content-type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            status = response.status
            if status >= 400:
                document = json.loads(payload)
                if not isinstance(document, dict) or "error" not in document:
                    tally[f"http {kind}: {status} without a JSON error"] += 1
            tally[f"http {kind}: {status}"] += 1
        except (OSError, http.client.HTTPException, ValueError) as exc:
            tally[f"http {kind}: {type(exc).__name__}"] += 1
        finally:
            connection.close()


def hostile_process(address: str, url: str, until: float, threads: int, queue) -> None:
    tally: Counter = Counter()
    workers = [threading.Thread(target=_hostile_grpc if i % 2 == 0 else _hostile_http,
                                args=(address if i % 2 == 0 else url, until, tally)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(("hostile", tally))


def _cancelled_streams(address: str, until: float, tally: Counter) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    message = grpc_request()
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < until:
            call = stub.ModelStreamInfer(iter([message] * 200), timeout=30)
            try:
                for _ in range(5):
                    next(call)
                tally["stream cancelled midway"] += 1
            except grpc.RpcError as exc:
                tally[f"stream cancelled midway, failed first: {exc.code().name}"] += 1
            call.cancel()


def _unread_streams(address: str, until: float, hold: float, tally: Counter) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    message = grpc_request()
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < until:
            release = min(until, time.monotonic() + hold)

            def sent_until(moment: float = release):
                while time.monotonic() < moment:
                    yield message

            call = stub.ModelStreamInfer(sent_until(), timeout=hold + 30)  # never read
            time.sleep(max(0.0, release - time.monotonic()))
            call.cancel()
            tally["stream never read"] += 1


def stream_process(address: str, until: float, hold: float, queue) -> None:
    tally: Counter = Counter()
    workers = [threading.Thread(target=_cancelled_streams, args=(address, until, tally)),
               threading.Thread(target=_unread_streams, args=(address, until, hold, tally))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.put(("streams", tally))


# -- the run -----------------------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    values = np.array(latencies) * 1e3
    return {"n": len(values), "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "max_ms": float(values.max())}


def still_serving(address: str) -> bool:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            ready = stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
            answer = stub.ModelInfer(grpc_request(), timeout=30)
            return ready and len(answer.raw_output_contents[0]) == 4 * HOUSE_ROWS
    except grpc.RpcError:
        return False


def phase(address: str, url: str, pid: int, args: argparse.Namespace, seconds: float, hostile: bool) -> dict:
    """Run the client processes for ``seconds``; the valid callers alone unless ``hostile``."""
    until = time.monotonic() + seconds
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=valid_process, args=(address, url, until, args.valid_threads,
                                                             args.valid_rate, queue))]
    if hostile:
        processes.append(context.Process(target=hostile_process, args=(address, url, until, args.hostile_threads,
                                                                       queue)))
    if hostile and not args.no_streams:
        processes.append(context.Process(target=stream_process, args=(address, until, args.hold_seconds, queue)))
    for process in processes:
        process.start()
    rss_peak = rss_mb(pid)
    while any(p.is_alive() for p in processes) and time.monotonic() < until + 120:
        rss_peak = max(rss_peak, rss_mb(pid))
        time.sleep(0.5)
    results = {"hostile": Counter(), "streams": Counter()}
    for _ in processes:
        kind, value = queue.get(timeout=120)
        results[kind] = value
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    results["rss_peak"] = rss_peak
    return results


def valid_summary(valid: dict) -> dict:
    return {protocol: {**percentiles(valid[protocol]["latencies"]), "errors": dict(valid[protocol]["errors"])}
            for protocol in ("grpc", "http")}


def rows_computed(address: str) -> int:
    """Rows the server has answered for the housing model (ModelStatistics' inference_count)."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="housing"), timeout=30).model_stats
        return sum(s.inference_count for s in stats)


def soak(server, url: str, args: argparse.Namespace) -> dict:
    pid = server.process.pid
    for _ in range(20):  # warm up: allocators and caches at their working size before the first RSS reading
        still_serving(server.address)
    baseline = phase(server.address, url, pid, args, args.baseline_seconds, hostile=False) \
        if args.baseline_seconds > 0 else None
    rss_start = rss_mb(pid)
    rows_before = rows_computed(server.address)
    results = phase(server.address, url, pid, args, args.seconds, hostile=True)
    rows_after = rows_computed(server.address)
    serving = still_serving(server.address)
    rss_end = rss_mb(pid)
    hostile: Counter = results["hostile"]
    bad_answers = {k: v for k, v in hostile.items()
                   if k.endswith(("INTERNAL", "UNKNOWN", ": 500", "without a JSON error"))}
    return {
        "seconds": args.seconds,
        "baseline_seconds": args.baseline_seconds,
        "baseline_valid_only": valid_summary(baseline["valid"]) if baseline else None,
        "valid": valid_summary(results["valid"]),
        "hostile": dict(sorted(hostile.items())),
        "hostile_internal_or_500": bad_answers,
        "streams": dict(results["streams"]),
        # housing rows answered in the hostile phase beyond the valid calls' (stream messages, mostly)
        "other_rows_computed": rows_after - rows_before
        - HOUSE_ROWS * (len(results["valid"]["grpc"]["latencies"]) + len(results["valid"]["http"]["latencies"])),
        "rss_mb": {"start": round(rss_start, 1), "peak": round(results["rss_peak"], 1), "end": round(rss_end, 1),
                   "growth": round(rss_end - rss_start, 1)},
        "still_serving": serving,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--baseline-seconds", type=float, default=10.0,
                        help="first, the valid callers alone for this long (0: skip), to compare latencies with")
    parser.add_argument("--workers", default="1")
    parser.add_argument("--valid-threads", type=int, default=6, help="valid callers (two gRPC for each HTTP one)")
    parser.add_argument("--valid-rate", type=float, default=40.0, help="calls per second per valid caller")
    parser.add_argument("--hostile-threads", type=int, default=4, help="hostile callers (gRPC and HTTP alternate)")
    parser.add_argument("--hold-seconds", type=float, default=5.0, help="how long a never-read stream is held")
    parser.add_argument("--no-streams", action="store_true", help="leave out the stream abuse (to see what it costs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import onnx_models
    from helpers import driftline, running_server

    with tempfile.TemporaryDirectory() as folder:
        registry = Path(folder) / "registry"
        driftline("train", "housing", "--registry", str(registry), "--rows", "1000", "--param", "n_estimators=10")
        onnx_models.publish(registry, "simple", onnx_models.simple())
        with running_server(registry, "--workers", args.workers, "--http-port", "0") as server:
            result = soak(server, onnx_models.http_url(server), args)
            result["server_log_tracebacks"] = sum("Traceback" in line for line in list(server.log))
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    phases = (result["valid"], result["baseline_valid_only"])
    valid_errors = sum(sum(figures[p]["errors"].values()) for figures in phases if figures for p in ("grpc", "http"))
    return 1 if valid_errors or result["hostile_internal_or_500"] or not result["still_serving"] else 0


def report(result: dict) -> None:
    print(f"command: {result['command']}")
    print(f"{result['seconds']:.0f} s of mixed traffic; server still serving at the end: {result['still_serving']}")
    print("| valid calls | answered | p50 ms | p99 ms | max ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    phases = [(f"alone ({result['baseline_seconds']:.0f} s)", result["baseline_valid_only"]),
              (f"under hostile traffic ({result['seconds']:.0f} s)", result["valid"])]
    for name, figures in phases:
        for protocol in ("grpc", "http") if figures else ():
            v = figures[protocol]
            print(f"| {protocol}, {name} | {v['n']} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['max_ms']:.1f} | "
                  f"{sum(v['errors'].values())} |")
    for protocol in ("grpc", "http"):
        for error, count in result["valid"][protocol]["errors"].items():
            print(f"  valid {protocol} error x{count}: {error}")
    print(f"hostile answers: {sum(result['hostile'].values())}, by kind and status:")
    for key, count in result["hostile"].items():
        print(f"  {key}: {count}")
    print(f"hostile answers that were INTERNAL/UNKNOWN/500: {result['hostile_internal_or_500'] or 'none'}")
    print(f"streams: {result['streams']}; housing rows computed beyond the valid calls' (stream messages and "
          f"deadline probes that ran): {result['other_rows_computed']}")
    rss = result["rss_mb"]
    print(f"tracebacks in the server's log: {result['server_log_tracebacks']}")
    print(f"server RSS MB: start {rss['start']}, peak {rss['peak']}, end {rss['end']} (growth {rss['growth']:+})")


if __name__ == "__main__":
    sys.exit(main())
