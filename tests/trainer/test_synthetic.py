"""Tests for the synthetic housing generator."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from driftline.trainer.synthetic import (
    CLASS_TARGET,
    DATASETS,
    DISTRICTS,
    FEATURES,
    LISTING_FEATURES,
    LISTING_SHIFTS,
    SEGMENT_THRESHOLDS,
    SHIFTS,
    TARGET,
    housing,
    listings,
    synthetic_frame,
)

ROWS = 5_000


@pytest.fixture(scope="module")
def base() -> pl.DataFrame:
    return housing(ROWS, seed=7)


@pytest.fixture(scope="module")
def shifted() -> dict[str, pl.DataFrame]:
    return {name: housing(ROWS, seed=7, shift=name) for name in SHIFTS}


def _col(df: pl.DataFrame, name: str) -> np.ndarray:
    return df[name].to_numpy()


# --- shape and determinism ----------------------------------------------------


def test_columns_order_and_dtypes(base: pl.DataFrame) -> None:
    assert TARGET == "price"
    assert CLASS_TARGET == "price_segment"
    assert 10 <= len(FEATURES) <= 12
    assert base.columns == [*FEATURES, TARGET, CLASS_TARGET]
    assert base.height == ROWS
    for name in (*FEATURES, TARGET):
        assert base.schema[name] == pl.Float64, name
    assert base.schema[CLASS_TARGET] == pl.Int64
    assert base.null_count().sum_horizontal().item() == 0
    assert np.isfinite(base.select(*FEATURES, TARGET).to_numpy()).all()


@pytest.mark.parametrize("shift", [None, *SHIFTS])
def test_deterministic(shift: str | None) -> None:
    assert_frame_equal(housing(300, seed=3, shift=shift), housing(300, seed=3, shift=shift))


def test_seed_changes_data() -> None:
    assert not housing(300, seed=1).equals(housing(300, seed=2))


def test_single_row() -> None:
    df = housing(1, seed=0)
    assert df.height == 1
    assert df.columns == [*FEATURES, TARGET, CLASS_TARGET]


def test_does_not_touch_global_rng() -> None:
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    housing(100, seed=0)
    assert np.random.random() == expected


# --- plausibility -------------------------------------------------------------


def test_plausible_ranges(base: pl.DataFrame) -> None:
    assert _col(base, "living_area").min() >= 40 and _col(base, "living_area").max() <= 500
    assert _col(base, "lot_area").min() >= 100
    assert set(np.unique(_col(base, "bedrooms"))) <= set(range(1, 9))
    assert set(np.unique(_col(base, "bathrooms"))) <= {1, 2, 3, 4}
    assert (_col(base, "bathrooms") <= _col(base, "bedrooms")).all()
    assert set(np.unique(_col(base, "stories"))) <= {1, 2, 3}
    assert set(np.unique(_col(base, "has_basement"))) == {0.0, 1.0}
    assert set(np.unique(_col(base, "condition"))) == {1, 2, 3, 4, 5}
    year = _col(base, "year_built")
    assert year.min() >= 1890 and year.max() <= 2025
    assert (year == np.round(year)).all()
    distance = _col(base, "distance_to_center")
    assert distance.min() > 0 and distance.max() <= 40
    assert _col(base, "transit_distance").min() > 0

    garage = _col(base, "garage_area")
    assert 0.15 < (garage == 0).mean() < 0.5  # a realistic share has no garage
    assert garage[garage > 0].min() >= 10 and garage.max() <= 50


def test_features_are_correlated(base: pl.DataFrame) -> None:
    def corr(a: str, b: str) -> float:
        return float(np.corrcoef(_col(base, a), _col(base, b))[0, 1])

    assert corr("living_area", "bedrooms") > 0.6
    assert corr("living_area", "bathrooms") > 0.4
    assert corr("distance_to_center", "lot_area") > 0.4
    assert corr("distance_to_center", "transit_distance") > 0.4
    assert corr("year_built", "condition") > 0.3


def test_price_positive_and_typical(base: pl.DataFrame) -> None:
    price = _col(base, TARGET)
    assert (price > 0).all()
    p5, p95 = np.percentile(price, [5, 95])
    assert 300_000 < p5 < p95 < 2_500_000


def test_price_is_nonlinear_in_features() -> None:
    train, test = housing(4_000, seed=0), housing(2_000, seed=1)
    x, y = train.select(FEATURES).to_numpy(), _col(train, TARGET)
    xt, yt = test.select(FEATURES).to_numpy(), _col(test, TARGET)
    linear = r2_score(yt, LinearRegression().fit(x, y).predict(xt))
    boosted = r2_score(yt, HistGradientBoostingRegressor(random_state=0).fit(x, y).predict(xt))
    assert boosted > 0.85
    assert boosted - linear > 0.08


def test_price_per_m2_decays_with_distance_and_is_u_shaped_in_age() -> None:
    df = housing(20_000, seed=5).with_columns(ppm2=pl.col(TARGET) / pl.col("living_area"))

    def median_ppm2(mask: pl.Expr) -> float:
        return float(df.filter(mask)["ppm2"].median())

    center = median_ppm2(pl.col("distance_to_center") < 3)
    suburb = median_ppm2(pl.col("distance_to_center").is_between(10, 13))
    far = median_ppm2(pl.col("distance_to_center") > 25)
    assert center > suburb > far
    # Convex decay: the first km cost more than the later ones.
    assert (center - suburb) > (suburb - far)

    prewar = median_ppm2(pl.col("year_built") < 1940)
    communist = median_ppm2(pl.col("year_built").is_between(1960, 1985))
    new = median_ppm2(pl.col("year_built") >= 2015)
    assert prewar > communist * 1.05
    assert new > communist * 1.1


def test_price_segment(base: pl.DataFrame) -> None:
    segment = _col(base, CLASS_TARGET)
    counts = np.bincount(segment, minlength=3)
    assert len(counts) == 3
    assert (counts / ROWS > 0.2).all()  # roughly tertiles
    low, high = SEGMENT_THRESHOLDS
    price = _col(base, TARGET)
    assert (segment == np.where(price < low, 0, np.where(price < high, 1, 2))).all()


# --- shifts -------------------------------------------------------------------


def test_shift_catalogue() -> None:
    assert {"price_inflation", "new_district", "big_garages", "aging_stock"} <= set(SHIFTS)
    for description in SHIFTS.values():
        assert description and "\n" not in description


def test_every_shift_changes_the_data(base: pl.DataFrame, shifted: dict[str, pl.DataFrame]) -> None:
    for name, df in shifted.items():
        assert df.columns == base.columns, name
        assert df.schema == base.schema, name
        assert not df.equals(base), name
        assert (_col(df, TARGET) > 0).all(), name


def test_price_inflation(base: pl.DataFrame, shifted: dict[str, pl.DataFrame]) -> None:
    df = shifted["price_inflation"]
    assert_frame_equal(df.select(FEATURES), base.select(FEATURES))
    ratio = _col(df, TARGET) / _col(base, TARGET)
    np.testing.assert_allclose(ratio, 1.25, rtol=1e-4)
    assert (_col(df, CLASS_TARGET) >= _col(base, CLASS_TARGET)).all()


def test_remote_work_is_concept_drift(base: pl.DataFrame, shifted: dict[str, pl.DataFrame]) -> None:
    df = shifted["remote_work"]
    assert_frame_equal(df.select(FEATURES), base.select(FEATURES))
    ratio = _col(df, TARGET) / _col(base, TARGET)
    distance = _col(base, "distance_to_center")
    # Far-out houses gain much more than central ones.
    assert np.median(ratio[distance > 20]) > np.median(ratio[distance < 3]) + 0.2


def test_new_district(base: pl.DataFrame, shifted: dict[str, pl.DataFrame]) -> None:
    df = shifted["new_district"]
    assert _col(df, "distance_to_center").min() > _col(base, "distance_to_center").max()
    assert np.median(_col(df, "lot_area")) > 2 * np.median(_col(base, "lot_area"))


def test_big_garages(base: pl.DataFrame, shifted: dict[str, pl.DataFrame]) -> None:
    garage = _col(shifted["big_garages"], "garage_area")
    assert garage.min() > _col(base, "garage_area").max()
    assert garage.min() >= 60 and garage.max() <= 150
    # Everything except the garage is the same houses.
    other = [f for f in FEATURES if f != "garage_area"]
    assert_frame_equal(shifted["big_garages"].select(other), base.select(other))


def test_aging_stock(base: pl.DataFrame, shifted: dict[str, pl.DataFrame]) -> None:
    df = shifted["aging_stock"]
    assert _col(df, "year_built").mean() < _col(base, "year_built").mean() - 15
    assert _col(df, "condition").mean() < _col(base, "condition").mean() - 0.75
    assert (_col(df, "year_built") < 1990).mean() > 0.8


# --- errors -------------------------------------------------------------------


def test_unknown_shift_names_valid_ones() -> None:
    with pytest.raises(ValueError) as excinfo:
        housing(10, shift="zombie_apocalypse")
    for name in SHIFTS:
        assert name in str(excinfo.value)


@pytest.mark.parametrize("rows", [0, -5])
def test_bad_rows(rows: int) -> None:
    with pytest.raises(ValueError, match="rows"):
        housing(rows)


# --- listings: district and description ---------------------------------------


@pytest.fixture(scope="module")
def listed() -> pl.DataFrame:
    return listings(ROWS, seed=7)


@pytest.fixture(scope="module")
def english() -> pl.DataFrame:
    return listings(ROWS, seed=7, shift="english_listings")


def _texts(df: pl.DataFrame) -> list[str]:
    return [text for text in df["description"].to_list() if text]


def _top_words(df: pl.DataFrame, k: int) -> list[str]:
    counts = Counter(word for text in _texts(df) for word in re.findall(r"[^\W\d]+", text.lower()))
    return [word for word, _ in counts.most_common(k)]


def test_listings_columns_and_dtypes(listed: pl.DataFrame) -> None:
    assert LISTING_FEATURES == (*FEATURES, "district", "description")
    assert listed.columns == [*LISTING_FEATURES, TARGET, CLASS_TARGET]
    assert listed.height == ROWS
    assert listed.schema["district"] == pl.String
    assert listed.schema["description"] == pl.String
    assert listed.schema[TARGET] == pl.Float64
    assert listed.schema[CLASS_TARGET] == pl.Int64
    # Only the description has gaps, as free text does in real tables.
    nulls = listed.null_count().row(0, named=True)
    assert {name for name, count in nulls.items() if count} == {"description"}


@pytest.mark.parametrize("shift", [None, "price_inflation", *LISTING_SHIFTS])
def test_listings_deterministic(shift: str | None) -> None:
    assert_frame_equal(listings(300, seed=3, shift=shift), listings(300, seed=3, shift=shift))


def test_listings_seed_changes_data() -> None:
    a, b = listings(300, seed=1), listings(300, seed=2)
    assert a["district"].to_list() != b["district"].to_list()
    assert a["description"].to_list() != b["description"].to_list()


def test_listings_keep_housing_features(listed: pl.DataFrame) -> None:
    houses = housing(ROWS, seed=7)
    assert_frame_equal(listed.select(FEATURES), houses.select(FEATURES))
    # Price is the housing price times one multiplier per district.
    ratio = listed.select(pl.col("district"), ratio=pl.col(TARGET) / houses[TARGET])
    spread = ratio.group_by("district").agg(pl.col("ratio").max() - pl.col("ratio").min())
    assert spread["ratio"].max() < 1e-5


@pytest.mark.parametrize("shift", ["big_garages", "aging_stock"])
def test_listings_accept_housing_shifts(shift: str) -> None:
    df = listings(500, seed=4, shift=shift)
    assert_frame_equal(df.select(FEATURES), housing(500, seed=4, shift=shift).select(FEATURES))
    # The listing draws do not depend on the housing shift.
    assert df["district"].to_list() == listings(500, seed=4)["district"].to_list()


def test_listings_does_not_touch_global_rng() -> None:
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    listings(100, seed=0)
    assert np.random.random() == expected


def test_listings_price_segment(listed: pl.DataFrame) -> None:
    low, high = SEGMENT_THRESHOLDS
    price, segment = _col(listed, TARGET), _col(listed, CLASS_TARGET)
    assert (segment == np.where(price < low, 0, np.where(price < high, 1, 2))).all()
    assert (np.bincount(segment, minlength=3) / ROWS > 0.2).all()


def test_districts_present_with_unequal_frequencies(listed: pl.DataFrame) -> None:
    assert len(DISTRICTS) == 8
    assert {"Mokotów", "Śródmieście", "Żoliborz", "Białołęka"} <= set(DISTRICTS)
    counts = listed["district"].value_counts()
    assert set(counts["district"]) == set(DISTRICTS)
    share = counts["count"].to_numpy() / ROWS
    assert share.min() > 0.02
    assert share.max() > 2.5 * share.min()


def test_districts_follow_distance(listed: pl.DataFrame) -> None:
    median = dict(listed.group_by("district").agg(pl.col("distance_to_center").median()).iter_rows())
    assert median["Śródmieście"] < 3
    assert median["Śródmieście"] < median["Mokotów"] < median["Ursynów"] < median["Wawer"]


def test_district_premium(listed: pl.DataFrame) -> None:
    median = dict(listed.group_by("district").agg(pl.col(TARGET).median()).iter_rows())
    assert median["Śródmieście"] > median["Białołęka"] * 1.5
    assert median["Żoliborz"] > median["Wola"]  # same distance, dearer district


def test_district_is_a_price_driver() -> None:
    # Distance predicts the district only loosely, so a boosted model gains
    # clearly from the district itself: what makes attributions name it.
    train, test = listings(4_000, seed=0), listings(2_000, seed=1)

    def matrix(df: pl.DataFrame, with_district: bool) -> np.ndarray:
        x = df.select(FEATURES).to_numpy()
        if not with_district:
            return x
        codes = df["district"].replace_strict(list(DISTRICTS), list(range(len(DISTRICTS)))).to_numpy()
        return np.column_stack([x, codes])

    y, yt = _col(train, TARGET), _col(test, TARGET)
    scores = {}
    for with_district in (False, True):
        model = HistGradientBoostingRegressor(
            random_state=0, categorical_features=[len(FEATURES)] if with_district else None)
        model.fit(matrix(train, with_district), y)
        scores[with_district] = r2_score(yt, model.predict(matrix(test, with_district)))
    assert scores[True] > 0.9
    assert scores[True] - scores[False] > 0.03


def test_polish_descriptions(listed: pl.DataFrame) -> None:
    texts = _texts(listed)
    words = np.array([len(text.split()) for text in texts])
    assert words.min() >= 15 and words.max() <= 40
    top = _top_words(listed, 25)
    assert {"się", "i", "w", "dom"} <= set(top)
    assert not {"the", "and", "with"} & set(top)
    assert np.mean([bool(re.search("[ąćęłńóśźż]", text)) for text in texts]) > 0.9
    # A varied vocabulary, not a handful of fixed sentences.
    assert len(set(texts)) > 0.9 * len(texts)
    assert len(_top_words(listed, 10_000)) > 250


def test_descriptions_state_the_row(listed: pl.DataFrame) -> None:
    rows = listed.filter(pl.col("description").str.len_chars() > 0).head(300).to_dicts()
    for row in rows:
        text = row["description"]
        # Districts appear inflected ("na Mokotowie"), so match the stem.
        assert row["district"][:3] in text, text
        assert ("garaż" in text) == (row["garage_area"] > 0), text
        assert "ogr" in text, text  # ogród / ogródek
    renovated = listed.filter(pl.col("description").str.contains("po remoncie"))
    assert set(renovated["condition"].unique()) == {4.0}


def test_missing_and_empty_descriptions(listed: pl.DataFrame) -> None:
    missing = listed["description"].null_count() / ROWS
    assert 0.01 < missing < 0.03
    empty = (listed["description"] == "").sum()
    assert 0 < empty < listed["description"].null_count()


def test_english_listings(listed: pl.DataFrame, english: pl.DataFrame) -> None:
    assert_frame_equal(english.drop("description"), listed.drop("description"))
    words = np.array([len(text.split()) for text in _texts(english)])
    assert words.min() >= 15 and words.max() <= 40
    top = _top_words(english, 25)
    assert {"the", "and", "with"} <= set(top)
    assert not {"się", "i", "w"} & set(top)
    # Same facts in the other language: the same numbers and the same gaps.
    for polish, translated in zip(listed["description"], english["description"], strict=True):
        assert (polish is None) == (translated is None)
        if polish:
            assert sorted(re.findall(r"\d+", polish)) == sorted(re.findall(r"\d+", translated))
    mentions = english.filter(pl.col("description").str.len_chars() > 0).head(300)
    for district, text in mentions.select("district", "description").iter_rows():
        assert district in text, text


@pytest.mark.parametrize("shift", ["new_district", "english_new_district"])
def test_listing_new_district(listed: pl.DataFrame, shift: str) -> None:
    df = listings(ROWS, seed=7, shift=shift)
    seen = set(listed["district"])
    new = set(df["district"])
    assert new and not new & seen
    # The numbers are housing's new_district shift.
    assert_frame_equal(df.select(FEATURES), housing(ROWS, seed=7, shift="new_district").select(FEATURES))
    (name,) = new
    assert all(name[:6] in text for text in _texts(df)[:300])
    language_words = {"the", "and", "with"} if shift.startswith("english") else {"się", "i", "w"}
    assert language_words <= set(_top_words(df, 25))


def test_listing_shift_catalogue() -> None:
    assert set(LISTING_SHIFTS) == {"english_listings", "new_district", "english_new_district"}
    for description in LISTING_SHIFTS.values():
        assert description and "\n" not in description
    assert DATASETS["housing"] == SHIFTS
    assert set(DATASETS["listings"]) == set(SHIFTS) | set(LISTING_SHIFTS)


def test_synthetic_frame_dispatches() -> None:
    assert_frame_equal(synthetic_frame("housing", 50, seed=2), housing(50, seed=2))
    assert_frame_equal(synthetic_frame("listings", 50, seed=2, shift="english_listings"),
                       listings(50, seed=2, shift="english_listings"))
    assert_frame_equal(synthetic_frame("housing", 50, seed=2, shift="big_garages"),
                       housing(50, seed=2, shift="big_garages"))


def test_synthetic_frame_errors_name_valid_choices() -> None:
    with pytest.raises(ValueError) as excinfo:
        synthetic_frame("flats", 10)
    assert "housing" in str(excinfo.value) and "listings" in str(excinfo.value)
    with pytest.raises(ValueError) as excinfo:
        synthetic_frame("housing", 10, shift="english_listings")
    assert "'english_listings'" in str(excinfo.value)
    for name in SHIFTS:
        assert name in str(excinfo.value)
    with pytest.raises(ValueError) as excinfo:
        listings(10, shift="zombie_apocalypse")
    for name in DATASETS["listings"]:
        assert name in str(excinfo.value)


@pytest.mark.parametrize("rows", [0, -5])
def test_listings_bad_rows(rows: int) -> None:
    with pytest.raises(ValueError, match="rows"):
        listings(rows)
