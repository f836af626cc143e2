"""One loaded, immutable model version: its onnxruntime session and its signature."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from driftline.attribution import ATTRIBUTION, ATTRIBUTION_BASE, Explainer, explainer_for
from driftline.datatypes import NUMPY_OF, oip_from_ort
from driftline.errors import CorruptArtifact
from driftline.registry import StoredVersion, TensorSpec, VersionMetadata
from driftline.registry.profile import Profile
from driftline.registry.schema import SCHEMA_FILE, Schema
from driftline.registry.store import MODEL_FILE, PROFILE_FILE
from driftline.server.stats import VersionStats

log = logging.getLogger("driftline.server")


@dataclass(frozen=True)
class ServedVersion:
    name: str
    version: int
    session: ort.InferenceSession
    input: TensorSpec  # the one 2-D input: [-1, width]
    outputs: tuple[TensorSpec, ...]
    metadata: VersionMetadata
    providers: tuple[str, ...]  # what the session really runs on
    source: str  # registry location, for humans
    profile: Profile | None = None  # the training baseline; None for versions published without one
    schema: Schema | None = None  # what valid input looks like; None for versions published without one
    explainer: Explainer | None = None  # feature attributions, when the model allows them

    @property
    def offered_outputs(self) -> tuple[str, ...]:
        """What a request may ask for: the model's outputs, and attributions when there is an explainer."""
        extra = (ATTRIBUTION, ATTRIBUTION_BASE) if self.explainer is not None else ()
        return self.output_names + extra
    stats: VersionStats = field(default_factory=VersionStats, compare=False)

    @property
    def width(self) -> int:
        return self.input.shape[1]

    @property
    def input_dtype(self) -> np.dtype:
        return NUMPY_OF[self.input.datatype]

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)


def load_version(stored: StoredVersion, providers: list[str], intra_op_threads: int) -> ServedVersion:
    """Verify the stored files, open an onnxruntime session and check it matches the metadata."""
    model_bytes = stored.read(MODEL_FILE)  # verifies the sha256 in the manifest
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        raise CorruptArtifact(f"{stored.model} version {stored.version}: onnxruntime cannot load model.onnx: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 2:
        raise CorruptArtifact(f"{stored.model} version {stored.version}: driftline serves models with one 2-D input")
    width = len(stored.metadata.features)
    declared = inputs[0].shape[1]
    if isinstance(declared, int) and declared != width:
        raise CorruptArtifact(
            f"{stored.model} version {stored.version}: model takes {declared} features, metadata lists {width}"
        )
    input_spec = TensorSpec(inputs[0].name, oip_from_ort(inputs[0].type), (-1, width))
    outputs = tuple(
        TensorSpec(o.name, oip_from_ort(o.type), tuple(d if isinstance(d, int) else -1 for d in o.shape))
        for o in session.get_outputs()
    )
    profile = _profile(stored)
    served = ServedVersion(
        name=stored.model,
        version=stored.version,
        session=session,
        input=input_spec,
        outputs=outputs,
        metadata=stored.metadata,
        providers=tuple(session.get_providers()),
        source=stored.location,
        profile=profile,
        schema=_schema(stored),
        explainer=_explainer(model_bytes, profile, width),
    )
    log.info("loaded %s version %d on %s", served.name, served.version, ", ".join(served.providers))
    return served


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
