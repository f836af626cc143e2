"""``driftline publish``: import an ONNX model trained elsewhere, with the data it was trained on.

An imported model gets what a trained one gets from its data: a schema inferred by the trainer's own
function (:func:`~driftline.trainer.validation.prepare_training_data`, with the same ``--schema`` overrides),
a training profile, and node cover for tree ensembles; its lineage names the estimator the graph says it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import onnx
import polars as pl

from driftline.attribution import attach_cover
from driftline.errors import InvalidInput, NotFound
from driftline.lineage import code_version
from driftline.registry import Feature, Registry, TensorSpec, VersionMetadata
from driftline.trainer.baseline import training_profile
from driftline.trainer.data import read_table, split_columns
from driftline.trainer.publish_tensors import import_tensor_model
from driftline.trainer.signature import onnx_signature
from driftline.trainer.train import now_utc, publish
from driftline.trainer.validation import prepare_training_data

TENSOR_REFERENCE = ".npz"  # named tensors: the reference of a model that is not one table
ML_DOMAIN = "ai.onnx.ml"
# The ai.onnx.ml operators that are a whole estimator (preprocessing ones such as Scaler are not).
PREDICTORS = ("TreeEnsembleRegressor", "TreeEnsembleClassifier", "TreeEnsemble", "LinearRegressor",
              "LinearClassifier", "SVMRegressor", "SVMClassifier")
# skl2onnx names the graph "ONNX(<estimator class>)" unless the caller names it.
_SKL2ONNX_GRAPH = re.compile(r"ONNX\((\w+)\)")


def import_onnx(registry: Registry, name: str, onnx_path: str | Path, reference: str | Path | None,
                target: str | None = None, *, schema_overrides: dict[str, Any] | None = None,
                drop_invalid: bool = False) -> int:
    """Publish ``onnx_path`` as the next version of ``name``.

    With a reference table (CSV/Parquet) the model must take one 2-D float input: the table's columns are
    the feature names in input order; a column named ``target`` (when given and present) is left out.
    ``schema_overrides`` (``--schema FILE``, see :func:`~driftline.registry.schema.load_overrides`) declare
    limits on top of the inferred schema; rows of the reference that break a rejecting constraint stop the
    import unless ``drop_invalid``. Any other model is published with a reference of named tensors (``.npz``)
    or none (:mod:`driftline.trainer.publish_tensors`).
    """
    onnx_path = Path(onnx_path)
    model = load_onnx(onnx_path)
    try:
        inputs, outputs = onnx_signature(model)
    except ValueError as exc:
        raise InvalidInput(f"{onnx_path} cannot be served: {exc}") from exc
    if reference is None or Path(reference).suffix.lower() == TENSOR_REFERENCE:
        if schema_overrides:
            raise InvalidInput("--schema declares limits on the columns of a reference table (CSV/Parquet); "
                               "this model is published without one")
        return import_tensor_model(registry, name, model, onnx_path, inputs, outputs,
                                   None if reference is None else Path(reference), estimator_of(model))
    return publish_tabular(registry, name, model, onnx_path, inputs, outputs, reference, target,
                           schema_overrides=schema_overrides, drop_invalid=drop_invalid)


def load_onnx(onnx_path: Path) -> onnx.ModelProto:
    if not onnx_path.is_file():
        raise NotFound(f"ONNX file {onnx_path} does not exist")
    try:
        model = onnx.load_model_from_string(onnx_path.read_bytes())
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several unrelated types for a bad file
        raise InvalidInput(f"{onnx_path} is not a valid ONNX model: {exc}") from exc
    return model


def publish_tabular(registry: Registry, name: str, model: onnx.ModelProto, onnx_path: Path,
                    inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], reference: str | Path,
                    target: str | None = None, *, schema_overrides: dict[str, Any] | None = None,
                    drop_invalid: bool = False) -> int:
    """A model with one 2-D float input [rows, features] and a table (CSV/Parquet) of its training data."""
    if len(inputs) != 1 or len(inputs[0].shape) != 2 or inputs[0].datatype not in ("FP32", "FP64"):
        found = ", ".join(f"{i.name} {i.datatype} {list(i.shape)}" for i in inputs) or "none"
        raise InvalidInput(f"a reference table (CSV/Parquet) is for models with one 2-D float input [rows, "
                           f"features]; {onnx_path} has: {found}. Publish it with a reference of named tensors "
                           "(.npz) or none")

    frame = read_table(reference)
    if target is not None and target in frame.columns:
        frame = frame.drop(target)
    width = inputs[0].shape[1]
    if width != -1 and width != len(frame.columns):
        raise InvalidInput(
            f"the model's input {inputs[0].name!r} takes {width} features but the reference data has "
            f"{len(frame.columns)} columns ({', '.join(frame.columns)}); drop the extra columns or pass --target"
        )
    # What the trainer does with its data: infer the schema, apply the overrides, check the rows.
    prepared = prepare_training_data(frame, frame.columns, overrides=schema_overrides, drop_invalid=drop_invalid)
    if prepared.report.rejected_rows:
        frame = frame.filter(pl.Series(prepared.kept)).with_columns(
            [pl.col(c).cast(pl.Float64, strict=False) for c in frame.columns])
    dataset = split_columns(frame, None)
    metadata = VersionMetadata(
        features=tuple(Feature(n, d) for n, d in zip(dataset.features, dataset.dtypes, strict=True)),
        inputs=inputs,
        outputs=outputs,
        task="unknown",
        estimator=estimator_of(model),
        parameters={},
        metrics={},
        data_version=dataset.version,
        data_rows=len(dataset.X),
        code_version=code_version(),
        created_at=now_utc(),
        source="driftline publish",
        target=target,
        extra={"onnx_file": onnx_path.name, "reference": str(reference), "producer": model.producer_name,
               "producer_version": model.producer_version, "data_quality": prepared.report.to_dict()},
    )
    model = attach_cover(model, dataset.X)  # tree ensembles get node cover for exact attributions
    return publish(registry, name, model, metadata, training_profile(model, dataset.X, metadata), prepared.schema)


def estimator_of(model: onnx.ModelProto) -> str:
    """What the graph says the estimator is, with its producer: "ExtraTreesRegressor (TreeEnsembleRegressor,
    skl2onnx 1.20.0)" from skl2onnx's default graph name and the ai.onnx.ml predictor operators;
    "TreeEnsembleRegressor (onnxmltools 1.12)" with the operators only; "ONNX graph (pytorch 2.4)" when the
    graph names no estimator."""
    producer = " ".join(x for x in (model.producer_name, model.producer_version) if x) or "unknown producer"
    ops = list(dict.fromkeys(n.op_type for n in model.graph.node if n.domain == ML_DOMAIN and n.op_type in PREDICTORS))
    named = _SKL2ONNX_GRAPH.fullmatch(model.graph.name) if model.producer_name == "skl2onnx" else None
    if named:
        return f"{named.group(1)} ({', '.join([*ops, producer])})"
    if ops:
        return f"{'+'.join(ops)} ({producer})"
    return f"ONNX graph ({producer})"
