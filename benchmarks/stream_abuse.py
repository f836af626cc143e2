"""Hostile streams against one server: does a 1-row caller still get answered, and does memory stay bounded?

The repro of issue 13's first defect, full size. One ``ModelStreamInfer`` writes ``--messages`` messages of
``--rows`` rows (FP32 [rows, 11]) without reading its answers and cancels once they are written (or after
``--cancel-after`` seconds of trying); a second stream does the same, never reads and never stops until the
end. Meanwhile a third client, on a channel of its own, sends 1-row ``ModelInfer`` calls with a 1-second
gRPC deadline, one after another, and the server's VmRSS is sampled from /proc. Reports the probe's
latency and failures, the RSS baseline (after a warm-up call) and peak, and how long the server kept
computing after the first stream was cancelled (from its executed-row counter).

Run: .venv/bin/python benchmarks/stream_abuse.py [--messages 200] [--rows 20000] [--duration 30] [--serve-arg=...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import driftline, running_server  # noqa: E402  (the tests' way to start a real server)

WIDTH = 11
# Channels in one process share their TCP connection unless told not to; each client here stands for another
# process, with a connection (so a share of the batcher) of its own.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def message(rows: int, seed: int) -> pb.ModelInferRequest:
    x = np.random.default_rng(seed).uniform(1, 100, size=(rows, WIDTH)).astype("<f4")
    request = pb.ModelInferRequest(model_name="housing")
    request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    return request


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def executed_rows(stub) -> int:
    stats = stub.ModelStatistics(pb.ModelStatisticsRequest(name="housing"), timeout=10).model_stats[0]
    return sum(b.batch_size * b.compute_infer.count for b in stats.batch_stats)


class Stream:
    """A stream that writes ``count`` copies of one message (None: without end) and never reads its answers."""

    def __init__(self, address: str, request: pb.ModelInferRequest, count: int | None) -> None:
        self.channel = grpc.insecure_channel(address, options=OWN_CONNECTION)
        self.written = 0
        self.done_writing = threading.Event()
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.call = stub.ModelStreamInfer(self._messages(request, count))

    def _messages(self, request, count):
        while count is None or self.written < count:
            yield request
            self.written += 1
        self.done_writing.set()

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


def run(address: str, pid: int, messages: int, rows: int, duration: float, cancel_after: float) -> dict:
    with grpc.insecure_channel(address, options=OWN_CONNECTION) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        one_row = message(1, 1)
        # Warm up as a server that has served is warm: the first batches compile the drift kernels (numba), which
        # holds the GIL for a second or two and costs memory once; that is not what is measured here.
        for size in (1, 64, rows):
            stub.ModelInfer(message(size, 3), timeout=60)
        time.sleep(3)
        baseline = rss_bytes(pid)
        big = message(rows, 2)
        latencies, failures, failed_at, slow, peak = [], [], [], [], baseline
        stop = threading.Event()

        timeline: list[int] = []  # MiB, once a second

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                rss = rss_bytes(pid)
                peak = max(peak, rss)
                if len(timeline) <= (time.monotonic() - started):
                    timeline.append(rss >> 20)
                time.sleep(0.05)

        started = time.monotonic()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cancelling = Stream(address, big, messages)
        reading_never = Stream(address, big, None)
        cancelled_at = rows_at_cancel = None
        try:
            while time.monotonic() - started < duration:
                if cancelled_at is None and (cancelling.done_writing.is_set()
                                             or time.monotonic() - started > cancel_after):
                    cancelling.close()
                    cancelled_at, rows_at_cancel = time.monotonic(), executed_rows(stub)
                sent = time.monotonic()
                try:
                    stub.ModelInfer(one_row, timeout=1.0)
                    latencies.append(time.monotonic() - sent)
                    if latencies[-1] > 0.3:
                        slow.append((round(sent - started, 1), round(latencies[-1] * 1000)))
                except grpc.RpcError as exc:
                    failures.append(exc.code().name)
                    failed_at.append(round(sent - started, 1))
                time.sleep(0.02)
            rows_at_end = executed_rows(stub)
        finally:
            stop.set()
            cancelling.close()
            reading_never.close()
            sampler.join()
        lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
        return {
            "messages": messages, "rows_per_message": rows, "duration_s": duration,
            "cancelling_stream_written": cancelling.written, "never_reading_stream_written": reading_never.written,
            "probe_calls": len(latencies) + len(failures), "probe_failures": len(failures),
            "probe_failure_codes": sorted(set(failures)), "probe_failed_at_s": failed_at[:20],
            "probe_over_300ms_at_s_ms": slow[:20],
            "probe_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "probe_p99_ms": round(float(np.percentile(lat, 99)), 1),
            "probe_max_ms": round(float(lat.max()), 1),
            "rss_baseline_mib": round(baseline / 2**20), "rss_peak_mib": round(peak / 2**20),
            "rss_growth_mib": round((peak - baseline) / 2**20), "rss_mib_each_second": timeline,
            "rows_executed_after_cancel": None if rows_at_cancel is None else rows_at_end - rows_at_cancel,
            "cancelled_after_s": None if cancelled_at is None else round(cancelled_at - started, 1),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of probing (default 30)")
    parser.add_argument("--cancel-after", type=float, default=10.0,
                        help="cancel the first stream after this long even if not every message was written")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra `driftline serve` argument")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stream-abuse-") as tmp:
        registry = Path(tmp) / "registry"
        driftline("train", "housing", "--registry", str(registry), "--rows", "2000", "--param", "n_estimators=20")
        with running_server(registry, "--no-http", "--no-metrics", *args.serve_arg) as server:
            result = run(server.address, server.process.pid, args.messages, args.rows, args.duration,
                         args.cancel_after)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
