"""Synthetic Polish single-family housing data (prices in PLN).

Used by ``driftline train --synthetic housing`` so the server can be trained,
served and drift-tested without shipping a real data set. The generator is a
small causal story: location drives lot size and transit access, size drives
room counts, age drives condition, and price is a non-linear function of all
of them. The shifts in ``SHIFTS`` replay that story with one cause changed,
so downstream features move consistently with it.

``listings`` adds what real tables have and the numeric story lacks: a
categorical Warsaw district that moves the price, and a free-text Polish
description; its ``LISTING_SHIFTS`` change the language and the district.
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


# --- listings: housing plus a categorical district and a Polish description ----

LISTING_FEATURES: tuple[str, ...] = (*FEATURES, "district", "description")

LISTING_SHIFTS: dict[str, str] = {
    "english_listings": "same houses, but the descriptions are written in English",
    "new_district": "housing's new_district, and every house is in Garwolin, a town never seen in training",
    "english_new_district": "new_district and english_listings together",
}

# Every shift `listings` accepts; the listing version of new_district wins.
DATASETS: dict[str, dict[str, str]] = {
    "housing": SHIFTS,
    "listings": {**SHIFTS, **LISTING_SHIFTS},
}

# name, locative ("na Mokotowie": where Polish listings say a house is), typical
# km from the center, relative share of the house stock, price multiplier.
# Inner districts are rare and dear, the outer ones hold most detached houses.
# The multipliers average about 1 over the stock, so SEGMENT_THRESHOLDS still
# cut listings into rough thirds.
_DISTRICTS: tuple[tuple[str, str, float, float, float], ...] = (
    ("Śródmieście", "w Śródmieściu", 1.5, 0.30, 1.35),
    ("Wola", "na Woli", 4.0, 0.35, 1.02),
    ("Żoliborz", "na Żoliborzu", 4.5, 0.50, 1.22),
    ("Mokotów", "na Mokotowie", 6.0, 1.00, 1.12),
    ("Bemowo", "na Bemowie", 9.0, 0.60, 0.94),
    ("Ursynów", "na Ursynowie", 11.0, 0.90, 1.00),
    ("Białołęka", "na Białołęce", 12.0, 1.20, 0.89),
    ("Wawer", "w Wawrze", 14.0, 1.20, 0.92),
)
DISTRICTS: tuple[str, ...] = tuple(d[0] for d in _DISTRICTS)
# A small market town about 60 km out, matching housing's new_district
# distances; a discount unlike any training district's.
_NEW_DISTRICT = ("Garwolin", "w Garwolinie", 0.85)

# How sharply a district's pull falls off with log-distance: wide enough that
# neighbouring districts overlap, so distance alone does not give the district.
_DISTRICT_SPREAD = 0.45
_MISSING_DESCRIPTION = 0.02
_EMPTY_DESCRIPTION = 0.004
_TEXT_DRAWS = 11


def listings(rows: int, seed: int = 0, shift: str | None = None) -> pl.DataFrame:
    """``housing`` plus ``district`` and a free-text ``description``, with a district price premium.

    Columns: LISTING_FEATURES, TARGET, CLASS_TARGET. The housing features equal
    ``housing(rows, seed)`` (under the housing part of ``shift``); price and
    segment are recomputed after the district premium.
    """
    valid = DATASETS["listings"]
    if shift is not None and shift not in valid:
        raise ValueError(f"unknown shift {shift!r} for listings; valid shifts: {', '.join(sorted(valid))}")
    english = shift in ("english_listings", "english_new_district")
    new_district = shift in ("new_district", "english_new_district")
    housing_shift = "new_district" if new_district else (None if english else shift)
    base = housing(rows, seed=seed, shift=housing_shift)

    # The third child of the seed: housing owns the first two, so adding
    # listing columns cannot disturb a single housing draw. Every draw below
    # is made for every shift, so shifted and unshifted listings share noise.
    rng = np.random.default_rng(seed).spawn(3)[2]
    n = base.height
    district_u = rng.random(n)
    text_u = rng.random((n, _TEXT_DRAWS))
    blank_u = rng.random(n)

    distance = base["distance_to_center"].to_numpy()
    centers = np.log([d[2] for d in _DISTRICTS])
    shares = np.array([d[3] for d in _DISTRICTS])
    pull = shares * np.exp(-0.5 * ((np.log(distance)[:, None] - centers) / _DISTRICT_SPREAD) ** 2)
    cumulative = np.cumsum(pull, axis=1)
    district_idx = (cumulative < district_u[:, None] * cumulative[:, -1:]).sum(axis=1).clip(0, len(_DISTRICTS) - 1)

    if new_district:
        names = [_NEW_DISTRICT[0]] * n
        locatives = [_NEW_DISTRICT[1]] * n
        premium = np.full(n, _NEW_DISTRICT[2])
    else:
        names = [_DISTRICTS[i][0] for i in district_idx]
        locatives = [_DISTRICTS[i][1] for i in district_idx]
        premium = np.array([d[4] for d in _DISTRICTS])[district_idx]

    price = np.round(base[TARGET].to_numpy() * premium, 0)
    segment = np.searchsorted(np.array(SEGMENT_THRESHOLDS), price, side="right")

    facts = base.select(FEATURES).to_dicts()
    descriptions: list[str | None] = []
    for i in range(n):
        if blank_u[i] < _MISSING_DESCRIPTION:
            descriptions.append(None)
        elif blank_u[i] < _MISSING_DESCRIPTION + _EMPTY_DESCRIPTION:
            descriptions.append("")
        else:
            descriptions.append(_describe(facts[i], names[i], locatives[i], text_u[i], english))

    return base.select(FEATURES).with_columns(
        pl.Series("district", names, dtype=pl.String),
        pl.Series("description", descriptions, dtype=pl.String),
        pl.Series(TARGET, price, dtype=pl.Float64),
        pl.Series(CLASS_TARGET, segment, dtype=pl.Int64),
    )


def synthetic_frame(name: str, rows: int, seed: int = 0, shift: str | None = None) -> pl.DataFrame:
    """The synthetic data set ``name`` ("housing" or "listings")."""
    if name not in DATASETS:
        raise ValueError(f"unknown synthetic data set {name!r}; available: {', '.join(sorted(DATASETS))}")
    if shift is not None and shift not in DATASETS[name]:
        raise ValueError(
            f"unknown shift {shift!r} for {name}; valid shifts: {', '.join(sorted(DATASETS[name]))}")
    return (housing if name == "housing" else listings)(rows, seed=seed, shift=shift)


# --- description text -----------------------------------------------------------
# Polish and English phrase lists are paired index by index, so one row's
# draws pick the same template and the same filler in either language: an
# English listing states the same facts as its Polish twin.

_ADJECTIVES: tuple[tuple[str, str], ...] = (
    ("piękny", "beautiful"),
    ("przestronny", "spacious"),
    ("słoneczny", "sunny"),
    ("zadbany", "well-kept"),
    ("wygodny", "comfortable"),
    ("klimatyczny", "charming"),
    ("jasny", "bright"),
    ("przytulny", "cosy"),
)

# {adj} {storeys} {loc} {district}
_OPENINGS: tuple[tuple[str, str], ...] = (
    ("{Adj} dom {loc}.", "{Adj} house in {district}."),
    ("Na sprzedaż {adj} {storeys} dom {loc}.", "For sale: a {adj} {storeys} house in {district}."),
    ("Sprzedam {adj} dom rodzinny {loc}.", "{Adj} family house for sale in {district}."),
    ("{Adj} {storeys} dom w dzielnicy {district}.", "A {adj} {storeys} house in the {district} district."),
    ("Dom znajduje się {loc}, w spokojnej okolicy.", "The house is located in {district}, in a quiet area."),
    ("Oferujemy {adj} dom {loc}.", "We offer a {adj} house in {district}."),
)

_STOREYS: dict[int, tuple[str, str]] = {
    1: ("parterowy", "single-storey"),
    2: ("piętrowy", "two-storey"),
    3: ("trzykondygnacyjny", "three-storey"),
}

# {rooms} {bedrooms} {bathrooms} in the case the template needs, {area}
_ROOMS: tuple[tuple[str, str], ...] = (
    ("Dom ma {rooms_acc}, w tym {bedrooms_acc}, oraz {bathrooms_acc}.",
     "The house has {rooms}, including {bedrooms}, and {bathrooms}."),
    ("Na {area} m² salon z kuchnią, {bedrooms_nom} i {bathrooms_nom}.",
     "{area} m² with a living room, {bedrooms} and {bathrooms}."),
    ("Powierzchnia użytkowa {area} m², {rooms_nom}, {bathrooms_nom}.",
     "Living area {area} m² with {rooms} and {bathrooms}."),
)

# {garden} {garage} {lot}
_GROUNDS: tuple[tuple[str, str], ...] = (
    ("Działka {lot} m², {garden}, {garage}.", "A {lot} m² plot with {garden} and {garage}."),
    ("Wokół domu {garden} i {garage}.", "Around the house: {garden} and {garage}."),
    ("Do domu przynależy {garden} oraz {garage}.", "The house comes with {garden} and {garage}."),
)

_GARDENS: tuple[tuple[str, str], ...] = (
    ("mały ogródek", "a small garden"),
    ("ogród", "a garden"),
    ("duży ogród", "a large garden"),
)

_GARAGES: tuple[tuple[str, str], ...] = (
    ("parking na podjeździe", "driveway parking"),
    ("garaż jednostanowiskowy", "a single garage"),
    ("garaż dwustanowiskowy", "a double garage"),
)

# Condition 1..5; the words carry a hint of condition, as real listings do.
_CONDITIONS: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("Dom do generalnego remontu.", "Needs a complete renovation."),
        ("Wymaga kapitalnego remontu, co uwzględnia cena.", "Needs a full renovation, priced accordingly.")),
    2: (("Dom do odświeżenia, instalacje do wymiany.", "Needs refreshing and new wiring."),
        ("Wnętrza wymagają odświeżenia.", "The interiors need refreshing.")),
    3: (("Stan dobry, drobne prace we własnym zakresie.", "Good condition, some minor work to do."),
        ("Dom jest w dobrym stanie technicznym.", "In good technical condition.")),
    4: (("Dom po remoncie, w bardzo dobrym stanie.", "Renovated, in very good condition."),
        ("Po remoncie, gotowy do wprowadzenia się.", "Renovated and ready to move in.")),
    5: (("Stan idealny, dom gotowy do zamieszkania.", "Perfect condition, ready to move in."),
        ("Wykończony z dbałością o szczegóły, jak nowy.", "Finished with attention to detail, as new.")),
}

_FILLERS: tuple[tuple[str, str], ...] = (
    ("Okolica jest cicha i zielona.", "The area is quiet and green."),
    ("W pobliżu szkoła, przedszkole i sklepy.", "A school, a kindergarten and shops are nearby."),
    ("Do lasu jest kilka minut spacerem.", "The forest is a few minutes on foot."),
    ("Zapraszam na prezentację!", "Viewings are welcome!"),
    ("Polecam!", "Recommended!"),
    ("Bez pośredników.", "No agents, please."),
    ("Cena do negocjacji.", "The price is negotiable."),
    ("Możliwość szybkiego wydania kluczy.", "The keys can be handed over quickly."),
    ("Ogrzewanie gazowe, okna plastikowe.", "Gas heating and PVC windows."),
    ("Kominek w salonie.", "A fireplace in the living room."),
    ("Duże okna, dużo światła.", "Big windows with plenty of light."),
    ("Idealny dla rodziny z dziećmi.", "Ideal for a family with children."),
    ("Świetna komunikacja z centrum.", "Great connections with the city center."),
    ("Sąsiedztwo domów jednorodzinnych.", "The neighbourhood is all detached houses."),
    ("Czysty stan prawny, księga wieczysta założona.", "The title is clear and registered."),
    ("Dom ocieplony, dach po wymianie.", "The house is insulated and the roof is new."),
    ("Na działce rosną stare drzewa owocowe.", "Old fruit trees grow on the plot."),
    ("Taras od strony południowej.", "A south-facing terrace."),
    ("Centrum handlowe jest kilka minut samochodem.", "The shopping center is a short drive away."),
    ("Wszystkie media miejskie: woda, kanalizacja, gaz i prąd.",
     "All city utilities: water, sewage, gas and electricity."),
    ("Pompa ciepła i fotowoltaika na dachu.", "A heat pump and solar panels on the roof."),
    ("Niskie koszty utrzymania.", "The running costs are low."),
    ("Cicha ulica bez ruchu tranzytowego.", "A quiet street with no through traffic."),
    ("Kuchnia otwarta na salon.", "The kitchen is open to the living room."),
    ("Na poddaszu jest dodatkowy pokój do adaptacji.", "The attic has an extra room to convert."),
    ("Serdecznie zapraszam do kontaktu.", "Feel free to get in touch."),
    ("Więcej zdjęć na życzenie.", "More photos on request."),
    ("W okolicy ścieżki rowerowe i place zabaw.", "Cycle paths and playgrounds in the area."),
    ("Dom sprzedaje się z częścią wyposażenia.", "The house is sold with some of the furniture."),
    ("Łatwy dojazd do obwodnicy.", "Easy access to the ring road."),
    ("Szybki internet światłowodowy.", "Fast fibre internet."),
    ("Żłobek i przychodnia w pobliżu.", "A nursery and a clinic are nearby."),
    ("OKAZJA!", "A BARGAIN!"),
    ("Dzieci mogą bezpiecznie bawić się na podwórku.", "Children can play safely in the yard."),
    ("Sąsiedzi są życzliwi, a okolica rozwija się.", "The neighbours are friendly and the area is growing."),
    ("Dom nagrzewa się szybko i trzyma ciepło.", "The house warms up quickly and keeps the heat."),
    ("Piwnica na przetwory i rowery.", "A cellar for preserves and bicycles."),
    ("Ogrodzenie murowane, brama wjazdowa na pilota.", "A brick fence with a remote-controlled gate."),
    ("Podłogi drewniane, w łazienkach płytki.", "Wooden floors, tiles in the bathrooms."),
    ("Altana i miejsce na grill.", "A gazebo and a place for a barbecue."),
    ("Wspaniały widok z balkonu na zachód słońca.", "A wonderful sunset view from the balcony."),
    ("Blisko kościół, apteka i poczta.", "A church, a pharmacy and a post office close by."),
    ("Alarm i monitoring.", "An alarm and CCTV."),
    ("Rolety zewnętrzne we wszystkich oknach.", "External blinds on every window."),
    ("Studnia głębinowa do podlewania ogrodu.", "A deep well for watering the garden."),
    ("Garderoba przy sypialni głównej.", "A walk-in wardrobe by the master bedroom."),
    ("Spiżarnia i pralnia na parterze.", "A pantry and a laundry room on the ground floor."),
    ("Okolica słynie z ciszy i czystego powietrza.", "The area is known for its peace and clean air."),
    ("Właściciel mieszka za granicą, stąd sprzedaż.", "The owner lives abroad, hence the sale."),
    ("Dom był budowany dla siebie, z solidnych materiałów.",
     "The house was built by the owners for themselves, from solid materials."),
    ("Pierwszy właściciel.", "First owner."),
)

_MIN_WORDS, _MAX_WORDS = 15, 40


def _describe(row: dict[str, float], district: str, locative: str, u: np.ndarray, english: bool) -> str:
    lang = 1 if english else 0

    def pick(options: tuple[tuple[str, str], ...], x: float) -> tuple[str, str]:
        return options[int(x * len(options))]

    bedrooms, bathrooms = int(row["bedrooms"]), int(row["bathrooms"])
    rooms = bedrooms + 1  # the living room; Polish listings count it as a room
    storeys = _STOREYS[int(row["stories"])][lang]
    adjective = pick(_ADJECTIVES, u[0])[lang]
    footprint = row["living_area"] / row["stories"]
    open_land = row["lot_area"] - footprint
    garden = _GARDENS[0 if open_land < 250 else 1 if open_land < 700 else 2][lang]
    garage = _GARAGES[0 if row["garage_area"] == 0 else 1 if row["garage_area"] < 30 else 2][lang]
    fields = {
        "adj": adjective, "Adj": adjective[:1].upper() + adjective[1:], "storeys": storeys,
        "loc": locative, "district": district, "area": f"{row['living_area']:.0f}",
        "lot": f"{row['lot_area']:.0f}", "garden": garden, "garage": garage,
    }
    if english:
        fields |= {"rooms": _english_count(rooms, "room"), "bedrooms": _english_count(bedrooms, "bedroom"),
                   "bathrooms": _english_count(bathrooms, "bathroom")}
    else:
        fields |= {
            "rooms_acc": _polish_count(rooms, "jeden pokój", "pokoje", "pokoi"),
            "rooms_nom": _polish_count(rooms, "jeden pokój", "pokoje", "pokoi"),
            "bedrooms_acc": _polish_count(bedrooms, "jedną sypialnię", "sypialnie", "sypialni"),
            "bedrooms_nom": _polish_count(bedrooms, "jedna sypialnia", "sypialnie", "sypialni"),
            "bathrooms_acc": _polish_count(bathrooms, "jedną łazienkę", "łazienki", "łazienek"),
            "bathrooms_nom": _polish_count(bathrooms, "jedna łazienka", "łazienki", "łazienek"),
        }

    facts = [pick(_ROOMS, u[2])[lang], pick(_GROUNDS, u[3])[lang]]
    if u[4] < 0.5:  # sellers differ in what they lead with
        facts.reverse()
    sentences = [pick(_OPENINGS, u[1])[lang], *facts, pick(_CONDITIONS[int(row["condition"])], u[5])[lang]]
    fillers = list(dict.fromkeys(pick(_FILLERS, x)[lang] for x in u[7:11]))
    # Fillers pad short listings and are the first thing cut from long ones.
    n_fillers = int(u[6] * 3)
    text = " ".join(sentences + fillers[:n_fillers]).format(**fields)
    while len(text.split()) > _MAX_WORDS and n_fillers > 0:
        n_fillers -= 1
        text = " ".join(sentences + fillers[:n_fillers]).format(**fields)
    while len(text.split()) < _MIN_WORDS and n_fillers < len(fillers):
        n_fillers += 1
        text = " ".join(sentences + fillers[:n_fillers]).format(**fields)
    return text


def _polish_count(n: int, one: str, few: str, many: str) -> str:
    # Polish numerals: 2-4 (but not 12-14) take the plural, the rest the genitive plural.
    if n == 1:
        return one
    if n % 10 in (2, 3, 4) and n % 100 not in (12, 13, 14):
        return f"{n} {few}"
    return f"{n} {many}"


def _english_count(n: int, noun: str) -> str:
    return f"one {noun}" if n == 1 else f"{n} {noun}s"
