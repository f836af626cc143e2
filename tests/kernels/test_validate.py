"""The validation kernel against a plain numpy/Python reference (the reference lives here)."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from driftline.kernels.validate import (
    BIT,
    INFERABLE_KINDS,
    INFERRED_BIT,
    KINDS,
    RANGE_KINDS,
    SchemaArrays,
    format_number,
    not_a_number_message,
    validate,
)

# --------------------------------------------------------------------------- the reference


def default_action(kind: str) -> str:
    return "flag" if kind in RANGE_KINDS else "reject"


STRENGTH = {"off": 0, "flag": 1, "reject": 2}


def action_of(kind: str, s: dict, actions: dict[str, str], inferred_action: str = "flag") -> str:
    """A kind's action for feature ``s``: an inferred limit's is at most ``inferred_action``."""
    action = actions.get(kind, default_action(kind))
    if kind in s["inferred"] and STRENGTH[inferred_action] < STRENGTH[action]:
        return inferred_action
    return action


def naive_value(v: float, s: dict, on: dict[str, bool], limit) -> set[str]:  # noqa: ANN001
    """The kinds one value fails, by the documented rules; an inferred limit's kind as ``kind + "*"``."""
    if math.isnan(v):
        return {"missing"} if on["missing"] and not s["allow_missing"] else set()
    if math.isinf(v) and on["infinite"] and not s["allow_infinite"]:
        return {"infinite"}
    kinds = set()
    lo, hi = limit(s["min"]), limit(s["max"])
    whole = math.isfinite(v) and v == math.floor(v)
    cats = s["categories"]
    if on["below_min"] and lo is not None and v < lo:
        kinds.add("below_min")
    if on["above_max"] and hi is not None and v > hi:
        kinds.add("above_max")
    if on["not_integer"] and s["integer"] and cats is None and not whole:
        kinds.add("not_integer")
    if on["unknown_category"] and cats is not None and not (whole and int(v) in cats):
        kinds.add("unknown_category")
    if kinds or cats is not None:  # a hard failure hides the training range; categories have none
        return {k + "*" if k in s["inferred"] else k for k in kinds}
    tlo, thi = limit(s["train_min"]), limit(s["train_max"])
    if on["below_training_range"] and tlo is not None and v < tlo:
        kinds.add("below_training_range")
    if on["above_training_range"] and thi is not None and v > thi:
        kinds.add("above_training_range")
    return kinds


def naive_bits(X: np.ndarray, spec: list[dict], actions: dict[str, str], inferred_action: str = "flag"
               ) -> np.ndarray:
    """uint32 [rows, features]: the bits of the kinds each value fails."""
    f32 = X.dtype == np.float32

    def limit(x: float | None) -> float | None:  # float32 batches compare with limits rounded to float32
        return None if x is None else (float(np.float32(x)) if f32 else float(x))

    def bit(kind: str) -> int:
        return INFERRED_BIT[kind[:-1]] if kind.endswith("*") else BIT[kind]

    out = np.zeros(X.shape, dtype=np.uint32)
    for f, s in enumerate(spec):
        on = {k: action_of(k, s, actions, inferred_action) != "off" for k in KINDS}
        for r in range(X.shape[0]):
            out[r, f] = sum(bit(k) for k in naive_value(float(X[r, f]), s, on, limit))
    return out


def rounded(x: float | None, dtype: type) -> float | None:
    """A limit as a batch of ``dtype`` meets it (see naive_bits)."""
    return None if x is None else float(np.asarray(x, dtype=dtype))


def compile_spec(spec: list[dict], actions: dict[str, str] | None = None, inferred_action: str = "flag"
                 ) -> SchemaArrays:
    return SchemaArrays.build(
        [s["name"] for s in spec], min=[s["min"] for s in spec], max=[s["max"] for s in spec],
        integer=[s["integer"] for s in spec], allow_missing=[s["allow_missing"] for s in spec],
        categories=[s["categories"] for s in spec], train_min=[s["train_min"] for s in spec],
        train_max=[s["train_max"] for s in spec], actions=actions or {},
        allow_infinite=[s["allow_infinite"] for s in spec], inferred=[s["inferred"] for s in spec],
        inferred_action=inferred_action,
    )


def feature(name: str, *, min=None, max=None, integer=False, allow_missing=False, categories=None,  # noqa: A002
            train_min=None, train_max=None, allow_infinite=False, inferred=()) -> dict:
    return dict(name=name, min=min, max=max, integer=integer, allow_missing=allow_missing, categories=categories,
                train_min=train_min, train_max=train_max, allow_infinite=allow_infinite, inferred=tuple(inferred))


HOUSING = [
    feature("living_area", min=0.0, train_min=45.0, train_max=358.3),
    feature("bedrooms", min=0.0, integer=True, train_min=1.0, train_max=8.0),
    feature("garage_area", min=0.0, max=500.0, train_min=0.0, train_max=46.5),
    feature("lot_area", allow_missing=True, train_min=154.0, train_max=4198.0),
    feature("district", categories=(0, 1, 2, 5), train_min=0.0, train_max=5.0),
    feature("year_built", integer=True, train_min=1890.0, train_max=2024.0),
    feature("notes", train_min=None, train_max=None, allow_infinite=True),
]


def valid_rows(rows: int, rng: np.random.Generator) -> np.ndarray:
    return np.column_stack([
        rng.uniform(45, 358.3, rows).round(1),
        rng.integers(1, 9, rows),
        rng.uniform(0, 46.5, rows).round(1),
        np.where(rng.random(rows) < 0.1, np.nan, rng.uniform(154, 4198, rows).round()),
        rng.choice([0, 1, 2, 5], rows),
        rng.integers(1890, 2025, rows),
        rng.normal(0, 1e6, rows),
    ])


def inject(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Violations of every kind, in random rows."""
    X = X.copy()
    n = len(X)
    pick = lambda k: rng.choice(n, k, replace=False)  # noqa: E731
    X[pick(5), 0] = np.nan  # missing
    X[pick(5), 1] = -8  # below_min
    X[pick(5), 2] = 612.5  # above_max
    X[pick(5), 1] = 2.5  # not_integer
    X[pick(5), 4] = 3  # unknown_category (a gap)
    X[pick(3), 4] = 7  # unknown_category (beyond)
    X[pick(3), 4] = 1.5  # unknown_category (fractional)
    X[pick(5), 0] = 20.0  # below_training_range
    X[pick(5), 5] = 2030  # above_training_range
    X[pick(2), 1] = -2.5  # below_min and not_integer
    X[pick(2), 5] = np.inf  # infinite only
    X[pick(2), 2] = -np.inf  # infinite only
    X[pick(2), 6] = np.inf  # allowed, no limits at all: valid
    return X


# --------------------------------------------------------------------------- kernel vs reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_matches_reference_on_injected_violations(dtype: type, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = inject(valid_rows(300, rng), rng).astype(dtype)
    arrays = compile_spec(HOUSING)
    result = validate(arrays, X)
    expected = naive_bits(X, HOUSING, {})
    expected_rows = np.bitwise_or.reduce(expected, axis=1)
    np.testing.assert_array_equal(result.row_mask, expected_rows)
    assert result.failed == np.count_nonzero(expected_rows)
    np.testing.assert_array_equal(result.failed_rows, np.flatnonzero(expected_rows))
    np.testing.assert_array_equal(result.detail, expected[expected_rows != 0])
    counts = np.stack([((expected >> k) & 1).sum(axis=0) for k in range(len(KINDS))], axis=1)
    np.testing.assert_array_equal(result.counts, counts)
    for kind in ("missing", "below_min", "above_max", "not_integer", "unknown_category",
                 "below_training_range", "above_training_range", "infinite"):
        assert (result.counts[:, KINDS.index(kind)] > 0).any(), kind
    assert result.count("district", "unknown_category") >= 3


def test_kernel_matches_reference_on_random_schemas_and_values() -> None:
    """Fuzz: random limits (some None), flags and policies, values with NaN, +-inf, fractions and limits."""
    rng = np.random.default_rng(42)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, 1e300, -1e300, 3.0, 7.0])
    for trial in range(40):
        n_features = int(rng.integers(1, 9))
        spec = []
        for f in range(n_features):
            lo, hi = sorted(rng.integers(-5, 10, 2).tolist())
            cats = tuple(sorted(set(rng.integers(0, 8, rng.integers(1, 5)).tolist()))) if rng.random() < 0.3 else None
            spec.append(feature(
                f"f{f}", min=float(lo) if rng.random() < 0.5 else None,
                max=float(hi) + 0.1 if rng.random() < 0.5 else None, integer=bool(rng.random() < 0.5),
                allow_missing=bool(rng.random() < 0.3), categories=cats,
                train_min=float(lo) + 0.3 if rng.random() < 0.7 else None,
                train_max=float(hi) - 0.2 if rng.random() < 0.7 else None,
                allow_infinite=bool(rng.random() < 0.3),
                inferred=[k for k in INFERABLE_KINDS if rng.random() < 0.4],
            ))
        actions = {k: str(rng.choice(["reject", "flag", "off"])) for k in KINDS if rng.random() < 0.3}
        inferred_action = str(rng.choice(["reject", "flag", "off"]))
        rows = int(rng.integers(1, 70))
        X = rng.integers(-8, 12, (rows, n_features)).astype(np.float64)
        fractional = rng.random(X.shape) < 0.2
        X[fractional] += 0.25
        special = rng.random(X.shape) < 0.1
        X[special] = rng.choice(specials, int(special.sum()))
        for dtype in (np.float64, np.float32):
            with np.errstate(over="ignore"):
                Xd = X.astype(dtype)  # 1e300 becomes inf in float32
            arrays = compile_spec(spec, actions, inferred_action)
            result = validate(arrays, Xd)
            expected = naive_bits(Xd, spec, actions, inferred_action)
            np.testing.assert_array_equal(result.row_mask, np.bitwise_or.reduce(expected, axis=1),
                                          err_msg=f"trial {trial} {dtype}")
            np.testing.assert_array_equal(result.detail, expected[np.bitwise_or.reduce(expected, axis=1) != 0])
            # A row is refused exactly when one of its values fails a limit whose action is reject.
            refused = [any(action_of(k.rstrip("*"), spec[f], actions, inferred_action) == "reject"
                           for f in range(n_features) for k in naive_value(float(Xd[r, f]), spec[f],
                           {q: action_of(q, spec[f], actions, inferred_action) != "off" for q in KINDS},
                           functools.partial(rounded, dtype=dtype)))
                       for r in range(rows)]
            assert result.rejected_rows.tolist() == refused, f"trial {trial} {dtype}"


def test_all_valid_batch_is_ok_and_cheap_to_ask_about() -> None:
    rng = np.random.default_rng(3)
    X = valid_rows(64, rng).astype(np.float32)
    result = validate(compile_spec(HOUSING), X)
    assert result.ok and result.failed == 0
    assert not result.rejected_rows.any() and not result.flagged_rows.any()
    assert result.first_violation() is None
    assert result.summary() == {"rows": 64, "failed_rows": 0, "rejected_rows": 0, "flagged_rows": 0, "features": {}}


def test_batch_conversions_and_shape_errors() -> None:
    arrays = compile_spec(HOUSING[:2])
    ints = np.array([[50, 3], [60, -1]])
    result = validate(arrays, ints)  # int64 -> float64
    assert result.X.dtype == np.float64 and result.rejected_rows.tolist() == [False, True]
    fortran = np.asfortranarray(np.array([[50.0, 3.0], [60.0, 2.5]], dtype=np.float32))
    assert validate(arrays, fortran).rejected_rows.tolist() == [False, True]
    swapped = np.array([[50.0, 3.0], [60.0, -1.0]], dtype=">f8")
    assert validate(arrays, swapped).rejected_rows.tolist() == [False, True]
    assert validate(arrays, np.empty((0, 2))).ok
    with pytest.raises(ValueError, match="3 features for a schema of 2"):
        validate(arrays, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="2-D"):
        validate(arrays, np.zeros(2))
    with pytest.raises(ValueError, match="numeric"):
        validate(arrays, np.array([["a", "b"]]))


def test_float32_batches_compare_with_limits_rounded_to_float32() -> None:
    spec = [feature("share", min=0.1, max=0.3, train_min=0.1, train_max=0.3)]
    arrays = compile_spec(spec)
    x32 = np.array([[0.1], [0.3], [np.nextafter(np.float32(0.3), np.float32(1))]], dtype=np.float32)
    assert validate(arrays, x32).rejected_rows.tolist() == [False, False, True]
    x64 = x32.astype(np.float64)  # float64 batches meet the limits as written: 0.3f = 0.30000001 > 0.3
    assert validate(arrays, x64).rejected_rows.tolist() == [False, True, True]
    assert validate(arrays, np.array([[0.1], [0.3]])).ok


# --------------------------------------------------------------------------- policy


def one_of_each() -> np.ndarray:
    """Row r breaks exactly one kind (rows 0..6 in KINDS order, not_a_number excluded); row 7 is valid."""
    good = [100.0, 3.0, 10.0, 500.0, 1.0, 2000.0, 0.0]
    X = np.array([good] * 8)
    X[0, 0] = np.nan  # missing
    X[1, 1] = -8  # below_min
    X[2, 2] = 612.5  # above_max
    X[3, 1] = 2.5  # not_integer
    X[4, 4] = 3  # unknown_category
    X[5, 0] = 20.0  # below_training_range
    X[6, 5] = 2030  # above_training_range
    return X


def test_default_policy_rejects_hard_kinds_and_flags_the_training_range() -> None:
    result = validate(compile_spec(HOUSING), one_of_each())
    assert result.rejected_rows.tolist() == [True] * 5 + [False] * 3
    assert result.flagged_rows.tolist() == [False] * 5 + [True, True, False]
    for r, kind in enumerate(KINDS[:7]):
        assert result.row_mask[r] == BIT[kind]
        assert result.first_violation(r).constraint == kind
        assert result.first_violation(r).action == ("flag" if kind in RANGE_KINDS else "reject")
    assert result.any_rejected


@pytest.mark.parametrize("kind", KINDS[:7])
@pytest.mark.parametrize("action", ["reject", "flag", "off"])
def test_policy_maps_each_kind(kind: str, action: str) -> None:
    result = validate(compile_spec(HOUSING, {kind: action}), one_of_each())
    r = KINDS.index(kind)
    # -8 bedrooms and a 612.5 m2 garage are also outside the training range, which flags them once the
    # hard limit is off; the other kinds' rows are valid once their kind is off
    falls_back = action == "off" and kind in ("below_min", "above_max")
    assert bool(result.rejected_rows[r]) == (action == "reject")
    assert bool(result.flagged_rows[r]) == (action == "flag" or falls_back)
    assert bool(result.row_mask[r] & BIT[kind]) == (action != "off")  # "off" is not checked at all
    assert (result.row_mask[r] != 0) == (action != "off" or falls_back)
    assert result.counts[:, r].sum() == (0 if action == "off" else 1)
    others = [i for i in range(7) if i != r]
    default = validate(compile_spec(HOUSING), one_of_each())
    np.testing.assert_array_equal(result.rejected_rows[others], default.rejected_rows[others])


def test_hard_limit_off_lets_the_training_range_flag_it() -> None:
    X = np.array([[100.0, -8.0, 10.0, 500.0, 1.0, 2000.0, 0.0]])
    assert validate(compile_spec(HOUSING), X).row_mask[0] == BIT["below_min"]  # no double report
    assert validate(compile_spec(HOUSING, {"below_min": "off"}), X).row_mask[0] == BIT["below_training_range"]


def test_flag_and_reject_in_one_row_counts_as_rejected() -> None:
    X = np.array([[20.0, -8.0, 10.0, 500.0, 1.0, 2000.0, 0.0]])
    result = validate(compile_spec(HOUSING), X)
    assert result.rejected_rows.tolist() == [True] and result.flagged_rows.tolist() == [False]
    assert result.first_violation(0).constraint == "below_min"  # the rejecting one, though a later feature
    assert [v.constraint for v in result.violations(0)] == ["below_training_range", "below_min"]


def test_bad_actions_and_categories_are_refused() -> None:
    with pytest.raises(ValueError, match="actions"):
        compile_spec(HOUSING, {"missing": "maybe"})
    with pytest.raises(ValueError, match="actions"):
        compile_spec(HOUSING, {"typo": "off"})
    with pytest.raises(ValueError, match="category codes"):
        compile_spec([feature("c", categories=(-1, 2))])


# --------------------------------------------------------------------------- messages


def test_first_violation_messages() -> None:
    result = validate(compile_spec(HOUSING), one_of_each(), row_offset=0)
    messages = [result.first_violation(r).message() for r in range(7)]
    assert messages == [
        "row 0, feature 'living_area': the value is missing and this feature does not allow missing values",
        "row 1, feature 'bedrooms': value -8 is below the minimum 0",
        "row 2, feature 'garage_area': value 612.5 is above the maximum 500",
        "row 3, feature 'bedrooms': value 2.5 is not a whole number",
        "row 4, feature 'district': value 3 is not a known category (known: 0, 1, 2, 5)",
        "row 5, feature 'living_area': value 20 is below the training range (smallest training value 45)",
        "row 6, feature 'year_built': value 2030 is above the training range (largest training value 2024)",
    ]
    v = result.first_violation(1)
    assert (v.row, v.feature, v.constraint, v.value, v.limit, v.column) == (1, "bedrooms", "below_min", -8.0, 0.0, 1)
    assert result.first_violation(7) is None
    assert result.first_violation().row == 0  # the first rejected row


def test_first_violation_prefers_rejected_rows_and_uses_the_offset() -> None:
    X = one_of_each()[[5, 7, 3]]  # flagged, valid, rejected
    result = validate(compile_spec(HOUSING), X, row_offset=100)
    v = result.first_violation()
    assert (v.row, v.constraint) == (102, "not_integer")
    assert v.message() == "row 102, feature 'bedrooms': value 2.5 is not a whole number"
    flagged_only = validate(compile_spec(HOUSING), one_of_each()[[7, 6]])
    assert flagged_only.first_violation().message().startswith("row 1, feature 'year_built': value 2030 is above")


def test_float32_values_print_as_sent() -> None:
    spec = [feature("living_area", max=300.0, train_min=45.2, train_max=299.9)]
    result = validate(compile_spec(spec), np.array([[115.3], [45.1], [300.7]], dtype=np.float32))
    assert result.first_violation(1).message() == \
        "row 1, feature 'living_area': value 45.1 is below the training range (smallest training value 45.2)"
    assert result.first_violation(2).message() == "row 2, feature 'living_area': value 300.7 is above the maximum 300"
    assert format_number(1e20) == "1e+20" and format_number(-8.0) == "-8" and format_number(np.nan) == "nan"


def test_not_a_number_cells() -> None:
    arrays = compile_spec(HOUSING)
    X = one_of_each()[[7, 7, 7]]
    X[1, 1] = np.nan
    X[2, 3] = np.nan  # lot_area allows missing values, but not strings
    cells = np.zeros(X.shape, dtype=bool)
    cells[1, 1] = cells[2, 3] = True
    result = validate(arrays, X, not_a_number=cells, raw={(1, 1): "abc"}, row_offset=10)
    assert result.row_mask.tolist() == [0, BIT["not_a_number"], BIT["not_a_number"]]
    assert result.rejected_rows.tolist() == [False, True, True]
    assert result.first_violation(1).message() == "row 11, feature 'bedrooms': 'abc' is not a number"
    assert result.first_violation(1).message() == not_a_number_message(11, "bedrooms", "abc")
    assert result.first_violation(2).message() == "row 12, feature 'lot_area': the value is not a number"
    assert result.count("bedrooms", "not_a_number") == 1 and result.count("bedrooms", "missing") == 0
    off = validate(compile_spec(HOUSING, {"not_a_number": "off"}), X, not_a_number=cells)
    assert off.row_mask.tolist() == [0, BIT["missing"], 0]  # then it is just a NaN
    with pytest.raises(ValueError, match="shape"):
        validate(arrays, X, not_a_number=cells[:1])


def test_summary_is_json_able_with_counts_and_examples() -> None:
    rng = np.random.default_rng(5)
    X = inject(valid_rows(200, rng), rng)
    result = validate(compile_spec(HOUSING), X)
    summary = result.summary(max_examples=2)
    json.dumps(summary, allow_nan=False)
    assert summary["rows"] == 200
    assert summary["rejected_rows"] == int(result.rejected_rows.sum())
    bedrooms = summary["features"]["bedrooms"]
    assert bedrooms["below_min"]["count"] == result.count("bedrooms", "below_min")
    assert bedrooms["below_min"]["action"] == "reject"
    example = bedrooms["below_min"]["examples"][0]
    assert example["limit"] == 0 and example["value"] < 0 and "below the minimum 0" in example["message"]
    assert len(bedrooms["not_integer"]["examples"]) == 2
    assert summary["features"]["living_area"]["missing"]["examples"][0]["value"] == "NaN"
    assert summary["features"]["district"]["unknown_category"]["examples"][0]["limit"] == [0, 1, 2, 5]
    assert "notes" not in summary["features"]


def test_validate_does_not_mutate_its_inputs() -> None:
    arrays = compile_spec(HOUSING)
    X = one_of_each()
    before = X.copy()
    validate(arrays, X)
    np.testing.assert_array_equal(X, before)
    with pytest.raises(ValueError):
        arrays.params[0, 0] = 1.0  # compiled arrays are read-only: shared by every batch


# --------------------------------------------------------------------------- inferred limits and infinities


def test_inferred_limits_set_their_own_bit_and_flag_at_most() -> None:
    spec = [feature("bedrooms", min=0.0, integer=True, train_min=1.0, train_max=8.0, inferred=("not_integer",))]
    X = np.array([[2.5], [-1.0], [-1.5], [3.0]])
    result = validate(compile_spec(spec), X)
    assert result.row_mask.tolist() == [INFERRED_BIT["not_integer"], BIT["below_min"],
                                        BIT["below_min"] | INFERRED_BIT["not_integer"], 0]
    assert result.flagged_rows.tolist() == [True, False, False, False]
    assert result.rejected_rows.tolist() == [False, True, True, False]  # the declared min still refuses
    v = result.first_violation(0)
    assert (v.constraint, v.action, v.inferred) == ("not_integer", "flag", True)
    assert [(v.constraint, v.inferred) for v in result.violations(2)] == [("below_min", False), ("not_integer", True)]
    assert result.count("bedrooms", "not_integer") == 2  # one kind, whichever bit
    assert result.arrays.action_at(0, "not_integer") == "flag" and result.arrays.action_at(0, "below_min") == "reject"
    strict = validate(compile_spec(spec, inferred_action="reject"), X)
    assert strict.rejected_rows.tolist() == [True, True, True, False]
    assert validate(compile_spec(spec, {"not_integer": "flag"}, inferred_action="reject"), X).flagged_rows[0]
    off = validate(compile_spec(spec, inferred_action="off"), X)  # inferred limits not checked at all
    assert off.row_mask.tolist() == [0, BIT["below_min"], BIT["below_min"], 0]
    with pytest.raises(ValueError, match="can be inferred"):
        compile_spec([feature("x", inferred=("missing",))])


def test_infinite_values_are_their_own_kind() -> None:
    spec = [feature("x"), feature("n", integer=True, allow_infinite=True)]  # no limits that inf could break
    X = np.array([[np.inf, 1.0], [1.0, np.inf], [-np.inf, -np.inf], [1.0, 2.0]])
    result = validate(compile_spec(spec), X)
    assert result.row_mask.tolist() == [BIT["infinite"], BIT["not_integer"], BIT["infinite"] | BIT["not_integer"], 0]
    assert result.rejected_rows.tolist() == [True, True, True, False]
    assert result.first_violation(0).message() == \
        "row 0, feature 'x': value inf is not finite and this feature does not allow infinite values"
    assert validate(compile_spec(spec, {"infinite": "off"}), X[:1]).ok
