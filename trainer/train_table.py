"""``driftline train`` on a mixed table: encoders and estimator in one pipeline, served one input per column.

The steps are today's for numeric tables, on the table's view where the numeric path uses the matrix:
validate the training rows with the schema the server will use, fit, export the whole pipeline to ONNX,
check it against scikit-learn on the holdout, and compute the baseline (the view's columns, the model's
answers, attribution shares per column, word tables) with the exported model itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
import polars as pl

from driftline.attribution import attach_cover, explainer_for, per_row
from driftline.errors import InvalidInput
from driftline.lineage import code_version
from driftline.registry import Feature, VersionMetadata
from driftline.registry.columns import attribution_shares
from driftline.registry.table import TABLE_KEY, TableSpec
from driftline.registry.table_view import TableEncoder
from driftline.trainer import estimators, table_pipeline
from driftline.trainer.baseline import ATTRIBUTION_SAMPLE
from driftline.trainer.data import Dataset, data_version
from driftline.trainer.evaluate import holdout_metrics
from driftline.registry.table import NUMERIC
from driftline.trainer.roles import is_string, table_columns
from driftline.trainer.targets import encode_target, jsonable, task_of
from driftline.trainer.signature import onnx_signature
from driftline.trainer.table_baseline import table_profile, table_schema
from driftline.trainer.validation import DataQualityReport

MAX_ONNX_DEVIATION = 1e-3


@dataclass(frozen=True)
class TableRows:
    """A mixed table's rows, indexable by row numbers as a feature matrix is (for holdout checks)."""

    frame: Any  # pandas.DataFrame: what the scikit-learn pipeline takes

    def __getitem__(self, rows: np.ndarray) -> Any:
        return self.frame.iloc[np.asarray(rows)].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)


def train_table(config: Any, frame: pl.DataFrame, target: str, features: list[str], found: Mapping[str, str]) -> Any:
    from driftline.trainer.train import TrainedModel, now_utc  # the numeric path's result type; imported late (cycle)

    # Numbers read as strings (a typo in a numeric column) become numbers; what is not one becomes missing.
    frame = frame.with_columns([pl.col(n).cast(pl.Float64, strict=False) for n, r in found.items()
                                if r == NUMERIC and is_string(frame[n].dtype)])
    columns = table_columns(frame, found, config.schema_overrides)
    spec = TableSpec(columns)
    encoder = TableEncoder(spec)
    used = frame.select([*features, target])
    view = encoder.view({c.name: _cells(used[c.name], c.datatype) for c in columns})
    dtypes = {n: str(frame[n].dtype) for n in features}
    schema = table_schema(view, encoder, dtypes, config.schema_overrides)
    # The same validation as the server's, on the same view: rows breaking hard limits stop training.
    result = schema.validate(view.matrix)
    quality = DataQualityReport.of(result, schema.policy, drop_invalid=config.drop_invalid)
    quality.raise_if_rejected()
    if not quality.kept.any():
        raise InvalidInput(quality.format() + "\nevery row is invalid: nothing is left to train on")
    if quality.rejected_rows:
        used = used.filter(pl.Series(quality.kept))
        view = encoder.view({c.name: _cells(used[c.name], c.datatype) for c in columns})
        schema = schema.with_training_range(view.matrix)

    y_raw = used[target].to_numpy()
    task = task_of(config, y_raw)
    y, classes = encode_target(y_raw, task)
    table = table_pipeline.to_pandas(used.select(features), columns)
    rows = TableRows(table)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(table))
    n_holdout = max(1, int(round(len(order) * config.holdout)))
    holdout, fit_rows = np.sort(order[:n_holdout]), np.sort(order[n_holdout:])
    if len(fit_rows) < 2:
        raise InvalidInput(f"only {len(table)} rows: too few to train and hold some out")

    params = estimators.parameters(config.estimator, config.params, config.seed)
    pipeline = table_pipeline.build_pipeline(columns, estimators.build(config.estimator, task, params))
    try:
        table_pipeline.fit_pipeline(pipeline, rows[fit_rows], y[fit_rows], label=config.model)
    except ValueError as exc:
        raise InvalidInput(f"training {config.estimator} failed: {exc}") from exc

    encoded_fit = table_pipeline.encode(pipeline, rows[fit_rows])
    model = attach_cover(table_pipeline.export_pipeline(pipeline, columns, model_name=config.model), encoded_fit)
    spec = TableSpec(columns, table_pipeline.encoded_groups(pipeline, columns))
    encoder = TableEncoder(spec)
    metrics = holdout_metrics(pipeline, rows[holdout], y[holdout], task)
    deviation = table_pipeline.onnx_table_agreement(model, pipeline, rows[holdout], task)
    if deviation > MAX_ONNX_DEVIATION:
        raise InvalidInput(f"the exported ONNX model disagrees with the trained pipeline (max relative deviation "
                           f"{deviation:.2e}); nothing was published")
    metrics["onnx_max_rel_deviation"] = deviation
    inputs, outputs = onnx_signature(model)
    outputs = tuple(o for o in outputs if o.name != spec.encoded_output)
    metadata = VersionMetadata(
        features=tuple(Feature(n, dtypes[n]) for n in features),
        inputs=inputs, outputs=outputs, task=task, estimator=config.estimator, parameters=jsonable(params),
        metrics=metrics, data_version=data_version(used), data_rows=len(table), code_version=code_version(),
        created_at=now_utc(), source="driftline train", target=target, classes=classes,
        extra={
            "data": config.data or f"synthetic:{config.synthetic}?rows={config.rows}&seed={config.seed}"
            + (f"&shift={config.shift}" if config.shift else ""),
            "holdout_fraction": config.holdout, "holdout_rows": int(len(holdout)), "seed": config.seed,
            "data_quality": quality.to_dict(), TABLE_KEY: spec.to_dict(),
        },
    )
    profile = _profile(model, rows[fit_rows], encoder, metadata)
    dataset = Dataset(features=tuple(features), dtypes=tuple(dtypes[n] for n in features), X=rows, y=y_raw,
                      target=target, version=metadata.data_version)
    return TrainedModel(config, pipeline, task, dataset, holdout, classes, model, metadata, profile, schema, quality,
                        table=used)


def _profile(model: Any, fit: Any, encoder: TableEncoder, metadata: VersionMetadata) -> Any:
    """The baseline, from the exported model's own answers on the training rows."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = table_pipeline.onnx_feeds(fit, encoder.spec.columns)
    names = [o.name for o in metadata.outputs] + [encoder.spec.encoded_output]
    result = dict(zip(names, session.run(names, feeds), strict=True))
    encoded = result.pop(encoder.spec.encoded_output)
    view = encoder.view({c.name: feeds[c.name] for c in encoder.spec.columns})
    shares = None
    explainer = explainer_for(model, None, groups=encoder.spec.groups, columns=len(encoder.spec.columns))
    if explainer is not None:
        shares = np.full((len(encoded), len(encoder.spec.columns)), np.nan)
        sample = np.random.default_rng(0).permutation(len(encoded))[:ATTRIBUTION_SAMPLE]
        phi, base = explainer.explain(encoded[sample])
        per_column, _ = per_row(phi, base, result["label"][sample] if "label" in result else None)
        shares[sample] = attribution_shares(per_column)
    return table_profile(view, result, shares, encoder, metadata)


def _cells(column: pl.Series, datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        return np.array(column.cast(pl.String).to_list(), dtype=object)
    return column.cast(pl.Float64).to_numpy()
