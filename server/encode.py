"""Model outputs -> protocol response, as raw little-endian bytes (as Triton answers)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from driftline.proto import grpc_service_pb2 as pb
from driftline.server.model import ServedVersion


def encode_response(
    request: pb.ModelInferRequest, served: ServedVersion, names: Sequence[str], outputs: Sequence[np.ndarray]
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=served.name, model_version=str(served.version), id=request.id)
    datatypes = {o.name: o.datatype for o in served.outputs}  # attributions are FP32
    for name, array in zip(names, outputs, strict=True):
        tensor = response.outputs.add()
        tensor.name = name
        tensor.datatype = datatypes.get(name, "FP32")
        tensor.shape.extend(array.shape)
        response.raw_output_contents.append(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    return response
