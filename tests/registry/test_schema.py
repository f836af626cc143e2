"""schema.json: inference from training data, the user's overrides, the policy and the JSON format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from driftline.errors import CorruptArtifact, InvalidInput
from driftline.registry.schema import (
    DEFAULT_POLICY,
    FeatureSchema,
    Policy,
    Schema,
    apply_overrides,
    infer_schema,
    load_overrides,
)
from driftline.trainer import synthetic
from driftline.trainer.data import split_columns


@pytest.fixture(scope="module")
def housing() -> tuple[Schema, np.ndarray]:
    frame = synthetic.housing(2000, seed=0)
    data = split_columns(frame, synthetic.TARGET, list(synthetic.FEATURES))
    return infer_schema(data.X, data.features, data.dtypes), data.X


# --------------------------------------------------------------------------- inference


def test_inferred_types_of_synthetic_housing(housing: tuple[Schema, np.ndarray]) -> None:
    schema, X = housing
    types = {f.name: f.type for f in schema.features}
    for name in ("bedrooms", "bathrooms", "stories", "condition", "has_basement", "year_built"):
        assert types[name] in ("integer", "boolean"), name
        assert schema.feature(name).integer
    # has_basement is a Float64 column of 0/1: "integer", not a guessed boolean with a guessed max of 1
    assert types["has_basement"] == "integer"
    for name in ("living_area", "lot_area", "garage_area", "distance_to_center", "transit_distance"):
        assert types[name] == "float", name  # lot_area is whole metres, but not discrete
        assert not schema.feature(name).integer
    assert schema.names == list(synthetic.FEATURES)
    assert schema.rows == 2000
    for c, f in enumerate(schema.features):
        assert not f.allow_missing
        assert f.min is None and f.max is None  # no guessed hard limits
        assert f.train_min == pytest.approx(float(X[:, c].min()), rel=1e-6)
        assert f.train_max == pytest.approx(float(X[:, c].max()), rel=1e-6)
        assert f.dtype == "Float64"
    assert schema.policy == DEFAULT_POLICY
    assert schema.validate(X).ok  # the training data passes its own schema


def test_training_range_of_float32_rows_is_stored_as_written(housing: tuple[Schema, np.ndarray]) -> None:
    schema, X = housing
    f = schema.feature("transit_distance")
    assert f.train_min == 0.1 and f.train_max == 7.2  # not 0.10000000149011612
    assert schema.validate(X.astype(np.float64)).ok


def test_inference_from_dtypes_and_missing_values() -> None:
    frame = pl.DataFrame({
        "flag": pl.Series([True, False, True, None], dtype=pl.Boolean),
        "count": pl.Series([1, 5, 9, 1000], dtype=pl.Int64),
        "ratio": [0.5, 1.5, None, 2.0],
        "whole_floats": [1.0, 2.0, 1.0, 2.0],
        "few_rows_whole": [10.0, 20.0, 30.0, 40.0],
    })
    X = frame.cast(pl.Float64).to_numpy()
    schema = infer_schema(X, frame.columns, [str(d) for d in frame.dtypes])
    flag, count, ratio, whole, unique = schema.features
    assert (flag.type, flag.min, flag.max, flag.integer, flag.allow_missing) == ("boolean", 0.0, 1.0, True, True)
    assert (count.type, count.integer, count.min, count.max) == ("integer", True, None, None)  # by dtype
    assert (ratio.type, ratio.allow_missing, ratio.train_min, ratio.train_max) == ("float", True, 0.5, 2.0)
    assert whole.type == "integer"  # whole and repeated
    assert unique.type == "float"  # whole but every value distinct: not evidently discrete
    not_missing = np.zeros(X.shape, dtype=bool)
    not_missing[2, 2] = True  # that NaN was a string, reported as not_a_number, not a missing value
    assert not infer_schema(X, frame.columns, [str(d) for d in frame.dtypes], not_missing=not_missing).features[2] \
        .allow_missing


def test_inference_without_finite_values_and_bad_shapes() -> None:
    schema = infer_schema(np.full((3, 1), np.nan), ["empty"], ["Float64"])
    assert schema.features[0].train_min is None and schema.features[0].allow_missing
    assert schema.validate(np.array([[1e9]])).ok  # nothing to compare with
    with pytest.raises(InvalidInput, match="shape"):
        infer_schema(np.zeros((3, 2)), ["a"], ["Float64"])
    with pytest.raises(InvalidInput, match="dtypes"):
        infer_schema(np.zeros((3, 1)), ["a"], [])


def test_with_training_range(housing: tuple[Schema, np.ndarray]) -> None:
    schema, X = housing
    kept = X[X[:, 2] <= 4]
    narrowed = schema.with_training_range(kept)
    assert narrowed.feature("bedrooms").train_max == 4.0 and narrowed.rows == len(kept)
    assert narrowed.feature("bedrooms").type == "integer"


# --------------------------------------------------------------------------- overrides


OVERRIDES_YAML = """
bedrooms: {min: 0, integer: true}
garage_area: {min: 0, max: 500}
condition: {type: categorical, categories: [1, 2, 3, 4, 5]}
lot_area: {allow_missing: true}
living_area: {max: 1000.5}
policy:
  above_training_range: off
  below_training_range: reject
"""


def test_overrides_from_yaml(tmp_path: Path, housing: tuple[Schema, np.ndarray]) -> None:
    schema, X = housing
    path = tmp_path / "schema.yaml"
    path.write_text(OVERRIDES_YAML)
    changed = apply_overrides(schema, load_overrides(path))
    bedrooms = changed.feature("bedrooms")
    assert (bedrooms.min, bedrooms.max, bedrooms.integer, bedrooms.type) == (0.0, None, True, "integer")
    garage = changed.feature("garage_area")
    assert (garage.min, garage.max, garage.type) == (0.0, 500.0, "float")
    condition = changed.feature("condition")
    assert (condition.type, condition.categories, condition.integer) == ("categorical", (1, 2, 3, 4, 5), True)
    assert changed.feature("lot_area").allow_missing
    assert changed.feature("living_area").max == 1000.5
    assert changed.policy.above_training_range == "off"  # YAML's bare `off` is False: read as "off"
    assert changed.policy.below_training_range == "reject"
    assert changed.feature("stories") == schema.feature("stories")  # untouched
    assert changed.validate(X).ok

    bad = X[:3].copy()
    bad[0, 2] = -8  # bedrooms
    bad[1, 8] = 0  # condition: not a known category
    bad[2, 5] = 600  # garage_area
    result = changed.validate(bad)
    assert [result.first_violation(r).message() for r in range(3)] == [
        "row 0, feature 'bedrooms': value -8 is below the minimum 0",
        "row 1, feature 'condition': value 0 is not a known category (known: 1, 2, 3, 4, 5)",
        "row 2, feature 'garage_area': value 600 is above the maximum 500",
    ]


def test_override_type_changes(housing: tuple[Schema, np.ndarray]) -> None:
    schema, _ = housing
    s = apply_overrides(schema, {
        "has_basement": {"type": "boolean"},
        "year_built": {"integer": False},
        "lot_area": {"integer": True, "min": 0},
        "stories": {"type": "categorical"},  # codes 0..train_max, the profile's convention
    })
    assert (s.feature("has_basement").type, s.feature("has_basement").min, s.feature("has_basement").max) == \
        ("boolean", 0.0, 1.0)
    assert (s.feature("year_built").type, s.feature("year_built").integer) == ("float", False)
    assert (s.feature("lot_area").type, s.feature("lot_area").integer, s.feature("lot_area").min) == \
        ("integer", True, 0.0)
    assert s.feature("stories").categories == (0, 1, 2, 3)
    back = apply_overrides(s, {"has_basement": {"type": "integer"}})  # leaving boolean drops its 0/1 limits
    assert (back.feature("has_basement").min, back.feature("has_basement").max) == (None, None)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"bedroms": {"min": 0}}, "unknown feature 'bedroms'"),
    ({"bedrooms": {"minimum": 0}}, r"feature 'bedrooms': unknown keys \['minimum'\]"),
    ({"bedrooms": {"type": "int"}}, "type must be one of"),
    ({"bedrooms": {"min": "zero"}}, "min must be a finite number"),
    ({"bedrooms": {"min": True}}, "min must be a finite number"),
    ({"bedrooms": {"min": float("nan")}}, "min must be a finite number"),
    ({"bedrooms": {"min": 5, "max": 2}}, "min 5 is above max 2"),
    ({"bedrooms": {"integer": "yes"}}, "integer must be true or false"),
    ({"bedrooms": {"allow_missing": 1}}, "allow_missing must be true or false"),
    ({"bedrooms": {"categories": [0, 1]}}, "categories need type: categorical"),
    ({"bedrooms": {"type": "categorical", "categories": [-1]}}, "categories must be integer codes"),
    ({"bedrooms": {"type": "categorical", "categories": []}}, "non-empty list"),
    ({"bedrooms": {"type": "boolean", "max": 2}}, "boolean feature has min 0 and max 1"),
    ({"bedrooms": {"type": "categorical", "integer": False}}, "always whole"),
    ({"bedrooms": {"type": "float", "integer": True}}, "use type integer"),
    ({"bedrooms": 3}, "expected a mapping"),
    ({"living_area": {"type": "categorical"}}, "not codes 0..K-1"),
    ({"policy": {"missing": "ignore"}}, "policy: missing must be one of reject, flag, off"),
    ({"policy": {"too_big": "flag"}}, r"unknown constraint kinds \['too_big'\]"),
])
def test_override_errors(housing: tuple[Schema, np.ndarray], overrides: dict, message: str) -> None:
    schema, _ = housing
    with pytest.raises(InvalidInput, match=message):
        apply_overrides(schema, overrides)


def test_load_overrides_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        load_overrides(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("bedrooms: {min: 0\n")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_overrides(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- bedrooms\n")
    with pytest.raises(InvalidInput, match="mapping"):
        load_overrides(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_overrides(tmp_path / "empty.yaml") == {}
    (tmp_path / "o.json").write_text(json.dumps({"bedrooms": {"min": 0}}))
    assert load_overrides(tmp_path / "o.json") == {"bedrooms": {"min": 0}}


# --------------------------------------------------------------------------- policy


def test_policy_defaults_and_overrides() -> None:
    assert Policy().to_dict() == {
        "missing": "reject", "below_min": "reject", "above_max": "reject", "not_integer": "reject",
        "unknown_category": "reject", "below_training_range": "flag", "above_training_range": "flag",
        "not_a_number": "reject", "infinite": "reject", "inferred_limits": "flag",
    }
    p = Policy().with_overrides({"missing": "flag", "above_training_range": False})
    assert (p.missing, p.above_training_range, p.below_min) == ("flag", "off", "reject")
    assert Policy.from_dict(p.to_dict()) == p
    with pytest.raises(InvalidInput):
        Policy(missing="drop")


def test_schema_arrays_follow_the_policy(housing: tuple[Schema, np.ndarray]) -> None:
    schema, X = housing
    row = X[:1].copy()
    row[0, 0] = 1e6  # living_area far above the training range
    assert schema.validate(row).flagged_rows.tolist() == [True]
    strict = Policy(above_training_range="reject")
    assert schema.validate(row, strict).rejected_rows.tolist() == [True]
    assert schema.validate(row, Policy(above_training_range="off")).ok
    assert schema.arrays() is schema.arrays()  # the schema's own policy is compiled once
    assert schema.with_policy(strict).validate(row).rejected_rows.tolist() == [True]


# --------------------------------------------------------------------------- JSON


def test_json_round_trip(tmp_path: Path, housing: tuple[Schema, np.ndarray]) -> None:
    schema, _ = housing
    path = tmp_path / "o.yaml"
    path.write_text(OVERRIDES_YAML)
    schema = apply_overrides(schema, load_overrides(path))
    text = schema.to_json()
    body = json.loads(text)
    assert body["format"] == 2 and body["rows"] == 2000
    assert body["features"][2] == {
        "name": "bedrooms", "type": "integer", "dtype": "Float64", "allow_missing": False, "allow_infinite": False,
        "min": 0.0, "max": None, "integer": True, "declared": ["min", "integer"], "train_min": 1.0, "train_max": 8.0,
    }
    assert body["features"][3]["declared"] == []  # bathrooms: whole, inferred
    assert body["features"][8]["categories"] == [1, 2, 3, 4, 5]
    assert body["policy"]["above_training_range"] == "off"
    back = Schema.from_json(text)
    assert back == schema
    assert Schema.from_json(back.to_json()).to_json() == text


def test_readers_refuse_unknown_formats_and_malformed_schemas(housing: tuple[Schema, np.ndarray]) -> None:
    schema, _ = housing
    body = schema.to_dict()
    with pytest.raises(CorruptArtifact, match="format 3"):
        Schema.from_dict({**body, "format": 3})
    with pytest.raises(CorruptArtifact, match="format None"):
        Schema.from_dict({k: v for k, v in body.items() if k != "format"})
    with pytest.raises(CorruptArtifact, match="JSON object"):
        Schema.from_json("[]")
    with pytest.raises(CorruptArtifact, match="not valid JSON"):
        Schema.from_json('{"format": 1, "features": [{"name": "a", "train_min": NaN}]}')
    broken = json.loads(json.dumps(body))
    broken["features"][0]["type"] = "decimal"
    with pytest.raises(CorruptArtifact, match="living_area"):
        Schema.from_dict(broken)
    broken = json.loads(json.dumps(body))
    broken["features"][1]["colour"] = "red"
    with pytest.raises(CorruptArtifact, match="unknown keys"):
        Schema.from_dict(broken)
    broken = json.loads(json.dumps(body))
    broken["policy"]["missing"] = "shrug"
    with pytest.raises(CorruptArtifact, match="missing"):
        Schema.from_dict(broken)
    broken = json.loads(json.dumps(body))
    del broken["features"]
    with pytest.raises(CorruptArtifact, match="features"):
        Schema.from_dict(broken)


def test_feature_schema_invariants() -> None:
    with pytest.raises(InvalidInput, match="unique"):
        Schema(features=(FeatureSchema("a"), FeatureSchema("a")))
    with pytest.raises(InvalidInput, match="integer: true"):
        FeatureSchema("a", type="integer")
    with pytest.raises(InvalidInput, match="categories"):
        FeatureSchema("a", type="categorical", integer=True)
    with pytest.raises(InvalidInput, match="train_min"):
        FeatureSchema("a", train_min=2.0, train_max=1.0)
    with pytest.raises(InvalidInput, match="finite"):
        FeatureSchema("a", max=float("inf"))


# --------------------------------------------------------------------------- declared and inferred limits


def test_inferred_limits_flag_and_declared_ones_refuse(housing: tuple[Schema, np.ndarray]) -> None:
    schema, X = housing
    assert schema.feature("bedrooms").inferred == ("integer",) and schema.feature("bedrooms").declared == ()
    row = X[:1].copy()
    row[0, 2] = 2.5  # bedrooms: whole in training, so the trainer inferred "whole"
    result = schema.validate(row)
    assert result.flagged_rows.tolist() == [True] and not result.any_rejected
    v = result.first_violation(0)
    assert (v.constraint, v.action, v.inferred) == ("not_integer", "flag", True)
    assert v.message() == ("row 0, feature 'bedrooms': value 2.5 is not a whole number "
                           "(a limit inferred from the training data)")
    assert result.count("bedrooms", "not_integer") == 1
    declared = apply_overrides(schema, {"bedrooms": {"integer": True}})  # the same limit, vouched for
    assert declared.feature("bedrooms").declared == ("integer",)
    v = declared.validate(row).first_violation(0)
    assert (v.action, v.inferred) == ("reject", False)
    assert v.message() == "row 0, feature 'bedrooms': value 2.5 is not a whole number"
    assert schema.accepted().validate(row).rejected_rows.tolist() == [True]
    assert schema.validate(row, Policy(inferred_limits="reject")).rejected_rows.tolist() == [True]
    assert schema.validate(row, Policy(inferred_limits="off")).ok  # 2.5 lies inside the training range 1..8
    assert schema.validate(row, Policy(not_integer="off")).ok  # the kind's own "off" holds for both


def test_random_floats_are_flagged_not_refused(housing: tuple[Schema, np.ndarray]) -> None:
    """perf_analyzer's default data: uniform floats in [0, 1) for every feature."""
    schema, _ = housing
    rows = np.random.default_rng(0).random((64, len(schema.features)), dtype=np.float32)
    result = schema.validate(rows)
    assert not result.any_rejected and result.flagged_rows.all()
    assert result.count("bedrooms", "not_integer") == 64
    assert result.count("living_area", "below_training_range") == 64
    assert schema.accepted().validate(rows).rejected_rows.all()  # what format 1 did to them


def test_boolean_columns_infer_their_limits_and_declared_types_declare_them() -> None:
    frame = pl.DataFrame({"flag": pl.Series([True, False, True], dtype=pl.Boolean), "n": [1.0, 2.0, 1.0]})
    schema = infer_schema(frame.cast(pl.Float64).to_numpy(), frame.columns, [str(d) for d in frame.dtypes])
    assert schema.feature("flag").inferred == ("min", "max", "integer")
    result = schema.validate(np.array([[2.0, 1.0], [0.5, 1.0]]))
    assert result.flagged_rows.tolist() == [True, True] and not result.any_rejected
    s = apply_overrides(schema, {"flag": {"type": "boolean"}, "n": {"type": "categorical", "categories": [1, 2]}})
    assert s.feature("flag").declared == ("min", "max", "integer")
    assert s.feature("n").declared == ("integer", "categories")
    assert s.validate(np.array([[2.0, 1.0], [1.0, 3.0]])).rejected_rows.tolist() == [True, True]
    s = apply_overrides(s, {"flag": {"type": "integer", "min": None}, "n": {"type": "float", "max": 5}})
    assert s.feature("flag").declared == ("integer",)  # leaving boolean drops the 0/1 limits
    assert (s.feature("n").declared, s.feature("n").limits) == (("max",), ("max",))


def test_infinite_values_are_refused_unless_allowed(housing: tuple[Schema, np.ndarray]) -> None:
    schema, X = housing
    rows = X[:3].copy()
    rows[0, 0] = np.inf  # living_area: a float with no hard limits; before format 2 it was only flagged
    rows[1, 2] = -np.inf  # bedrooms
    rows[2, 5] = np.nan  # garage_area: training had no missing values
    result = schema.validate(rows)
    assert result.rejected_rows.tolist() == [True, True, True]
    assert [result.first_violation(r).constraint for r in range(3)] == ["infinite", "infinite", "missing"]
    assert result.first_violation(0).message() == \
        "row 0, feature 'living_area': value inf is not finite and this feature does not allow infinite values"
    allowed = apply_overrides(schema, {"living_area": {"allow_infinite": True}})
    assert allowed.validate(rows[:1]).first_violation(0).constraint == "above_training_range"  # then flagged
    assert schema.validate(rows[:1], Policy(infinite="flag")).flagged_rows.tolist() == [True]
    # Data with infinite values allows them, as data with missing values allows those.
    inferred = infer_schema(np.array([[1.0], [np.inf], [2.0]]), ["x"], ["Float64"])
    assert inferred.feature("x").allow_infinite and inferred.feature("x").train_max == 2.0


def test_format_1_is_read_with_every_limit_declared() -> None:
    """A schema.json written before format 2: its limits refused then, and still do."""
    text = json.dumps({
        "format": 1, "rows": 10,
        "features": [
            {"name": "bedrooms", "type": "integer", "dtype": "Float64", "allow_missing": False, "min": None,
             "max": None, "integer": True, "train_min": 1.0, "train_max": 8.0},
            {"name": "area", "type": "float", "dtype": "Float64", "allow_missing": False, "min": 0.0,
             "max": None, "integer": False, "train_min": 40.0, "train_max": 300.0},
        ],
        "policy": {"missing": "reject", "below_min": "reject", "above_max": "reject", "not_integer": "reject",
                   "unknown_category": "reject", "below_training_range": "flag", "above_training_range": "flag",
                   "not_a_number": "reject"},
    })
    schema = Schema.from_json(text)
    assert schema.format == 1
    assert [f.declared for f in schema.features] == [("integer",), ("min",)] and schema.inferred == {}
    assert not schema.features[0].allow_infinite and schema.policy == Policy()
    assert schema.validate(np.array([[2.5, 50.0]])).rejected_rows.tolist() == [True]
    assert json.loads(schema.to_json())["format"] == 2  # written as the current format
    assert Schema.from_json(schema.to_json()) == schema
    with pytest.raises(CorruptArtifact, match="unknown keys"):  # format 2's keys are not format 1's
        Schema.from_json(text.replace('"allow_missing": false, "min": 0.0', '"declared": [], "min": 0.0'))


def test_declared_must_name_limits_the_feature_has() -> None:
    with pytest.raises(InvalidInput, match="does not have: min"):
        FeatureSchema("a", declared=("min",))
    with pytest.raises(InvalidInput, match="declared must list"):
        FeatureSchema("a", min=0.0, declared=("minimum",))
    with pytest.raises(InvalidInput, match="declared must list"):
        FeatureSchema("a", type="integer", integer=True, min=0.0, declared=("integer", "min"))
    assert FeatureSchema("a", type="integer", integer=True, min=0.0).accepted().declared == ("min", "integer")
