"""``driftline publish`` for any ONNX model: many inputs and outputs, any datatype, rank and batch dimension.

A tabular reference (CSV/Parquet) is for models with one 2-D numeric input (:mod:`driftline.trainer.publish`).
Any other model takes a reference of named tensors (``.npz``, one array per input, rows along the first
axis), which gives its baseline: a profile of per-row input summaries and of every output, the way the
server will watch them (:func:`driftline.registry.columns.tensor_view`). Without a reference the model is
served, timed, traced and counted, and its drift report says there is no baseline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from driftline.datatypes import NUMPY_OF
from driftline.errors import InvalidInput
from driftline.lineage import code_version
from driftline.registry import Registry, TensorSpec, VersionMetadata
from driftline.registry.columns import SUMMARY_COLUMNS, summary_names, tensor_view
from driftline.registry.profile import Profile, build_profile
from driftline.trainer.train import now_utc, publish

CHUNK = 4096  # reference rows per onnxruntime call


def check_servable(model: onnx.ModelProto, onnx_path: Path, inputs: tuple[TensorSpec, ...]) -> ort.InferenceSession:
    """An onnxruntime session of the model, or a clear refusal (never a runtime traceback)."""
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for models it cannot run
        raise InvalidInput(f"onnxruntime cannot load {onnx_path}: {exc}") from exc
    if not inputs:
        raise InvalidInput(f"{onnx_path} has no inputs; driftline serves models that take at least one tensor")
    return session


def import_tensor_model(registry: Registry, name: str, model: onnx.ModelProto, onnx_path: Path,
                        inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                        reference: Path | None, estimator: str) -> int:
    session = check_servable(model, onnx_path, inputs)
    batched = all(len(t.shape) >= 1 and t.shape[0] == -1 for t in inputs + outputs)
    profile, rows, digest, extra = None, 0, "", {}
    if reference is not None:
        arrays = _reference_tensors(reference, inputs, batched)
        profile, columns = _profile(session, arrays, outputs, batched)
        rows = len(next(iter(arrays.values())))
        digest = _digest(arrays)
        extra[SUMMARY_COLUMNS] = columns
    metadata = VersionMetadata(
        features=(),
        inputs=inputs,
        outputs=outputs,
        task="unknown",
        estimator=estimator,
        parameters={},
        metrics={},
        data_version=digest,
        data_rows=rows,
        code_version=code_version(),
        created_at=now_utc(),
        source="driftline publish",
        extra={"onnx_file": onnx_path.name, "reference": str(reference) if reference else None,
               "producer": model.producer_name, "producer_version": model.producer_version,
               "batching": batched, **extra},
    )
    return publish(registry, name, model, metadata, profile)


def _reference_tensors(path: Path, inputs: tuple[TensorSpec, ...], batched: bool) -> dict[str, np.ndarray]:
    """The reference's arrays in input order, each of its input's dtype; rows along the first axis.

    A model without a batch dimension takes the reference as a stack of whole requests: array ``[K, *shape]``.
    """
    if not path.is_file():
        raise InvalidInput(f"reference {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as stored:  # never unpickle: npz of plain arrays only
            found = {k: stored[k] for k in stored.files}
    except (ValueError, OSError) as exc:
        raise InvalidInput(f"cannot read {path} as .npz of named arrays (numpy.savez, no pickled objects): {exc}"
                           ) from exc
    missing = [i.name for i in inputs if i.name not in found]
    if missing:
        raise InvalidInput(f"reference {path} has no array named {missing[0]!r}; it holds "
                           f"{', '.join(found) or 'nothing'} and the model takes {', '.join(i.name for i in inputs)}")
    arrays = {}
    for spec in inputs:
        array = found[spec.name]
        shape = spec.shape if batched else (-1, *spec.shape)
        if array.ndim != len(shape) or any(w not in (-1, g) for g, w in zip(array.shape, shape, strict=True)):
            raise InvalidInput(f"reference array {spec.name!r} has shape {list(array.shape)}; the model's input is "
                               f"{list(spec.shape)}" + ("" if batched else ", so send a stack [K, ...] of requests"))
        arrays[spec.name] = _as_dtype(array, spec)
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1 or 0 in counts:
        raise InvalidInput(f"reference arrays must share a non-zero number of rows; they have {sorted(counts)}")
    return arrays


def _as_dtype(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.datatype == "BYTES":
        if array.dtype.kind not in "US":
            raise InvalidInput(f"reference array {spec.name!r} is {array.dtype}; the input takes text (BYTES)")
        return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in array.reshape(-1)],
                        dtype=object).reshape(array.shape)
    return array.astype(NUMPY_OF[spec.datatype], copy=False)


def _profile(session: ort.InferenceSession, arrays: dict[str, np.ndarray], outputs: tuple[TensorSpec, ...],
             batched: bool) -> tuple[Profile, list[str]]:
    names = [o.name for o in outputs]
    total = len(next(iter(arrays.values())))
    features, answers = [], []
    step = CHUNK if batched else 1
    for start in range(0, total, step):
        part = {k: (a[start:start + step] if batched else a[start]) for k, a in arrays.items()}
        try:
            produced = dict(zip(names, session.run(names, part), strict=True))
        except Exception as exc:  # onnxruntime's own types: the reference does not fit the model
            raise InvalidInput(f"the model cannot run on reference rows {start}..{start + step - 1}: {exc}") from exc
        rows, summarized = tensor_view(part, produced, batched)
        features.append(rows)
        answers.append(summarized)
    first = {k: (a[:1] if batched else a[0]) for k, a in arrays.items()}
    columns = summary_names(first, batched)
    output_columns = summary_names({n: answers[0][n] for n in names}, True)
    matrix = np.vstack([np.hstack([f, *[a[n] for n in names]]) for f, a in zip(features, answers, strict=True)])
    return build_profile(matrix, columns + output_columns), columns


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name, array in arrays.items():
        digest.update(f"{name}:{array.dtype}:{list(array.shape)}\n".encode())
        if array.dtype == object:
            for cell in array.reshape(-1):
                digest.update(str(cell).encode() + b"\0")
        else:
            digest.update(np.ascontiguousarray(array).tobytes())
    return f"sha256:{digest.hexdigest()}"
