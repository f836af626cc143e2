"""``driftline retrain``: the production version's recipe on new data, published only if it is no worse.

The candidate is trained with the same estimator, parameters, target and features as the version
it would replace; both are scored on the candidate's holdout rows (the same rows for both), and the
candidate is published only when its primary metric is within ``tolerance`` of the current one's
there, and also within ``tolerance`` of the score the current version had on its own holdout when it
was trained. The second check catches broken data (shuffled labels, a wrong join) that makes every
model look bad on the new rows, where a model that learnt nothing would otherwise "win".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnxruntime as ort

from driftline.errors import InvalidInput
from driftline.registry import Registry
from driftline.registry.metadata import TRAINED_BY_DRIFTLINE
from driftline.registry.store import MODEL_FILE, PRODUCTION
from driftline.registry.schema import SCHEMA_FILE, Policy, Schema
from driftline.registry.table import ENCODED_OUTPUT, STRING_ROLES, TableSpec, table_of
from driftline.trainer import snapshot
from driftline.trainer.evaluate import holdout_metrics
from driftline.trainer.model_tests_file import TESTS_FILE, ModelTests
from driftline.trainer.model_tests_file import parse as parse_tests
from driftline.trainer.train import TrainConfig, TrainedModel, publish, train

PRIMARY = {"regression": ("r2", True), "classification": ("accuracy", True)}  # metric, higher is better


@dataclass(frozen=True)
class RetrainOutcome:
    published: int | None  # the new version, or None when refused
    baseline_version: int
    metric: str
    baseline_score: float
    candidate_score: float
    reason: str


class OnnxModel:
    """A stored version scored like an estimator (``predict``, ``predict_proba``) through onnxruntime."""

    def __init__(self, model_bytes: bytes, table: TableSpec | None = None) -> None:
        self._session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._table = table  # a mixed table is fed one input per column
        self._outputs = [o.name for o in self._session.get_outputs() if table is None or o.name != ENCODED_OUTPUT]

    def _run(self, X: Any) -> list[np.ndarray]:
        if self._table is not None:
            from driftline.trainer.table_pipeline import onnx_feeds

            return self._session.run(self._outputs, onnx_feeds(X, self._table.columns))
        return self._session.run(self._outputs, {self._input: X.astype(np.float32)})

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._run(X)[0].reshape(-1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._run(X)[1]


def retrain(registry: Registry, name: str, data: str, tolerance: float = 0.02, base: str | None = None,
            tests: ModelTests | None = None, allow: tuple[str, ...] = (), snapshot_data: bool | None = None
            ) -> tuple[RetrainOutcome, TrainedModel | None]:
    aliases = registry.aliases(name)
    baseline_version = registry.resolve(name, base or (PRODUCTION if PRODUCTION in aliases else None))
    stored = registry.open(name, baseline_version)
    meta = stored.metadata
    # The version's own tests.yaml gates its successor too.
    candidate = train(replace(recipe(stored, data), tests=tests or _stored_tests(stored), allow=allow))
    if meta.classes is not None and tuple(candidate.classes or ()) != tuple(meta.classes):
        raise InvalidInput(f"the new data's classes {candidate.classes} differ from version "
                           f"{baseline_version}'s {meta.classes}; a retrain cannot change the classes")
    metric, higher_is_better = PRIMARY[candidate.task]
    X = candidate.dataset.X[candidate.holdout_rows]
    y = _encoded_target(candidate)
    current = OnnxModel(stored.read(MODEL_FILE), table_of(meta.extra))
    baseline_score = holdout_metrics(current, X, y, candidate.task)[metric]
    candidate_score = candidate.metadata.metrics[metric]
    recorded = meta.metrics.get(metric)
    outcome = RetrainOutcome(None, baseline_version, metric, baseline_score, candidate_score, "")
    for reference, where in ((baseline_score, "on the same rows"), (recorded, "on its own holdout when trained")):
        if reference is None:
            continue
        worse_by = (reference - candidate_score) if higher_is_better else (candidate_score - reference)
        if worse_by > tolerance:
            return replace(outcome, reason=(
                f"refused: {metric} {candidate_score:.4f} on the new holdout is worse than version "
                f"{baseline_version}'s {reference:.4f} {where} by {worse_by:.4f} (tolerance {tolerance}); "
                "nothing was published"
            )), candidate
    extra: dict[str, Any] = {**candidate.metadata.extra, "retrained_from": baseline_version,
                             f"baseline_{metric}_on_holdout": baseline_score}
    metadata, data_files = replace(candidate.metadata, source="driftline retrain", extra=extra), {}
    if snapshot.wanted(snapshot_data, registry.location):  # the new data, kept like train keeps it
        metadata, data_files = snapshot.take(replace(candidate, metadata=metadata))
    version = publish(registry, name, candidate.onnx_model, metadata, candidate.profile, candidate.schema,
                      tests=candidate.config.tests, data_files=data_files)
    return replace(outcome, published=version, reason=(
        f"published version {version}: {metric} {candidate_score:.4f} vs version {baseline_version}'s "
        f"{baseline_score:.4f} on the same holdout rows"
    )), candidate


def recipe(stored: Any, data: str) -> TrainConfig:
    """The training config a version's lineage records, on other ``data``: what retrain and reproduce repeat."""
    meta = stored.metadata
    if meta.source not in TRAINED_BY_DRIFTLINE:  # train, retrain and reproduce all record a whole recipe
        raise InvalidInput(f"{stored.model} version {stored.version} was imported ({meta.source}); only a version "
                           "driftline trained has a recipe to repeat")
    return TrainConfig(
        model=stored.model, estimator=meta.estimator, data=data, target=meta.target, features=meta.feature_names,
        task=meta.task, seed=int(meta.extra.get("seed", 0)), holdout=float(meta.extra.get("holdout_fraction", 0.2)),
        params={k: v for k, v in meta.parameters.items() if k != "random_state"},  # random_state comes from seed
        # What a person declared about the data holds for the new data too: the new rows are validated against it
        # (and refused as train refuses them) and the new version keeps it; a mixed table keeps its columns' roles.
        schema_overrides=carried_forward(_stored_schema(stored), table_of(meta.extra)),
        max_fit_rows=int((meta.extra.get("fit_sample") or {}).get("max_rows", TrainConfig.max_fit_rows)),
    )


def carried_forward(schema: Schema | None, table: TableSpec | None) -> dict[str, Any] | None:
    """The overrides (``driftline train --schema``'s form) that repeat what a version's schema declared: every
    declared limit of a feature the new training reads by name, the validation policy, and a mixed table's
    column roles. Limits inferred from the old data are not carried: the new data infers its own."""
    overrides: dict[str, Any] = {}
    if table is not None:
        overrides.update({c.name: {"type": c.role} for c in table.columns if c.role in STRING_ROLES})
    if schema is not None:
        # A mixed table's schema describes its encoded view (codes, word counts), not the columns a person
        # writes overrides for: only its number columns' limits carry by name.
        named = None if table is None else {c.name for c in table.columns if c.role not in STRING_ROLES}
        for feature in schema.features:
            if feature.declared and (named is None or feature.name in named):
                limits = {limit: getattr(feature, limit) for limit in feature.declared}
                if "categories" in limits:
                    limits["categories"] = list(limits["categories"])
                overrides.setdefault(feature.name, {}).update(limits)
        policy = schema.policy.to_dict()
        if policy != Policy().to_dict():
            overrides["policy"] = policy
    return overrides or None


def _stored_schema(stored: Any) -> Schema | None:
    return Schema.from_json(stored.read(SCHEMA_FILE)) if SCHEMA_FILE in stored.checksums else None


def _stored_tests(stored: Any) -> ModelTests | None:
    if TESTS_FILE not in stored.checksums:
        return None
    return parse_tests(stored.read(TESTS_FILE).decode(), f"{stored.model} version {stored.version}'s {TESTS_FILE}")


def _encoded_target(trained: TrainedModel) -> np.ndarray:
    y = trained.dataset.y[trained.holdout_rows]
    if trained.task == "regression":
        return y.astype(np.float64)
    classes = np.asarray(trained.classes, dtype=object)
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    return np.array([lookup[v] for v in y.tolist()], dtype=np.int64)
