"""Per-batch validation and drift update: one Python call per batch (today) against ``numba.cfunc`` functions
called through their C address without the GIL (issue 18, "Per-batch work without the GIL where possible").

The compiled door hands Python one call per batch; Python then validates the rows (``RequestValidator.check``),
runs onnxruntime, and the drift monitor folds rows and predictions into its states (``VersionMonitor.update``).
Could the door's batch thread do the validation and the drift update itself, by calling the same numba kernels
compiled as C-callable functions? For batches of 1, 8, 64 and 256 housing rows this times, in one process:

- ``python``: the server's own objects, called as the server calls them: ``validator.check(rows)`` then
  ``monitor.update(rows, outputs)`` (the version's real schema and training profile; no attribution sampling,
  which no cfunc could do either);
- ``cfunc``: the same kernels (``validate_rows``, ``drift.update``) inside two ``numba.cfunc`` functions over
  the float32 ``[rows, width]`` buffer and the predictions, called per batch through ctypes (which drops the GIL
  for the call): what a Python loop calling C costs;
- ``cfunc-in-C``: one C call that loops over every batch, calling the same two functions per batch: what the
  door's C++ batch thread would pay (no Python, no GIL at all);
- ``ctypes-noop``: two empty cfuncs of the same signatures through ctypes: the ctypes share of ``cfunc``.

Each mode runs alone (reported: the process's CPU time per batch, which a busy shared machine disturbs less than
the wall clock), then again beside a pure-Python thread that only counts, a stand-in for the event loop (reported:
wall time per batch). That thread's rate beside a mode, against its rate beside ``cfunc-in-C`` (which holds no GIL),
gives the GIL the batch thread held per batch. For scale, the two halves of ``python`` are also timed alone, and
``door-call``, the whole Python call the door makes per batch today (check, onnxruntime, statistics, metrics, the
monitor thread's update, which folds the batches of each 0.1 s in at once). Both paths are checked to produce the
same drift state and the same flagged rows first.

    .venv/bin/python benchmarks/cfunc_batch.py                       # trains the housing model first (~10 s)
    .venv/bin/python benchmarks/cfunc_batch.py --registry /tmp/reg  # or reuses one (hot_path.py's, e.g.)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numba import carray, cfunc, njit, types

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from driftline.kernels.drift import update as drift_update  # noqa: E402
from driftline.kernels.validate import validate_rows  # noqa: E402
from driftline.registry import open_registry  # noqa: E402
from driftline.server.batcher import Batcher, BatchSettings  # noqa: E402
from driftline.server.model import load_version  # noqa: E402
from driftline.server.monitor import DriftSettings, MonitorThread, VersionMonitor  # noqa: E402
from driftline.server.validate import RequestValidator  # noqa: E402
from driftline.trainer import synthetic  # noqa: E402

i64, vp = types.int64, types.voidptr

# -- the candidate: the project's kernels behind C signatures -----------------------------------------------------
# Drift states are the candidate's own: two (the monitor's window and since-live states) stacked in one array
# each, as the C++ side would own them. Columns: the features, then the outputs, then columns the door cannot fill
# (the profile's attribution shares: counted missing, exactly as the monitor counts its NaN there).


@njit(nogil=True)
def _drift_batch(X, out, counts, missing, n, mean, m2, vmin, vmax, edges, n_edges, is_cat):  # noqa: ANN001, ANN202
    f, o = X.shape[1], out.shape[1]
    for s in range(counts.shape[0]):
        drift_update(counts[s, :f], missing[s, :f], n[s, :f], mean[s, :f], m2[s, :f], vmin[s, :f], vmax[s, :f],
                     X, edges[:f], n_edges[:f], is_cat[:f])
        drift_update(counts[s, f:f + o], missing[s, f:f + o], n[s, f:f + o], mean[s, f:f + o], m2[s, f:f + o],
                     vmin[s, f:f + o], vmax[s, f:f + o], out, edges[f:f + o], n_edges[f:f + o], is_cat[f:f + o])
        for c in range(f + o, counts.shape[1]):
            missing[s, c] += X.shape[0]


VALIDATE_SIG = i64(vp, i64, i64, vp, vp, vp, i64, vp)
DRIFT_SIG = types.void(vp, vp, i64, i64, i64, i64, i64, vp, vp, vp, vp, vp, vp, vp, vp, i64, vp, vp)


@cfunc(VALIDATE_SIG, nopython=True, nogil=True)
def validate_c(x, rows, cols, params, meta, cat_ok, n_cat, row_mask):  # noqa: ANN001, ANN201
    """Rows failing any check (0: all clean); ``row_mask[r]`` gets row r's failed kinds (kernels/validate.py)."""
    return validate_rows(carray(x, (rows, cols), np.float32), carray(params, (6, cols), np.float64),
                         carray(meta, (4, cols), np.int64), carray(cat_ok, (n_cat,), np.uint8),
                         carray(row_mask, (rows,), np.uint32))


@cfunc(DRIFT_SIG, nopython=True, nogil=True)
def drift_c(x, out, rows, cols, n_out, total_cols, width, counts, missing, n, mean, m2, vmin, vmax,  # noqa: ANN001, ANN201
            edges, edges_w, n_edges, is_cat):
    """Fold a batch's rows and outputs into both drift states (kernels/drift.py's update)."""
    s = (2, total_cols)
    _drift_batch(carray(x, (rows, cols), np.float32), carray(out, (rows, n_out), np.float32),
                 carray(counts, (2, total_cols, width), np.int64), carray(missing, s, np.int64),
                 carray(n, s, np.int64), carray(mean, s, np.float64), carray(m2, s, np.float64),
                 carray(vmin, s, np.float64), carray(vmax, s, np.float64),
                 carray(edges, (total_cols, edges_w), np.float64), carray(n_edges, (total_cols,), np.int64),
                 carray(is_cat, (total_cols,), np.bool_))


@cfunc(VALIDATE_SIG, nopython=True)
def validate_noop(x, rows, cols, params, meta, cat_ok, n_cat, row_mask):  # noqa: ANN001, ANN201
    return 0


@cfunc(DRIFT_SIG, nopython=True)
def drift_noop(x, out, rows, cols, n_out, total_cols, width, counts, missing, n, mean, m2, vmin, vmax,  # noqa: ANN001, ANN201
               edges, edges_w, n_edges, is_cat):
    return


# The door's batch thread, simulated: every batch of a buffer validated then folded in, no Python in between.
LOOP_SIG = i64(vp, vp, i64, i64, i64, vp, vp, vp, i64, vp, i64, i64, vp, vp, vp, vp, vp, vp, vp, vp, i64, vp, vp)


@cfunc(LOOP_SIG, nopython=True, nogil=True)
def batches_c(x, out, batches, rows, cols, params, meta, cat_ok, n_cat, row_mask, total_cols, width,  # noqa: ANN001, ANN201
              counts, missing, n, mean, m2, vmin, vmax, edges, edges_w, n_edges, is_cat):
    X = carray(x, (batches * rows, cols), np.float32)
    Y = carray(out, (batches * rows, 1), np.float32)
    p, m = carray(params, (6, cols), np.float64), carray(meta, (4, cols), np.int64)
    ok, mask = carray(cat_ok, (n_cat,), np.uint8), carray(row_mask, (batches * rows,), np.uint32)
    s = (2, total_cols)
    cn, mi, nn = carray(counts, (2, total_cols, width), np.int64), carray(missing, s, np.int64), carray(n, s, np.int64)
    me, mm = carray(mean, s, np.float64), carray(m2, s, np.float64)
    lo, hi = carray(vmin, s, np.float64), carray(vmax, s, np.float64)
    ed, ne = carray(edges, (total_cols, edges_w), np.float64), carray(n_edges, (total_cols,), np.int64)
    ic = carray(is_cat, (total_cols,), np.bool_)
    failed = 0
    for b in range(batches):
        a, z = b * rows, (b + 1) * rows
        failed += validate_rows(X[a:z], p, m, ok, mask[a:z])
        _drift_batch(X[a:z], Y[a:z], cn, mi, nn, me, mm, lo, hi, ed, ne, ic)
    return failed


# -- the case: a trained housing version and the server's objects for it --------------------------------------------


class Case:
    """The newest housing version of a registry, loaded as the server loads it, and 20,000 rows for it."""

    def __init__(self, registry: Path) -> None:
        store = open_registry(str(registry))
        served = load_version(store.open("housing", store.latest("housing")), ["CPUExecutionProvider"], 1)
        self.served = served
        self.width = served.width
        names = served.column_names
        frame = synthetic.housing(20_000, seed=0)
        self.data = np.ascontiguousarray(frame.select(list(names)).to_numpy().astype(np.float32))
        self.outputs = np.ascontiguousarray(
            served.session.run(["prediction"], {served.input.name: self.data})[0].reshape(-1, 1).astype(np.float32))
        arrays = served.schema.arrays()  # the policy compiled into the kernel's arrays, float32 limits as served
        self.params = np.ascontiguousarray(arrays.for_dtype(np.dtype(np.float32)))
        self.meta = np.ascontiguousarray(arrays.meta)
        self.cat_ok = np.ascontiguousarray(arrays.cat_ok if arrays.cat_ok.size else np.zeros(1, np.uint8))
        self.layout = served.profile.layout

    def server_objects(self) -> tuple[RequestValidator, VersionMonitor]:
        """As server/repository.py makes them (validation policy of the version; default drift settings but for
        attribution sampling)."""
        validator = RequestValidator(self.served.schema, self.served.schema.policy)
        monitor = VersionMonitor(self.served.profile, self.width, self.served.output_names,
                                 DriftSettings(attribution_sample=0.0), features=self.served.column_names)
        return validator, monitor

    def candidate_state(self) -> dict[str, np.ndarray]:
        c, w = self.layout.columns, self.layout.width
        return {"counts": np.zeros((2, c, w), np.int64), "missing": np.zeros((2, c), np.int64),
                "n": np.zeros((2, c), np.int64), "mean": np.zeros((2, c)), "m2": np.zeros((2, c)),
                "min": np.full((2, c), np.inf), "max": np.full((2, c), -np.inf)}


def addr(a: np.ndarray) -> int:
    return a.ctypes.data


class Candidate:
    """Argument tuples for the C calls (made once: the door would hold pointers, not build them per batch)."""

    def __init__(self, case: Case, rows: int, batches: int) -> None:
        self.case, self.rows, self.batches = case, rows, batches
        self.X = np.ascontiguousarray(np.resize(case.data, (batches * rows, case.width)))
        self.Y = np.ascontiguousarray(np.resize(case.outputs, (batches * rows, 1)))
        self.mask = np.zeros(batches * rows, np.uint32)
        self.state = case.candidate_state()
        lay = case.layout
        self.is_cat = np.ascontiguousarray(lay.is_categorical)
        st = self.state
        self.state_args = (lay.columns, lay.width, addr(st["counts"]), addr(st["missing"]), addr(st["n"]),
                           addr(st["mean"]), addr(st["m2"]), addr(st["min"]), addr(st["max"]), addr(lay.edges),
                           lay.edges.shape[1], addr(lay.n_edges), addr(self.is_cat))
        w, r = case.width, rows
        self.validate_args = [(addr(self.X) + b * r * w * 4, r, w, addr(case.params), addr(case.meta),
                               addr(case.cat_ok), case.cat_ok.size, addr(self.mask) + b * r * 4)
                              for b in range(batches)]
        self.drift_args = [(addr(self.X) + b * r * w * 4, addr(self.Y) + b * r * 4, r, w, 1, *self.state_args)
                           for b in range(batches)]
        self.loop_args = (addr(self.X), addr(self.Y), batches, r, w, addr(case.params), addr(case.meta),
                          addr(case.cat_ok), case.cat_ok.size, addr(self.mask), *self.state_args)

    def batch(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        a, z = b * self.rows, (b + 1) * self.rows
        return self.X[a:z], self.Y[a:z]


# -- the modes: each runs batches until the buffer or the time is used up, and says how many it ran ---------------

# numba's ctypes wrappers of the C addresses: CFUNCTYPE, not PYFUNCTYPE, so each call releases the GIL.
VALIDATE, DRIFT, LOOP = validate_c.ctypes, drift_c.ctypes, batches_c.ctypes
VALIDATE_NOOP, DRIFT_NOOP = validate_noop.ctypes, drift_noop.ctypes


Timing = tuple[int, tuple[float, float]]  # batches run, (wall seconds, CPU seconds)


class Clock:
    """Wall and CPU time (every thread of the process: the monitor's and onnxruntime's too) since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def took(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def timed(step, count: int, budget_s: float) -> Timing:  # noqa: ANN001
    """Run ``step(i)`` for i = 0.. until ``count`` steps or the budget is used up: (steps, (wall s, CPU s))."""
    clock = Clock()
    end = clock.wall + budget_s
    done = 0
    for i in range(count):
        step(i)
        done += 1
        if time.perf_counter() > end:
            break
    return done, clock.took()


def run_python(part: str = "both"):  # noqa: ANN201
    def run(cand: Candidate, budget_s: float) -> Timing:
        validator, monitor = cand.case.server_objects()
        batches = [cand.batch(b) for b in range(cand.batches)]

        def step(i: int) -> None:
            rows, outputs = batches[i]
            if part != "update":
                validator.check(rows)
            if part != "check":
                monitor.update(rows, {"prediction": outputs})

        return timed(step, cand.batches, budget_s)

    return run


def run_door_call(cand: Candidate, budget_s: float) -> Timing:
    """What the compiled door's one Python call per batch does today (server/front_end.py, CompiledDoor._run):
    the validator's check, then the version's batcher (onnxruntime, statistics, metrics, the hand-off to the
    monitor thread, which folds the batches in every 0.1 s). Awaited one batch at a time on an event loop."""
    validator, monitor = cand.case.server_objects()
    monitors = MonitorThread()
    executor = ThreadPoolExecutor(1)
    batcher = Batcher(cand.case.served, BatchSettings(), executor, [monitors.observer(monitor)])
    name = cand.case.served.input.name
    batches = [cand.batch(b) for b in range(cand.batches)]

    async def go() -> Timing:
        clock = Clock()
        end = clock.wall + budget_s
        done = 0
        for rows, _ in batches:
            validator.check(rows)
            await batcher.run_formed({name: rows}, len(rows), [0] * len(rows))
            done += 1
            if time.perf_counter() > end:
                break
        monitors.flush()  # the drift updates of these batches count too
        return done, clock.took()

    try:
        return asyncio.run(go())
    finally:
        monitors.close()
        executor.shutdown()


def run_ctypes(validate, drift):  # noqa: ANN001, ANN201
    def run(cand: Candidate, budget_s: float) -> Timing:
        calls = list(zip(cand.validate_args, cand.drift_args, strict=True))

        def step(i: int) -> None:
            v, d = calls[i]
            validate(*v)
            drift(*d)

        return timed(step, cand.batches, budget_s)

    return run


def run_in_c(cand: Candidate, budget_s: float) -> Timing:
    clock = Clock()
    LOOP(*cand.loop_args)
    return cand.batches, clock.took()


MODES = {"python": run_python(), "cfunc": run_ctypes(VALIDATE, DRIFT), "cfunc-in-C": run_in_c,
         "ctypes-noop": run_ctypes(VALIDATE_NOOP, DRIFT_NOOP), "python-check": run_python("check"),
         "python-update": run_python("update"), "door-call": run_door_call}
BESIDE = ("python", "cfunc", "cfunc-in-C")  # the modes also run beside a busy Python thread


class Spinner:
    """A pure-Python thread that only counts: how much of the GIL the batch thread leaves to the event loop."""

    def __init__(self) -> None:
        self.count, self.stop = 0, False
        self.thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        n = 0
        while not self.stop:
            n += 1
        self.count = n

    def __enter__(self) -> Spinner:
        self.thread.start()
        time.sleep(0.005)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop = True
        self.thread.join()
        self.rate = self.count / (time.perf_counter() - self.started + 0.005)


def measure(case: Case, mode: str, rows: int, batches: int, beside: bool, budget_s: float) -> dict[str, float]:
    cand = Candidate(case, rows, batches)
    if beside:
        with Spinner() as spinner:
            done, (wall, _) = MODES[mode](cand, budget_s)
        return {"us": wall / done * 1e6, "spin_rate": spinner.rate}
    done, (_, cpu) = MODES[mode](cand, budget_s)
    return {"us": cpu / done * 1e6}


# -- the same answers ------------------------------------------------------------------------------------------------


def check_same(case: Case, rows: int = 64, batches: int = 60) -> None:
    """Both paths fold the same rows into equal states and flag the same rows."""
    cand = Candidate(case, rows, batches)
    cand.X[5, 0] *= 100  # beyond the training range: flagged, served
    cand.X[77, 9] = -1.0  # below an inferred minimum: flagged, served
    clean = cand.X.copy()
    cand.X[300, 2] = np.nan  # missing: drift counts it; validation refuses it (the Python door's path, not compared)
    validator, monitor = case.server_objects()
    flagged_py = []
    for b in range(batches):
        X, Y = cand.batch(b)
        flagged = validator.check(clean[b * rows:(b + 1) * rows])
        flagged_py.extend([] if flagged is None else (b * rows + flagged).tolist())
        monitor.update(X, {"prediction": Y})
    LOOP(*cand.loop_args)
    assert cand.mask[300] != 0, "a missing value must fail validation"
    cand.mask[300] = 0  # the validator above saw that row without its NaN
    _, total = monitor.states()
    st = cand.state
    for name, ours in (("counts", st["counts"][1]), ("missing", st["missing"][1]), ("n", st["n"][1]),
                       ("min", st["min"][1]), ("max", st["max"][1])):
        assert np.array_equal(getattr(total, name), ours), f"drift state {name} differs"
    assert np.allclose(total.mean, st["mean"][1], rtol=1e-12) and np.allclose(total.m2, st["m2"][1], rtol=1e-9)
    assert flagged_py == np.flatnonzero(cand.mask).tolist(), "validation flags differ"
    print(f"same answers: drift state of {rows * batches} rows equal on both paths, "
          f"{len(flagged_py)} rows flagged by both", flush=True)


# -- main ----------------------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--registry", type=Path, help="a registry holding 'housing' (default: train one, ~10 s)")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8, 64, 256])
    p.add_argument("--reps", type=int, default=5, help="repetitions per figure; medians are reported")
    p.add_argument("--budget", type=float, default=0.08, help="seconds per timed run at most (default 0.08)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        registry = args.registry or Path(tmp)
        if args.registry is None:
            harness.train(registry, "housing")
        case = Case(registry)
        for mode in MODES:  # warm every path (numba's first call, the monitor's first state)
            measure(case, mode, 1, 4, False, 1.0)
        check_same(case)
        print(f"switch interval {sys.getswitchinterval() * 1e3:g} ms; {args.reps} reps, medians", flush=True)
        report(case, args)


def report(case: Case, args: argparse.Namespace) -> None:
    print("\n| rows/batch | CPU us/batch: python | cfunc via ctypes | of which ctypes | cfunc in C | python / cfunc in C "
          "| wall us/batch beside a Python thread: python | cfunc via ctypes | cfunc in C "
          "| GIL held us/batch: python | cfunc via ctypes | cfunc in C |")
    print("|---:" * 12 + "|")
    parts = {}
    for rows in args.rows:
        batches = max(100, min(4000, 40_000 // rows))
        alone = {m: [] for m in MODES}
        beside = {m: [] for m in BESIDE}
        for _ in range(args.reps):  # interleaved, so that the shared machine's drift hits every mode alike
            for mode in MODES:
                alone[mode].append(measure(case, mode, rows, batches, False, args.budget)["us"])
            for mode in beside:
                beside[mode].append(measure(case, mode, rows, batches, True, args.budget))
        us = {m: statistics.median(v) for m, v in alone.items()}
        free = statistics.median(r["spin_rate"] for r in beside["cfunc-in-C"])  # no GIL held: the reference
        near = {m: statistics.median(r["us"] for r in v) for m, v in beside.items()}
        held = {m: statistics.median(max(0.0, 1 - r["spin_rate"] / free) * r["us"] for r in v)
                for m, v in beside.items()}
        print(f"| {rows} | {us['python']:.2f} | {us['cfunc']:.2f} | {us['ctypes-noop']:.2f} | {us['cfunc-in-C']:.2f} "
              f"| {us['python'] / us['cfunc-in-C']:.1f}x | {near['python']:.1f} | {near['cfunc']:.1f} "
              f"| {near['cfunc-in-C']:.2f} | {held['python']:.1f} | {held['cfunc']:.1f} | {held['cfunc-in-C']:.2f} |",
              flush=True)
        parts[rows] = (us["python-check"], us["python-update"], us["door-call"])
    print("\n| rows/batch | CPU us/batch: validator.check alone | monitor.update alone "
          "| the door's whole Python call today (check + run_formed + monitor thread) |\n|---:|---:|---:|---:|")
    for rows, (check, update, door) in parts.items():
        print(f"| {rows} | {check:.2f} | {update:.2f} | {door:.1f} |")


if __name__ == "__main__":
    main()
