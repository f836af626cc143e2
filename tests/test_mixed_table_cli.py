"""A mixed table through the command line: train from CSV, validate files, retrain, and infer/explain by column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import driftline, published_version, running_server


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mixed-cli")
    made = {}
    for name, seed, shift, rows in (("train", 1, None, "1500"), ("fresh", 3, None, "1500"),
                                    ("english", 4, "english_new_district", "600")):
        path = root / f"{name}.csv"
        driftline("data", "listings", "--rows", rows, "--seed", str(seed), "--out", str(path),
                  *(["--shift", shift] if shift else []))
        made[name] = path
    made["registry"] = root / "registry"
    return made


@pytest.fixture(scope="module")
def trained(files) -> Path:
    result = driftline("train", "listings", "--data", str(files["train"]), "--target", "price",
                       "--features", ",".join(_features()), "--registry", str(files["registry"]), "--param", "n_estimators=40")
    assert published_version(result) == 1
    return files["registry"]


def _features() -> list[str]:
    from driftline.trainer import synthetic

    return list(synthetic.LISTING_FEATURES)


def test_a_csv_with_strings_trains_a_table_with_inferred_roles(trained):
    shown = driftline("schema", "listings", "--registry", str(trained)).stdout
    assert "district" in shown and "categorical" in shown
    assert "description.language" in shown  # the language check's column, validated like any other


def test_validate_judges_a_file_by_column_as_the_server_would(files, trained):
    fresh = json.loads(driftline("validate", "listings", "--data", str(files["fresh"]), "--registry", str(trained),
                                 "--json").stdout)
    english = json.loads(driftline("validate", "listings", "--data", str(files["english"]), "--registry",
                                   str(trained), "--json", check=False).stdout)
    assert "unknown_category" in english["data_quality"]["violations"]["district"]
    assert "unknown_category" not in fresh["data_quality"]["violations"].get("district", {})
    assert {"district", "description.language"} <= set(english["drift"]["drifted"])
    assert "district" not in fresh["drift"]["drifted"]


def test_retrain_keeps_the_columns_and_publishes(files, trained):
    result = driftline("retrain", "listings", "--data", str(files["fresh"]), "--registry", str(trained),
                       "--tolerance", "0.2", check=False)
    assert "published version 2" in result.stdout, result.stdout + result.stderr


def test_infer_and_explain_name_the_columns(trained, files):
    row = {"living_area": 120.0, "lot_area": 800.0, "bedrooms": 4, "bathrooms": 2, "stories": 2,
           "garage_area": 20.0, "has_basement": 1, "year_built": 2005, "condition": 4, "distance_to_center": 3.0,
           "transit_distance": 0.5, "district": "Śródmieście", "description": "Piękny dom w Śródmieściu z ogrodem."}
    with running_server(trained) as server:
        answer = driftline("infer", "listings", "--server", server.address, "--json", json.dumps(row)).stdout
        explained = json.loads(driftline("explain", "listings", "--server", server.address, "--json",
                                         json.dumps(row), "--output-json").stdout)
    assert "prediction" in answer
    named = {c["feature"]: c for c in explained["contributions"]}
    assert named["district"]["value"] == "Śródmieście"
    total = explained["base"] + sum(c["contribution"] for c in explained["contributions"])
    assert total == pytest.approx(explained["outputs"]["prediction"][0], rel=1e-4)
