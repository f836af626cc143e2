"""Kernel benchmarks, each beside its baseline measured in the same run.

- drift: the numba state update vs a vectorised numpy update of the same state, per call at 1 row and
  in values/s at 64 and 4,096 rows; a full drift report for a 100k-row window; Evidently's
  DataDriftPreset on the same rows when benchmarks/.envs/evidently exists (run in that venv).
- treeshap: driftline's exact TreeSHAP vs shap.TreeExplainer (and fasttreeshap when
  benchmarks/.envs/fasttreeshap exists) on a GBM (100 trees, depth 6) and a random forest (100 trees,
  depth 10), at 1, 64 and 10,000 rows per call.
- validate: the schema check per batch at 1 and 64 rows.

Run: .venv/bin/python benchmarks/kernels.py [--quick]   (single-threaded kernels; results as ratios)
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
    out = {}
    for name, estimator in models.items():
        estimator.fit(X[:8000], y[:8000])
        onnx_model = attach_cover(export_onnx(estimator, X.shape[1]), X[:8000])
        model = prepare(read_tree_ensemble(onnx_model))
        explainer = shap.TreeExplainer(estimator)
        # A depth-10 forest explains ~150 rows/s: 10,000 rows would take a minute per library.
        big = 1000 if quick or name.startswith("rf") else 10_000
        rows_list = (1, 64, big)
        out[name] = {}
        for rows in rows_list:
            batch = X[8000:8000 + rows]
            shap_values(model, batch)
            ours = best_of(lambda: shap_values(model, batch), repeat=3, number=20 if rows == 1 else 1)
            theirs = best_of(lambda: explainer.shap_values(batch, check_additivity=False), repeat=3,
                             number=5 if rows == 1 else 1)
            out[name][rows] = {"driftline_rows_per_s": rows / ours, "shap_rows_per_s": rows / theirs,
                               "ratio_vs_shap": theirs / ours, "driftline_ms_per_call": ours * 1e3}
        out[name]["fasttreeshap"] = fasttreeshap(estimator, X[8000:8000 + max(rows_list)], rows_list)
    return out


def fasttreeshap(estimator, X: np.ndarray, rows_list) -> dict | str:
    python = HERE / ".envs" / "fasttreeshap" / "bin" / "python"
    if not python.exists():
        return "skipped: benchmarks/.envs/fasttreeshap not installed"
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
    e = fasttreeshap.TreeExplainer(m, algorithm="auto", n_jobs=threads)
    for rows in {list(rows_list)!r}:
        b = X[:rows]; e.shap_values(b, check_additivity=False)
        ts = []
        for _ in range(3):
            s = time.perf_counter(); e.shap_values(b, check_additivity=False); ts.append(time.perf_counter() - s)
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
