"""Model tests as publish gates: a ``tests.yaml`` (trainer/model_tests_file.py) run on the exported ONNX model.

The tests run on the artifact that will serve (onnxruntime on the exported bytes, fed as the server feeds it:
one float tensor, or one input per column for a mixed table), never on the scikit-learn object, so an export
that changes behaviour fails them too. Rows come from the holdout, which the model never saw.

Like the fit fuses, a failed test refuses the publish with the test's name and numbers (exit 2 for train, 3 for
retrain); ``--allow tests`` publishes anyway, and a test with ``gate: false`` never refuses. Every result, passed
or not, and the override go into ``metadata.extra["model_tests"]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from driftline.errors import InvalidInput
from driftline.registry.table import TEXT, table_of
from driftline.trainer.evaluate import holdout_metrics
from driftline.trainer.fuses import PRIMARY, FuseBlown
from driftline.trainer.model_tests_file import (
    DEFAULT_BINS,
    DEFAULT_MIN_ROWS,
    DEFAULT_ROWS,
    METRICS,
    TESTS_FILE,
    Case,
    ModelTests,
    amount,
    check_task,
    share,
)
from driftline.trainer.targets import encode_target

RESULTS_KEY = "model_tests"  # metadata.extra key
ALLOW = "tests"  # what --allow takes
SAMPLE_SEED = 0  # holdout rows sampled for a test are the same on every run of the same data


class TestsFailed(FuseBlown):
    """A model test refused the publish; a gate like a fuse (``retrain`` treats it as one)."""

    __test__ = False  # not a pytest test class, whatever its name


class ServedModel:
    """The exported model answering polars rows as the server would feed them."""

    def __init__(self, model_bytes: bytes, metadata: Any) -> None:
        from driftline.trainer.retrain import OnnxModel  # retrain imports train, which imports this module

        self.table = table_of(metadata.extra)
        self.features = tuple(metadata.feature_names)
        self.task = metadata.task
        self.classes = tuple(metadata.classes or ())
        self._model = OnnxModel(model_bytes, self.table)

    def _inputs(self, frame: pl.DataFrame) -> Any:
        if self.table is not None:
            return frame  # trainer.table_pipeline.onnx_feeds: one input per column
        return frame.select(self.features).cast(pl.Float32).to_numpy()

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        return self._model.predict(self._inputs(frame))

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        return self._model.predict_proba(self._inputs(frame))

    def score(self, frame: pl.DataFrame, klass: int | None) -> np.ndarray:
        """What a test compares: the prediction, or a class probability (``klass`` None: all of them)."""
        if self.task == "regression":
            return self.predict(frame).astype(np.float64)
        proba = self.predict_proba(frame).astype(np.float64)
        return proba if klass is None else proba[:, klass]

    def class_index(self, case: Case, default_last: bool) -> int | None:
        if self.task == "regression":
            return None
        wanted = case.settings.get("class")
        if wanted is None:
            return len(self.classes) - 1 if default_last else None
        return _class_index(self.classes, wanted, case)


def _class_index(classes: tuple[Any, ...], wanted: Any, case: Case) -> int:
    for i, known in enumerate(classes):
        if known == wanted or str(known) == str(wanted):
            return i
    raise InvalidInput(f"test {case.name!r}: the model has no class {wanted!r} (classes: {list(classes)})")


def holdout_frame(trained: Any) -> pl.DataFrame:
    """The holdout rows, one column per feature, as the model's inputs take them."""
    X = trained.dataset.X[trained.holdout_rows]
    if isinstance(X, np.ndarray):
        return pl.DataFrame({name: X[:, i] for i, name in enumerate(trained.dataset.features)})
    return pl.from_pandas(X)  # a mixed table's rows (train_table.TableRows): numbers float32, strings str


def run(tests: ModelTests, served: ServedModel, holdout: pl.DataFrame, y: np.ndarray) -> list[dict[str, Any]]:
    """Every test's result; ``y`` is the holdout target as the model predicts it (class codes for classifiers)."""
    check_task(tests, served.task)
    runners = {"minimum": _minimum, "invariance": _invariance, "monotone": _monotone, "slice": _slice}
    results = []
    for case in tests.cases:
        outcome = runners[case.kind](case, served, holdout, y)
        results.append({"name": case.name, "kind": case.kind, "gate": case.gate, **outcome})
    return results


def gate(tests: ModelTests | None, allow: Iterable[str], trained: Any) -> Any:
    """``trained`` with its test results in its lineage; refuses (TestsFailed) when a gating test failed."""
    if tests is None:
        return trained
    served = ServedModel(trained.onnx_model.SerializeToString(), trained.metadata)
    y, _ = encode_target(trained.dataset.y, trained.task)
    results = run(tests, served, holdout_frame(trained), y[trained.holdout_rows])
    failed = [r["name"] for r in results if not r["passed"] and r["gate"]]
    allowed = ALLOW in set(allow)
    record = {
        "file": TESTS_FILE,
        "origin": tests.origin,
        "passed": sum(r["passed"] for r in results),
        "failed": failed,
        "warnings": [r["name"] for r in results if not r["passed"] and not r["gate"]],
        "overridden": allowed and bool(failed),
        "cases": results,
    }
    if failed and not allowed:
        messages = "; ".join(f"model test {r['name']!r} failed: {r['summary']}" for r in results
                             if r["name"] in failed)
        raise TestsFailed(f"{messages}; nothing was published (tests from {tests.origin}; --allow tests publishes "
                          "anyway; a test with 'gate: false' is recorded without refusing)", record)
    extra = {**trained.metadata.extra, RESULTS_KEY: record}
    return replace(trained, metadata=replace(trained.metadata, extra=extra))


# --- rows -------------------------------------------------------------------------------------------------


def _typical(holdout: pl.DataFrame, column: str, served: ServedModel) -> Any:
    series = holdout[column]
    if served.table is not None and served.table.column(column).role == TEXT:
        return ""  # a typical row has some text, but no one text is typical: none
    if series.dtype == pl.String:
        counts = series.filter(series != "").value_counts(sort=True)
        return counts[column][0] if counts.height else ""
    return float(series.median())


def _given_rows(rows: list[dict[str, Any]], served: ServedModel, holdout: pl.DataFrame, case: Case) -> pl.DataFrame:
    data: dict[str, list[Any]] = {}
    for name in served.features:
        fill = _typical(holdout, name, served)
        data[name] = [row.get(name, fill) for row in rows]
    return _typed(data, holdout, case)


def _typed(data: dict[str, list[Any]], holdout: pl.DataFrame, case: Case) -> pl.DataFrame:
    columns = []
    for name, values in data.items():
        if holdout[name].dtype == pl.String:
            columns.append(pl.Series(name, ["" if v is None else str(v) for v in values], dtype=pl.String))
            continue
        bad = [v for v in values if v is not None and (isinstance(v, str) or not isinstance(v, (int, float)))]
        if bad:
            raise InvalidInput(f"test {case.name!r}: {name} is a number column; {bad[0]!r} is not a number")
        columns.append(pl.Series(name, [np.nan if v is None else float(v) for v in values], dtype=pl.Float64))
    return pl.DataFrame(columns).with_columns(
        [pl.col(n).cast(holdout[n].dtype) for n in data if holdout[n].dtype != pl.String])


def _rows(case: Case, served: ServedModel, holdout: pl.DataFrame) -> pl.DataFrame:
    """The rows a test varies: its own rows, or N holdout rows drawn with a fixed seed."""
    rows = case.settings.get("rows", DEFAULT_ROWS)
    if isinstance(rows, list):
        return _given_rows(rows, served, holdout, case)
    if rows >= holdout.height:
        return holdout
    picked = np.sort(np.random.default_rng(SAMPLE_SEED).choice(holdout.height, rows, replace=False))
    return holdout[picked]


def _with(frame: pl.DataFrame, column: str, value: Any, holdout: pl.DataFrame, case: Case) -> pl.DataFrame:
    setting = _typed({column: [value] * frame.height}, holdout, case)
    return frame.with_columns(setting[column])


def _limit(size_relative: tuple[float, bool], reference: np.ndarray | float) -> np.ndarray | float:
    size, relative = size_relative
    return size * np.abs(reference) if relative else size


def _allowed_failures(case: Case, rows: int) -> int:
    return int(np.floor(share(case.settings.get("max_failing", 0), case.name) * rows + 1e-9))


def _of_allowed(allowed: int) -> str:
    return f" (at most {allowed} allowed)" if allowed else ""


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1000 or not np.isfinite(value) else f"{value:,.0f}"


# --- the four kinds ---------------------------------------------------------------------------------------


def _minimum(case: Case, served: ServedModel, holdout: pl.DataFrame, y: np.ndarray) -> dict[str, Any]:
    rows = _given_rows(case.settings["rows"], served, holdout, case)
    expect = case.settings["expect"]
    if served.task == "classification":
        wanted = _class_index(served.classes, expect["label"], case)
        labels = served.predict(rows).astype(np.int64)
        wrong = [i for i, label in enumerate(labels) if label != wanted]
        got = [served.classes[i] for i in labels]
        summary = (f"{len(wrong)} of {len(labels)} row(s) not labelled {expect['label']!r} (got {got})" if wrong
                   else f"all {len(labels)} row(s) labelled {expect['label']!r}")
        return {"passed": not wrong, "summary": summary, "predicted": got, "failing_rows": wrong}
    predicted = served.predict(rows).astype(np.float64)
    low, high = expect.get("min", -np.inf), expect.get("max", np.inf)
    wrong = [i for i, p in enumerate(predicted) if not low <= p <= high]
    span = f"[{_fmt(low)}, {_fmt(high)}]"
    summary = (f"{len(wrong)} of {len(predicted)} row(s) outside {span}: row {wrong[0]} predicted "
               f"{_fmt(predicted[wrong[0]])}" if wrong
               else f"all {len(predicted)} row(s) in {span} (predicted {', '.join(map(_fmt, predicted))})")
    return {"passed": not wrong, "summary": summary, "predicted": predicted.tolist(), "expected": dict(expect),
            "failing_rows": wrong}


def _invariance(case: Case, served: ServedModel, holdout: pl.DataFrame, y: np.ndarray) -> dict[str, Any]:
    column = case.settings["column"]
    rows = _rows(case, served, holdout)
    klass = served.class_index(case, default_last=False)
    before = served.score(rows, klass)
    size, relative = amount(case.settings["tolerance"], case.name, "tolerance")
    # A relative tolerance (regression only, see check_task) is judged on the move as a share of the row's answer.
    scale = np.maximum(np.abs(before), 1e-12) if relative else 1.0
    worst, worst_share, worst_value, worst_row = 0.0, 0.0, None, -1
    failing = np.zeros(rows.height, dtype=bool)
    for value in case.settings["values"]:
        change = np.abs(served.score(_with(rows, column, value, holdout, case), klass) - before)
        if change.ndim == 2:  # every class probability: the largest move
            change = change.max(axis=1)
        measure = change / scale
        failing |= measure > size
        if measure.max(initial=0.0) > (worst_share if relative else worst):
            row = int(np.argmax(measure))
            worst, worst_share, worst_value, worst_row = float(change[row]), float(measure[row]), value, row
    unit = "probability" if served.task == "classification" else "prediction"
    bound = f"{size:.2%} of the row's {unit}" if relative else _fmt(size)
    largest = f"{worst_share:.2%} ({_fmt(worst)})" if relative else _fmt(worst)
    n_fail, allowed = int(failing.sum()), _allowed_failures(case, rows.height)
    summary = (f"setting {column} to {case.settings['values']} moved the {unit} of {n_fail} of {rows.height} rows by "
               f"more than {bound}{_of_allowed(allowed)}; largest move {largest} (row {worst_row}, "
               f"{column}={worst_value!r})" if n_fail > allowed
               else f"largest move {largest} over {rows.height} rows (tolerance {bound}"
               + (f"; {n_fail} rows beyond it, {allowed} allowed)" if n_fail else ")"))
    return {"passed": n_fail <= allowed, "summary": summary, "column": column, "rows": rows.height,
            "failing_rows": n_fail, "allowed_failing_rows": allowed, "largest_change": worst, "largest_share": worst_share if relative else None,
            "at_value": worst_value, "tolerance": case.settings["tolerance"]}


def _monotone(case: Case, served: ServedModel, holdout: pl.DataFrame, y: np.ndarray) -> dict[str, Any]:
    column = case.settings["column"]
    if holdout[column].dtype == pl.String:
        raise InvalidInput(f"test {case.name!r}: {column} is not a number column; a monotone test needs one")
    direction = case.settings.get("direction", "increasing")
    grid = case.settings.get("grid")
    if grid is None:  # the holdout's deciles: where the model has seen data
        values = holdout[column].drop_nans().drop_nulls().to_numpy().astype(np.float64)
        grid = np.unique(np.quantile(values, np.linspace(0, 1, 11), method="inverted_cdf")).tolist()
    grid = sorted(float(g) for g in grid)
    if len(grid) < 2:
        raise InvalidInput(f"test {case.name!r}: {column} has a single value in the holdout; give a grid")
    rows = _rows(case, served, holdout)
    klass = served.class_index(case, default_last=True)
    curves = np.stack([served.score(_with(rows, column, g, holdout, case), klass) for g in grid], axis=1)
    steps = np.diff(curves, axis=1)  # [rows, len(grid) - 1]
    against = -steps if direction == "increasing" else steps  # how far each step goes the wrong way
    tolerance = amount(case.settings.get("tolerance", 0), case.name, "tolerance")
    limit = _limit(tolerance, curves[:, :-1])
    failing = (against > limit).any(axis=1)
    worst_row, worst_step = np.unravel_index(int(np.argmax(against)), against.shape)
    worst = float(against[worst_row, worst_step])
    ends = curves[:, -1] - curves[:, 0]
    unit = "prediction" if served.task == "regression" else f"probability of {served.classes[klass]!r}"
    n_fail, allowed = int(failing.sum()), _allowed_failures(case, rows.height)
    summary = (f"{unit} is not {'non-decreasing' if direction == 'increasing' else 'non-increasing'} in {column} for "
               f"{n_fail} of {rows.height} rows{_of_allowed(allowed)}: the worst step, {column} {_fmt(grid[worst_step])} -> "
               f"{_fmt(grid[worst_step + 1])}, moves it {_fmt(-worst if direction == 'increasing' else worst)}; "
               f"median change over the grid {_fmt(float(np.median(ends)))}" if n_fail > allowed
               else f"{direction} over {len(grid)} values of {column} for "
                    + (f"{rows.height - n_fail} of {rows.height} rows (at most {allowed} may not be)" if n_fail
                       else f"all {rows.height} rows")
                    + f"; median change over the grid {_fmt(float(np.median(ends)))}")
    return {"passed": n_fail <= allowed, "summary": summary, "column": column, "direction": direction,
            "grid": grid, "rows": rows.height, "failing_rows": n_fail, "allowed_failing_rows": allowed, "worst_step": max(worst, 0.0),
            "median_change": float(np.median(ends)), "tolerance": case.settings.get("tolerance", 0)}


def _slice(case: Case, served: ServedModel, holdout: pl.DataFrame, y: np.ndarray) -> dict[str, Any]:
    column = case.settings["column"]
    metric = case.settings.get("metric", PRIMARY[served.task])
    higher = METRICS[served.task][metric]
    min_rows = case.settings.get("min_rows", DEFAULT_MIN_ROWS)
    names, labels = _slices(case, holdout)
    overall = holdout_metrics(served, holdout, y, served.task)[metric]
    margin = amount(case.settings["margin"], case.name, "margin")
    allowed = _limit(margin, overall)
    bound = overall - allowed if higher else overall + allowed
    slices = []
    for index, name in enumerate(names):
        rows = np.flatnonzero(labels == index)
        if len(rows) == 0:
            continue
        if len(rows) < min_rows:
            slices.append({"slice": name, "rows": int(len(rows)), "value": None, "passed": None})
            continue
        value = holdout_metrics(served, holdout[rows], y[rows], served.task)[metric]
        ok = bool(value >= bound) if higher else bool(value <= bound)
        slices.append({"slice": name, "rows": int(len(rows)), "value": float(value), "passed": ok})
    judged = [s for s in slices if s["passed"] is not None]
    bad = [s for s in judged if not s["passed"]]
    words = f"{metric} {'>=' if higher else '<='} {_fmt(bound)} (overall {_fmt(overall)}, margin {case.settings['margin']})"
    small = len(slices) - len(judged)
    summary = (", ".join(f"{column}={s['slice']}: {metric} {_fmt(s['value'])} on {s['rows']} rows" for s in bad)
               + f"; needs {words}" if bad
               else f"{len(judged)} slice(s) of {column} meet {words}"
               + (f"; {small} slice(s) under {min_rows} rows not judged" if small else ""))
    return {"passed": not bad, "summary": summary, "column": column, "metric": metric, "overall": float(overall),
            "margin": case.settings["margin"], "bound": float(bound), "higher_is_better": higher,
            "min_rows": min_rows, "slices": slices}


def _slices(case: Case, holdout: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    """Slice names and each holdout row's slice index (-1: in none)."""
    column = case.settings["column"]
    series = holdout[column]
    if series.dtype == pl.String:
        if "bins" in case.settings:
            raise InvalidInput(f"test {case.name!r}: {column} is a category column; bins are for numbers")
        values = series.to_list()
        names = sorted(set(values), key=lambda v: (v == "", v))
        index = {v: i for i, v in enumerate(names)}
        return ["(missing)" if n == "" else n for n in names], np.array([index[v] for v in values])
    values = series.cast(pl.Float64).to_numpy()
    finite = values[np.isfinite(values)]
    bins = case.settings.get("bins")
    distinct = np.unique(finite)
    if bins is None and len(distinct) <= 10:  # a flag or a count: one slice per value
        index = {v: i for i, v in enumerate(distinct.tolist())}
        labels = np.array([index.get(v, -1) if np.isfinite(v) else -1 for v in values.tolist()])
        return [_fmt(v) for v in distinct.tolist()], labels
    if bins is None or isinstance(bins, int):
        count = DEFAULT_BINS if bins is None else bins
        cuts = np.unique(np.quantile(finite, np.linspace(0, 1, count + 1)[1:-1]))
    else:
        cuts = np.array(sorted(float(b) for b in bins))
    names = ([f"< {_fmt(cuts[0])}"] + [f"{_fmt(a)} to {_fmt(b)}" for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
             + [f">= {_fmt(cuts[-1])}"])
    labels = np.where(np.isfinite(values), np.searchsorted(cuts, values, side="right"), -1)
    return names, labels



def result_lines(record: dict[str, Any] | None) -> list[str]:
    """A version's test results in words, one line per test (``driftline train`` and ``models show``)."""
    if not record:
        return []
    cases = record["cases"]
    head = f"model tests ({record['origin']}): {record['passed']} of {len(cases)} passed"
    if record["failed"]:
        head += f"; failed but allowed (--allow tests): {', '.join(record['failed'])}"
    lines = [head]
    for case in cases:
        verdict = "passed" if case["passed"] else ("FAILED" if case["gate"] else "failed, gate: false")
        lines.append(f"  {case['kind']:<10} {case['name']}: {verdict}: {case['summary']}")
    return lines
