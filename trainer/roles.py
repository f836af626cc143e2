"""What each column of a training table is: a number, a boolean, a category or free text.

Inferred from the polars dtype and, for strings, from how they look: a string column whose values are
mostly single short phrases drawn from a small set is categorical ("Mokotów"); one with sentences is text
(a listing's description). ``--schema`` overrides say so explicitly: ``description: {type: text}``.
The training categories and words a version keeps come from here too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from driftline.errors import InvalidInput
from driftline.registry.table import BOOLEAN, CATEGORICAL, NUMERIC, STRING_ROLES, TEXT, TableColumn
from driftline.registry.words import top_words

MAX_CATEGORIES = 1000  # a string column with more distinct values than this is text, or an identifier
TEXT_WORDS = 3.0  # a string column averaging more words per value than this is text
NUMBERS_SHARE = 0.9  # a string column with at least this share of numbers is a numeric column


def is_string(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)


def roles(frame: pl.DataFrame, features: Sequence[str], overrides: Mapping[str, Any] | None) -> dict[str, str]:
    """Column name -> role, for the feature columns of ``frame``."""
    out = {}
    for name in features:
        column = frame[name]
        wanted = _setting(overrides, name, "type")
        if is_string(column.dtype):
            if wanted is not None and wanted not in STRING_ROLES:
                raise InvalidInput(f"schema overrides: column {name!r} holds strings; its type can be categorical or "
                                   f"text, not {wanted!r}")
            out[name] = wanted or _string_role(column)
        elif column.dtype == pl.Boolean:
            out[name] = BOOLEAN
        elif column.dtype.is_numeric():
            if wanted == TEXT:
                raise InvalidInput(f"schema overrides: column {name!r} holds numbers; it cannot be text")
            out[name] = NUMERIC
        else:
            raise InvalidInput(f"column {name!r} has dtype {column.dtype}, which driftline cannot train on; use "
                               "numbers, booleans or strings")
    return out


def _string_role(column: pl.Series) -> str:
    values = column.drop_nulls()
    if values.len() == 0:
        return CATEGORICAL
    # Numbers with a few typos ("abc" in lot_area) are a numeric column with bad cells, which validation names.
    if values.cast(pl.Float64, strict=False).drop_nulls().len() >= NUMBERS_SHARE * values.len():
        return NUMERIC
    if values.n_unique() > MAX_CATEGORIES:
        return TEXT
    words = values.str.count_matches(r"\w+").mean() or 0.0
    return TEXT if words > TEXT_WORDS else CATEGORICAL


def is_mixed(found: Mapping[str, str]) -> bool:
    """Whether the table needs per-column inputs (a categorical or text column)."""
    return any(r in STRING_ROLES for r in found.values())


def table_columns(frame: pl.DataFrame, found: Mapping[str, str],
                  overrides: Mapping[str, Any] | None = None) -> tuple[TableColumn, ...]:
    """The columns as a version keeps them: categories most frequent first (declared ones not seen in training
    appended), a text column's most frequent words."""
    columns = []
    for name, role in found.items():
        if role == CATEGORICAL:
            values = frame[name].cast(pl.String).drop_nulls()
            counted = values.filter(values != "").value_counts(sort=True)
            ranked = sorted(zip(counted[name].to_list(), counted["count"].to_list(), strict=True),
                            key=lambda kv: (-kv[1], kv[0]))
            categories = [v for v, _ in ranked]
            for value in _setting(overrides, name, "categories") or ():
                if str(value) not in categories:
                    categories.append(str(value))
            columns.append(TableColumn(name, role, "BYTES", categories=tuple(categories)))
        elif role == TEXT:
            words, counts = top_words(frame[name].cast(pl.String).to_list())
            columns.append(TableColumn(name, role, "BYTES", words=words, word_counts=counts))
        else:
            columns.append(TableColumn(name, role, "FP32"))
    return tuple(columns)


def _setting(overrides: Mapping[str, Any] | None, column: str, key: str) -> Any:
    settings = (overrides or {}).get(column)
    return settings.get(key) if isinstance(settings, Mapping) else None
