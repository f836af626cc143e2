"""The GPU path beside the CPU path, from one run (issue 17): every GPU figure next to its CPU baseline.

- TreeSHAP rows/s for the housing model (``driftline train --synthetic housing``, the model the demo serves) at
  1, 1,000 and 100,000 rows per call: the CPU kernel on every core vs the CUDA twin on rows already on the
  device (the time until the attributions are complete on the device, the stream waited for);
- drift: one update of the monitoring state by 1,000,000 rows x 12 features (the 11 housing features and a
  noise column): the numba CPU kernel vs the CUDA twin on a device batch (including the copy-back of the
  statistics and the host merge, as the server pays it);
- serving: infer/s of ``driftline serve --device cpu`` vs ``--device cuda`` on 127.0.0.1 at c=32 with batch-1
  and 64-row requests, driven by ``driftline bench`` through ``harness.bench`` (the one load generator).

Without a GPU (or under ``NUMBA_ENABLE_CUDASIM``, whose timings mean nothing) only the CPU side runs and the
results say so. ``--quick``: small sizes and one-second loads (what ``tests/test_gpu_check.py`` runs).

    .venv/bin/python benchmarks/gpu_bench.py --out benchmarks/out/gpu_results.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

MODEL = "housing"
GOALS = {
    "treeshap": "exact TreeSHAP >= 1,000,000 rows/s on one modern GPU",
    "drift": "drift update of 1M rows x 12 features < 1 ms",
    "serve": "batch-1 serving no slower than the CPU path",
}


def best_of(fn: Callable[[], object], repeat: int, budget_s: float = 20.0) -> float:
    """Seconds per call: the best of ``repeat`` calls, fewer when they would pass ``budget_s``."""
    best = float("inf")
    spent = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best = min(best, took)
        spent += took
        if spent > budget_s:
            break
    return best


def gpu_device() -> str | None:
    """The GPU's name, or None where there is none (the simulator is not one)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return None
    try:
        from numba import cuda

        if not cuda.is_available():
            return None
        from driftline.kernels.launch import device_limits

        return device_limits().name
    except Exception as exc:  # a broken driver or toolkit: the CPU side still runs  # noqa: BLE001
        print(f"numba.cuda unusable: {exc}", flush=True)
        return None


def housing_rows(rows: int, seed: int) -> np.ndarray:
    from driftline.trainer import synthetic

    frame = synthetic.housing(rows, seed=seed)
    return np.ascontiguousarray(frame.select(list(synthetic.FEATURES)).to_numpy().astype(np.float32))


def bench_treeshap(model_file: Path, sizes: list[int], gpu: bool) -> list[dict]:
    import onnx

    from driftline.kernels.treeshap import prepare, shap_values
    from driftline.onnx_trees import read_tree_ensemble

    model = prepare(read_tree_ensemble(onnx.load(str(model_file))))
    cores = os.cpu_count() or 1
    out = []
    cuda_model = None
    if gpu:
        from numba import cuda

        from driftline.kernels.treeshap_cuda import prepare_cuda, shap_values_cuda

        cuda_model = prepare_cuda(model)
        stream = cuda.stream()
    for rows in sizes:
        X = housing_rows(rows, seed=rows)
        shap_values(model, X, n_threads=cores)  # compile / load numba's cache first
        repeat = 20 if rows == 1 else 3
        cpu_s = best_of(lambda X=X: shap_values(model, X, n_threads=cores), repeat)
        row = {"rows": rows, "cpu_rows_per_s": rows / cpu_s, "cpu": f"numba, {cores} threads"}
        if cuda_model is not None:
            X_device = cuda.to_device(X, stream=stream)

            def on_gpu(X_device=X_device) -> None:
                shap_values_cuda(cuda_model, X_device, stream=stream)
                stream.synchronize()

            on_gpu()  # compiles the kernels on first use
            gpu_s = best_of(on_gpu, repeat)
            want, _ = shap_values(model, X[:64])
            got, _ = shap_values_cuda(cuda_model, X_device[:64], stream=stream, to_host=True)
            row["gpu_rows_per_s"] = rows / gpu_s
            row["max_abs_difference"] = float(np.abs(got - want).max()) if want.size else 0.0
        out.append(row)
        print(f"treeshap {rows:>7,} rows: {row}", flush=True)
    return out


def bench_drift(rows: int, gpu: bool) -> dict:
    from driftline.kernels.drift import update_state
    from driftline.registry.profile import build_profile

    def twelve(n: int, seed: int) -> np.ndarray:
        noise = np.random.default_rng(seed).normal(size=(n, 1)).astype(np.float32)
        return np.ascontiguousarray(np.hstack([housing_rows(n, seed), noise]))

    profile = build_profile(twelve(20_000, 0), [f"f{i}" for i in range(12)])
    layout = profile.layout
    X = twelve(rows, 1)
    state = profile.empty_state()
    update_state(state, X[:64], layout)  # compile / load numba's cache first
    cpu_s = best_of(lambda: update_state(state, X, layout), 3)
    out = {"rows": rows, "features": 12, "cpu_ms": cpu_s * 1e3, "cpu": "numba, 1 thread"}
    if gpu:
        from numba import cuda

        from driftline.kernels.drift_cuda import layout_to_device, update_from_device

        stream = cuda.stream()
        device_layout = layout_to_device(layout, stream=stream)
        X_device = cuda.to_device(X, stream=stream)
        gpu_state = profile.empty_state()
        update_from_device(gpu_state, X_device, *device_layout, stream=stream)  # compiles
        out["gpu_ms"] = best_of(lambda: update_from_device(gpu_state, X_device, *device_layout, stream=stream),
                                20) * 1e3
        cpu_state = profile.empty_state()
        update_state(cpu_state, X, layout)
        check = profile.empty_state()
        update_from_device(check, X_device, *device_layout, stream=stream)
        out["counts_equal"] = bool(np.array_equal(check.counts, cpu_state.counts))
    print(f"drift: {out}", flush=True)
    return out


def bench_serving(registry: Path, devices: list[str], seconds: float) -> dict:
    loads = {"b1": ("batch-1, c=32", "1"), "r64": ("64-row requests, c=32", "64")}
    out: dict = {}
    for device in devices:
        argv = harness.driftline_serve_argv(registry, MODEL, "--device", device)
        try:
            with harness.running(f"driftline-{device}", argv, model=MODEL) as server:
                for load, (_, rows) in loads.items():
                    report = harness.bench(server, MODEL, "--concurrency", "32", "--rows-per-request", rows,
                                           "--requests", "1000000", "--duration", str(seconds),
                                           "--warmup", str(min(2.0, seconds / 2)), "--timeout", "10")
                    out[(device, load)] = {"infer_per_s": report["infer_per_s"], "rows_per_s": report["rows_per_s"],
                                           "p50_ms": report["latency_ms"]["p50"], "errors": report["errors_total"]}
                    print(f"serve --device {device} {load}: {out[(device, load)]}", flush=True)
        except (RuntimeError, OSError) as exc:
            for load in loads:
                out[(device, load)] = {"failed": str(exc).splitlines()[0][:200]}
            print(f"serve --device {device}: failed: {exc}", flush=True)
    return out


def ratio(gpu: float | None, cpu: float | None, lower_is_better: bool = False) -> str:
    if not gpu or not cpu:
        return "-"
    return f"{(cpu / gpu if lower_is_better else gpu / cpu):.2f}x"


def render(args: argparse.Namespace, device: str | None, command: str, treeshap: list[dict], drift: dict,
           serving: dict) -> str:
    none = "n/a (no GPU)"
    lines = [
        "# GPU check results",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- GPU: {device or 'none found: only the CPU side ran (the CUDA kernels ran in the simulator, if at all)'}",
        f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        f"- command: `{command}`" + (" (quick: small sizes)" if args.quick else ""),
    ]
    lines += [f"- {note}" for note in args.note]
    lines += ["", "| figure | GPU | CPU (same run) | GPU vs CPU | goal |", "|---|---:|---:|---:|---|"]
    for r in treeshap:
        gpu = r.get("gpu_rows_per_s")
        lines.append(f"| TreeSHAP rows/s, {r['rows']:,} rows per call ({r['cpu']} on the CPU) | "
                     f"{f'{gpu:,.0f}' if gpu else none} | {r['cpu_rows_per_s']:,.0f} | {ratio(gpu, r['cpu_rows_per_s'])}"
                     f" | {GOALS['treeshap'] if r['rows'] >= 1000 else ''} |")
    gpu_ms = drift.get("gpu_ms")
    if drift:
        lines.append(f"| drift update, {drift['rows']:,} rows x {drift['features']} features, ms ({drift['cpu']} on "
                     f"the CPU) | {f'{gpu_ms:.3f}' if gpu_ms else none} | {drift['cpu_ms']:.3f} | "
                     f"{ratio(gpu_ms, drift['cpu_ms'], lower_is_better=True)} | {GOALS['drift']} |")
    else:
        lines.append("| drift update: not measured yet (the run was cut short) | | | | |")
    for load, label in (("b1", "batch-1, c=32"), ("r64", "64-row requests, c=32")):
        cpu = serving.get(("cpu", load), {})
        gpu = serving.get(("cuda", load), {})

        def cell(r: dict, absent: str) -> str:
            if "failed" in r:
                return "failed: " + r["failed"].replace("|", "/")
            if "infer_per_s" not in r:
                return absent
            return f"{r['infer_per_s']:,.0f} (p50 {r['p50_ms']:.2f} ms, {r['errors']} errors)"

        lines.append(f"| infer/s, {label} (`driftline serve --device cuda` vs `--device cpu`) | "
                     f"{cell(gpu, none if not device else 'skipped')} | {cell(cpu, 'skipped')} | "
                     f"{ratio(gpu.get('infer_per_s'), cpu.get('infer_per_s'))} | "
                     f"{GOALS['serve'] if load == 'b1' else ''} |")
    checks = [r for r in treeshap if "max_abs_difference" in r]
    if checks or "counts_equal" in drift:
        lines += ["", "Agreement with the CPU kernels in this run: TreeSHAP max |GPU - CPU| "
                  + ", ".join(f"{r['max_abs_difference']:.1e} ({r['rows']:,} rows)" for r in checks)
                  + f"; drift counts equal: {drift.get('counts_equal')}."]
    lines += ["", "TreeSHAP and drift GPU figures are for rows already on the device (what the server's device "
              "path hands the kernels), the stream waited for; the drift figure includes copying the batch "
              "statistics back and merging them into the host state."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, one-second loads (no GPU figures meant)")
    p.add_argument("--out", type=Path, help="results file (default: $OUT/gpu_results.md, else "
                   "benchmarks/out/gpu_results.md)")
    p.add_argument("--seconds", type=float, help="measured seconds per serving load (default 6; quick 1)")
    p.add_argument("--no-serve", action="store_true", help="skip the serving figures")
    p.add_argument("--note", action="append", default=[], help="a line for the results file (repeatable)")
    args = p.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    shown = [a for i, a in enumerate(given) if a != "--note" and (i == 0 or given[i - 1] != "--note")]
    command = shlex.join(["python", "benchmarks/gpu_bench.py", *shown])  # the notes are listed on their own
    out = args.out or (Path(os.environ["OUT"]) / "gpu_results.md" if os.environ.get("OUT")
                       else harness.OUT / "gpu_results.md")
    device = gpu_device()
    print(f"GPU: {device or 'none'}", flush=True)
    sizes = [1, 64, 1000] if args.quick else [1, 1000, 100_000]
    drift_rows = 20_000 if args.quick else 1_000_000
    seconds = args.seconds or (1.0 if args.quick else 6.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    treeshap: list[dict] = []
    drift: dict = {}
    serving: dict = {}

    def write() -> str:  # after every section: a run cut short by its timeout still leaves what it measured
        text = render(args, device, command, treeshap, drift, serving)
        out.write_text(text)
        return text

    with tempfile.TemporaryDirectory(prefix="driftline-gpu-bench-") as tmp:
        registry = Path(tmp) / "registry"
        model_file = harness.train(registry, MODEL, rows=2000 if args.quick else 4000)
        treeshap = bench_treeshap(model_file, sizes, gpu=device is not None)
        write()
        drift = bench_drift(drift_rows, gpu=device is not None)
        write()
        if not args.no_serve:
            serving = bench_serving(registry, ["cpu", "cuda"] if device else ["cpu"], seconds)
    print(write())
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
