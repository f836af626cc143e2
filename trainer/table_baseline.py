"""A mixed table's schema and training profile, computed on its view (registry/table_view.py).

The server validates and monitors the same view of live rows, with the same kernels, so a category, a text
length or a language share means the same thing in both places.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from driftline.errors import InvalidInput
from driftline.registry import VersionMetadata
from driftline.registry.columns import monitored_columns, monitored_rows, output_widths, share_columns
from driftline.registry.profile import Profile, build_profile
from driftline.registry.schema import CATEGORICAL as CATEGORICAL_TYPE
from driftline.registry.schema import POLICY_KEY, Policy, Schema, apply_overrides, infer_schema
from driftline.registry.table import CATEGORICAL, TEXT, TableSpec
from driftline.registry.table_view import CHARS, KIND_CATEGORICAL, KIND_WORDS, LANGUAGE, OOV, TableEncoder, TableView

# A text column's overrides and the view column and limit each sets.
TEXT_LIMITS = {
    "max_words": ("", "max"), "min_words": ("", "min"), "max_chars": (CHARS, "max"),
    "min_language_share": (LANGUAGE, "min"), "max_unknown_share": (OOV, "max"),
}


def table_schema(view: TableView, encoder: TableEncoder, dtypes: Mapping[str, str],
                 overrides: Mapping[str, Any] | None, policy: Policy | None = None) -> Schema:
    """The inferred schema of the training view, with the user's overrides (in column terms) applied."""
    spec = encoder.spec
    kinds = {c.name: c.role for c in spec.columns}
    view_dtypes = []
    for c in encoder.columns:
        role = kinds.get(c.name)
        if role in (CATEGORICAL, TEXT) or c.name.endswith(CHARS):
            view_dtypes.append("Int64")  # codes and lengths are whole
        else:
            view_dtypes.append(str(dtypes.get(c.name, "Float64")))
    schema = infer_schema(view.matrix, encoder.names, view_dtypes, policy=policy)
    features = []
    for f, c in zip(schema.features, encoder.columns, strict=True):
        if c.kind == KIND_CATEGORICAL:
            f = replace(f, type=CATEGORICAL_TYPE, integer=True, min=None, max=None,
                        categories=tuple(range(c.categories or 0)))
        elif c.name.endswith((OOV, LANGUAGE)):
            f = replace(f, allow_missing=True)  # a text without words has no shares
        features.append(f)
    schema = replace(schema, features=tuple(features))
    return apply_overrides(schema, column_overrides(overrides, spec))


def column_overrides(overrides: Mapping[str, Any] | None, spec: TableSpec) -> dict[str, Any]:
    """``--schema`` settings of a mixed table's columns as settings of its view columns.

    ``district: {categories: [Mokotów, Wola]}`` declares those categories (others are refused);
    ``description: {max_words: 200, max_chars: 2000, min_language_share: 0.1, max_unknown_share: 0.5}`` declares
    text limits; ``type: categorical | text`` only says what a column is and declares nothing.
    """
    out: dict[str, Any] = {}
    for key, settings in (overrides or {}).items():
        if key == POLICY_KEY or key not in spec.names or not isinstance(settings, Mapping):
            out[key] = settings  # apply_overrides names what is wrong with it
            continue
        column = spec.column(key)
        s = dict(settings)
        if column.role == CATEGORICAL:
            s.pop("type", None)
            if "categories" in s:
                s["type"] = CATEGORICAL_TYPE
                s["categories"] = [column.categories.index(str(v)) for v in s["categories"]]
            out[key] = s
        elif column.role == TEXT:
            s.pop("type", None)
            for setting, (suffix, limit) in TEXT_LIMITS.items():
                if setting in s:
                    out.setdefault(key + suffix, {})[limit] = s.pop(setting)
            if "allow_missing" in s:
                out.setdefault(key, {})["allow_missing"] = s.pop("allow_missing")
            if s:
                raise InvalidInput(f"schema overrides: text column {key!r}: unknown keys {sorted(s)}; known: "
                                   f"{', '.join([*TEXT_LIMITS, 'allow_missing', 'type'])}")
        else:
            out[key] = s
    return out


def table_profile(view: TableView, outputs: Mapping[str, np.ndarray], shares: np.ndarray | None,
                  encoder: TableEncoder, metadata: VersionMetadata, bins: int = 20) -> Profile:
    """The training baseline: the view's columns, the model's outputs, attribution shares per column (NaN for
    rows not explained) and each text column's word table, in the order the server's monitor builds them."""
    names = [o.name for o in metadata.outputs]
    classes = len(metadata.classes) if metadata.classes else None
    answers = monitored_columns([], metadata.outputs, classes, output_widths(outputs))
    matrix = monitored_rows(view.matrix, outputs, names)
    column_names = [*encoder.names, *(c.name for c in answers)]
    kinds = [c.kind for c in encoder.columns] + [c.kind for c in answers]
    categories = {c.name: c.categories for c in encoder.columns if c.kind == KIND_CATEGORICAL}
    categories.update({c.name: classes for c in answers if c.kind == "categorical" and classes})
    if shares is not None:
        matrix = np.hstack([matrix, shares])
        extra = share_columns(encoder.spec.names)
        column_names += [c.name for c in extra]
        kinds += [c.kind for c in extra]
    words = encoder.words_of(view)
    if words:
        matrix = np.hstack([matrix, np.full((len(matrix), len(words)), np.nan)])
        column_names += [c.name for c in encoder.word_columns]
        kinds += [KIND_WORDS] * len(words)
        categories.update({c.name: c.categories for c in encoder.word_columns})
    word_ids = {c.name: ids for c, ids in zip(encoder.word_columns, words, strict=True)}
    return build_profile(matrix, column_names, bins=bins, kinds=kinds, categories=categories, word_ids=word_ids)
