"""Which columns a version's profile and its live monitoring watch, and how rows become those columns.

The trainer (building the profile from training rows and the model's own outputs on them) and the
server (updating live states from each executed batch) both call this module, so a column means
the same thing on both sides: the features in input order, then every model output, a 2-D output
[rows, k] giving k columns ``name[i]`` and a 1-D integer output (a class label) one categorical
column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from driftline.registry.metadata import TensorSpec

NUMERIC = "numeric"
CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # NUMERIC or CATEGORICAL
    source: str  # "feature" or the output tensor's name


def monitored_columns(features: Sequence[str], outputs: Sequence[TensorSpec], classes: int | None,
                      output_widths: Mapping[str, int]) -> tuple[Column, ...]:
    """The columns, in order. ``output_widths`` gives k for each 2-D output (known once the model has run)."""
    columns = [Column(f, NUMERIC, "feature") for f in features]
    for spec in outputs:
        if len(spec.shape) == 1 and spec.datatype.startswith(("INT", "UINT")):
            columns.append(Column(spec.name, CATEGORICAL, spec.name))
            continue
        width = output_widths.get(spec.name, 1)
        names = [spec.name] if width == 1 else [f"{spec.name}[{i}]" for i in range(width)]
        columns.extend(Column(n, NUMERIC, spec.name) for n in names)
    return tuple(columns)


ATTRIBUTION_SHARE = "attribution_share"


def share_columns(features: Sequence[str]) -> tuple[Column, ...]:
    """One column per feature: its share of the row's total absolute attribution, in [0, 1]."""
    return tuple(Column(f"{ATTRIBUTION_SHARE}[{f}]", NUMERIC, ATTRIBUTION_SHARE) for f in features)


def attribution_shares(phi: np.ndarray) -> np.ndarray:
    """[rows, features] shares of |phi| (rows with no attribution at all share nothing)."""
    magnitude = np.abs(phi)
    total = magnitude.sum(axis=1, keepdims=True)
    return np.divide(magnitude, total, out=np.zeros_like(magnitude), where=total > 0)


def output_widths(outputs: Mapping[str, np.ndarray]) -> dict[str, int]:
    return {name: (1 if a.ndim == 1 else int(np.prod(a.shape[1:]))) for name, a in outputs.items()}


def monitored_rows(X: np.ndarray, outputs: Mapping[str, np.ndarray], order: Sequence[str]) -> np.ndarray:
    """[rows, columns] float64: the features, then each output of ``order`` flattened per row."""
    parts = [np.asarray(X, dtype=np.float64)]
    for name in order:
        value = np.asarray(outputs[name])
        parts.append(value.reshape(len(value), -1).astype(np.float64, copy=False))
    return np.concatenate(parts, axis=1)


# -- any other model: tensors watched through per-row summaries --------------------------------------------------
SUMMARY_COLUMNS = "summary_columns"  # metadata.extra key: the input summary columns a profile starts with
SUMMARY_WIDTH = 8  # a tensor with at most this many values per row is watched value by value; wider, by its mean


def summarize(array: np.ndarray, batched: bool) -> np.ndarray:
    """[rows, k] float64 of one tensor: its values per row (k <= SUMMARY_WIDTH), else the row's mean (k = 1).

    Text (BYTES) is watched through its length in characters. A model that does not batch answers one
    request as one row.
    """
    array = np.asarray(array)
    rows = array.reshape(len(array) if batched and array.ndim else 1, -1)
    if rows.dtype == object or rows.dtype.kind in "SU":
        lengths = np.vectorize(len, otypes=[np.float64])(rows) if rows.size else np.zeros(rows.shape)
        return lengths.mean(axis=1, keepdims=True)
    values = rows.astype(np.float64, copy=False)
    return values if values.shape[1] <= SUMMARY_WIDTH else values.mean(axis=1, keepdims=True)


def tensor_view(inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], batched: bool
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """What the monitor watches of a model that is not tabular: input summaries as the "features", and the
    outputs summarized the same way (then named as :func:`monitored_columns` names any 2-D output)."""
    features = np.hstack([summarize(a, batched) for a in inputs.values()])
    return features, {name: summarize(a, batched) for name, a in outputs.items()}


def summary_names(tensors: Mapping[str, np.ndarray], batched: bool) -> list[str]:
    """Column names of :func:`tensor_view`'s features: ``NAME``, or ``NAME[i]`` for a tensor watched value by value."""
    names: list[str] = []
    for name, array in tensors.items():
        width = summarize(array[:1] if batched else array, batched).shape[1]
        names.extend([name] if width == 1 else [f"{name}[{i}]" for i in range(width)])
    return names
