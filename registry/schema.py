"""schema.json: what a model's input data may look like, feature by feature, and what to do when it does not.

The trainer (and ``driftline publish``, from the reference data) infers a schema from the training data
(:func:`infer_schema`), applies the user's overrides (``--schema FILE``; :func:`load_overrides`,
:func:`apply_overrides`) and stores it with the version. The trainer, ``driftline validate`` and the server all
check rows against it with one kernel (:mod:`driftline.kernels.validate`), compiled by :meth:`Schema.arrays`.

Per feature:

* ``type``: "float", "integer", "boolean" or "categorical" (integer codes);
* ``allow_missing``: whether NaN / null is acceptable; ``allow_infinite``: whether +-inf is;
* hard limits: ``min`` / ``max`` (None = unbounded), ``integer`` (must be whole), ``categories`` (categorical:
  the known codes);
* ``declared``: which of those limits a person declared (an override, or ``driftline schema accept``); the
  others were inferred from the data;
* ``train_min`` / ``train_max``: the finite range seen in training (None when training had no finite value).
  Values outside it are possible but unseen, so by default they are flagged, not rejected.

Declared limits refuse what breaks them; inferred ones only flag it (counted, reported, marked on the response).
A limit inferred from data is a guess - 5,000 houses with whole bedroom counts do not make 2.5 bedrooms
impossible, and a load generator's random floats are not an attack - while a person's ``bedrooms: {min: 0}`` is
a statement about the world. The policy's ``inferred_limits`` sets the most an inferred limit can do ("flag" by
default; "reject" gives the behaviour of format 1, "off" does not check them). Missing and infinite values are
refused whether or not a person said so (unless allowed): a model's answer for them cannot be trusted.

Inference is conservative: it never guesses a hard minimum or maximum (garage_area >= 0 is the user's to
declare). A feature is "boolean" only when its column is Boolean (min 0, max 1, whole); "integer" (whole)
when its column has an integer dtype, or when every finite value is whole and the column is plainly
discrete (at most ``MAX_DISCRETE_VALUES`` distinct values, each seen twice on average) - so a float column
of whole-metre lot areas stays "float"; "categorical" only when an override says so. ``allow_missing`` is
whether the training data had missing values.

The :class:`Policy` says per constraint kind whether a failure rejects the row, only flags it, or is not
checked ("reject" | "flag" | "off"). Defaults: every hard kind (missing, infinite, below_min, above_max,
not_integer, unknown_category, not_a_number) rejects; leaving the training range flags; an inferred limit
flags (``inferred_limits``). The schema JSON stores the version's policy; a server configuration may override it
(:meth:`Policy.with_overrides`).

The format is versioned by ``format``; readers refuse formats they do not know. Format 2 added ``declared`` and
``allow_infinite``. Format 1 (older versions) is read with every hard limit declared - they refused when the
version was published, and an upgrade does not loosen a published version - and no infinite values allowed.
Non-finite numbers never appear (hard limits are finite or null, the training range is finite or null).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from driftline.errors import CorruptArtifact, InvalidInput
from driftline.kernels.validate import (
    ABOVE_MAX,
    ACTIONS,
    BELOW_MIN,
    FLAG,
    KINDS,
    MAX_CATEGORY_CODE,
    NOT_INTEGER,
    OFF,
    RANGE_KINDS,
    REJECT,
    UNKNOWN_CATEGORY,
    SchemaArrays,
    ValidationResult,
    validate,
)

SCHEMA_FORMAT = 2
READABLE_FORMATS = (1, 2)
SCHEMA_FILE = "schema.json"  # the suggested file name inside a version

FLOAT = "float"
INTEGER = "integer"
BOOLEAN = "boolean"
CATEGORICAL = "categorical"
TYPES = (FLOAT, INTEGER, BOOLEAN, CATEGORICAL)

MAX_DISCRETE_VALUES = 256  # a float column of whole values is "integer" with at most this many distinct values

OVERRIDE_KEYS = ("type", "allow_missing", "allow_infinite", "min", "max", "integer", "categories")
POLICY_KEY = "policy"  # the top-level key of an overrides file that sets the policy (unless a feature is so named)
# The hard limits a person may declare (or the data imply), and the constraint kind each one is checked as.
LIMITS = ("min", "max", "integer", "categories")
LIMIT_KIND = {"min": BELOW_MIN, "max": ABOVE_MAX, "integer": NOT_INTEGER, "categories": UNKNOWN_CATEGORY}
INFERRED_LIMITS = "inferred_limits"  # the policy's key for what an inferred limit does at most


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Policy:
    """What a failure of each constraint kind does: "reject" the row, "flag" it, or "off" (not checked)."""

    missing: str = REJECT
    below_min: str = REJECT
    above_max: str = REJECT
    not_integer: str = REJECT
    unknown_category: str = REJECT
    below_training_range: str = FLAG
    above_training_range: str = FLAG
    not_a_number: str = REJECT
    infinite: str = REJECT
    inferred_limits: str = FLAG  # the most a limit inferred from data does (see the module docstring)

    def __post_init__(self) -> None:
        for f in fields(self):
            action = getattr(self, f.name)
            if action not in ACTIONS:
                raise InvalidInput(f"policy: {f.name} must be one of {', '.join(ACTIONS)}, not {action!r}")

    def action(self, kind: str, inferred: bool = False) -> str:
        """What a failure of ``kind`` does: of a declared limit, or (``inferred``) of an inferred one."""
        action = getattr(self, kind)
        if inferred and _STRENGTH[self.inferred_limits] < _STRENGTH[action]:
            return self.inferred_limits
        return action

    def to_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in (*KINDS, INFERRED_LIMITS)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        return cls().with_overrides(data)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Policy:
        """This policy with some kinds changed, e.g. ``{"above_training_range": "off"}`` (from a server
        configuration or an overrides file). YAML's ``off`` (read as False) means "off"."""
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise InvalidInput(f"policy must be a mapping of constraint kind to action, got {overrides!r}")
        unknown = sorted(set(overrides) - {*KINDS, INFERRED_LIMITS})
        if unknown:
            raise InvalidInput(f"policy: unknown constraint kinds {unknown}; known: {', '.join(KINDS)} "
                               f"(and {INFERRED_LIMITS})")
        changes = {}
        for kind, action in overrides.items():
            if action is False:  # YAML 1.1 reads a bare `off` as false
                action = OFF
            if action not in ACTIONS:
                raise InvalidInput(f"policy: {kind} must be one of {', '.join(ACTIONS)}, not {action!r}")
            changes[kind] = action
        return replace(self, **changes)


DEFAULT_POLICY = Policy()
_STRENGTH = {OFF: 0, FLAG: 1, REJECT: 2}


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class FeatureSchema:
    name: str
    type: str = FLOAT
    dtype: str | None = None  # the column's dtype in the training data (polars), for information
    allow_missing: bool = False
    min: float | None = None
    max: float | None = None
    integer: bool = False
    train_min: float | None = None
    train_max: float | None = None
    categories: tuple[int, ...] | None = None  # categorical only: the known codes, ascending
    allow_infinite: bool = False
    declared: tuple[str, ...] = ()  # the limits (of LIMITS, in that order) a person declared; the rest are inferred

    def __post_init__(self) -> None:
        where = f"feature {self.name!r}"
        if self.type not in TYPES:
            raise InvalidInput(f"{where}: type must be one of {', '.join(TYPES)}, not {self.type!r}")
        for label in ("min", "max", "train_min", "train_max"):
            x = getattr(self, label)
            if x is not None and not math.isfinite(x):
                raise InvalidInput(f"{where}: {label} must be a finite number or null, got {x!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise InvalidInput(f"{where}: min {self.min:g} is above max {self.max:g}")
        if (self.train_min is None) != (self.train_max is None) or (
                self.train_min is not None and self.train_min > self.train_max):
            raise InvalidInput(f"{where}: train_min and train_max must both be null or train_min <= train_max")
        if (self.type == CATEGORICAL) != (self.categories is not None):
            raise InvalidInput(f"{where}: categories go with type categorical (and it needs them)")
        if self.type in (INTEGER, BOOLEAN, CATEGORICAL) and not self.integer:
            raise InvalidInput(f"{where}: a {self.type} feature is whole (integer: true)")
        if self.type == FLOAT and self.integer:
            raise InvalidInput(f"{where}: a float feature is not integer; use type integer")
        if self.type == BOOLEAN and (self.min != 0 or self.max != 1):
            raise InvalidInput(f"{where}: a boolean feature has min 0 and max 1")
        if self.categories is not None:
            c = self.categories
            if any(not 0 <= x <= MAX_CATEGORY_CODE for x in c) or list(c) != sorted(set(c)):
                raise InvalidInput(f"{where}: categories must be distinct codes 0..{MAX_CATEGORY_CODE}, ascending")
        self._check_declared(where)

    def _check_declared(self, where: str) -> None:
        if list(self.declared) != [x for x in LIMITS if x in self.declared] or len(set(self.declared)) != len(
                self.declared):
            raise InvalidInput(f"{where}: declared must list limits of {', '.join(LIMITS)}, once each, in that "
                               f"order; got {list(self.declared)}")
        absent = [x for x in self.declared if x not in self.limits]
        if absent:
            raise InvalidInput(f"{where}: declared names limits it does not have: {', '.join(absent)}")

    @property
    def limits(self) -> tuple[str, ...]:
        """The hard limits this feature has (of :data:`LIMITS`)."""
        have = {"min": self.min is not None, "max": self.max is not None, "integer": self.integer,
                "categories": self.categories is not None}
        return tuple(x for x in LIMITS if have[x])

    @property
    def inferred(self) -> tuple[str, ...]:
        """The hard limits inferred from data, not declared by a person."""
        return tuple(x for x in self.limits if x not in self.declared)

    def inferred_kinds(self) -> tuple[str, ...]:
        """The constraint kinds whose limit is inferred (what the kernel treats as a flag at most)."""
        return tuple(LIMIT_KIND[x] for x in self.inferred)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name, "type": self.type, "dtype": self.dtype, "allow_missing": self.allow_missing,
            "allow_infinite": self.allow_infinite, "min": self.min, "max": self.max, "integer": self.integer,
            "declared": list(self.declared), "train_min": self.train_min, "train_max": self.train_max,
        }
        if self.categories is not None:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], format: int = SCHEMA_FORMAT) -> FeatureSchema:  # noqa: A002
        """A feature of a schema.json of ``format``; format 1 had neither ``declared`` nor ``allow_infinite``:
        its limits all count as declared (see the module docstring)."""
        known = {f.name for f in fields(cls)} - ({"declared", "allow_infinite"} if format == 1 else set())
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        cats = data.get("categories")
        feature = cls(
            name=_string(data["name"]), type=_string(data.get("type", FLOAT)),
            dtype=None if data.get("dtype") is None else _string(data["dtype"]),
            allow_missing=_boolean(data.get("allow_missing", False)),
            allow_infinite=_boolean(data.get("allow_infinite", False)),
            min=_number_or_none(data.get("min")), max=_number_or_none(data.get("max")),
            integer=_boolean(data.get("integer", False)),
            train_min=_number_or_none(data.get("train_min")), train_max=_number_or_none(data.get("train_max")),
            categories=None if cats is None else tuple(_code(x) for x in cats),
            declared=tuple(_string(x) for x in _list(data.get("declared", []))),
        )
        return feature.accepted() if format == 1 else feature

    def accepted(self) -> FeatureSchema:
        """This feature with every limit it has declared."""
        return replace(self, declared=self.limits)


@dataclass(frozen=True)
class Schema:
    """The features in input order, the policy and the number of training rows the schema was inferred from."""

    features: tuple[FeatureSchema, ...]
    policy: Policy = field(default_factory=Policy)
    rows: int | None = None
    format: int = field(default=SCHEMA_FORMAT, compare=False)  # the format it was read from; written as the latest

    def __post_init__(self) -> None:
        names = self.names
        if len(set(names)) != len(names):
            raise InvalidInput(f"feature names must be unique: {names}")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> FeatureSchema:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def arrays(self, policy: Policy | None = None) -> SchemaArrays:
        """The schema compiled for the kernel under ``policy`` (default: the schema's own; cached)."""
        if policy is None or policy == self.policy:
            return self._arrays
        return self._compile(policy)

    @cached_property
    def _arrays(self) -> SchemaArrays:
        return self._compile(self.policy)

    def _compile(self, policy: Policy) -> SchemaArrays:
        fs = self.features
        return SchemaArrays.build(
            [f.name for f in fs], min=[f.min for f in fs], max=[f.max for f in fs],
            integer=[f.integer for f in fs], allow_missing=[f.allow_missing for f in fs],
            categories=[f.categories for f in fs], train_min=[f.train_min for f in fs],
            train_max=[f.train_max for f in fs], actions={k: policy.action(k) for k in KINDS},
            allow_infinite=[f.allow_infinite for f in fs], inferred=[f.inferred_kinds() for f in fs],
            inferred_action=policy.inferred_limits,
        )

    def validate(self, X: np.ndarray, policy: Policy | None = None, **kwargs: Any) -> ValidationResult:
        """:func:`driftline.kernels.validate.validate` of ``X`` [rows, features] against this schema."""
        return validate(self.arrays(policy), X, **kwargs)

    def with_policy(self, policy: Policy) -> Schema:
        return replace(self, policy=policy)

    @property
    def inferred(self) -> dict[str, tuple[str, ...]]:
        """Feature name -> its limits inferred from data (features without any left out)."""
        return {f.name: f.inferred for f in self.features if f.inferred}

    def accepted(self) -> Schema:
        """This schema with every inferred limit declared (``driftline schema accept``): what the data showed
        becomes what a person vouches for, so it refuses instead of flagging."""
        return replace(self, features=tuple(f.accepted() for f in self.features))

    def with_training_range(self, X: np.ndarray) -> Schema:
        """This schema with ``train_min``/``train_max`` recomputed from ``X`` (e.g. the rows kept for training
        after dropping invalid ones)."""
        X = _as_rows(X, len(self.features))
        lo, hi = _finite_range(X)
        return replace(self, features=tuple(
            replace(f, train_min=lo[i], train_max=hi[i]) for i, f in enumerate(self.features)
        ), rows=int(X.shape[0]))

    def to_dict(self) -> dict[str, Any]:
        return {"format": SCHEMA_FORMAT, "rows": self.rows, "features": [f.to_dict() for f in self.features],
                "policy": self.policy.to_dict()}

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        if not isinstance(data, Mapping):
            raise CorruptArtifact("schema.json must hold a JSON object")
        version = data.get("format")
        if isinstance(version, bool) or version not in READABLE_FORMATS:
            raise CorruptArtifact(f"schema.json has format {version!r}; this driftline reads formats "
                                  f"{', '.join(map(str, READABLE_FORMATS))}")
        try:
            features = []
            for raw in data["features"]:
                try:
                    features.append(FeatureSchema.from_dict(raw, version))
                except (InvalidInput, ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"feature {raw.get('name') if isinstance(raw, Mapping) else raw!r}: {e}") from e
            rows = data.get("rows")
            return cls(features=tuple(features), policy=Policy.from_dict(data.get("policy") or {}),
                       rows=None if rows is None else _int(rows), format=version)
        except (InvalidInput, ValueError, KeyError, TypeError) as e:
            raise CorruptArtifact(f"schema.json cannot be read: {e}") from e

    @classmethod
    def from_json(cls, text: str | bytes) -> Schema:
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as e:
            raise CorruptArtifact(f"schema.json is not valid JSON: {e}") from e
        return cls.from_dict(data)


# --------------------------------------------------------------------------- inference


INTEGER_DTYPES = frozenset({"Int8", "Int16", "Int32", "Int64", "Int128", "UInt8", "UInt16", "UInt32", "UInt64"})


def infer_schema(X: np.ndarray, names: Sequence[str], dtypes: Sequence[str], *,
                 not_missing: np.ndarray | None = None, policy: Policy | None = None) -> Schema:
    """The schema of training rows ``X`` [rows, features] (any numbers; NaN = missing), feature ``f`` named
    ``names[f]`` whose column had polars dtype ``dtypes[f]`` ("Float64", "Int64", "Boolean", ...).

    ``not_missing`` (bool [rows, features], optional) marks NaN cells that are not missing values (e.g. a
    string in a numeric column, reported as not_a_number): they do not make a feature ``allow_missing``.
    See the module docstring for the rules. Every limit found here is inferred (``declared`` is empty); a
    feature allows +-inf when the data had it (as it allows missing values when the data had them).
    """
    names = [str(n) for n in names]
    X = _as_rows(X, len(names))
    if len(dtypes) != len(names):
        raise InvalidInput(f"{len(dtypes)} dtypes for {len(names)} features")
    lo, hi = _finite_range(X)
    features = []
    for c, (name, dtype) in enumerate(zip(names, dtypes, strict=True)):
        column = X[:, c].astype(np.float64)
        nan = np.isnan(column)
        if not_missing is not None:
            nan &= ~np.asarray(not_missing[:, c], dtype=np.bool_)
        finite = column[np.isfinite(column)]
        dtype = str(dtype)
        if dtype == "Boolean":
            kind, limits = BOOLEAN, (0.0, 1.0)
        elif dtype in INTEGER_DTYPES or _looks_discrete(finite):
            kind, limits = INTEGER, (None, None)
        else:
            kind, limits = FLOAT, (None, None)
        features.append(FeatureSchema(
            name=name, type=kind, dtype=dtype, allow_missing=bool(nan.any()), min=limits[0], max=limits[1],
            integer=kind != FLOAT, train_min=lo[c], train_max=hi[c], allow_infinite=bool(np.isinf(column).any()),
        ))
    return Schema(features=tuple(features), policy=policy or Policy(), rows=int(X.shape[0]))


def _looks_discrete(finite: np.ndarray) -> bool:
    """Every value whole, few distinct values, each seen about twice or more (see the module docstring)."""
    if finite.size == 0 or not np.all(finite == np.floor(finite)):
        return False
    distinct = np.unique(finite).size
    return distinct <= MAX_DISCRETE_VALUES and 2 * distinct <= finite.size


def _finite_range(X: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Per column, the smallest and largest finite value (None without any). float32 values are recorded as
    their shortest decimal (45.2, not 45.20000076293945): the kernel rounds limits to float32 for float32
    batches, so both read back as the same float32."""
    as_number = (lambda x: float(str(np.float32(x)))) if X.dtype == np.float32 else float
    lo: list[float | None] = []
    hi: list[float | None] = []
    for c in range(X.shape[1]):
        column = X[:, c]
        finite = column[np.isfinite(column)] if column.dtype.kind == "f" else column
        lo.append(as_number(finite.min()) if finite.size else None)
        hi.append(as_number(finite.max()) if finite.size else None)
    return lo, hi


def _as_rows(X: np.ndarray, features: int) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != features:
        raise InvalidInput(f"expected rows [rows, {features}], got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise InvalidInput(f"rows must be numeric, got {X.dtype}")
    return X


# --------------------------------------------------------------------------- overrides


def load_overrides(path: str | Path) -> dict[str, Any]:
    """The overrides file of ``driftline train --schema FILE``: YAML (or JSON, which is YAML too).

    A mapping of feature name to its overrides, plus optionally ``policy:`` (kind -> reject/flag/off)::

        bedrooms: {min: 0, integer: true}
        garage_area: {min: 0, max: 500}
        district: {type: categorical, categories: [0, 1, 2]}
        lot_area: {allow_missing: true}
        policy: {above_training_range: off}

    Every limit an override sets is declared: it refuses values that break it (see the module docstring).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidInput(f"cannot read the schema overrides {path}: {e}") from e
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency; JSON still works without it
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InvalidInput(f"{path}: reading YAML needs PyYAML (pip install pyyaml); as JSON: {e}") from e
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InvalidInput(f"{path} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: the schema overrides must be a mapping of feature name to settings")
    return data


def apply_overrides(schema: Schema, overrides: Mapping[str, Any] | None) -> Schema:
    """``schema`` with the user's overrides (see :func:`load_overrides`) applied; unknown features or keys and
    inconsistent settings raise :class:`~driftline.errors.InvalidInput` naming the feature.

    Per feature: ``type`` (float | integer | boolean | categorical), ``allow_missing`` / ``allow_infinite``
    (bool), ``min`` / ``max`` (number or null), ``integer`` (bool), ``categories`` (list of codes; with type
    categorical). Changing the type sets what the type implies (integer -> whole; boolean -> whole, min 0,
    max 1; float -> not whole) unless the same override sets it; ``integer: true`` on a float feature makes it
    an integer one. A categorical feature without ``categories`` gets the codes ``0..train_max`` (the training
    profile's convention, ``max code + 1`` categories). The limits an override names, or its type implies,
    become declared, even where they equal the inferred ones (``bedrooms: {integer: true}`` vouches for
    the inferred wholeness).
    """
    if not overrides:
        return schema
    if not isinstance(overrides, Mapping):
        raise InvalidInput("schema overrides must be a mapping of feature name to settings")
    names = schema.names
    policy = schema.policy
    changed = {}
    for key, settings in overrides.items():
        key = str(key)
        if key == POLICY_KEY and key not in names:
            policy = policy.with_overrides(settings)
            continue
        if key not in names:
            raise InvalidInput(f"schema overrides: unknown feature {key!r}; the features are: {', '.join(names)}")
        changed[key] = _override_feature(schema.feature(key), settings)
    return replace(schema, features=tuple(changed.get(f.name, f) for f in schema.features), policy=policy)


def _override_feature(feature: FeatureSchema, settings: Any) -> FeatureSchema:
    where = f"schema overrides: feature {feature.name!r}"
    if not isinstance(settings, Mapping):
        raise InvalidInput(f"{where}: expected a mapping such as {{min: 0, integer: true}}, got {settings!r}")
    unknown = sorted(set(map(str, settings)) - set(OVERRIDE_KEYS))
    if unknown:
        raise InvalidInput(f"{where}: unknown keys {unknown}; known: {', '.join(OVERRIDE_KEYS)}")
    try:
        s = {k: _override_value(k, v) for k, v in settings.items()}
        kind = _override_type(feature.type, s)
        lo, hi = _override_limits(feature, kind, s)
    except InvalidInput as e:
        raise InvalidInput(f"{where}: {e}") from None
    categories = None
    if kind == CATEGORICAL:
        categories = s.get("categories", feature.categories) or _default_categories(feature, where)
    changed = replace(feature, type=kind, integer=kind != FLOAT, min=lo, max=hi, categories=categories,
                      allow_missing=s.get("allow_missing", feature.allow_missing),
                      allow_infinite=s.get("allow_infinite", feature.allow_infinite), declared=())
    named = {*feature.declared, *(x for x in LIMITS if x in s)}
    if "type" in s:
        named |= set(_TYPE_LIMITS[kind])
    return replace(changed, declared=tuple(x for x in changed.limits if x in named))


_TYPE_LIMITS = {FLOAT: (), INTEGER: ("integer",), BOOLEAN: ("min", "max", "integer"),
                CATEGORICAL: ("integer", "categories")}  # the limits a declared type implies


def _override_type(current: str, s: Mapping[str, Any]) -> str:
    """The type after the overrides ``s``: ``type`` if given, else ``integer`` may switch float <-> integer."""
    kind = s.get("type", current)
    integer = s.get("integer")
    if "type" not in s and integer is not None and kind in (FLOAT, INTEGER):
        kind = INTEGER if integer else FLOAT
    if integer is False and kind in (BOOLEAN, CATEGORICAL):
        raise InvalidInput(f"a {kind} feature is always whole; integer: false contradicts it")
    if integer is True and kind == FLOAT:
        raise InvalidInput("type float with integer: true; use type integer")
    if "categories" in s and kind != CATEGORICAL:
        raise InvalidInput("categories need type: categorical")
    return kind


def _override_limits(feature: FeatureSchema, kind: str, s: Mapping[str, Any]) -> tuple[float | None, float | None]:
    lo = s.get("min", feature.min)
    hi = s.get("max", feature.max)
    if kind == BOOLEAN:
        if ("min" in s and lo != 0) or ("max" in s and hi != 1):
            raise InvalidInput("a boolean feature has min 0 and max 1")
        lo, hi = 0.0, 1.0
    elif feature.type == BOOLEAN:  # leaving boolean drops the limits it implied
        lo, hi = s.get("min"), s.get("max")
    if lo is not None and hi is not None and lo > hi:
        raise InvalidInput(f"min {lo:g} is above max {hi:g}")
    return lo, hi


def _default_categories(feature: FeatureSchema, where: str) -> tuple[int, ...]:
    lo, hi = feature.train_min, feature.train_max
    if lo is None or hi is None or lo < 0 or hi != math.floor(hi) or hi > MAX_CATEGORY_CODE:
        raise InvalidInput(f"{where}: the training values are not codes 0..K-1; list the codes with categories: [...]")
    return tuple(range(int(hi) + 1))


def _override_value(key: str, value: Any) -> Any:
    if key == "type":
        if value not in TYPES:
            raise InvalidInput(f"type must be one of {', '.join(TYPES)}, not {value!r}")
        return value
    if key in ("allow_missing", "allow_infinite", "integer"):
        if not isinstance(value, bool):
            raise InvalidInput(f"{key} must be true or false, not {value!r}")
        return value
    if key in ("min", "max"):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInput(f"{key} must be a finite number or null, not {value!r}")
        return float(value)
    if key == "categories":
        if not isinstance(value, list | tuple) or not value:
            raise InvalidInput(f"categories must be a non-empty list of integer codes, not {value!r}")
        codes = []
        for x in value:
            if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= MAX_CATEGORY_CODE:
                raise InvalidInput(f"categories must be integer codes 0..{MAX_CATEGORY_CODE}, not {x!r}")
            codes.append(x)
        return tuple(sorted(set(codes)))
    raise InvalidInput(f"unknown key {key!r}")  # pragma: no cover - checked before


# --------------------------------------------------------------------------- JSON helpers


def _refuse_constant(token: str) -> float:
    raise ValueError(f"schema JSON must not contain {token}")


def _int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise ValueError(f"expected an integer, got {x!r}")
    return x


def _list(x: Any) -> list[Any]:
    if not isinstance(x, list):
        raise ValueError(f"expected a list, got {x!r}")
    return x


def _code(x: Any) -> int:
    return _int(x)


def _string(x: Any) -> str:
    if not isinstance(x, str):
        raise ValueError(f"expected a string, got {x!r}")
    return x


def _boolean(x: Any) -> bool:
    if not isinstance(x, bool):
        raise ValueError(f"expected true or false, got {x!r}")
    return x


def _number_or_none(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise ValueError(f"expected a finite number or null, got {x!r}")
    return float(x)


__all__ = [
    "BOOLEAN", "CATEGORICAL", "DEFAULT_POLICY", "FLOAT", "INFERRED_LIMITS", "INTEGER", "KINDS", "LIMITS",
    "RANGE_KINDS", "READABLE_FORMATS", "SCHEMA_FILE", "SCHEMA_FORMAT", "TYPES", "FeatureSchema", "Policy", "Schema",
    "apply_overrides", "infer_schema", "load_overrides",
]
