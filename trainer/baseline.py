"""The training baseline: the profile of the training rows and of the model's answers to them.

The model's outputs are computed by running the exported ONNX model itself, so the reference for
live predictions is what the served artifact produces, not what scikit-learn would.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from driftline.registry import VersionMetadata
from driftline.attribution import explainer_for, per_row
from driftline.registry.columns import (
    attribution_shares,
    monitored_columns,
    monitored_rows,
    output_widths,
    share_columns,
)
from driftline.registry.profile import Profile, build_profile


ATTRIBUTION_SAMPLE = 2000  # training rows explained for the attribution baseline (exact TreeSHAP is ~10k rows/s)


def training_profile(model: onnx.ModelProto, X: np.ndarray, metadata: VersionMetadata, bins: int = 20) -> Profile:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    input_spec = metadata.inputs[0]
    dtype = np.float64 if input_spec.datatype == "FP64" else np.float32
    rows = np.ascontiguousarray(X, dtype=dtype)
    names = [o.name for o in metadata.outputs]
    outputs = dict(zip(names, session.run(names, {input_spec.name: rows}), strict=True))
    classes = len(metadata.classes) if metadata.classes else None
    columns = monitored_columns(metadata.feature_names, metadata.outputs, classes, output_widths(outputs))
    matrix = monitored_rows(rows, outputs, names)
    explainer = explainer_for(model, rows.astype(np.float64).mean(axis=0))
    if explainer is not None:
        # Attribution shares of a sample of the training rows: the baseline live shares are compared with.
        shares = np.full((len(rows), len(metadata.feature_names)), np.nan)
        sample = np.random.default_rng(0).permutation(len(rows))[:ATTRIBUTION_SAMPLE]
        phi, base = explainer.explain(rows[sample])
        per_feature, _ = per_row(phi, base, outputs.get("label", None) if "label" in outputs else None)
        shares[sample] = attribution_shares(per_feature)
        columns += share_columns(metadata.feature_names)
        matrix = np.hstack([matrix, shares])
    categories = {c.name: classes for c in columns if c.kind == "categorical" and classes}
    return build_profile(matrix, [c.name for c in columns], bins=bins, kinds=[c.kind for c in columns],
                         categories=categories)
