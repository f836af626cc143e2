"""The training baseline of a table read in pieces: every row of every partition, and the model's answers to
them, counted into the bins of the in-memory profile of the fit sample, piece by piece, the pieces' drift
states merged (:func:`driftline.kernels.drift.merge_into`: counts, missing, min and max exact, moments by
Chan's formula). So memory is bounded by one piece, and the result equals profiling all rows at once with the
same bins (:func:`driftline.registry.profile.recounted`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from driftline.errors import InvalidInput
from driftline.kernels.drift import empty_state, merge_into, state_of
from driftline.registry import VersionMetadata
from driftline.registry.columns import ATTRIBUTION_SHARE, monitored_rows
from driftline.registry.profile import Profile, counting_layout, recounted
from driftline.registry.schema import Schema
from driftline.trainer.partitions import Partitions
from driftline.trainer.validation import DataQualityReport, to_numeric


@dataclass(frozen=True)
class StreamedBaseline:
    profile: Profile
    rows: int  # rows counted: every row of the table but the dropped ones
    dropped: int  # rows that broke the schema's hard limits, left out (--drop-invalid)


def streamed_baseline(model: onnx.ModelProto, fit_profile: Profile, metadata: VersionMetadata,
                      parts: Partitions, features: Sequence[str], schema: Schema, *,
                      drop_invalid: bool = False) -> StreamedBaseline:
    """``fit_profile``'s bins with every row of ``parts`` counted in, after the same checks training applied to
    the sample: a row that breaks a hard limit of ``schema`` stops it (or, with ``drop_invalid``, is left out)."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    input_spec = metadata.inputs[0]
    dtype = np.float64 if input_spec.datatype == "FP64" else np.float32
    names = [o.name for o in metadata.outputs]
    counted = sum(not c.name.startswith(ATTRIBUTION_SHARE + "[") for c in fit_profile.columns)
    layout = counting_layout(fit_profile, counted)
    state = empty_state(layout)
    offset = kept_rows = 0
    for chunk in parts.chunks(features):
        numeric = to_numeric(chunk, features)
        result = schema.validate(numeric.X, not_a_number=numeric.not_a_number, raw=numeric.raw)
        report = DataQualityReport.of(result, schema.policy, drop_invalid=drop_invalid)
        if not report.ok and not drop_invalid:
            raise InvalidInput(f"rows {offset}..{offset + chunk.height - 1} of {parts.pattern} (numbered below "
                               f"from row {offset}): {report.format()}\nthe schema was inferred from the fit sample; "
                               "fix the data, declare the limits in --schema, or drop the invalid rows "
                               "(--drop-invalid)")
        rows = np.ascontiguousarray(numeric.X[report.kept] if report.rejected_rows else numeric.X, dtype=dtype)
        offset += chunk.height
        if not len(rows):
            continue
        outputs = dict(zip(names, session.run(names, {input_spec.name: rows}), strict=True))
        merge_into(state, state_of(monitored_rows(rows, outputs, names), layout))
        kept_rows += len(rows)
    return StreamedBaseline(recounted(fit_profile, state, kept_rows), kept_rows, offset - kept_rows)
