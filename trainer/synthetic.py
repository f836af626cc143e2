"""Synthetic Polish single-family housing data (prices in PLN).

Used by ``driftline train --synthetic housing`` so the server can be trained,
served and drift-tested without shipping a real data set. The generator is a
small causal story: location drives lot size and transit access, size drives
room counts, age drives condition, and price is a non-linear function of all
of them. The shifts in ``SHIFTS`` replay that story with one cause changed,
so downstream features move consistently with it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

FEATURES: tuple[str, ...] = (
    "living_area",  # m2 of usable floor space
    "lot_area",  # m2 of land
    "bedrooms",
    "bathrooms",
    "stories",  # above-ground storeys, 1-3
    "garage_area",  # m2, 0 when there is no garage
    "has_basement",  # 0/1
    "year_built",
    "condition",  # 1 (needs full renovation) .. 5 (as new)
    "distance_to_center",  # km to the city center
    "transit_distance",  # km to the nearest rail or tram stop
)
TARGET = "price"
CLASS_TARGET = "price_segment"

# Fixed PLN cut points (roughly the tertiles of unshifted data). Fixed rather
# than per-frame quantiles so a drifted frame lands in different segments
# instead of being re-balanced into thirds.
SEGMENT_THRESHOLDS: tuple[float, float] = (900_000.0, 1_250_000.0)

SHIFTS: dict[str, str] = {
    "price_inflation": "same houses, prices about 25% higher (pure label shift)",
    "new_district": "a new district 55-80 km out, beyond the training range, with larger lots",
    "big_garages": "every house has a 60-150 m2 garage, far larger than any in training",
    "aging_stock": "mostly pre-war and communist-era houses in worse condition",
    "remote_work": "same houses, but the price penalty for distance to the center halves",
}

_CURRENT_YEAR = 2025


def housing(rows: int, seed: int = 0, shift: str | None = None) -> pl.DataFrame:
    """Return ``rows`` synthetic houses with FEATURES, TARGET and CLASS_TARGET."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    if shift is not None and shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; valid shifts: {', '.join(sorted(SHIFTS))}")

    # Shift-specific draws come from their own stream, and the base stream
    # always makes the same draws in the same order. So a shifted frame shares
    # all noise with the unshifted frame of the same seed, and any difference
    # between them is caused by the shift alone.
    rng, shift_rng = np.random.default_rng(seed).spawn(2)
    n = rows

    # Location. Right-skewed: most houses are in the inner suburbs.
    distance = np.clip(0.5 + rng.gamma(2.0, 5.0, n), 0.5, 40.0)
    if shift == "new_district":
        distance = shift_rng.uniform(55.0, 80.0, n)

    # Era mixture: pre-war villas, communist-era "kostka" cubes, 1990s-2000s,
    # recent builds.
    era_weights = np.array([0.10, 0.38, 0.27, 0.25])
    if shift == "aging_stock":
        era_weights = np.array([0.35, 0.52, 0.10, 0.03])
    era_u = rng.random(n)
    year_u = rng.random(n)
    era = np.searchsorted(np.cumsum(era_weights), era_u, side="right").clip(0, 3)
    era_lo = np.array([1890.0, 1950.0, 1990.0, 2010.0])[era]
    era_hi = np.array([1939.0, 1989.0, 2009.0, 2024.0])[era]
    year_built = np.floor(era_lo + year_u * (era_hi - era_lo + 1.0))
    age = _CURRENT_YEAR - year_built

    # Size: bigger houses where land is cheaper.
    living_area = np.clip(rng.lognormal(np.log(115.0 + 1.5 * distance), 0.33, n), 45.0, 450.0)
    lot_area = np.clip(rng.lognormal(np.log(300.0 + 45.0 * distance), 0.35, n), 120.0, 12_000.0)

    bedrooms = np.clip(np.round(living_area / 38.0 + rng.normal(0.0, 0.6, n)), 1, 8)
    bathrooms = np.clip(np.round(0.6 + living_area / 110.0 + rng.normal(0.0, 0.4, n)), 1, 4)
    bathrooms = np.minimum(bathrooms, bedrooms)
    # Larger footprints go up rather than out; a third storey is rare.
    stories = (
        1.0
        + (rng.random(n) < _sigmoid((living_area - 120.0) / 30.0))
        + (rng.random(n) < _sigmoid((living_area - 280.0) / 35.0))
    )

    # Garages are more common on big suburban lots than in dense old streets.
    has_garage = rng.random(n) < _sigmoid((lot_area - 350.0) / 250.0) * 0.9
    garage_area = np.clip(rng.choice([18.0, 36.0], n, p=[0.6, 0.4]) + rng.normal(0.0, 3.0, n), 12.0, 48.0)
    garage_area = np.round(np.where(has_garage, garage_area, 0.0), 1)
    if shift == "big_garages":
        garage_area = np.round(shift_rng.uniform(60.0, 150.0, n), 1)

    # Basements were standard in older construction, rarer in modern builds.
    has_basement = (rng.random(n) < np.where(year_built < 1990, 0.6, 0.25)).astype(np.float64)

    # Condition decays with age but levels off: a century-old villa has
    # usually been renovated at least once, so it is not uniformly a ruin.
    condition_noise = rng.normal(0.0, 0.8, n)
    condition = 4.6 - 2.0 * (1.0 - np.exp(-age / 30.0)) + condition_noise
    if shift == "aging_stock":
        condition -= 0.8
    condition = np.clip(np.round(condition), 1, 5)

    transit_distance = np.clip(
        (0.3 + 0.08 * distance) * rng.lognormal(0.0, 0.45, n), 0.1, 25.0
    ).round(2)

    # --- price ---------------------------------------------------------------
    # Building price per m2 decays with distance (city core ~12k PLN/m2,
    # exurbs ~4k), and larger houses sell at a lower price per m2.
    decay_km = 16.0 if shift == "remote_work" else 8.0
    ppm2 = 3_800.0 + 8_500.0 * np.exp(-distance / decay_km)
    structure = ppm2 * living_area * (living_area / 130.0) ** -0.12

    # U-shaped in age: pre-war villas and new builds carry a premium,
    # 1970s cubes a discount.
    age_factor = (
        1.12
        - 0.28 * np.exp(-(((year_built - 1975.0) / 22.0) ** 2))
        + 0.08 * np.exp(-age / 6.0)
    )
    condition_factor = 1.09 ** (condition - 3.0)
    bath_factor = 1.035 ** (bathrooms - 1.0)
    basement_factor = 1.0 + 0.04 * has_basement
    stories_factor = np.where(stories >= 3.0, 0.95, 1.0)
    # Poor transit only hurts where there is a meaningful commute.
    transit_factor = np.clip(1.0 - 0.025 * transit_distance * _sigmoid((distance - 5.0) / 3.0), 0.8, 1.0)

    land_ppm2 = 50.0 + 600.0 * np.exp(-distance / (20.0 if shift == "remote_work" else 10.0))
    land = land_ppm2 * lot_area**0.92
    # A garage adds value with diminishing returns: the second car space is
    # worth less than the first, a hangar barely more than two spaces.
    garage = 220_000.0 * (1.0 - np.exp(-garage_area / 30.0))

    price = (
        structure * age_factor * condition_factor * bath_factor * basement_factor
        * stories_factor * transit_factor
        + land
        + garage
    ) * rng.lognormal(0.0, 0.08, n)
    if shift == "price_inflation":
        price *= 1.25
    # Round before segmenting so the label always agrees with the stored price.
    price = np.round(price, 0)

    segment = np.searchsorted(np.array(SEGMENT_THRESHOLDS), price, side="right")

    columns = {
        "living_area": np.round(living_area, 1),
        "lot_area": np.round(lot_area, 0),
        "bedrooms": bedrooms,
        "bathrooms": bathrooms,
        "stories": stories,
        "garage_area": garage_area,
        "has_basement": has_basement,
        "year_built": year_built,
        "condition": condition,
        "distance_to_center": np.round(distance, 2),
        "transit_distance": transit_distance,
    }
    frame = pl.DataFrame({name: np.asarray(columns[name], dtype=np.float64) for name in FEATURES})
    return frame.with_columns(
        pl.Series(TARGET, price, dtype=pl.Float64),
        pl.Series(CLASS_TARGET, segment, dtype=pl.Int64),
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
