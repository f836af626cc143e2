"""Data quality in training and in ``driftline validate``: the training data is tested like the model's input.

Both run the server's validator (:mod:`driftline.kernels.validate`) against the version's schema
(:mod:`driftline.registry.schema`), so a row the server would reject is the row the trainer reports, with the
same constraint kinds and the same wording.

A string where a number belongs (a CSV column read as String because one cell says "abc") cannot reach a
float kernel: :func:`to_numeric` finds such cells and reports them as ``not_a_number`` - the kind and wording
the server uses for a BYTES tensor or a non-numeric JSON value
(:func:`driftline.kernels.validate.not_a_number_message`).
Cells that hold a common missing-value marker (``""``, ``NA``, ``N/A``, ``NaN``, ``null``, ``None``, any case)
are missing values, not strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from driftline.errors import InvalidInput
from driftline.kernels.drift import update_state
from driftline.kernels.drift_stats import ColumnDrift, Thresholds, report
from driftline.kernels.validate import (  # noqa: I001
    MISSING_MARKERS,
    FLAG,
    INFERABLE_KINDS,
    KINDS,
    NOT_A_NUMBER,
    OFF,
    REJECT,
    ValidationResult,
    Violation,
)
from driftline.registry.profile import Profile
from driftline.registry.schema import Policy, Schema, apply_overrides, infer_schema
from driftline.registry.table import TableSpec
from driftline.registry.table_view import TableEncoder
from driftline.trainer.data import read_table

MAX_EXAMPLES = 5


# --------------------------------------------------------------------------- numbers from a frame


@dataclass(frozen=True)
class NumericColumns:
    """Feature columns as numbers: ``X`` [rows, features] (NaN where missing or not a number),
    ``not_a_number`` bool [rows, features] (cells that held something else), ``raw`` (row, column) -> the
    text of each such cell."""

    features: tuple[str, ...]
    dtypes: tuple[str, ...]
    X: np.ndarray
    not_a_number: np.ndarray
    raw: dict[tuple[int, int], str] = field(default_factory=dict)


def non_numeric_cells(column: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(values, bad)`` of one column: float64 values (NaN where missing or not a number) and a bool mask
    of the cells that are neither a number nor missing.

    Numeric and Boolean columns have no bad cells. Any other column (String, Categorical, Date, ...) is read
    as text: blank or a missing-value marker is missing, text polars parses as a float is that number, and
    anything else is not a number.
    """
    if column.dtype.is_numeric() or column.dtype == pl.Boolean:
        values = column.cast(pl.Float64).to_numpy().astype(np.float64, copy=False)
        return values, np.zeros(len(column), dtype=np.bool_)
    try:
        text = column.cast(pl.String)
    except pl.exceptions.PolarsError:  # nested types: every present value is not a number
        values = np.full(len(column), np.nan)
        return values, column.is_not_null().to_numpy()
    stripped = text.str.strip_chars()
    marker = stripped.is_null() | stripped.str.to_lowercase().is_in(list(MISSING_MARKERS))
    parsed = stripped.cast(pl.Float64, strict=False)
    bad = (~marker & parsed.is_null()).to_numpy()
    values = parsed.to_numpy().astype(np.float64, copy=True)
    values[marker.to_numpy()] = np.nan
    return values, bad


def to_numeric(frame: pl.DataFrame, features: Sequence[str], dtype: type = np.float32) -> NumericColumns:
    """The feature columns of ``frame`` as a ``dtype`` matrix (float32 by default: what the model is fed)."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise InvalidInput(f"feature columns {missing} are not in the data (columns: {', '.join(frame.columns)})")
    X = np.empty((frame.height, len(features)), dtype=dtype)
    bad = np.zeros((frame.height, len(features)), dtype=np.bool_)
    raw: dict[tuple[int, int], str] = {}
    for c, name in enumerate(features):
        values, cells = non_numeric_cells(frame[name])
        X[:, c] = values
        bad[:, c] = cells
        rows = np.flatnonzero(cells)
        if len(rows):
            for r, value in zip(rows.tolist(), frame[name].gather(rows).to_list(), strict=True):
                raw[(r, c)] = str(value)
    return NumericColumns(tuple(features), tuple(str(frame[n].dtype) for n in features), X, bad, raw)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True, eq=False)
class DataQualityReport:
    """What validating a table found. ``counts[feature][kind]`` (non-zero only), ``actions`` likewise (what
    those failures do: a kind's action, or at most a flag where the feature's limit was inferred),
    ``examples`` likewise (a few :class:`Violation` per feature and kind, row order), ``kept`` (bool [rows]:
    the rows no rejecting constraint failed), ``dropped`` (whether the caller drops the rejected rows,
    ``drop_invalid``)."""

    rows: int
    features: tuple[str, ...]
    policy: Policy
    counts: dict[str, dict[str, int]]
    examples: dict[str, dict[str, tuple[Violation, ...]]]
    rejected_rows: int
    flagged_rows: int
    kept: np.ndarray
    dropped: bool = False
    actions: dict[str, dict[str, str]] = field(default_factory=dict)
    inferred_limits: frozenset[tuple[str, str]] = frozenset()  # (feature, kind) of the failed inferred limits

    @property
    def ok(self) -> bool:
        """No row is rejected."""
        return self.rejected_rows == 0

    @property
    def clean(self) -> bool:
        """Nothing to reject or flag."""
        return not self.counts

    @classmethod
    def of(cls, result: ValidationResult, policy: Policy, *, drop_invalid: bool = False,
           max_examples: int = MAX_EXAMPLES) -> DataQualityReport:
        counts: dict[str, dict[str, int]] = {}
        actions: dict[str, dict[str, str]] = {}
        inferred: set[tuple[str, str]] = set()
        examples: dict[str, dict[str, tuple[Violation, ...]]] = {}
        if not result.ok:
            table = result.counts
            for f, name in enumerate(result.arrays.names):
                for k, kind in enumerate(KINDS):
                    if table[f, k]:
                        counts.setdefault(name, {})[kind] = int(table[f, k])
                        actions.setdefault(name, {})[kind] = result.arrays.action_at(f, kind)
                        if kind in INFERABLE_KINDS and result.arrays.inferred(f, kind):
                            inferred.add((name, kind))
                        examples.setdefault(name, {})[kind] = tuple(result.examples(f, kind, max_examples))
        return cls(
            rows=result.rows, features=tuple(result.arrays.names), policy=policy, counts=counts,
            examples=examples, rejected_rows=int(result.rejected_rows.sum()),
            flagged_rows=int(result.flagged_rows.sum()), kept=~result.rejected_rows, dropped=drop_invalid,
            actions=actions, inferred_limits=frozenset(inferred),
        )

    def action(self, feature: str, kind: str) -> str:
        """What the failures of ``kind`` in ``feature`` did."""
        return self.actions.get(feature, {}).get(kind) or self.policy.action(kind)

    def inferred(self, feature: str, kind: str) -> bool:
        """Whether the failures of ``kind`` in ``feature`` broke a limit inferred from data."""
        return (feature, kind) in self.inferred_limits

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for the version's metadata (``extra["data_quality"]``)."""
        return {
            "rows": self.rows,
            "rejected_rows": self.rejected_rows,
            "flagged_rows": self.flagged_rows,
            "dropped_rows": self.rejected_rows if self.dropped else 0,
            "policy": self.policy.to_dict(),
            "violations": {
                name: {
                    kind: {"count": n, "action": self.action(name, kind), "inferred": self.inferred(name, kind),
                           "examples": [v.to_dict() for v in self.examples[name][kind]]}
                    for kind, n in kinds.items()
                }
                for name, kinds in self.counts.items()
            },
        }

    def format(self, max_examples: int = 2) -> str:
        """A readable summary, e.g. for the trainer to print."""
        head = f"data quality: {self.rows} rows"
        if self.clean:
            return f"{head}, all valid"
        parts = []
        if self.rejected_rows:
            parts.append(f"{self.rejected_rows} rejected" + (" (dropped)" if self.dropped else ""))
        if self.flagged_rows:
            parts.append(f"{self.flagged_rows} flagged")
        lines = [head + (", " + ", ".join(parts) if parts else "")]
        order = {REJECT: 0, FLAG: 1, OFF: 2}
        for name, kinds in self.counts.items():
            for kind, n in sorted(kinds.items(), key=lambda kv: (order[self.action(name, kv[0])], KINDS.index(kv[0]))):
                how = self.action(name, kind) + (", inferred limit" if self.inferred(name, kind) else "")
                lines.append(f"  {name}: {kind} x{n} ({how})")
                lines.extend(f"    {v.message()}" for v in self.examples[name][kind][:max_examples])
        return "\n".join(lines)

    def raise_if_rejected(self) -> None:
        """:class:`~driftline.errors.InvalidInput` with :meth:`format` when rows are rejected and not dropped."""
        if self.rejected_rows and not self.dropped:
            raise InvalidInput(self.format() + "\nfix the data, declare the limits in --schema, or drop the "
                                               "invalid rows (--drop-invalid)")


def validate_training_data(frame: pl.DataFrame, features: Sequence[str], schema: Schema,
                           policy: Policy | None = None, *, drop_invalid: bool = False,
                           max_examples: int = MAX_EXAMPLES, dtype: type = np.float32) -> DataQualityReport:
    """Check the ``features`` columns of ``frame`` against ``schema`` under ``policy`` (default: the schema's).

    Rows are numbered from 0 in the frame's order. ``report.kept`` is the mask of rows to train on when
    ``drop_invalid``; without it, a caller should stop when ``not report.ok``
    (:meth:`~DataQualityReport.raise_if_rejected`).
    """
    numeric = _numeric_for(frame, features, schema, dtype)
    policy = policy or schema.policy
    result = schema.validate(numeric.X, policy, not_a_number=numeric.not_a_number, raw=numeric.raw)
    return DataQualityReport.of(result, policy, drop_invalid=drop_invalid, max_examples=max_examples)


def _numeric_for(frame: pl.DataFrame, features: Sequence[str], schema: Schema, dtype: type) -> NumericColumns:
    features = list(features)
    if features != schema.names:
        raise InvalidInput(f"the schema's features {schema.names} are not the features {features}")
    return to_numeric(frame, features, dtype)


@dataclass(frozen=True)
class PreparedData:
    """The result of :func:`prepare_training_data`: the schema to store, the report, the rows to train on."""

    schema: Schema
    report: DataQualityReport
    numeric: NumericColumns

    @property
    def kept(self) -> np.ndarray:
        return self.report.kept


def prepare_training_data(frame: pl.DataFrame, features: Sequence[str], *,
                          overrides: dict[str, Any] | None = None, policy: Policy | None = None,
                          drop_invalid: bool = False, dtype: type = np.float32) -> PreparedData:
    """What the trainer does before fitting: infer the schema from the feature columns (a not-a-number cell
    does not make a feature ``allow_missing``), apply the user's overrides, validate the rows, and - when
    invalid rows are dropped - record the training range of the kept rows only.

    Raises :class:`~driftline.errors.InvalidInput` (with the report) when rows are rejected and not dropped,
    or when nothing would be left to train on.
    """
    numeric = to_numeric(frame, list(features), dtype)
    schema = infer_schema(numeric.X, numeric.features, numeric.dtypes, not_missing=numeric.not_a_number,
                          policy=policy)
    schema = apply_overrides(schema, overrides)
    result = schema.validate(numeric.X, not_a_number=numeric.not_a_number, raw=numeric.raw)
    report_ = DataQualityReport.of(result, schema.policy, drop_invalid=drop_invalid)
    report_.raise_if_rejected()
    if not report_.kept.any():
        raise InvalidInput(report_.format() + "\nevery row is invalid: nothing is left to train on")
    if report_.rejected_rows:
        schema = schema.with_training_range(numeric.X[report_.kept])
    return PreparedData(schema, report_, numeric)


# --------------------------------------------------------------------------- driftline validate


@dataclass(frozen=True)
class FileCheck:
    """``driftline validate``'s findings on one file: the data quality report, and the feature drift of the
    rows the server would accept (None without a profile)."""

    path: str
    report: DataQualityReport
    drift: list[ColumnDrift] | None
    thresholds: Thresholds | None = None

    @property
    def drifted(self) -> list[str]:
        return [d.name for d in self.drift or () if d.alarm]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "data_quality": self.report.to_dict()}
        if self.drift is not None:
            out["drift"] = {
                "drifted": self.drifted,
                "features": {d.name: _drift_dict(d) for d in self.drift},
            }
        return out

    def format(self) -> str:
        lines = [f"{self.path}: " + self.report.format()]
        if self.drift is not None:
            rows = max((d.rows for d in self.drift), default=0)
            min_rows = (self.thresholds or Thresholds()).min_rows
            if rows < min_rows:
                lines.append(f"drift: {rows} rows, fewer than the {min_rows} a drift alarm needs")
            elif not self.drifted:
                lines.append(f"drift: no feature drifted ({rows} rows)")
            else:
                lines.append(f"drift: {len(self.drifted)} feature(s) drifted ({rows} rows)")
                for d in self.drift:
                    if d.alarm:
                        # the "test" alarm's figure is the adjusted p-value; the others are statistics
                        stats = ", ".join(f"{a} {abs(getattr(d, 'p_adjusted' if a == 'test' else a)):.3g}"
                                          for a in d.alarms)
                        lines.append(f"  {d.name}: {stats}")
        return "\n".join(lines)


def _drift_dict(d: ColumnDrift) -> dict[str, Any]:
    def num(x: float) -> float | None:
        return None if x != x or x in (float("inf"), float("-inf")) else float(x)
    return {"rows": d.rows, "psi": num(d.psi), "js": num(d.js), "ks": num(d.ks), "mean_shift": num(d.mean_shift),
            "p_value": num(d.p_value), "p_adjusted": num(d.p_adjusted), "note": d.note,
            "alarm": d.alarm, "alarms": list(d.alarms)}


def check_file(path: str | Path, schema: Schema, policy: Policy | None = None, profile: Profile | None = None, *,
               thresholds: Thresholds | None = None, max_examples: int = MAX_EXAMPLES,
               dtype: type = np.float32) -> FileCheck:
    """``driftline validate NAME --data PATH``: check a CSV/Parquet file against a version's schema, and
    with its training ``profile`` report which features drifted.

    Drift is computed for the feature columns only: the profile's first ``len(features)`` columns are the
    features (the rest are model outputs, which a file without predictions cannot have), so a sub-profile of
    those columns is binned with the server's kernel over the rows the policy would accept (rejected rows
    never reach a model, or its monitor). Not-a-number cells count as missing there.
    """
    frame = read_table(path)
    numeric = _numeric_for(frame, schema.names, schema, dtype)
    policy = policy or schema.policy
    result = schema.validate(numeric.X, policy, not_a_number=numeric.not_a_number, raw=numeric.raw)
    quality = DataQualityReport.of(result, policy, max_examples=max_examples)
    drift = None
    if profile is not None:
        drift = feature_drift(profile, schema.names, numeric.X[quality.kept], thresholds)
    return FileCheck(str(path), quality, drift, thresholds)


def check_table_file(path: str | Path, schema: Schema, table: TableSpec, policy: Policy | None = None,
                     profile: Profile | None = None, *, thresholds: Thresholds | None = None,
                     max_examples: int = MAX_EXAMPLES) -> FileCheck:
    """:func:`check_file` for a mixed table: the file's columns seen as the server sees them (category codes, text
    lengths and language shares; registry/table_view.py), judged by the same schema and binned by the same
    kernels. Word tables are left out: a file is not a window of traffic."""
    frame = read_table(path)
    missing = [c.name for c in table.columns if c.name not in frame.columns]
    if missing:
        raise InvalidInput(f"{path}: columns {missing} are missing (the model takes {', '.join(table.names)})")
    encoder = TableEncoder(table)
    cells = {c.name: (np.array(frame[c.name].cast(pl.String).to_list(), dtype=object) if c.datatype == "BYTES"
                      else frame[c.name].cast(pl.Float64, strict=False).to_numpy()) for c in table.columns}
    view = encoder.view(cells)
    policy = policy or schema.policy
    result = schema.validate(view.matrix, policy)
    quality = DataQualityReport.of(result, policy, max_examples=max_examples)
    drift = None
    if profile is not None:
        drift = feature_drift(profile, encoder.names, view.matrix[quality.kept], thresholds)
    return FileCheck(str(path), quality, drift, thresholds)


def feature_drift(profile: Profile, features: Sequence[str], X: np.ndarray,
                  thresholds: Thresholds | None = None) -> list[ColumnDrift]:
    """Drift of feature rows ``X`` [rows, features] against the feature columns of a version's profile."""
    features = list(features)
    n = len(features)
    if profile.names[:n] != features:
        raise InvalidInput(f"the profile's first columns {profile.names[:n]} are not the features {features}")
    sub = profile if len(profile.columns) == n else Profile(
        columns=profile.columns[:n], rows=profile.rows, bins=profile.bins, quantile_levels=profile.quantile_levels,
    )
    state = sub.empty_state()
    update_state(state, np.ascontiguousarray(X), sub.layout)
    return report(state, sub, thresholds)


__all__ = [
    "MISSING_MARKERS", "NOT_A_NUMBER", "DataQualityReport", "FileCheck", "NumericColumns", "PreparedData",
    "check_file", "feature_drift", "non_numeric_cells", "prepare_training_data", "to_numeric",
    "validate_training_data",
]
