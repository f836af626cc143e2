"""Target leakage: a feature that is (nearly) a function of the target, refused by name before fitting.

For each feature, two one-feature decision trees are fitted on the training rows and scored on held-out rows:
the target predicted from the feature alone, and the feature predicted from the target alone. A feature is
leakage when either is near perfect: r2 >= ``R2_LIMIT`` (0.98) for a number, accuracy >= ``ACCURACY_LIMIT``
(0.99) for classes, where the accuracy must also remove at least 90% of the errors of guessing the most frequent
value (so a near-constant column is not "predicted"). Legitimately strong features of real data explain a large
share of the target, not all of it; a column derived from the target (``price_segment`` cut from ``price``, a
currency-converted copy, a label-encoded outcome) explains all of it. ``--allow leakage`` trains anyway.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

R2_LIMIT = 0.98
ACCURACY_LIMIT = 0.99
ERROR_REDUCTION = 0.9  # accuracy must remove this share of the errors of guessing the most frequent value
MAX_CODES = 50  # a string column with more distinct values (free text) is not checked
DISCRETE = 20  # a feature with at most this many distinct values is predicted as classes
MAX_ROWS = 20_000  # enough to see a deterministic relation; keeps the check cheap on big tables
MIN_HOLDOUT = 20


@dataclass(frozen=True)
class Leak:
    feature: str
    direction: str  # "feature->target" or "target->feature"
    metric: str
    score: float

    def describe(self, target: str) -> str:
        what, source = ((target, self.feature) if self.direction == "feature->target" else (self.feature, target))
        limit = R2_LIMIT if self.metric == "r2" else ACCURACY_LIMIT
        return (f"{self.feature} (a one-feature tree predicts {what} from {source} with holdout "
                f"{self.metric} {self.score:.3f}, >= {limit})")


def find_leaks(frame: pl.DataFrame, target: str, features: list[str], classification: bool,
               seed: int = 0, holdout: float = 0.2) -> list[Leak]:
    frame = frame.filter(pl.col(target).is_not_null())
    if frame.height > MAX_ROWS:
        frame = frame.sample(MAX_ROWS, seed=seed)
    y, y_discrete = _numeric(frame[target], force_codes=classification)
    if y is None or frame.height < 2 * MIN_HOLDOUT:
        return []
    rng = np.random.default_rng(seed)
    order = rng.permutation(frame.height)
    n_holdout = max(MIN_HOLDOUT, int(round(frame.height * holdout)))
    test = np.zeros(frame.height, dtype=bool)
    test[order[:n_holdout]] = True
    leaks = []
    for name in features:
        if name == target or name not in frame.columns:
            continue
        x, x_discrete = _numeric(frame[name])
        if x is None:
            continue
        ok = np.isfinite(x) & np.isfinite(y)
        fit, held = ok & ~test, ok & test
        if fit.sum() < MIN_HOLDOUT or held.sum() < MIN_HOLDOUT:
            continue
        for direction, source, goal, discrete in (("feature->target", x, y, y_discrete or classification),
                                                   ("target->feature", y, x, x_discrete)):
            scored = _score(source, goal, discrete, fit, held, seed)
            if scored is not None:
                leaks.append(Leak(name, direction, *scored))
                break
    return leaks


def _score(source: np.ndarray, goal: np.ndarray, discrete: bool, fit: np.ndarray, held: np.ndarray,
           seed: int) -> tuple[str, float] | None:
    """(metric, score) when ``goal`` is near-perfectly predicted from ``source`` alone, else None."""
    X_fit, X_held = source[fit].reshape(-1, 1), source[held].reshape(-1, 1)
    if discrete:
        goal = np.unique(goal, return_inverse=True)[1].reshape(-1)  # classes as codes: 0.05 is a class too
        values, counts = np.unique(goal[held], return_counts=True)
        if len(values) < 2 or counts.sum() - counts.max() < 5:
            return None  # (nearly) constant on the holdout: nothing to predict
        majority = counts.max() / counts.sum()
        with warnings.catch_warnings():  # "more classes than half the rows" is expected of a numeric column here
            warnings.simplefilter("ignore", UserWarning)
            model = DecisionTreeClassifier(max_depth=6, min_samples_leaf=5, random_state=seed).fit(X_fit, goal[fit])
        accuracy = float(np.mean(model.predict(X_held) == goal[held]))
        if accuracy >= ACCURACY_LIMIT and (1 - accuracy) <= (1 - ERROR_REDUCTION) * (1 - majority):
            return "accuracy", accuracy
        return None
    if np.var(goal[held]) == 0:
        return None
    model = DecisionTreeRegressor(max_depth=8, min_samples_leaf=5, random_state=seed).fit(X_fit, goal[fit])
    residual = goal[held] - model.predict(X_held)
    r2 = float(1 - np.mean(residual ** 2) / np.var(goal[held]))
    return ("r2", r2) if r2 >= R2_LIMIT else None


def _numeric(column: pl.Series, force_codes: bool = False) -> tuple[np.ndarray | None, bool]:
    """The column as floats (NaN where missing) and whether it is discrete; None when it cannot be checked."""
    dtype = column.dtype
    if dtype.is_numeric() or dtype == pl.Boolean:
        values = column.cast(pl.Float64).fill_nan(None).to_numpy().astype(np.float64)
        if force_codes:
            return _codes(column.cast(pl.String)), True
        distinct = np.unique(values[np.isfinite(values)])
        return values, len(distinct) <= DISCRETE
    if dtype in (pl.String, pl.Categorical, pl.Enum) or force_codes:
        text = column.cast(pl.String)
        if text.n_unique() > MAX_CODES:
            return None, False
        return _codes(text), True
    return None, False


def _codes(text: pl.Series) -> np.ndarray:
    values: list[Any] = text.to_list()
    known = sorted({v for v in values if v is not None})
    lookup = {v: i for i, v in enumerate(known)}
    return np.array([lookup[v] if v is not None else np.nan for v in values], dtype=np.float64)


def refusal(leaks: list[Leak], target: str) -> str:
    names = "; ".join(leak.describe(target) for leak in leaks)
    one = len(leaks) == 1
    return (f"target leakage: {names}. A column this tied to the target {target!r} is almost always computed from "
            f"it (or it from the column) and is not known when a prediction is asked for: drop {'it' if one else 'them'} "
            "(--features) or pass --allow leakage to train anyway; nothing was published")
