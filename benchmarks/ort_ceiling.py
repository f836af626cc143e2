"""The ceiling: onnxruntime called in-process, no server, no network, on one thread.

Same session options as ``driftline serve`` (CPU provider, one intra-op thread). For each batch size
it calls ``session.run`` back to back for ``--seconds`` (after a short warmup) and reports calls/s,
rows/s, the median call and the CPU per call. Prints one JSON object.

    python benchmarks/ort_ceiling.py --model REGISTRY/housing/1/model.onnx --batch 1,64 --seconds 3
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import onnxruntime as ort
from driftline.cli.bench import sample_rows


def measure(session: ort.InferenceSession, rows: np.ndarray, seconds: float) -> dict:
    feed = {session.get_inputs()[0].name: rows}
    for _ in range(50):
        session.run(None, feed)
    times = []
    cpu0, start = time.process_time(), time.perf_counter()
    end = start + seconds
    now = start
    while now < end:
        session.run(None, feed)
        later = time.perf_counter()
        times.append(later - now)
        now = later
    elapsed, cpu = now - start, time.process_time() - cpu0
    calls = len(times)
    return {"batch": len(rows), "calls": calls, "calls_per_s": round(calls / elapsed, 1),
            "rows_per_s": round(calls * len(rows) / elapsed, 1),
            "p50_ms": round(float(np.percentile(times, 50)) * 1000, 4),
            "cpu_us_per_call": round(cpu / calls * 1e6, 2), "cpu_us_per_row": round(cpu / calls / len(rows) * 1e6, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--batch", default="1,64", help="batch sizes, comma-separated")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per batch size")
    args = p.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, sess_options=options, providers=["CPUExecutionProvider"])
    width = session.get_inputs()[0].shape[1]
    results = []
    for batch in (int(b) for b in args.batch.split(",")):
        rows = sample_rows(batch, width, "auto", seed=0)  # the rows driftline bench sends
        results.append(measure(session, rows, args.seconds))
    print(json.dumps({"onnxruntime": ort.__version__, "results": results}))


if __name__ == "__main__":
    main()
