"""The training baseline: the profile of the training rows and of the model's answers to them.

The model's outputs are computed by running the exported ONNX model itself, so the reference for
live predictions is what the served artifact produces, not what scikit-learn would.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from driftline.registry import VersionMetadata
from driftline.registry.columns import monitored_columns, monitored_rows, output_widths
from driftline.registry.profile import Profile, build_profile


def training_profile(model: onnx.ModelProto, X: np.ndarray, metadata: VersionMetadata, bins: int = 20) -> Profile:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    input_spec = metadata.inputs[0]
    dtype = np.float64 if input_spec.datatype == "FP64" else np.float32
    rows = np.ascontiguousarray(X, dtype=dtype)
    names = [o.name for o in metadata.outputs]
    outputs = dict(zip(names, session.run(names, {input_spec.name: rows}), strict=True))
    classes = len(metadata.classes) if metadata.classes else None
    columns = monitored_columns(metadata.feature_names, metadata.outputs, classes, output_widths(outputs))
    categories = {c.name: classes for c in columns if c.kind == "categorical" and classes}
    return build_profile(
        monitored_rows(rows, outputs, names), [c.name for c in columns], bins=bins,
        kinds=[c.kind for c in columns], categories=categories,
    )
