"""The scikit-learn estimators ``driftline train --estimator`` offers, and fitting them with progress."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from driftline.errors import InvalidInput

# name -> (regressor factory, classifier factory, defaults). None: the task is not offered.
_CATALOGUE: dict[str, tuple[type | None, type | None, dict[str, Any]]] = {
    "gradient_boosting": (
        GradientBoostingRegressor, GradientBoostingClassifier,
        {"n_estimators": 200, "max_depth": 3, "learning_rate": 0.1, "subsample": 1.0},
    ),
    "hist_gradient_boosting": (
        HistGradientBoostingRegressor, HistGradientBoostingClassifier,
        # Early stopping would make the number of iterations depend on a hidden split: keep it explicit.
        {"max_iter": 200, "learning_rate": 0.1, "early_stopping": False},
    ),
    "random_forest": (
        RandomForestRegressor, RandomForestClassifier,
        {"n_estimators": 100, "max_depth": 12, "min_samples_leaf": 2},
    ),
    "linear": (LinearRegression, None, {}),
    "logistic": (None, LogisticRegression, {"max_iter": 1000}),
}

ESTIMATORS: tuple[str, ...] = tuple(_CATALOGUE)
_SEEDED = {"gradient_boosting", "hist_gradient_boosting", "random_forest", "logistic"}


def tasks_of(name: str) -> tuple[str, ...]:
    regressor, classifier, _ = _entry(name)
    return tuple(t for t, f in (("regression", regressor), ("classification", classifier)) if f is not None)


def parameters(name: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """The full parameter set recorded in the version's lineage."""
    params = dict(_entry(name)[2])
    if name in _SEEDED:
        params["random_state"] = seed
    params.update(overrides)
    return params


def build(name: str, task: str, params: dict[str, Any]) -> Any:
    regressor, classifier, _ = _entry(name)
    factory = regressor if task == "regression" else classifier
    if factory is None:
        raise InvalidInput(f"estimator {name!r} does not do {task}; it does: {', '.join(tasks_of(name))}")
    try:
        estimator = factory(**params)
    except TypeError as exc:
        raise InvalidInput(f"bad --param for {name}: {exc}") from exc
    if name == "logistic":
        # Unscaled features (areas in m2 next to counts) make lbfgs converge slowly and badly.
        return Pipeline([("scale", StandardScaler()), ("model", estimator)])
    return estimator


def fit(estimator: Any, X: np.ndarray, y: np.ndarray, *, label: str) -> Any:
    """Fit, with a progress bar over boosting stages or trees when stdout is a terminal."""
    stages = _stage_count(estimator)
    with tqdm(total=stages or 1, desc=f"training {label}", unit="stage", disable=None, leave=False) as bar:
        if stages and isinstance(estimator, (GradientBoostingRegressor, GradientBoostingClassifier)):
            estimator.fit(X, y, monitor=_monitor(bar))
        elif stages:
            _fit_in_chunks(estimator, X, y, stages, bar)
        else:
            estimator.fit(X, y)
            bar.update(1)
    return estimator


def _entry(name: str) -> tuple[type | None, type | None, dict[str, Any]]:
    try:
        return _CATALOGUE[name]
    except KeyError:
        raise InvalidInput(f"unknown estimator {name!r}; choose one of: {', '.join(ESTIMATORS)}") from None


def _stage_count(estimator: Any) -> int:
    if isinstance(estimator, (GradientBoostingRegressor, GradientBoostingClassifier)):
        return estimator.n_estimators
    if isinstance(estimator, (RandomForestRegressor, RandomForestClassifier)):
        return estimator.n_estimators
    if isinstance(estimator, (HistGradientBoostingRegressor, HistGradientBoostingClassifier)):
        return estimator.max_iter
    return 0


def _monitor(bar: tqdm) -> Callable[..., bool]:
    def on_stage(_i: int, _estimator: Any, _locals: dict[str, Any]) -> bool:
        bar.update(1)
        return False  # never stop early

    return on_stage


def _fit_in_chunks(estimator: Any, X: np.ndarray, y: np.ndarray, total: int, bar: tqdm) -> None:
    # warm_start grows one ensemble chunk by chunk, so the bar moves while trees are added; with a
    # fixed random_state the result is still deterministic.
    attr = "max_iter" if hasattr(estimator, "max_iter") else "n_estimators"
    step = max(1, total // 20)
    estimator.set_params(warm_start=True)
    done = 0
    while done < total:
        done = min(total, done + step)
        estimator.set_params(**{attr: done})
        estimator.fit(X, y)
        bar.update(done - bar.n)
    estimator.set_params(warm_start=False)
