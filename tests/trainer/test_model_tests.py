"""Issue 16, "model tests as code": a tests.yaml run on the exported ONNX model gates the publish.

The data is made here, so the relation each test looks for is known: the price rises with the area (or falls,
inverted), and one district's prices can be noise. A district column of strings makes the model a mixed table
(one ONNX input per column); without it the model takes one float tensor: both feeds are tested.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from driftline.errors import InvalidInput
from driftline.registry import Registry
from driftline.trainer.model_tests import TestsFailed
from driftline.trainer.model_tests_file import parse
from driftline.trainer.train import TrainConfig, train
from helpers import driftline, published_version

MONOTONE = """
price rises with area:
  kind: monotone
  column: area
  direction: increasing
  tolerance: 1%
"""
SLICE = """
every district:
  kind: slice
  column: district
  margin: 0.15
  min_rows: 20
"""
MINIMUM = """
small flat is cheap:
  kind: minimum
  rows:
    - {area: 40, rooms: 1}
  expect: {min: 50000, max: 450000}
"""
INVARIANT = """
district does not move a price much:
  kind: invariance
  column: district
  values: [A, B, C, D]
  tolerance: 15%
"""


def listings(path: Path, rows: int = 1200, *, inverted: bool = False, noisy: str | None = None,
             district: bool = True, seed: int = 0) -> Path:
    """Prices from area and rooms; ``inverted``: falling with the area; ``noisy``: that district's prices shuffled."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(30, 200, rows)
    rooms = rng.integers(1, 6, rows).astype(float)
    districts = rng.choice(list("ABCD"), rows)
    price = 4000 * (230 - area if inverted else area) + 20000 * rooms + rng.normal(0, 40000, rows)
    if noisy is not None:
        inside = districts == noisy
        price[inside] = rng.permutation(price[inside])
    frame = pl.DataFrame({"area": area, "rooms": rooms, "district": districts, "price": price})
    (frame if district else frame.drop("district")).write_parquet(path)
    return path


def write_tests(tmp_path: Path, *parts: str, name: str = "tests.yaml") -> Path:
    path = tmp_path / name
    path.write_text("# what a price model must do\n" + "".join(parts))
    return path


def train_cli(registry: Path, data: Path, tests: Path | None, *extra: str, check: bool = False):
    args = ["train", "m", "--registry", str(registry), "--data", str(data), "--target", "price",
            "--param", "n_estimators=60", *extra]
    return driftline(*args, *(["--tests", str(tests)] if tests else []), check=check)


def test_a_price_rising_with_area_passes_the_monotone_test_and_an_inverted_one_is_refused(tmp_path: Path):
    registry = tmp_path / "registry"
    tests = write_tests(tmp_path, MONOTONE, SLICE)
    good = train_cli(registry, listings(tmp_path / "good.parquet"), tests, check=True)
    assert "model tests (" in good.stdout and "2 of 2 passed" in good.stdout, good.stdout
    meta = Registry(registry).open("m", published_version(good)).metadata
    record = meta.extra["model_tests"]
    assert record["failed"] == [] and record["overridden"] is False and record["file"] == "tests.yaml"
    monotone = next(c for c in record["cases"] if c["kind"] == "monotone")
    assert monotone["passed"] and monotone["failing_rows"] == 0 and monotone["median_change"] > 0
    assert len(monotone["grid"]) >= 5 and monotone["rows"] == 100

    refused = train_cli(registry, listings(tmp_path / "inverted.parquet", inverted=True), tests)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    found = re.search(r"model test 'price rises with area' failed: prediction is not non-decreasing in area for "
                      r"(\d+) of 100 rows: the worst step, area \S+ -> \S+, moves it (-[\d,.e+]+)", refused.stderr)
    assert found, refused.stderr
    assert int(found.group(1)) > 90
    assert "nothing was published" in refused.stderr and "--allow tests" in refused.stderr
    assert "every district" not in refused.stderr  # only what failed is named
    assert Registry(registry).versions("m") == [1]


def test_a_district_whose_prices_are_noise_fails_the_slice_metric_by_name(tmp_path: Path):
    registry = tmp_path / "registry"
    refused = train_cli(registry, listings(tmp_path / "noisy.parquet", noisy="C"), write_tests(tmp_path, SLICE))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    found = re.search(r"model test 'every district' failed: district=C: r2 (-?[\d.e+-]+) on (\d+) rows; needs "
                      r"r2 >= ([\d.]+) \(overall ([\d.]+), margin 0\.15\)", refused.stderr)
    assert found, refused.stderr
    slice_r2, bound, overall = float(found.group(1)), float(found.group(3)), float(found.group(4))
    assert slice_r2 < bound == pytest.approx(overall - 0.15, abs=1e-3)
    assert "district=A" not in refused.stderr and "district=B" not in refused.stderr
    assert Registry(registry).versions("m") == []


def test_slices_of_a_number_column_on_a_one_tensor_model(tmp_path: Path):
    """No string column: the model takes one float tensor; slices cut the area into buckets."""
    data = listings(tmp_path / "numbers.parquet", district=False)
    tests = parse("""
by area:
  kind: slice
  column: area
  bins: [80, 140]
  metric: mae
  margin: 60%
by rooms:
  kind: slice
  column: rooms
  margin: 0.3
""", "inline")
    trained = train(TrainConfig(model="m", data=str(data), target="price", params={"n_estimators": 60}, tests=tests))
    assert "table" not in trained.metadata.extra  # the one-tensor path
    by_area, by_rooms = trained.metadata.extra["model_tests"]["cases"]
    assert [s["slice"] for s in by_area["slices"]] == ["< 80", "80 to 140", ">= 140"]
    assert sum(s["rows"] for s in by_area["slices"]) == trained.metadata.extra["holdout_rows"]
    assert by_area["higher_is_better"] is False and by_area["bound"] == pytest.approx(by_area["overall"] * 1.6)
    assert by_area["overall"] == pytest.approx(trained.metadata.metrics["mae"], rel=1e-4)  # ONNX = sklearn here
    assert [s["slice"] for s in by_rooms["slices"]] == ["1", "2", "3", "4", "5"]  # few values: one slice each


def test_minimum_and_invariance_cases_pass_and_fail_with_their_numbers(tmp_path: Path):
    data = listings(tmp_path / "good.parquet")
    config = {"model": "m", "data": str(data), "target": "price", "params": {"n_estimators": 60}}
    ok = train(TrainConfig(**config, tests=parse(MINIMUM + INVARIANT, "ok.yaml")))
    minimum, invariance = ok.metadata.extra["model_tests"]["cases"]
    assert minimum["passed"] and 50000 <= minimum["predicted"][0] <= 450000
    assert invariance["passed"] and invariance["failing_rows"] == 0 and invariance["rows"] == 100

    strict = """
tiny flat is free:
  kind: minimum
  rows: [{area: 35, rooms: 1, district: B}, {area: 190}]
  expect: {max: 1000}
area does not matter:
  kind: invariance
  column: area
  values: [40, 180]
  rows: 20
  tolerance: 1000
"""
    with pytest.raises(TestsFailed) as refused:
        train(TrainConfig(**config, tests=parse(strict, "strict.yaml")))
    message = str(refused.value)
    assert re.search(r"'tiny flat is free' failed: 2 of 2 row\(s\) outside \[-inf, 1,000\]: row 0 predicted [\d,]+",
                     message), message
    assert re.search(r"'area does not matter' failed: setting area to \[40, 180\] moved the prediction of 20 of 20 "
                     r"rows by more than 1,000; largest move [\d,]+", message), message
    cases = {c["name"]: c for c in refused.value.results["cases"]}
    assert cases["area does not matter"]["largest_change"] > 300_000  # 140 m2 x 4000 PLN, roughly


def test_max_failing_lets_a_share_of_rows_break_an_expectation_and_no_more(tmp_path: Path):
    """In district D the price falls with the area: a quarter of the rows break "rises with area"."""
    path = listings(tmp_path / "mixed.parquet", rows=2000)
    frame = pl.read_parquet(path)
    frame.with_columns(price=pl.when(pl.col("district") == "D").then(1_000_000 - pl.col("price"))
                       .otherwise(pl.col("price"))).write_parquet(path)
    config = {"model": "m", "data": str(path), "target": "price", "params": {"n_estimators": 60}}
    rule = "rises:\n  kind: monotone\n  column: area\n  tolerance: 1%\n  rows: 200\n  max_failing: {}\n"
    lenient = train(TrainConfig(**config, tests=parse(rule.format("35%"), "lenient.yaml")))
    case = lenient.metadata.extra["model_tests"]["cases"][0]
    assert case["passed"] and case["allowed_failing_rows"] == 70
    assert 30 <= case["failing_rows"] <= 70  # district D's rows, about a quarter
    assert f"for {200 - case['failing_rows']} of 200 rows (at most 70 may not be)" in case["summary"]
    with pytest.raises(TestsFailed, match=rf"for {case['failing_rows']} of 200 rows \(at most 20 allowed\)"):
        train(TrainConfig(**config, tests=parse(rule.format(0.1), "strict.yaml")))


def test_a_classifier_is_tested_on_its_labels_and_class_probabilities(tmp_path: Path):
    path = listings(tmp_path / "good.parquet", district=False)
    frame = pl.read_parquet(path)
    frame.with_columns(expensive=pl.when(pl.col("price") > pl.col("price").median()).then(pl.lit("yes"))
                       .otherwise(pl.lit("no"))).drop("price").write_parquet(path)
    tests = parse("""
big is expensive: {kind: minimum, rows: [{area: 190, rooms: 5}], expect: {label: "yes"}}
more area, more likely expensive: {kind: monotone, column: area, class: "yes", tolerance: 0.05, rows: 50}
accuracy per rooms: {kind: slice, column: rooms, margin: 0.2}
""", "classes.yaml")
    trained = train(TrainConfig(model="m", data=str(path), target="expensive", params={"n_estimators": 40},
                                tests=tests))
    minimum, monotone, slices = trained.metadata.extra["model_tests"]["cases"]
    assert minimum["passed"] and minimum["predicted"] == ["yes"]
    assert monotone["passed"] and monotone["median_change"] > 0.5  # probability of "yes" from ~0 to ~1
    assert slices["metric"] == "accuracy" and slices["overall"] == pytest.approx(trained.metadata.metrics["accuracy"])


def test_allow_tests_publishes_records_the_override_and_a_non_gating_test_never_refuses(tmp_path: Path):
    registry = tmp_path / "registry"
    data = listings(tmp_path / "inverted.parquet", inverted=True)
    warn_only = "cheap flats, advisory:\n  kind: minimum\n  rows: [{area: 40}]\n  expect: {max: 400000}\n  gate: false\n"
    tests = write_tests(tmp_path, MONOTONE, warn_only)
    allowed = train_cli(registry, data, tests, "--allow", "tests", check=True)
    assert "failed but allowed (--allow tests): price rises with area" in allowed.stdout, allowed.stdout
    version = published_version(allowed)
    record = Registry(registry).open("m", version).metadata.extra["model_tests"]
    assert record["overridden"] is True and record["failed"] == ["price rises with area"]
    assert record["warnings"] == ["cheap flats, advisory"]  # failed, recorded, never a gate

    shown = driftline("models", "show", "m", str(version), "--registry", str(registry))
    assert "overrides    model test(s) price rises with area failed, published with --allow tests" in shown.stdout
    assert "failed, gate: false" in shown.stdout
    card = Registry(registry).open("m", version).read("MODEL_CARD.md").decode()
    assert "- model test(s) price rises with area failed, published with --allow tests" in card
    assert "| cheap flats, advisory | minimum | failed (gate: false) |" in card

    # Without --allow only the gating test refuses.
    advisory_only = write_tests(tmp_path, warn_only, name="advisory.yaml")
    passed = train_cli(registry, data, advisory_only, check=True)
    assert "0 of 1 passed" in passed.stdout
    assert Registry(registry).versions("m") == [1, 2]


def test_retrain_runs_the_production_versions_tests_on_the_candidate(tmp_path: Path):
    registry = tmp_path / "registry"
    tests = write_tests(tmp_path, MONOTONE)
    v1 = published_version(train_cli(registry, listings(tmp_path / "v1.parquet", district=False), tests, check=True))
    driftline("promote", "m", str(v1), "--registry", str(registry))
    stored = Registry(registry).open("m", v1)
    assert stored.read("tests.yaml").decode() == tests.read_text()  # the file as written, comments and all

    inverted = listings(tmp_path / "inverted.parquet", district=False, inverted=True, seed=1)
    refused = driftline("retrain", "m", "--registry", str(registry), "--data", str(inverted), check=False)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "refused: model test 'price rises with area' failed" in refused.stdout
    assert Registry(registry).versions("m") == [v1]

    fresh = listings(tmp_path / "fresh.parquet", district=False, seed=2)
    published = driftline("retrain", "m", "--registry", str(registry), "--data", str(fresh), check=True)
    assert "m: model tests (m version 1's tests.yaml): 1 of 1 passed" in published.stdout, published.stdout
    v2 = Registry(registry).open("m", v1 + 1)
    assert v2.read("tests.yaml") == stored.read("tests.yaml")  # carried forward for the next retrain
    assert v2.metadata.extra["model_tests"]["failed"] == []
    assert "retrained from version 1" in v2.read("MODEL_CARD.md").decode()

    # A retrained version is retrained in turn, with the same tests (it used to be refused as "imported").
    driftline("promote", "m", str(v2.version), "--registry", str(registry))
    again = driftline("retrain", "m", "--registry", str(registry), "--data", str(inverted), check=False)
    assert again.returncode == 3 and "m version 2's tests.yaml" in again.stdout + again.stderr, again.stdout
    allowed = driftline("retrain", "m", "--registry", str(registry), "--data", str(inverted), "--allow", "tests",
                        "--tolerance", "1", check=True)
    assert "failed but allowed (--allow tests): price rises with area" in allowed.stdout, allowed.stdout
    assert Registry(registry).open("m", 3).metadata.extra["model_tests"]["overridden"] is True


def test_models_show_version_prints_every_gate_and_the_card_is_in_the_manifest(tmp_path: Path):
    registry = tmp_path / "registry"
    result = train_cli(registry, listings(tmp_path / "good.parquet"), write_tests(tmp_path, MONOTONE, SLICE, MINIMUM),
                       check=True)
    version = published_version(result)
    shown = driftline("models", "show", "m", str(version), "--registry", str(registry)).stdout
    assert re.search(r"fit fuses    none blown: holdout r2 0\.\d{4}, training rows 0\.\d{4}", shown), shown
    assert "leakage      none flagged" in shown
    assert "model tests (" in shown and "3 of 3 passed" in shown
    assert re.search(r"every district: r2 per district, overall 0\.\d+, each slice >= 0\.\d+", shown), shown
    for district in "ABCD":
        assert re.search(rf"\n\s+{district}\s+\d+ rows\s+0\.\d+\s+ok", shown), shown
    assert "overrides    none" in shown and "MODEL_CARD.md" in shown
    everything = driftline("models", "show", "m", "--registry", str(registry)).stdout
    assert "model tests" not in everything and f"version {version}" in everything  # without VERSION: as before

    stored = Registry(registry).open("m", version)
    manifest = json.loads((registry / "m" / str(version) / "manifest.json").read_text())
    for name in ("MODEL_CARD.md", "card_features.png", "card_slices.png", "tests.yaml"):
        assert name in manifest["files"] and name in stored.checksums
    card = stored.read("MODEL_CARD.md").decode()  # read() checks its sha256 against the manifest
    meta = stored.metadata
    for expected in (meta.data_version, meta.code_version, "## Fit fuses", "## Model tests", "## Slice metrics",
                     "| price rises with area | monotone | passed |", "](card_features.png)", "](card_slices.png)",
                     f"| r2 | {meta.metrics['r2']:.4g} |"):
        assert expected in card, expected
    for plot in ("card_features.png", "card_slices.png"):
        png = stored.read(plot)
        assert png.startswith(b"\x89PNG") and 2_000 < len(png) < 100_000


def test_a_wrong_tests_file_is_refused_and_nothing_is_published(tmp_path: Path):
    data = listings(tmp_path / "good.parquet")
    for text, said in (("x: {kind: monotone, column: size}", "names 'size', which the model does not read"),
                       ("x: {kind: sometimes}", "kind must be one of minimum, invariance, monotone, slice"),
                       ("x: {kind: slice, column: district}", "a slice test needs margin"),
                       ("x: {kind: monotone, column: area, tolerance: lots}", "tolerance must be a number >= 0"),
                       ("x: {kind: minimum, rows: [{area: 40}], expect: {label: 1}}", "not a label"),
                       ("- just a list", "mapping of test name to test")):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        result = train_cli(tmp_path / "registry", data, path)
        assert result.returncode == 2 and said in result.stderr, (text, result.stderr)
        assert "published" not in result.stdout


def test_train_synthetic_listings_trains_listings(tmp_path: Path):
    """``--synthetic listings`` used to train housing (the CLI never passed it on): a district test proves it."""
    tests = tmp_path / "district.yaml"
    tests.write_text("every district: {kind: slice, column: district, metric: mape, margin: 50%, min_rows: 10}\n")
    result = driftline("train", "l", "--registry", str(tmp_path / "registry"), "--synthetic", "listings", "--rows",
                       "800", "--param", "n_estimators=30", "--tests", str(tests))
    assert "1 of 1 passed" in result.stdout, result.stdout
    meta = Registry(tmp_path / "registry").open("l", published_version(result)).metadata
    assert "district" in meta.feature_names and meta.extra["data"].startswith("synthetic:listings")


def test_the_loader_reads_yaml_and_names_the_bad_key():
    with pytest.raises(InvalidInput, match=r"test 'x': unknown key\(s\) colum; a monotone test takes"):
        parse("x: {kind: monotone, colum: area}", "t.yaml")
    loaded = parse(MONOTONE + SLICE, "t.yaml")
    assert [c.name for c in loaded.cases] == ["price rises with area", "every district"]
    written = yaml.safe_load(MONOTONE)["price rises with area"]
    assert loaded.cases[0].settings == {k: v for k, v in written.items() if k != "kind"}
    assert loaded.cases[0].gate is True and loaded.text.startswith("\nprice rises with area:")
