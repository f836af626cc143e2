"""Data quality of training data and of files (``driftline validate``), with the server's validator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from driftline.errors import InvalidInput
from driftline.kernels.drift_stats import Thresholds
from driftline.kernels.validate import not_a_number_message
from driftline.registry.profile import build_profile
from driftline.registry.schema import Policy, Schema, apply_overrides, infer_schema
from driftline.trainer import synthetic
from driftline.trainer.data import split_columns
from driftline.trainer.validation import (
    check_file,
    feature_drift,
    non_numeric_cells,
    prepare_training_data,
    to_numeric,
    validate_training_data,
)

FEATURES = list(synthetic.FEATURES)
LIMITS = {"bedrooms": {"min": 0, "integer": True}, "garage_area": {"min": 0, "max": 500}}


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return synthetic.housing(2000, seed=0)


@pytest.fixture(scope="module")
def schema(frame: pl.DataFrame) -> Schema:
    data = split_columns(frame, synthetic.TARGET, FEATURES)
    return apply_overrides(infer_schema(data.X, data.features, data.dtypes), LIMITS)


def broken(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows 3 and 10: negative bedrooms; 4: 2.5 bedrooms; 7: no living area; 12: a 9000 m2 lot (flagged)."""
    bedrooms = frame["bedrooms"].to_numpy().copy()
    bedrooms[[3, 10]] = -8
    bedrooms[4] = 2.5
    living = frame["living_area"].to_numpy().copy()
    living[7] = np.nan
    lot = frame["lot_area"].to_numpy().copy()
    lot[12] = 9000.0
    return frame.with_columns(pl.Series("bedrooms", bedrooms), pl.Series("living_area", living),
                              pl.Series("lot_area", lot))


def test_clean_training_data(frame: pl.DataFrame, schema: Schema) -> None:
    report = validate_training_data(frame, FEATURES, schema)
    assert report.ok and report.clean and report.kept.all()
    assert report.format() == "data quality: 2000 rows, all valid"
    assert report.to_dict()["violations"] == {}


def test_invalid_training_rows(frame: pl.DataFrame, schema: Schema) -> None:
    report = validate_training_data(broken(frame), FEATURES, schema)
    assert report.counts == {
        "living_area": {"missing": 1},
        "lot_area": {"above_training_range": 1},
        "bedrooms": {"below_min": 2, "not_integer": 1},
    }
    assert report.rejected_rows == 4 and report.flagged_rows == 1
    assert np.flatnonzero(~report.kept).tolist() == [3, 4, 7, 10]
    assert not report.ok
    assert [(v.row, v.value) for v in report.examples["bedrooms"]["below_min"]] == [(3, -8.0), (10, -8.0)]

    body = report.to_dict()
    json.dumps(body, allow_nan=False)
    assert body["rows"] == 2000 and body["rejected_rows"] == 4 and body["flagged_rows"] == 1
    assert body["dropped_rows"] == 0
    assert body["violations"]["bedrooms"]["below_min"]["count"] == 2
    assert body["violations"]["bedrooms"]["below_min"]["action"] == "reject"
    assert body["violations"]["bedrooms"]["below_min"]["examples"][0]["message"] == \
        "row 3, feature 'bedrooms': value -8 is below the minimum 0"
    assert body["violations"]["lot_area"]["above_training_range"]["action"] == "flag"

    text = report.format()
    assert text.splitlines()[0] == "data quality: 2000 rows, 4 rejected, 1 flagged"
    assert "  bedrooms: below_min x2 (reject)" in text
    assert "    row 4, feature 'bedrooms': value 2.5 is not a whole number" in text
    assert "lot_area: above_training_range x1 (flag)" in text
    with pytest.raises(InvalidInput, match="--drop-invalid"):
        report.raise_if_rejected()


def test_drop_invalid_and_policy(frame: pl.DataFrame, schema: Schema) -> None:
    report = validate_training_data(broken(frame), FEATURES, schema, drop_invalid=True)
    assert report.to_dict()["dropped_rows"] == 4
    assert "4 rejected (dropped)" in report.format()
    report.raise_if_rejected()  # dropped: nothing to stop for
    assert report.kept.sum() == 1996
    lenient = validate_training_data(broken(frame), FEATURES, schema, Policy(missing="flag", not_integer="off"))
    assert np.flatnonzero(~lenient.kept).tolist() == [3, 10]
    assert lenient.flagged_rows == 2  # the missing living area and the big lot
    assert "not_integer" not in lenient.counts["bedrooms"]


def test_features_must_match_the_schema(frame: pl.DataFrame, schema: Schema) -> None:
    with pytest.raises(InvalidInput, match="schema's features"):
        validate_training_data(frame, FEATURES[:3], schema)
    with pytest.raises(InvalidInput, match="not in the data"):
        validate_training_data(frame.drop("bedrooms"), FEATURES, schema)


# --------------------------------------------------------------------------- strings in numeric columns


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def test_non_numeric_cells_of_a_column() -> None:
    column = pl.Series("x", ["1", " 2.5 ", "abc", None, "NA", "n/a", "", "1e3", "3,5", "nan"])
    values, bad = non_numeric_cells(column)
    assert bad.tolist() == [False, False, True, False, False, False, False, False, True, False]
    assert values[[0, 1, 7]].tolist() == [1.0, 2.5, 1000.0]
    assert np.isnan(values[[2, 3, 4, 5, 6, 8, 9]]).all()
    values, bad = non_numeric_cells(pl.Series("n", [1, None, 3]))
    assert not bad.any() and np.isnan(values[1])
    _, bad = non_numeric_cells(pl.Series("d", ["2020-01-01", None]).str.to_date())  # a date is not a number
    assert bad.tolist() == [True, False]


def test_a_string_in_a_numeric_csv_column_is_not_a_number(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "houses.csv", [
        "living_area,bedrooms,price",
        "100.5,3,500000",
        "80,abc,400000",
        "120,4,600000",
        "95,NA,450000",
        "70,two,300000",
    ])
    frame = pl.read_csv(path)
    assert frame["bedrooms"].dtype == pl.String
    numeric = to_numeric(frame, ["living_area", "bedrooms"])
    assert numeric.X.dtype == np.float32
    assert numeric.not_a_number[:, 1].tolist() == [False, True, False, False, True]
    assert numeric.raw == {(1, 1): "abc", (4, 1): "two"}

    prepared = prepare_training_data(frame, ["living_area", "bedrooms"], drop_invalid=True)
    report = prepared.report
    assert report.counts == {"bedrooms": {"not_a_number": 2}}
    assert [(v.row, v.text) for v in report.examples["bedrooms"]["not_a_number"]] == [(1, "abc"), (4, "two")]
    assert report.examples["bedrooms"]["not_a_number"][0].message() == \
        "row 1, feature 'bedrooms': 'abc' is not a number" == not_a_number_message(1, "bedrooms", "abc")
    assert report.to_dict()["violations"]["bedrooms"]["not_a_number"]["examples"][0]["value"] == "abc"
    assert prepared.kept.tolist() == [True, False, True, True, False]
    bedrooms = prepared.schema.feature("bedrooms")
    assert (bedrooms.dtype, bedrooms.type) == ("String", "float")  # two numbers are no evidence of anything
    assert bedrooms.allow_missing  # "NA" is a missing value, and training had it ...
    assert not prepared.schema.feature("living_area").allow_missing

    with pytest.raises(InvalidInput) as info:  # ... but strings never count as missing
        prepare_training_data(frame, ["living_area", "bedrooms"], overrides={"bedrooms": {"allow_missing": False}})
    message = str(info.value)
    assert "bedrooms: not_a_number x2 (reject)" in message
    assert "bedrooms: missing x1 (reject)" in message
    assert "row 1, feature 'bedrooms': 'abc' is not a number" in message


def test_prepare_training_data_records_the_range_of_the_kept_rows(frame: pl.DataFrame) -> None:
    prepared = prepare_training_data(broken(frame), FEATURES, overrides=LIMITS, drop_invalid=True)
    # the missing living area is allowed: the training data had missing values, so the schema allows them
    assert prepared.schema.feature("living_area").allow_missing
    assert prepared.report.counts["bedrooms"] == {"below_min": 2, "not_integer": 1}
    assert np.flatnonzero(~prepared.kept).tolist() == [3, 4, 10]
    bedrooms = prepared.schema.feature("bedrooms")
    assert (bedrooms.type, bedrooms.train_min) == ("integer", 1.0)  # the dropped -8 is not in the training range
    assert prepared.schema.rows == 1997
    assert prepared.schema.validate(prepared.numeric.X[prepared.kept]).ok
    with pytest.raises(InvalidInput, match="nothing is left"):
        prepare_training_data(frame.head(3), ["bedrooms"], overrides={"bedrooms": {"max": 0}}, drop_invalid=True)


# --------------------------------------------------------------------------- driftline validate


def test_check_file_with_profile(tmp_path: Path, frame: pl.DataFrame, schema: Schema) -> None:
    data = split_columns(frame, synthetic.TARGET, FEATURES)
    outputs = np.random.default_rng(0).normal(size=(len(data.X), 1))  # a model output column after the features
    profile = build_profile(np.column_stack([data.X, outputs]), [*FEATURES, "predict"])

    live = synthetic.housing(800, seed=1, shift="big_garages")
    bedrooms = live["bedrooms"].to_numpy().copy()
    bedrooms[5] = -1
    live = live.with_columns(pl.Series("bedrooms", bedrooms))
    path = tmp_path / "live.parquet"
    live.write_parquet(path)

    check = check_file(path, schema, profile=profile)
    report = check.report
    assert report.counts["bedrooms"] == {"below_min": 1}
    assert report.counts["garage_area"]["above_training_range"] > 700  # 60-150 m2 against at most 46.5
    assert report.rejected_rows == 1
    assert check.drifted == ["garage_area"]
    assert [d.name for d in check.drift] == FEATURES  # features only; "predict" is not in a data file
    assert check.drift[0].rows == 799  # the rejected row never reaches the monitor
    body = check.to_dict()
    json.dumps(body, allow_nan=False)
    assert body["drift"]["drifted"] == ["garage_area"]
    text = check.format()
    assert "row 5, feature 'bedrooms': value -1 is below the minimum 0" in text
    assert "drift: 1 feature(s) drifted (799 rows)" in text and "  garage_area: psi" in text

    small = check_file(path, schema, profile=profile, thresholds=Thresholds(min_rows=10_000))
    assert small.drifted == [] and "fewer than the 10000 a drift alarm needs" in small.format()
    no_profile = check_file(path, schema)
    assert no_profile.drift is None and "drift" not in no_profile.to_dict()


def test_check_file_errors(tmp_path: Path, schema: Schema, frame: pl.DataFrame) -> None:
    from driftline.errors import NotFound

    with pytest.raises(NotFound):
        check_file(tmp_path / "missing.csv", schema)
    path = tmp_path / "few.csv"
    frame.select(FEATURES[:3]).write_csv(path)
    with pytest.raises(InvalidInput, match="not in the data"):
        check_file(path, schema)
    data = split_columns(frame, synthetic.TARGET, FEATURES)
    other = build_profile(data.X[:, ::-1], FEATURES[::-1])
    with pytest.raises(InvalidInput, match="profile's first columns"):
        feature_drift(other, FEATURES, data.X)


def test_inferred_limits_flag_in_reports_and_declared_ones_reject(tmp_path: Path, frame: pl.DataFrame) -> None:
    """A file of fractional house counts: the inferred "whole" limits flag it, declared ones (LIMITS) reject."""
    inferred = prepare_training_data(frame, FEATURES).schema
    rows = np.random.default_rng(1).random((20, len(FEATURES)))
    path = tmp_path / "random.csv"
    pl.DataFrame(rows, schema=FEATURES).write_csv(path)

    report = check_file(path, inferred).report
    assert report.ok and report.rejected_rows == 0 and report.flagged_rows == 20
    assert report.counts["bedrooms"]["not_integer"] == 20
    assert report.action("bedrooms", "not_integer") == "flag" and report.inferred("bedrooms", "not_integer")
    assert not report.inferred("living_area", "below_training_range")
    text = report.format()
    assert "  bedrooms: not_integer x20 (flag, inferred limit)" in text
    assert "(a limit inferred from the training data)" in text
    body = report.to_dict()["violations"]["bedrooms"]["not_integer"]
    assert (body["action"], body["inferred"], body["examples"][0]["inferred"]) == ("flag", True, True)

    declared = check_file(path, apply_overrides(inferred, LIMITS)).report  # bedrooms: {min: 0, integer: true}
    assert declared.rejected_rows == 20 and declared.action("bedrooms", "not_integer") == "reject"
    assert "  bedrooms: not_integer x20 (reject)" in declared.format()
    assert declared.action("stories", "not_integer") == "flag"  # still inferred
