"""Hot-swap under load: how long `driftline swap` takes, and what it does to latency.

One run: a server with two versions of the housing model, 16 closed-loop callers on 127.0.0.1;
first a steady phase, then swaps back and forth while the callers go on. Reports the swap's duration
(the admin call, which returns once every worker serves the new version), the time from asking to the
first answer from the new version, and p50/p99 latency in the steady phase against the swap phase
(the baseline, measured in the same run). Bounded in time; stops by itself.

Run: .venv/bin/python benchmarks/swap.py [--workers 1] [--swaps 6]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc
from driftline.trainer import synthetic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import driftline, running_server  # noqa: E402  (the tests' way to start a real server)


def request() -> bytes:
    rows = synthetic.housing(1, seed=3).select(list(synthetic.FEATURES)).to_numpy().astype("<f4")
    message = pb.ModelInferRequest(model_name="housing")
    message.inputs.add(name="input", datatype="FP32", shape=rows.shape)
    message.raw_input_contents.append(rows.tobytes())
    return message


def percentiles(latencies: list[float]) -> dict[str, float]:
    values = np.array(latencies) * 1e3
    return {"n": len(values), "p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "max_ms": float(values.max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--steady-seconds", type=float, default=6.0)
    parser.add_argument("--swaps", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        registry = Path(folder) / "registry"
        for seed in ("1", "2"):
            driftline("train", "housing", "--registry", str(registry), "--rows", "4000", "--seed", seed)
        with running_server(registry, "--model", "housing:1", "--workers", args.workers) as server:
            return run(server.address, args)


def run(address: str, args: argparse.Namespace) -> int:
    message = request()
    phase = {"name": "warmup"}
    records: list[tuple[str, float, float, str]] = []  # (phase, sent, latency, version)
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def caller() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                sent = time.perf_counter()
                try:
                    version = stub.ModelInfer(message, timeout=30).model_version
                except grpc.RpcError as exc:
                    failures.append(exc.code().name)
                    continue
                with lock:
                    records.append((phase["name"], sent, time.perf_counter() - sent, version))

    threads = [threading.Thread(target=caller) for _ in range(args.callers)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    phase["name"] = "steady"
    time.sleep(args.steady_seconds)
    phase["name"] = "swapping"
    swaps = []
    with grpc.insecure_channel(address) as channel:
        admin = driftline_pb2_grpc.AdminStub(channel)
        for i in range(args.swaps):
            target = "2" if i % 2 == 0 else "1"
            asked = time.perf_counter()
            response = admin.Swap(dpb.SwapRequest(name="housing", version=target), timeout=120)
            returned = time.perf_counter()
            swaps.append((asked, returned, target))
            time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    first_answers = []
    for asked, _, target in swaps:
        after = [sent + latency for _, sent, latency, version in records if version == target and sent >= asked]
        first_answers.append((min(after) - asked) * 1e3 if after else float("nan"))
    steady = percentiles([lat for name, _, lat, _ in records if name == "steady"])
    swapping = percentiles([lat for name, _, lat, _ in records if name == "swapping"])
    durations = [(returned - asked) * 1e3 for asked, returned, _ in swaps]
    print(f"command: {' '.join(sys.argv)}")
    print(f"callers {args.callers}, workers {args.workers}, failed requests: {len(failures)}")
    print("| phase | requests | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, figures in (("steady (baseline)", steady), (f"during {args.swaps} swaps", swapping)):
        print(f"| {name} | {figures['n']} | {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | {figures['max_ms']:.1f} |")
    print(f"p99 during swaps / steady: {swapping['p99_ms'] / steady['p99_ms']:.2f}x")
    print(f"swap command (load, verify, warm up, switch, drain): median {np.median(durations):.0f} ms, "
          f"max {max(durations):.0f} ms")
    print(f"ask -> first answer from the new version: median {np.nanmedian(first_answers):.0f} ms, "
          f"max {np.nanmax(first_answers):.0f} ms")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
