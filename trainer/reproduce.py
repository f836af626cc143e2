"""``driftline reproduce NAME VERSION``: rebuild a version from its data snapshot and check it predicts the same.

The recipe comes from the version's lineage, as ``retrain`` reads it: estimator, parameters, seed, holdout
fraction, target, features, task, the schema limits a person declared and a mixed table's column roles. The
data is the version's snapshot (trainer/snapshot.py), the very rows it was fitted and held out on, so the
seed gives the same split. Both ONNX models, the stored one and the rebuilt one, then answer the holdout
rows; a deterministic estimator gives the same answers to float tolerance. The fit fuses and leakage check
run but do not refuse: reproducing is a measurement, not a publish gate.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from driftline.errors import InvalidInput
from driftline.lineage import code_version
from driftline.registry import Registry
from driftline.registry.store import MODEL_FILE
from driftline.registry.table import ENCODED_OUTPUT, TableSpec, table_of
from driftline.trainer import snapshot
from driftline.trainer.data import data_version
from driftline.trainer.fuses import ALLOWABLE
from driftline.trainer.retrain import _stored_tests, recipe
from driftline.trainer.train import TrainConfig, TrainedModel, publish, train

RTOL, ATOL = 1e-5, 1e-6  # float32 answers of the same model computed twice agree far closer than this


@dataclass(frozen=True)
class OutputDeviation:
    name: str
    max_abs: float  # numeric outputs; nan for labels
    max_rel: float
    rows_differing: int  # rows where the output is not within tolerance (labels: not equal)


@dataclass(frozen=True)
class Reproduction:
    model: str
    version: int
    rows: int  # holdout rows both models answered
    outputs: tuple[OutputDeviation, ...]
    same_onnx: bool  # the same ONNX graph and weights, byte for byte once opset imports are in one order
    recorded_code: str
    current_code: str
    data_version_ok: bool  # the snapshot hashes to the data version it was recorded with
    trained: TrainedModel
    published: int | None = None

    @property
    def agree(self) -> bool:
        return all(o.rows_differing == 0 for o in self.outputs)

    @property
    def code_changed(self) -> bool:
        return self.recorded_code != self.current_code


def config_from_lineage(stored: Any, data: str) -> TrainConfig:
    """The training config a version records, on ``data`` (its snapshot written to a file)."""
    return replace(recipe(stored, data), allow=tuple(a for a in ALLOWABLE if a != "tests"))  # measure, do not gate


def reproduce(registry: Registry, name: str, version: int, publish_it: bool = False) -> Reproduction:
    stored = registry.open(name, version)
    table = snapshot.read(stored)  # NoSnapshot, naming the fix, before anything else
    lineage = stored.metadata.extra.get(snapshot.LINEAGE_KEY, {})
    with tempfile.TemporaryDirectory(prefix="driftline-reproduce-") as folder:
        path = Path(folder) / snapshot.SNAPSHOT_FILE
        path.write_bytes(stored.read(snapshot.SNAPSHOT_FILE))
        trained = train(config_from_lineage(stored, str(path)))
    rows = trained.holdout_rows
    X = trained.dataset.X[rows]
    before = _answers(stored.read(MODEL_FILE), table_of(stored.metadata.extra), X)
    rebuilt = trained.onnx_model.SerializeToString()
    after = _answers(rebuilt, table_of(trained.metadata.extra), X)
    if list(before) != list(after):
        raise InvalidInput(f"the rebuilt model's outputs {list(after)} are not the stored one's {list(before)}")
    outputs = tuple(_deviation(n, before[n], after[n]) for n in before)
    published = None
    extra = {**trained.metadata.extra, "data": stored.metadata.extra.get("data"), "reproduced_from": version}
    metadata = replace(trained.metadata, source="driftline reproduce", extra=extra)
    if publish_it:  # the rebuild keeps the version's tests.yaml, as a retrain would
        metadata, files = snapshot.take(replace(trained, metadata=metadata))
        published = publish(registry, name, trained.onnx_model, metadata, trained.profile, trained.schema,
                            tests=_stored_tests(stored), data_files=files)
    return Reproduction(
        model=name, version=version, rows=len(rows), outputs=outputs,
        same_onnx=_canonical(rebuilt) == _canonical(stored.read(MODEL_FILE)),
        recorded_code=stored.metadata.code_version, current_code=code_version(),
        data_version_ok=data_version(table) == lineage.get("data_version", data_version(table)),
        trained=replace(trained, metadata=metadata), published=published,
    )


def _canonical(model: bytes) -> bytes:
    """The model with its opset imports in one order: skl2onnx lists them in set order, which varies between
    processes, so two exports of one model can differ in those bytes alone."""
    proto = onnx.load_from_string(model)
    opsets = sorted(proto.opset_import, key=lambda o: o.domain)
    del proto.opset_import[:]
    proto.opset_import.extend(opsets)
    return proto.SerializeToString(deterministic=True)


def _answers(model: bytes, table: TableSpec | None, X: Any) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs() if table is None or o.name != ENCODED_OUTPUT]
    if table is not None:
        from driftline.trainer.table_pipeline import onnx_feeds

        feeds = onnx_feeds(X, table.columns)
    else:
        feeds = {session.get_inputs()[0].name: np.asarray(X, dtype=np.float32)}
    return dict(zip(names, session.run(names, feeds), strict=True))


def _deviation(name: str, before: np.ndarray, after: np.ndarray) -> OutputDeviation:
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        return OutputDeviation(name, float("inf"), float("inf"), len(before))
    if not (np.issubdtype(before.dtype, np.floating) and np.issubdtype(after.dtype, np.floating)):
        differing = before != after
        rows = differing.reshape(len(before), -1).any(axis=1) if before.ndim else differing
        return OutputDeviation(name, float("nan"), float("nan"), int(np.count_nonzero(rows)))
    gap = np.abs(after.astype(np.float64) - before.astype(np.float64))
    scale = np.abs(before.astype(np.float64))
    rel = np.where(scale > 0, gap / np.where(scale > 0, scale, 1.0), gap)
    outside = gap > ATOL + RTOL * scale
    rows = outside.reshape(len(before), -1).any(axis=1) if before.ndim else outside
    return OutputDeviation(name, float(gap.max(initial=0.0)), float(rel.max(initial=0.0)), int(np.count_nonzero(rows)))
