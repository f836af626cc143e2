"""Read an ONNX model's tensor signature in protocol terms (shared by train and publish)."""

from __future__ import annotations

import onnx

from driftline.datatypes import oip_from_onnx
from driftline.registry import TensorSpec


def onnx_signature(model: onnx.ModelProto) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's real inputs (initializers excluded) and outputs; unknown dimensions become -1."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_spec(v) for v in model.graph.output)
    return inputs, outputs


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise ValueError(f"{value.name} is not a tensor (sequence or map outputs cannot be served; export tensors)")
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return TensorSpec(name=value.name, datatype=oip_from_onnx(tensor.elem_type), shape=dims)
