"""``driftline publish``: import an ONNX model trained elsewhere, with the data it was trained on."""

from __future__ import annotations

from pathlib import Path

import onnx

from driftline.attribution import attach_cover
from driftline.errors import InvalidInput, NotFound
from driftline.lineage import code_version
from driftline.registry import Feature, Registry, VersionMetadata
from driftline.trainer.data import read_table, split_columns
from driftline.trainer.baseline import training_profile
from driftline.trainer.signature import onnx_signature
from driftline.trainer.train import now_utc, publish


def import_onnx(registry: Registry, name: str, onnx_path: str | Path, reference: str | Path,
                target: str | None = None) -> int:
    """Publish ``onnx_path`` as the next version of ``name``.

    The reference table's columns are the feature names in input order; a column named
    ``target`` (when given and present) is left out.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise NotFound(f"ONNX file {onnx_path} does not exist")
    try:
        model = onnx.load_model_from_string(onnx_path.read_bytes())
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several unrelated types for a bad file
        raise InvalidInput(f"{onnx_path} is not a valid ONNX model: {exc}") from exc
    inputs, outputs = onnx_signature(model)
    if len(inputs) != 1 or len(inputs[0].shape) != 2 or inputs[0].datatype not in ("FP32", "FP64"):
        found = ", ".join(f"{i.name} {i.datatype} {list(i.shape)}" for i in inputs) or "none"
        raise InvalidInput(f"driftline serves models with one 2-D float input [rows, features]; {onnx_path} has: {found}")

    frame = read_table(reference)
    if target is not None and target in frame.columns:
        frame = frame.drop(target)
    dataset = split_columns(frame, None)
    width = inputs[0].shape[1]
    if width != -1 and width != len(dataset.features):
        raise InvalidInput(
            f"the model's input {inputs[0].name!r} takes {width} features but the reference data has "
            f"{len(dataset.features)} columns ({', '.join(dataset.features)}); drop the extra columns or pass --target"
        )
    metadata = VersionMetadata(
        features=tuple(Feature(n, d) for n, d in zip(dataset.features, dataset.dtypes, strict=True)),
        inputs=inputs,
        outputs=outputs,
        task="unknown",
        estimator=model.producer_name or "onnx",
        parameters={},
        metrics={},
        data_version=dataset.version,
        data_rows=len(dataset.X),
        code_version=code_version(),
        created_at=now_utc(),
        source="driftline publish",
        target=target,
        extra={"onnx_file": onnx_path.name, "reference": str(reference), "producer_version": model.producer_version},
    )
    model = attach_cover(model, dataset.X)  # tree ensembles get node cover for exact attributions
    return publish(registry, name, model, metadata, training_profile(model, dataset.X, metadata))
