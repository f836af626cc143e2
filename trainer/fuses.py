"""Fit fuses: a trained model is published only if it learnt something and did not memorise its rows.

Two checks run on every ``driftline train`` (and so every ``driftline retrain``) after fitting, before
publishing, on the primary metric (r2 for regression, accuracy for classification):

``underfit``
    The model's holdout score must beat a trivial baseline fitted on the same training rows (predict the
    training mean; predict the most frequent class) by ``underfit_margin``. Default: r2 +0.05 for regression,
    accuracy +0.02 for classification. Shuffled labels, a wrong join or a useless feature set blow it.
``overfit``
    The training-rows score minus the holdout score must be at most ``overfit_gap`` (default 0.2 for r2, 0.3 for accuracy). A
    depth-unbounded tree on a few hundred noisy rows blows it.

``--fuse underfit_margin=0.1 --fuse overfit_gap=0.2`` moves a threshold; ``--allow underfit`` /
``--allow overfit`` publishes despite a blown fuse. Either way the version's ``metadata.extra["fuses"]``
records the numbers, the thresholds and what was overridden.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor

from driftline.errors import InvalidInput
from driftline.trainer.evaluate import holdout_metrics

PRIMARY = {"regression": "r2", "classification": "accuracy"}  # higher is better for both
UNDERFIT_MARGIN = {"regression": 0.05, "classification": 0.02}
# Looser than the textbook 0.15: a sound random forest retrained on 300 rows showed a 0.17 r2 gap from its small
# holdout alone, and boosted classifiers routinely reach 100% training accuracy with a 0.25 gap to a good holdout
# score (accuracy moves in whole rows). The fuse is for memorising (train 1.0, holdout far below), not the usual gap.
OVERFIT_GAP = {"regression": 0.2, "classification": 0.3}
FUSES = ("underfit", "overfit")
ALLOWABLE = (*FUSES, "leakage", "tests")  # what --allow takes (tests: trainer/model_tests.py)
SETTINGS = ("underfit_margin", "overfit_gap")  # what --fuse takes
BASELINE = {"regression": "predicting the mean", "classification": "predicting the most frequent class"}


class FuseBlown(InvalidInput):
    """A fuse refused the publish; ``results`` holds the numbers."""

    def __init__(self, message: str, results: dict[str, Any]) -> None:
        super().__init__(message)
        self.results = results


def check_settings(settings: Mapping[str, Any], allow: Iterable[str]) -> None:
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise InvalidInput(f"unknown --fuse {', '.join(unknown)}; the fuses take: {', '.join(SETTINGS)}")
    for key, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise InvalidInput(f"--fuse {key} must be a number, got {value!r}")
    bad = sorted(set(allow) - set(ALLOWABLE))
    if bad:
        raise InvalidInput(f"unknown --allow {', '.join(bad)}; it takes: {', '.join(ALLOWABLE)}")


@dataclass(frozen=True)
class FuseCheck:
    results: dict[str, Any]  # for metadata.extra["fuses"]
    blown: tuple[str, ...]  # blown and not allowed: refuse
    messages: tuple[str, ...]


def evaluate(estimator: Any, X: Any, y: np.ndarray, fit_rows: np.ndarray, holdout: np.ndarray, task: str,
             holdout_score: float, settings: Mapping[str, Any] | None = None,
             allow: Iterable[str] = ()) -> FuseCheck:
    """Score the fitted ``estimator`` against the fuses; ``X`` and ``y`` index by row number."""
    settings = dict(settings or {})
    allow = set(allow)
    check_settings(settings, allow)
    metric = PRIMARY[task]
    margin = float(settings.get("underfit_margin", UNDERFIT_MARGIN[task]))
    gap_limit = float(settings.get("overfit_gap", OVERFIT_GAP[task]))
    dummy = DummyRegressor(strategy="mean") if task == "regression" else DummyClassifier(strategy="most_frequent")
    dummy.fit(np.zeros((len(fit_rows), 1)), y[fit_rows])
    baseline = float(holdout_metrics(dummy, np.zeros((len(holdout), 1)), y[holdout], task)[metric])
    train_score = float(holdout_metrics(estimator, X[fit_rows], y[fit_rows], task)[metric])
    gap = train_score - holdout_score
    underfit = holdout_score < baseline + margin
    overfit = gap > gap_limit
    results: dict[str, Any] = {
        "metric": metric,
        "holdout": holdout_score,
        "train": train_score,
        "baseline": baseline,
        "baseline_strategy": "mean" if task == "regression" else "most_frequent",
        "underfit_margin": margin,
        "overfit_gap": gap_limit,
        "gap": gap,
        "blown": [name for name, hit in (("underfit", underfit), ("overfit", overfit)) if hit],
        "overridden": sorted(name for name in FUSES if name in allow),
    }
    messages = []
    if underfit:
        messages.append(f"underfit fuse blown: holdout {metric} {holdout_score:.3f} vs {baseline:.3f} for "
                        f"{BASELINE[task]} (needs +{margin:g})")
    if overfit:
        messages.append(f"overfit fuse blown: {metric} {train_score:.3f} on the training rows vs "
                        f"{holdout_score:.3f} on the holdout, a gap of {gap:.3f} (at most {gap_limit:g})")
    blown = tuple(name for name in results["blown"] if name not in allow)
    return FuseCheck(results, blown, tuple(messages))


def refuse_if_blown(check: FuseCheck) -> None:
    if not check.blown:
        return
    refused = [m for m in check.messages if m.split(" ", 1)[0] in check.blown]
    hints = "driftline train " + " ".join(f"--allow {name}" for name in check.blown)
    raise FuseBlown("; ".join(refused) + f"; nothing was published ({hints} publishes anyway, "
                    "--fuse underfit_margin=X / overfit_gap=X moves a threshold)", check.results)
