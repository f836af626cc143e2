"""A mixed table's columns: the contract between the trainer and the server for models with one input per column.

``driftline train`` on a table with categorical (string) or text columns builds a scikit-learn pipeline
(encoders in front of the estimator) and exports it whole, one ONNX input per column, as skl2onnx and
MLServer's pandas codec do: numbers as FP32 ``[-1, 1]``, strings as BYTES ``[-1, 1]``. The version's metadata
carries a :class:`TableSpec` (``metadata.extra["table"]``) saying what each column is, which training categories
and words it had, and which encoded features (the matrix the trees see, a hidden graph output) came from which
column, so attributions can be summed back per column.

This module is numpy-only: the server reads it without scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

NUMERIC = "numeric"
BOOLEAN = "boolean"
CATEGORICAL = "categorical"
TEXT = "text"
ROLES = (NUMERIC, BOOLEAN, CATEGORICAL, TEXT)
STRING_ROLES = (CATEGORICAL, TEXT)

TABLE_KEY = "table"  # metadata.extra key
# The graph output holding the encoded matrix the estimator sees (one-hot, TF-IDF, numbers). Not offered to
# clients: the server reads it to explain a prediction.
ENCODED_OUTPUT = "driftline_encoded"


@dataclass(frozen=True)
class TableColumn:
    """One column of a mixed table, as served: its ONNX input is named after it, shape ``[-1, 1]``."""

    name: str
    role: str  # numeric | boolean | categorical | text
    datatype: str  # the Open Inference Protocol datatype of its input: FP32 for numbers and booleans, BYTES for strings
    # categorical: the training categories, most frequent first (ties by value); their index is the code drift
    # and validation use. Anything else is an unseen category.
    categories: tuple[str, ...] = ()
    # text: the most frequent training words (lower-cased, tokenised by registry.words), most frequent first,
    # with their counts in the training text. Word ids are indices here; the first LANGUAGE_WORDS are the
    # language check's reference (function words such as "się", "i", "w" for Polish).
    words: tuple[str, ...] = ()
    word_counts: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "datatype": self.datatype}
        if self.role == CATEGORICAL:
            out["categories"] = list(self.categories)
        if self.role == TEXT:
            out["words"] = list(self.words)
            out["word_counts"] = list(self.word_counts)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableColumn:
        role = data["role"]
        if role not in ROLES:
            raise ValueError(f"column {data.get('name')!r}: unknown role {role!r} (known: {', '.join(ROLES)})")
        column = cls(name=str(data["name"]), role=role, datatype=str(data["datatype"]),
                     categories=tuple(str(c) for c in data.get("categories", ())),
                     words=tuple(str(w) for w in data.get("words", ())),
                     word_counts=tuple(int(c) for c in data.get("word_counts", ())))
        if len(column.words) != len(column.word_counts):
            raise ValueError(f"column {column.name!r}: {len(column.words)} words for {len(column.word_counts)} counts")
        return column


@dataclass(frozen=True)
class TableSpec:
    columns: tuple[TableColumn, ...]
    # groups[j]: the index (into columns) of the column encoded feature j came from; empty when the version has no
    # encoded output (no attributions).
    groups: tuple[int, ...] = ()
    encoded_output: str | None = ENCODED_OUTPUT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> TableColumn:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns], "groups": list(self.groups),
                "encoded_output": self.encoded_output, **({"extra": self.extra} if self.extra else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableSpec:
        columns = tuple(TableColumn.from_dict(c) for c in data["columns"])
        groups = tuple(int(g) for g in data.get("groups", ()))
        if any(not 0 <= g < len(columns) for g in groups):
            raise ValueError(f"table groups must index the {len(columns)} columns")
        return cls(columns, groups, data.get("encoded_output"), dict(data.get("extra", {})))


def table_of(extra: Mapping[str, Any]) -> TableSpec | None:
    """The table spec in a version's ``metadata.extra``, or None for versions that are not mixed tables."""
    raw = extra.get(TABLE_KEY)
    return None if raw is None else TableSpec.from_dict(raw)

