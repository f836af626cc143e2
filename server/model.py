"""One loaded, immutable model version: its onnxruntime session and its signature."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import onnx
import onnxruntime as ort

from driftline.attribution import ATTRIBUTION, ATTRIBUTION_BASE, Explainer, explainer_for
from driftline.datatypes import NUMPY_OF, oip_from_ort
from driftline.errors import CorruptArtifact, Unavailable
from driftline.registry import StoredVersion, TensorSpec, VersionMetadata
from driftline.registry.profile import Profile
from driftline.registry.schema import SCHEMA_FILE, Schema
from driftline.registry.store import MODEL_FILE, PROFILE_FILE
from driftline.registry.table import TableSpec, table_of
from driftline.registry.table_view import TableEncoder
from driftline.server.device_batch import DeviceRunner, runner_for
from driftline.server.device_memory import LazyDeviceMemory
from driftline.server.providers import CPU, CUDA
from driftline.server.stats import VersionStats
from driftline.server.tensors import OutputRequest

log = logging.getLogger("driftline.server")


@dataclass(frozen=True)
class ServedVersion:
    """A loaded version. Three kinds share this type:

    * a *tabular* version (``driftline train``, or ``publish`` with a table): one 2-D numeric input
      ``[-1, features]`` whose columns are the metadata's features; it is validated, monitored feature by
      feature and explained (a request may also send one ``[-1, 1]`` input per feature);
    * a *mixed table* (``driftline train`` on categorical or text columns): one ``[-1, 1]`` input per column,
      numbers FP32 and strings BYTES; validated, monitored and explained per column through its
      :class:`~driftline.registry.table.TableSpec` (``table``);
    * any other ONNX model (any number of inputs and outputs, any datatype and rank): served, timed, traced
      and counted; monitored through per-row summaries when it was published with a reference.
    """

    name: str
    version: int
    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]  # -1 marks a dynamic dimension
    outputs: tuple[TensorSpec, ...]
    metadata: VersionMetadata
    providers: tuple[str, ...]  # what the session really runs on
    source: str  # registry location, for humans
    batching: bool  # every input and output has a dynamic first dimension: requests can be concatenated
    tabular: bool
    profile: Profile | None = None  # the training baseline; None for versions published without one
    schema: Schema | None = None  # what valid input looks like; None for versions published without one
    explainer: Explainer | None = None  # feature attributions, when the model allows them
    table: TableSpec | None = None  # a mixed table's columns
    encoder: TableEncoder | None = None  # ... and how its rows become the numbers validated and monitored
    hidden_outputs: tuple[str, ...] = ()  # run with the model's outputs but not offered (the encoded matrix)
    device_path: str = "cpu"  # where a batch's arrays live: "cuda" (IO binding, server/device_batch.py) or "cpu"
    device: DeviceRunner | None = field(default=None, compare=False)  # runs its batches when device_path is cuda
    stats: VersionStats = field(default_factory=VersionStats, compare=False)

    @property
    def offered_outputs(self) -> tuple[str, ...]:
        """What a request may ask for: the model's outputs, and attributions when there is an explainer."""
        extra = (ATTRIBUTION, ATTRIBUTION_BASE) if self.explainer is not None else ()
        return self.output_names + extra

    @property
    def input(self) -> TensorSpec:
        """The one input of a tabular version."""
        return self.inputs[0]

    @property
    def width(self) -> int:
        """Features per row of a tabular version."""
        return self.inputs[0].shape[1]

    @property
    def input_dtype(self) -> np.dtype:
        return NUMPY_OF[self.inputs[0].datatype]

    @cached_property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @cached_property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @cached_property
    def run_names(self) -> tuple[str, ...]:
        """What each onnxruntime call computes: the outputs, then the hidden ones the server reads itself."""
        return self.output_names + self.hidden_outputs

    @property
    def column_names(self) -> tuple[str, ...]:
        """The names attributions are given for: a mixed table's columns, a tabular version's features."""
        return self.table.names if self.table is not None else self.metadata.feature_names

    @cached_property
    def output_datatypes(self) -> dict[str, str]:
        return {o.name: o.datatype for o in self.outputs}

    @cached_property
    def every_output(self) -> tuple[OutputRequest, ...]:
        """What a request that names no output is answered: every model output (attributions cost extra)."""
        return tuple(OutputRequest(name) for name in self.output_names)


def load_version(stored: StoredVersion, providers: list[str], intra_op_threads: int,
                 device_memory: LazyDeviceMemory | None = None) -> ServedVersion:
    """Verify the stored files, open an onnxruntime session and check it matches the metadata.

    ``device_memory``: the GPU pool a version on the CUDA provider keeps its batches in (None: no device path).
    """
    model_bytes = stored.read(MODEL_FILE)  # verifies the sha256 in the manifest
    try:
        session = open_session(model_bytes, _with_memory_bound(providers, device_memory), intra_op_threads)
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        raise CorruptArtifact(f"{stored.model} version {stored.version}: onnxruntime cannot load model.onnx: {exc}") from exc
    try:
        inputs = tuple(_spec(i) for i in session.get_inputs())
        outputs = tuple(_spec(o) for o in session.get_outputs())
    except ValueError as exc:
        raise CorruptArtifact(f"{stored.model} version {stored.version}: {exc}") from exc
    table = _table(inputs, stored)
    hidden: tuple[str, ...] = ()
    if table is not None and table.encoded_output in {o.name for o in outputs}:
        hidden = (table.encoded_output,)
        outputs = tuple(o for o in outputs if o.name != table.encoded_output)
    tabular = table is None and _is_tabular(inputs, stored)
    if tabular:
        inputs = (TensorSpec(inputs[0].name, inputs[0].datatype, (-1, len(stored.metadata.features))),)
    batching = all(len(t.shape) >= 1 and t.shape[0] == -1 for t in inputs + outputs)
    profile = _profile(stored)
    run_specs = (*outputs, *(_spec(o) for o in session.get_outputs() if o.name in hidden))  # in run order
    device, why_cpu = runner_for(stored.model, stored.version, session, inputs, run_specs, device_memory,
                                 lambda: open_session(model_bytes, [CPU], intra_op_threads))
    served = ServedVersion(
        name=stored.model,
        version=stored.version,
        session=session,
        inputs=inputs,
        outputs=outputs,
        metadata=stored.metadata,
        providers=tuple(session.get_providers()),
        source=stored.location,
        batching=batching,
        tabular=tabular,
        profile=profile,
        schema=_schema(stored) if tabular or table is not None else None,
        explainer=(_explainer(model_bytes, profile, len(stored.metadata.features)) if tabular
                   else _table_explainer(model_bytes, table) if hidden else None),
        table=table,
        encoder=TableEncoder(table) if table is not None else None,
        hidden_outputs=hidden,
        device_path=device.device if device is not None else "cpu",
        device=device,
    )
    log.info("loaded %s version %d on %s; device path %s%s", served.name, served.version, ", ".join(served.providers),
             served.device_path, f" ({why_cpu})" if why_cpu and CUDA in served.providers else "")
    return served


def open_session(model_bytes: bytes, providers: list, intra_op_threads: int) -> ort.InferenceSession:
    """A version's onnxruntime session (the served one, and the device path's CPU fallback)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, sess_options=options, providers=providers)


def _with_memory_bound(providers: list[str], device_memory: LazyDeviceMemory | None) -> list:
    """The CUDA provider with its arena capped at the device memory bound (onnxruntime's ``gpu_mem_limit``)."""
    if device_memory is None or CUDA not in providers:
        return providers
    try:
        limit = device_memory.get().limit_bytes
    except Unavailable:  # no CuPy: no device path; onnxruntime still runs on the GPU, as before
        return providers
    return [(p, {"gpu_mem_limit": str(limit)}) if p == CUDA else p for p in providers]


def _spec(arg: ort.NodeArg) -> TensorSpec:
    dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, oip_from_ort(arg.type), dims)


def _table(inputs: tuple[TensorSpec, ...], stored: StoredVersion) -> TableSpec | None:
    """A mixed table's spec, checked against the model: one ``[-1, 1]`` input per column, in order."""
    try:
        table = table_of(stored.metadata.extra)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptArtifact(f"{stored.model} version {stored.version}: the metadata's table cannot be read: "
                              f"{exc}") from exc
    if table is None:
        return None
    takes = tuple(i.name for i in inputs)
    if takes != table.names:
        raise CorruptArtifact(f"{stored.model} version {stored.version}: the model takes inputs {list(takes)}, "
                              f"its metadata lists columns {list(table.names)}")
    for spec, column in zip(inputs, table.columns, strict=True):
        if spec.datatype != column.datatype or len(spec.shape) != 2 or spec.shape[1] not in (1, -1):
            raise CorruptArtifact(f"{stored.model} version {stored.version}: input {spec.name!r} is {spec.datatype} "
                                  f"{list(spec.shape)}; its column is {column.role} ({column.datatype} [-1, 1])")
    return table


def _table_explainer(model_bytes: bytes, table: TableSpec) -> Explainer | None:
    try:
        return explainer_for(onnx.load_model_from_string(model_bytes), None, groups=table.groups,
                             columns=len(table.columns))
    except Exception:  # noqa: BLE001 - attributions are optional; serving must not fail for them
        log.exception("attributions unavailable for this model")
        return None


def _is_tabular(inputs: tuple[TensorSpec, ...], stored: StoredVersion) -> bool:
    """One 2-D numeric input whose columns are the metadata's features (checked: a mismatch is corrupt)."""
    features = stored.metadata.features
    if not features:
        return False
    if len(inputs) != 1 or len(inputs[0].shape) != 2 or inputs[0].datatype == "BYTES":
        raise CorruptArtifact(f"{stored.model} version {stored.version}: metadata lists features "
                              "but the model does not take one 2-D numeric input")
    declared = inputs[0].shape[1]
    if declared != -1 and declared != len(features):
        raise CorruptArtifact(
            f"{stored.model} version {stored.version}: model takes {declared} features, metadata lists {len(features)}"
        )
    return True


def _profile(stored: StoredVersion) -> Profile | None:
    if PROFILE_FILE not in stored.checksums:
        return None
    try:
        return Profile.from_json(stored.read(PROFILE_FILE))
    except ValueError as exc:
        raise CorruptArtifact(f"{stored.model} version {stored.version}: profile.json cannot be read: {exc}") from exc


def _schema(stored: StoredVersion) -> Schema | None:
    if SCHEMA_FILE not in stored.checksums:
        return None
    return Schema.from_json(stored.read(SCHEMA_FILE))


def _explainer(model_bytes: bytes, profile: Profile | None, width: int) -> Explainer | None:
    means = np.array([c.mean for c in profile.columns[:width]]) if profile is not None else None
    try:
        return explainer_for(onnx.load_model_from_string(model_bytes), means)
    except Exception:  # noqa: BLE001 - attributions are optional; serving must not fail for them
        log.exception("attributions unavailable for this model")
        return None
