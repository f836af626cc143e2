"""``driftline train``: data -> fitted estimator -> checked ONNX -> a new registry version."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx
import polars as pl

from driftline.errors import InvalidInput
from driftline.attribution import attach_cover, cover_source
from driftline.lineage import code_version
from driftline.registry import Feature, Registry, VersionMetadata
from driftline.registry.profile import Profile
from driftline.registry.schema import SCHEMA_FILE, Schema
from driftline.registry.store import METADATA_FILE, MODEL_FILE, PROFILE_FILE
from driftline.trainer import estimators, fuses, model_tests, synthetic
from driftline.trainer.baseline import training_profile
from driftline.trainer.data import Dataset, read_table, split_columns
from driftline.trainer.partitions import is_pattern
from driftline.trainer.evaluate import holdout_metrics, onnx_agreement
from driftline.trainer.export import check_export, export_onnx
from driftline.trainer.leakage import find_leaks, refusal
from driftline.trainer.model_card import CARDED, card_files
from driftline.trainer.model_tests_file import TESTS_FILE, ModelTests, check_columns
from driftline.trainer.roles import is_mixed, roles
from driftline.trainer.signature import onnx_signature
from driftline.trainer.targets import encode_target, jsonable, task_of
from driftline.trainer.train_table import train_table
from driftline.trainer.validation import DataQualityReport, prepare_training_data

MAX_ONNX_DEVIATION = 1e-3  # relative; beyond it the exported model is not the trained one


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained version: the same config gives the same model."""

    model: str
    estimator: str = "gradient_boosting"
    data: str | None = None  # CSV or Parquet; None means synthetic data
    synthetic: str = "housing"
    rows: int = 5000
    shift: str | None = None
    target: str | None = None  # default: "price" for synthetic housing
    features: tuple[str, ...] | None = None
    task: str = "auto"  # "regression", "classification" or "auto" (from the target)
    seed: int = 0
    holdout: float = 0.2
    params: dict[str, Any] = field(default_factory=dict)
    schema_overrides: dict[str, Any] | None = None  # from --schema FILE (registry/schema.py load_overrides)
    drop_invalid: bool = False  # train without rows that break hard limits, instead of stopping
    max_fit_rows: int = 1_000_000  # a --data pattern: fit on a seeded sample of at most this many rows
    fuses: dict[str, Any] = field(default_factory=dict)  # --fuse underfit_margin=X / overfit_gap=X (trainer/fuses.py)
    allow: tuple[str, ...] = ()  # --allow underfit / overfit / leakage / tests: publish despite that check
    tests: ModelTests | None = None  # --tests FILE.yaml (trainer/model_tests_file.py): run on the ONNX model


@dataclass(frozen=True)
class TrainedModel:
    config: TrainConfig
    estimator: Any
    task: str
    dataset: Dataset
    holdout_rows: np.ndarray  # indices into dataset.X kept out of training
    classes: tuple[Any, ...] | None
    onnx_model: onnx.ModelProto
    metadata: VersionMetadata
    profile: Profile  # the training baseline live traffic is compared with
    schema: Schema  # what valid input looks like; the server checks every request against it
    quality: DataQualityReport  # what validating the training data found
    table: pl.DataFrame | None = None  # the rows fitted and held out, after validation (a data snapshot's content)


def load_frame(config: TrainConfig) -> tuple[pl.DataFrame, str]:
    """The training table and its target column name."""
    if config.data is not None:
        if config.target is None:
            raise InvalidInput("--target COLUMN is required with --data")
        return read_table(config.data), config.target
    try:
        frame = synthetic.synthetic_frame(config.synthetic, config.rows, seed=config.seed, shift=config.shift)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    target = config.target or (synthetic.CLASS_TARGET if config.estimator == "logistic" else synthetic.TARGET)
    other = {synthetic.TARGET, synthetic.CLASS_TARGET} - {target}
    return frame.drop(sorted(other)), target


def train(config: TrainConfig) -> TrainedModel:
    if not 0.0 < config.holdout < 0.9:
        raise InvalidInput(f"--holdout must be between 0 and 0.9, got {config.holdout}")
    if config.data is not None and is_pattern(config.data):  # partitions, maybe larger than memory
        from driftline.trainer.train_partitioned import train_partitioned

        return train_partitioned(config)
    frame, target = load_frame(config)
    return train_frame(config, frame, target)


def train_frame(config: TrainConfig, frame: pl.DataFrame, target: str) -> TrainedModel:
    """Train on a table in memory (the whole of ``--data FILE``, or the fit sample of a pattern)."""
    features = list(config.features) if config.features else [c for c in frame.columns if c != target]
    missing = [f for f in features if f not in frame.columns]
    if target not in frame.columns or missing:
        split_columns(frame, target, features)  # names what is missing
    fuses.check_settings(config.fuses, config.allow)
    check_columns(config.tests, features)  # a typo in tests.yaml is refused before the fit
    leakage = check_leakage(config, frame, target, features)
    found = roles(frame, features, config.schema_overrides)
    if is_mixed(found):  # categorical or text columns: one pipeline, one input per column
        trained = train_table(config, frame, target, features, found)
    else:
        trained = _train_numeric(config, frame, target, features)
    return model_tests.gate(config.tests, config.allow, with_fuses(config, trained, leakage))


def check_leakage(config: TrainConfig, frame: pl.DataFrame, target: str, features: list[str]) -> dict[str, Any]:
    """Refuse (unless --allow leakage) a feature that is a near-deterministic function of the target."""
    classification = task_of(config, frame[target].to_numpy()) == "classification"
    leaks = find_leaks(frame, target, features, classification, seed=config.seed, holdout=config.holdout)
    allowed = "leakage" in config.allow
    if leaks and not allowed:
        raise InvalidInput(refusal(leaks, target))
    return {"flagged": [{"feature": leak.feature, "direction": leak.direction, "metric": leak.metric,
                         "score": leak.score} for leak in leaks],
            "overridden": allowed}


def with_fuses(config: TrainConfig, trained: TrainedModel, leakage: dict[str, Any]) -> TrainedModel:
    """Check the fitted model against the fit fuses; record them in its lineage, or refuse when one blew."""
    y, _ = encode_target(trained.dataset.y, trained.task)
    fit_rows = np.setdiff1d(np.arange(len(y)), trained.holdout_rows)
    metric = fuses.PRIMARY[trained.task]
    check = fuses.evaluate(trained.estimator, trained.dataset.X, y, fit_rows, trained.holdout_rows, trained.task,
                           trained.metadata.metrics[metric], config.fuses, config.allow)
    fuses.refuse_if_blown(check)
    extra = {**trained.metadata.extra, "fuses": check.results, "leakage": leakage}
    return replace(trained, metadata=replace(trained.metadata, extra=extra))


def _train_numeric(config: TrainConfig, frame: pl.DataFrame, target: str, features: list[str]) -> TrainedModel:
    # The same validator as the server's: rows breaking hard limits stop training (or are dropped).
    prepared = prepare_training_data(frame, features, overrides=config.schema_overrides,
                                     drop_invalid=config.drop_invalid)
    if prepared.report.rejected_rows:
        frame = frame.filter(pl.Series(prepared.kept)).with_columns(
            [pl.col(f).cast(pl.Float64, strict=False) for f in features])
    dataset = split_columns(frame, target, features)
    task = task_of(config, dataset.y)
    y, classes = encode_target(dataset.y, task)

    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(dataset.X))
    n_holdout = max(1, int(round(len(order) * config.holdout)))
    holdout, fit_rows = np.sort(order[:n_holdout]), np.sort(order[n_holdout:])
    if len(fit_rows) < 2:
        raise InvalidInput(f"only {len(dataset.X)} rows: too few to train and hold some out")

    params = estimators.parameters(config.estimator, config.params, config.seed)
    estimator = estimators.build(config.estimator, task, params)
    try:
        estimators.fit(estimator, dataset.X[fit_rows], y[fit_rows], label=config.model)
    except ValueError as exc:  # scikit-learn's parameter and data checks
        raise InvalidInput(f"training {config.estimator} failed: {exc}") from exc

    # Node cover from the training rows travels inside the artifact: TreeSHAP needs it at serving time.
    model = attach_cover(export_onnx(estimator, len(dataset.features), model_name=config.model), dataset.X[fit_rows])
    metrics = holdout_metrics(estimator, dataset.X[holdout], y[holdout], task)
    deviation = onnx_agreement(model, estimator, dataset.X[holdout], task)  # labels and probabilities
    if deviation > MAX_ONNX_DEVIATION:
        raise InvalidInput(
            f"the exported ONNX model disagrees with the trained estimator (max relative deviation {deviation:.2e}); "
            "nothing was published"
        )
    check = check_export(model, estimator, dataset.X)  # raw margins on every fit and holdout row, and each split
    if not check.ok:
        raise InvalidInput(f"the exported ONNX model disagrees with the trained estimator: {check.describe()}; "
                           "nothing was published")
    metrics["onnx_max_rel_deviation"] = max(deviation, check.max_rel_deviation)
    inputs, outputs = onnx_signature(model)
    metadata = VersionMetadata(
        features=tuple(Feature(n, d) for n, d in zip(dataset.features, dataset.dtypes, strict=True)),
        inputs=inputs,
        outputs=outputs,
        task=task,
        estimator=config.estimator,
        parameters=jsonable(params),
        metrics=metrics,
        data_version=dataset.version,
        data_rows=len(dataset.X),
        code_version=code_version(),
        created_at=now_utc(),
        source="driftline train",
        target=target,
        classes=classes,
        extra={
            "data": config.data or f"synthetic:{config.synthetic}?rows={config.rows}&seed={config.seed}"
            + (f"&shift={config.shift}" if config.shift else ""),
            "holdout_fraction": config.holdout,
            "holdout_rows": int(len(holdout)),
            "seed": config.seed,
            "data_quality": prepared.report.to_dict(),
            "attribution_cover": cover_source(model),
        },
    )
    profile = training_profile(model, dataset.X[fit_rows], metadata)
    return TrainedModel(config, estimator, task, dataset, holdout, classes, model, metadata, profile,
                        prepared.schema, prepared.report, table=frame.select([*dataset.features, target]))


def publish(registry: Registry, name: str, model: onnx.ModelProto, metadata: VersionMetadata,
            profile: Profile | None, schema: Schema | None = None, tests: ModelTests | None = None,
            data_files: dict[str, bytes] | None = None) -> int:
    files = {
        MODEL_FILE: model.SerializeToString(),
        METADATA_FILE: metadata.to_json().encode(),
    }
    if profile is not None:  # a model published without reference data has no baseline
        files[PROFILE_FILE] = profile.to_json().encode()
    if schema is not None:
        files[SCHEMA_FILE] = schema.to_json().encode()
    if tests is not None:  # the user's file as written: retrain runs it on the next candidate
        files[TESTS_FILE] = tests.text.encode()
    if metadata.source in CARDED:
        files.update(card_files(name, metadata, profile))
    files.update(data_files or {})  # a training-data snapshot (trainer/snapshot.py)
    return registry.publish(name, files)


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
