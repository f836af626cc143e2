"""metadata.json: what a version is, where it came from and how well it did.

The format is versioned by ``format``; readers refuse formats they do not know. A version's
number is not stored here: the folder name is the version, so the same content could be
published under any number without rewriting it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from driftline.errors import CorruptArtifact

FORMAT = 1
# Sources whose lineage driftline wrote itself: their recipe can be repeated (retrain, reproduce) and carded.
TRAINED_BY_DRIFTLINE = ("driftline train", "driftline retrain", "driftline reproduce")


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # the dtype of the column in the training data, e.g. "float64"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # an Open Inference Protocol datatype: FP32, INT64, ...
    shape: tuple[int, ...]  # -1 marks the batch (row) dimension


@dataclass(frozen=True)
class VersionMetadata:
    features: tuple[Feature, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    task: str  # "regression", "classification" or "unknown" (imported models)
    estimator: str
    parameters: dict[str, Any]
    metrics: dict[str, float]
    data_version: str  # "sha256:<hex>" of the training data (see trainer.data.data_version)
    data_rows: int
    code_version: str  # "<package version>" plus "+g<commit>" when trained from a git checkout
    created_at: str  # ISO 8601, UTC
    source: str  # what published it: "driftline train", "driftline publish"
    target: str | None = None
    classes: tuple[Any, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_json(self) -> str:
        body = {"format": FORMAT, **asdict(self)}
        return json.dumps(body, indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> VersionMetadata:
        try:
            body = json.loads(text)
            if body.pop("format", None) != FORMAT:
                raise CorruptArtifact(f"metadata.json has an unknown format; this driftline reads format {FORMAT}")
            body["features"] = tuple(Feature(**f) for f in body["features"])
            body["inputs"] = tuple(_tensor(t) for t in body["inputs"])
            body["outputs"] = tuple(_tensor(t) for t in body["outputs"])
            if body.get("classes") is not None:
                body["classes"] = tuple(body["classes"])
            return cls(**body)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptArtifact(f"metadata.json cannot be read: {exc}") from exc


def _tensor(raw: dict[str, Any]) -> TensorSpec:
    return TensorSpec(name=raw["name"], datatype=raw["datatype"], shape=tuple(raw["shape"]))
