"""``tests.yaml``: behavioural tests of a model, written by a person, checked when the file is read.

A mapping of test name to test; each test has a ``kind``::

    small flat is cheap:                 # minimum functionality: these rows, this answer
      kind: minimum
      rows:
        - {living_area: 45, bedrooms: 1, year_built: 1965}
      expect: {min: 150000, max: 700000}  # regression; a classifier takes {label: 2}
    price rises with living area:        # directional: non-decreasing in a column, the rest held
      kind: monotone
      column: living_area
      direction: increasing              # or decreasing
      grid: [60, 90, 120, 160, 220]      # default: the holdout column's deciles
      rows: 100                          # holdout rows varied (default 100), or a list of rows
      tolerance: 1%                      # a step down this small is noise (default 0)
      max_failing: 2%                    # share of the rows allowed to break it (default 0)
    basement flag does not move price much:   # invariance
      kind: invariance
      column: has_basement
      values: [0, 1]                     # each row is answered with the column at each value
      tolerance: 5%                      # against the row's answer with its own value
    every district:                      # slice metric
      kind: slice
      column: district                   # per category; a number column is cut: bins: [50, 100] or bins: 4
      metric: mape                       # default: the primary metric (r2, accuracy)
      margin: 0.05                       # no slice worse than overall by more than this (or 20%)
      min_rows: 30                       # smaller slices are reported, not judged

Every test may say ``gate: false``: its result is recorded, but a failure does not refuse the publish.
Columns not given in a row take the holdout's typical value (the median number, the most frequent category,
empty text). Tolerances are in the model's units: the prediction for a regression, where ``N%`` is relative to
the row's own answer; a class probability for a classifier (``class:`` picks the class; default for monotone: the
last one, the positive class of a binary model; for invariance: every class's). A slice margin is in the metric's
units, or ``N%`` of the overall value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driftline.errors import InvalidInput

TESTS_FILE = "tests.yaml"  # the file's name in a version
KINDS = ("minimum", "invariance", "monotone", "slice")
COMMON = ("kind", "gate")
KEYS = {
    "minimum": ("rows", "expect", "class"),
    "invariance": ("column", "values", "rows", "tolerance", "max_failing", "class"),
    "monotone": ("column", "direction", "grid", "rows", "tolerance", "max_failing", "class"),
    "slice": ("column", "bins", "metric", "margin", "min_rows"),
}
REQUIRED = {
    "minimum": ("rows", "expect"),
    "invariance": ("column", "values", "tolerance"),
    "monotone": ("column",),
    "slice": ("column", "margin"),
}
DIRECTIONS = ("increasing", "decreasing")
METRICS = {  # the holdout metrics trainer/evaluate.py computes, and whether higher is better
    "regression": {"r2": True, "mae": False, "rmse": False, "mape": False},
    "classification": {"accuracy": True, "f1_macro": True, "log_loss": False},
}
DEFAULT_ROWS = 100
DEFAULT_MIN_ROWS = 30
DEFAULT_BINS = 4


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    settings: dict[str, Any]
    gate: bool = True

    def columns(self) -> set[str]:
        """The feature columns this test names."""
        named = {self.settings["column"]} if "column" in self.settings else set()
        rows = self.settings.get("rows")
        if isinstance(rows, list):
            named.update(str(k) for row in rows for k in row)
        return named


@dataclass(frozen=True)
class ModelTests:
    """A parsed tests file; ``text`` is what is stored in the version, comments and all."""

    text: str
    cases: tuple[Case, ...]
    origin: str  # where it came from: a path, or "version N" when carried forward by retrain
    extra: dict[str, Any] = field(default_factory=dict)


def load(path: str | Path) -> ModelTests:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read the model tests {path}: {exc}") from exc
    return parse(text, str(path))


def parse(text: str, origin: str) -> ModelTests:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{origin} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping) or not data:
        raise InvalidInput(f"{origin}: the model tests must be a mapping of test name to test, e.g. "
                           "'price rises with area: {kind: monotone, column: area}'")
    return ModelTests(text, tuple(_case(str(name), spec, origin) for name, spec in data.items()), origin)


def _case(name: str, spec: Any, origin: str) -> Case:
    where = f"{origin}: test {name!r}"
    if not isinstance(spec, Mapping):
        raise InvalidInput(f"{where} must be a mapping with a kind ({', '.join(KINDS)})")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise InvalidInput(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = sorted(set(map(str, spec)) - set(COMMON) - set(KEYS[kind]))
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {', '.join(unknown)}; a {kind} test takes "
                           f"{', '.join((*KEYS[kind], 'gate'))}")
    missing = [k for k in REQUIRED[kind] if k not in spec]
    if missing:
        raise InvalidInput(f"{where}: a {kind} test needs {', '.join(missing)}")
    settings = {str(k): v for k, v in spec.items() if k not in COMMON}
    gate = spec.get("gate", True)
    if not isinstance(gate, bool):
        raise InvalidInput(f"{where}: gate must be true or false, got {gate!r}")
    _check(where, kind, settings)
    return Case(name, kind, settings, gate)


def _check(where: str, kind: str, s: dict[str, Any]) -> None:
    if "column" in s and not isinstance(s["column"], str):
        raise InvalidInput(f"{where}: column must be a column name, got {s['column']!r}")
    if "rows" in s:
        _check_rows(where, kind, s["rows"])
    for key in ("tolerance", "margin"):
        if key in s:
            amount(s[key], where, key)
    if "max_failing" in s:
        share(s["max_failing"], where)
    {"minimum": _check_minimum, "invariance": _check_invariance, "monotone": _check_monotone,
     "slice": _check_slice}[kind](where, s)


def _check_rows(where: str, kind: str, rows: Any) -> None:
    given = isinstance(rows, list) and rows and all(isinstance(r, Mapping) and r for r in rows)
    count = isinstance(rows, int) and not isinstance(rows, bool) and rows > 0
    if kind == "minimum" and not given:
        raise InvalidInput(f"{where}: rows must be a list of rows, each a mapping of column to value")
    if not (given or count):
        raise InvalidInput(f"{where}: rows must be a number of holdout rows or a list of rows "
                           "(mappings of column to value)")


def _check_minimum(where: str, s: dict[str, Any]) -> None:
    expect = s["expect"]
    if not isinstance(expect, Mapping) or not expect or set(expect) - {"min", "max", "label"}:
        raise InvalidInput(f"{where}: expect must be {{min: X, max: Y}} (regression; either may be left out) "
                           "or {label: L} (classification)")
    if "label" in expect and len(expect) > 1:
        raise InvalidInput(f"{where}: expect takes a label or a range, not both")
    for bound in ("min", "max"):
        if bound in expect:
            _number(where, f"expect.{bound}", expect[bound])


def _check_invariance(where: str, s: dict[str, Any]) -> None:
    if not isinstance(s["values"], list) or not s["values"]:
        raise InvalidInput(f"{where}: values must be a list of the values to set {s['column']!r} to")


def _check_monotone(where: str, s: dict[str, Any]) -> None:
    if s.get("direction", "increasing") not in DIRECTIONS:
        raise InvalidInput(f"{where}: direction must be increasing or decreasing, got {s['direction']!r}")
    grid = s.get("grid")
    if grid is not None and (not isinstance(grid, list) or len(grid) < 2):
        raise InvalidInput(f"{where}: grid must be a list of at least two values of {s['column']!r}")
    for value in grid or ():
        _number(where, "grid", value)


def _check_slice(where: str, s: dict[str, Any]) -> None:
    bins = s.get("bins")
    if bins is not None and not (isinstance(bins, list) and bins) and not (
            isinstance(bins, int) and not isinstance(bins, bool) and bins >= 2):
        raise InvalidInput(f"{where}: bins must be a list of cut points or a number of equal-count buckets (>= 2)")
    for value in bins if isinstance(bins, list) else ():
        _number(where, "bins", value)
    min_rows = s.get("min_rows", DEFAULT_MIN_ROWS)
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 1:
        raise InvalidInput(f"{where}: min_rows must be a whole number >= 1, got {min_rows!r}")
    known = {m for task in METRICS.values() for m in task}
    if "metric" in s and s["metric"] not in known:
        raise InvalidInput(f"{where}: metric must be one of {', '.join(sorted(known))}, got {s['metric']!r}")


def _number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def amount(value: Any, where: str, key: str) -> tuple[float, bool]:
    """A tolerance or margin: (size, relative). ``5000`` is absolute; ``"2%"`` is 0.02 of the reference."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            size = float(value.strip()[:-1]) / 100
        except ValueError:
            size = -1.0
        relative = True
    else:
        size, relative = (-1.0 if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)), False
    if not size >= 0:
        raise InvalidInput(f"{where}: {key} must be a number >= 0 or a percentage such as 2%, got {value!r}")
    return size, relative


def share(value: Any, where: str) -> float:
    """``max_failing``: a share of rows, ``0.02`` or ``"2%"``."""
    size, _ = amount(value, where, "max_failing")
    if size > 1.0:
        raise InvalidInput(f"{where}: max_failing is a share of the rows, 0 to 1 or 0% to 100%, got {value!r}")
    return size


def check_columns(tests: ModelTests | None, features: list[str] | tuple[str, ...]) -> None:
    """Refuse, before any fitting, a test that names a column the model does not read."""
    if tests is None:
        return
    known = set(features)
    for case in tests.cases:
        unknown = sorted(case.columns() - known)
        if unknown:
            raise InvalidInput(f"{tests.origin}: test {case.name!r} names {', '.join(map(repr, unknown))}, which "
                               f"the model does not read (its features: {', '.join(features)})")


def check_task(tests: ModelTests, task: str) -> None:
    """What only the task decides: a label or a range, and which metrics a slice may use."""
    for case in tests.cases:
        where = f"{tests.origin}: test {case.name!r}"
        expect = case.settings.get("expect", {})
        if task == "regression" and "label" in expect:
            raise InvalidInput(f"{where}: a regression model is expected a range {{min, max}}, not a label")
        if task == "classification" and ({"min", "max"} & set(expect)):
            raise InvalidInput(f"{where}: a classifier is expected a label {{label: L}}, not a range")
        metric = case.settings.get("metric")
        if metric is not None and metric not in METRICS[task]:
            raise InvalidInput(f"{where}: a {task} model's slices take {', '.join(METRICS[task])}, not {metric!r}")
        if task == "regression" and "class" in case.settings:
            raise InvalidInput(f"{where}: class applies to classifiers only")
        if task == "classification" and amount(case.settings.get("tolerance", 0), where, "tolerance")[1]:
            raise InvalidInput(f"{where}: a classifier's tolerance is a change of probability (e.g. 0.05), "
                               "not a percentage")
