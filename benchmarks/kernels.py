"""Kernel benchmarks, each beside its baseline measured in the same run.

- drift: the numba state update vs a vectorised numpy update of the same state, per call at 1 row and
  in values/s at 64 and 4,096 rows; a full drift report for a 100k-row window; Evidently's
  DataDriftPreset on the same rows when benchmarks/.envs/evidently exists (run in that venv).
- treeshap: driftline's exact TreeSHAP (1 thread and os.cpu_count() threads) vs fasttreeshap (1 and 2
  threads, when benchmarks/.envs/fasttreeshap exists) and shap.TreeExplainer, from one run, on a GBM (100
  trees, depth 6; 1, 64, 1,000 and 10,000 rows per call) and a random forest (100 trees, depth 10; 1, 64
  and 1,000 rows); prints rows/s, the ratio to the fastest fasttreeshap setting and the table memory.
- validate: the schema check per batch at 1 and 64 rows.

Run: .venv/bin/python benchmarks/kernels.py [--quick] [--only treeshap]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def best_of(fn, repeat: int = 5, number: int = 1) -> float:
    """Seconds per call: the best of ``repeat`` timings of ``number`` calls (a shared machine is noisy)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def housing(rows: int, seed: int, shift: str | None = None) -> np.ndarray:
    from driftline.trainer import synthetic

    return synthetic.housing(rows, seed=seed, shift=shift).select(list(synthetic.FEATURES)).to_numpy()


def numpy_update(state, X: np.ndarray, layout) -> None:
    """The same state update in vectorised numpy: the baseline the numba kernel must beat."""
    for c in range(X.shape[1]):
        column = X[:, c]
        present = ~np.isnan(column)
        values = column[present]
        state.missing[c] += len(column) - len(values)
        edges = layout.edges[c, : layout.n_edges[c]]
        bins = np.searchsorted(edges, values, side="right")
        state.counts[c, : len(edges) + 1] += np.bincount(bins, minlength=len(edges) + 1)
        if len(values):
            n_b, mean_b = len(values), values.mean()
            m2_b = ((values - mean_b) ** 2).sum()
            n_a = state.n[c]
            delta = mean_b - state.mean[c]
            total = n_a + n_b
            state.mean[c] += delta * n_b / total
            state.m2[c] += m2_b + delta * delta * n_a * n_b / total
            state.n[c] = total
            state.min[c] = min(state.min[c], values.min())
            state.max[c] = max(state.max[c], values.max())


def bench_drift(quick: bool) -> dict:
    from driftline.kernels.drift import update, update_state
    from driftline.kernels.drift_stats import report
    from driftline.registry.profile import build_profile

    training = housing(100_000, seed=0)
    names = [f"f{i}" for i in range(training.shape[1])]
    profile = build_profile(training.astype(np.float32), names)
    layout = profile.layout
    out: dict = {"update": {}}
    for rows in (1, 64, 4096):
        X = housing(max(rows, 64), seed=rows)[:rows].astype(np.float32)
        X64 = X.astype(np.float64)
        state = profile.empty_state()
        update_state(state, X, layout)  # compile / load from cache first
        number = 2000 if rows == 1 else (500 if rows == 64 else 20)
        numba_s = best_of(lambda: update_state(state, X, layout), number=number // (4 if quick else 1))
        s_ = state
        raw_s = best_of(lambda: update(s_.counts, s_.missing, s_.n, s_.mean, s_.m2, s_.min, s_.max, X, layout.edges,
                                       layout.n_edges, layout.is_categorical), number=number // (4 if quick else 1))
        numpy_s = best_of(lambda: numpy_update(state, X64, layout), number=max(1, number // 20))
        values = rows * X.shape[1]
        out["update"][rows] = {"numba_us": numba_s * 1e6, "numba_raw_kernel_us": raw_s * 1e6,
                               "numpy_us": numpy_s * 1e6, "raw_kernel_values_per_s": values / raw_s,
                               "numba_values_per_s": values / numba_s, "numpy_values_per_s": values / numpy_s,
                               "speedup": numpy_s / numba_s}
    live = housing(100_000, seed=1, shift="big_garages").astype(np.float32)
    state = profile.empty_state()
    update_state(state, live, layout)
    out["report_100k_ms"] = best_of(lambda: report(state, profile), repeat=7, number=20) * 1e3
    out["evidently"] = evidently(training, live, names)
    return out


def evidently(training: np.ndarray, live: np.ndarray, names: list[str]) -> dict | str:
    python = HERE / ".envs" / "evidently" / "bin" / "python"
    if not python.exists():
        return "skipped: benchmarks/.envs/evidently not installed (python -m venv it; pip install evidently 'pandas<3')"
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "reference.npy", training)
        np.save(Path(folder) / "current.npy", live)
        script = f"""
import json, time, numpy as np, pandas as pd
names = {names!r}
ref = pd.DataFrame(np.load({str(Path(folder) / 'reference.npy')!r}), columns=names)
cur = pd.DataFrame(np.load({str(Path(folder) / 'current.npy')!r}), columns=names)
try:
    from evidently import Report
    from evidently.presets import DataDriftPreset
except ImportError:
    from evidently.report import Report
    from evidently.metric_preset import DataDriftPreset
start = time.perf_counter()
report = Report([DataDriftPreset()])
result = report.run(reference_data=ref, current_data=cur)
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""
        done = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return "failed: " + done.stderr.strip().splitlines()[-1][:200]
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_treeshap(quick: bool) -> dict:
    """driftline (1 thread and all cores) vs fasttreeshap (1 and 2 threads) and shap, from one run.

    driftline is timed before and after the fasttreeshap subprocess (best of both: the machine is shared,
    so its load changes during a run); every figure is the best of a few calls.
    """
    import shap
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    from driftline.attribution import attach_cover
    from driftline.kernels.treeshap import prepare, shap_values
    from driftline.onnx_trees import read_tree_ensemble
    from driftline.trainer import synthetic
    from driftline.trainer.export import export_onnx

    frame = synthetic.housing(20_000, seed=3)
    X = frame.select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
    y = frame["price"].to_numpy()
    models = {
        "gbm_100x6": GradientBoostingRegressor(n_estimators=100, max_depth=6, random_state=0),
        "rf_100x10": RandomForestRegressor(n_estimators=100, max_depth=10, bootstrap=False, random_state=0, n_jobs=-1),
    }
    cores = os.cpu_count() or 1
    out = {"cores": cores}
    for name, estimator in models.items():
        estimator.fit(X[:8000], y[:8000])
        onnx_model = attach_cover(export_onnx(estimator, X.shape[1]), X[:8000])
        ensemble = read_tree_ensemble(onnx_model)
        prepare(ensemble)  # compiles (or loads numba's cache) first
        start = time.perf_counter()
        model = prepare(ensemble)  # once per version, as the server does
        prepare_s = time.perf_counter() - start
        explainer = shap.TreeExplainer(estimator)
        # A depth-10 forest explains a few hundred rows/s in fasttreeshap: 10,000 rows would take minutes.
        rows_list = (1, 64, 1000) if quick or name.startswith("rf") else (1, 64, 1000, 10_000)
        batches = {rows: np.ascontiguousarray(X[8000:8000 + rows]) for rows in rows_list}

        def ours(rows: int, threads: int, model=model, batches=batches) -> float:  # noqa: ANN001
            batch = batches[rows]
            shap_values(model, batch, n_threads=threads)
            number = 20 if rows == 1 else (5 if rows == 64 else 1)
            return rows / best_of(lambda: shap_values(model, batch, n_threads=threads), repeat=3, number=number)

        first = {(rows, t): ours(rows, t) for rows in rows_list for t in (1, cores)}
        theirs = fasttreeshap(estimator, X[8000:8000 + max(rows_list)], rows_list)
        second = {(rows, t): ours(rows, t) for rows in rows_list for t in (1, cores)}
        table = {"table_bytes": model.table_bytes, "prepare_s": prepare_s, **model.stats}
        out[name] = {"prepared": table, "rows": {}}
        for rows in rows_list:
            batch = batches[rows]
            shap_s = best_of(lambda b=batch, e=explainer: e.shap_values(b, check_additivity=False),
                             repeat=1 if rows >= 1000 else 3, number=5 if rows == 1 else 1)
            row = {"driftline_1t": max(first[rows, 1], second[rows, 1]),
                   f"driftline_{cores}t": max(first[rows, cores], second[rows, cores]),
                   "shap": rows / shap_s}
            if isinstance(theirs, dict):
                row["fasttreeshap_1t"] = theirs[f"1t_{rows}"]
                row["fasttreeshap_2t"] = theirs[f"2t_{rows}"]
                fastest = max(row["fasttreeshap_1t"], row["fasttreeshap_2t"])
                row["ratio_1t_vs_fastest_fasttreeshap"] = row["driftline_1t"] / fastest
                row["ratio_vs_fastest_fasttreeshap"] = row[f"driftline_{cores}t"] / fastest
            else:
                row["fasttreeshap"] = theirs
            out[name]["rows"][rows] = row
        print_treeshap_table(name, out[name], cores)
    return out


def print_treeshap_table(name: str, result: dict, cores: int) -> None:
    rows = result["rows"]
    prepared = result["prepared"]
    print(f"\n{name}: tables {prepared['table_bytes']:,} bytes ({prepared['table_leaves']:,} of "
          f"{prepared['n_leaves']:,} leaves, {prepared['folded_leaves']:,} folded), "
          f"prepare {prepared['prepare_s']:.2f} s")
    print(f"| rows per call | driftline 1 thread | driftline {cores} threads | fasttreeshap 1 thread "
          f"| fasttreeshap 2 threads | shap | driftline ({cores} / 1 threads) / fastest fasttreeshap |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, r in rows.items():
        fts = (f"{r['fasttreeshap_1t']:,.0f} | {r['fasttreeshap_2t']:,.0f}" if "fasttreeshap_1t" in r
               else "n/a | n/a")
        ratio = (f"{r['ratio_vs_fastest_fasttreeshap']:.2f}x / {r['ratio_1t_vs_fastest_fasttreeshap']:.2f}x"
                 if "ratio_vs_fastest_fasttreeshap" in r else "n/a")
        print(f"| {n:,} | {r['driftline_1t']:,.0f} | {r[f'driftline_{cores}t']:,.0f} | {fts} | {r['shap']:,.0f} "
              f"| {ratio} |", flush=True)


def fasttreeshap(estimator, X: np.ndarray, rows_list) -> dict | str:
    python = HERE / ".envs" / "fasttreeshap" / "bin" / "python"
    if not python.exists():
        return ("skipped: benchmarks/.envs/fasttreeshap not installed (python -m venv it; pip install numpy "
                "scikit-learn setuptools wheel cython slicer cloudpickle tqdm numba; "
                "pip install --no-build-isolation fasttreeshap-fixed)")
    import pickle

    with tempfile.TemporaryDirectory() as folder:
        # The estimator crosses into the other venv as a pickle: benchmark scaffolding only, never served.
        (Path(folder) / "model.pkl").write_bytes(pickle.dumps(estimator))
        np.save(Path(folder) / "X.npy", X)
        script = f"""
import json, pickle, time, numpy as np
try:
    import fasttreeshap
except ImportError:  # the fixed fork installs under another module name
    import fasttreeshap_fixed as fasttreeshap
m = pickle.loads(open({str(Path(folder) / 'model.pkl')!r}, 'rb').read()); X = np.load({str(Path(folder) / 'X.npy')!r})
out = {{}}
for threads in (1, 2):
    # algorithm="auto": its own choice per batch (v1 for small batches, v2 once the tables pay)
    e = fasttreeshap.TreeExplainer(m, algorithm="auto", n_jobs=threads)
    for rows in {list(rows_list)!r}:
        b = np.ascontiguousarray(X[:rows]); e.shap_values(b, check_additivity=False)
        number = 20 if rows == 1 else (5 if rows == 64 else 1)
        ts = []
        for _ in range(3):
            s = time.perf_counter()
            for _ in range(number):
                e.shap_values(b, check_additivity=False)
            ts.append((time.perf_counter() - s) / number)
        out[f"{{threads}}t_{{rows}}"] = rows / min(ts)
print(json.dumps(out))
"""
        done = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:200]
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_validate() -> dict:
    from driftline.registry.schema import infer_schema

    training = housing(5000, seed=0).astype(np.float32)
    schema = infer_schema(training, [f"f{i}" for i in range(training.shape[1])], ["Float64"] * training.shape[1])
    out = {}
    for rows in (1, 64):
        X = housing(64, seed=7)[:rows].astype(np.float32)
        schema.validate(X)
        out[rows] = {"us_per_call": best_of(lambda: schema.validate(X), number=2000) * 1e6}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["drift", "treeshap", "validate"])
    parser.add_argument("--json", metavar="FILE", help="write the results here too")
    args = parser.parse_args()
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    results = {}
    for name, run in (("drift", lambda: bench_drift(args.quick)), ("treeshap", lambda: bench_treeshap(args.quick)),
                      ("validate", bench_validate)):
        if args.only in (None, name):
            results[name] = run()
            print(json.dumps({name: results[name]}, indent=1, default=str), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
