"""The gRPC wire format of an inference: ``ModelInferRequest`` -> request path -> ``ModelInferResponse``.

Raw tensors are viewed with ``np.frombuffer`` (no copy); outputs go back as raw little-endian bytes,
as Triton answers.
"""

from __future__ import annotations

import math

import numpy as np

from driftline.datatypes import CONTENTS_FIELD, NUMPY_OF
from driftline.errors import InvalidInput
from driftline.proto import grpc_service_pb2 as pb
from driftline.server.pipeline import refuse_input_parameter
from driftline.server.tensors import (
    InferRequest,
    InferResult,
    InputTensor,
    OutputRequest,
    bytes_array,
    class_count,
    from_raw,
    to_raw,
)

CLASSIFICATION = "classification"


def parameter_value(parameter: pb.InferParameter) -> object:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def parameters_of(parameters) -> dict[str, object]:  # noqa: ANN001 - a protobuf map
    return {name: parameter_value(value) for name, value in parameters.items()}


def infer_request(request: pb.ModelInferRequest, deadline: float | None) -> InferRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        # A client using shared memory sends fewer raw entries than inputs: name what it asked for instead.
        for tensor in request.inputs:
            if tensor.parameters:
                refuse_input_parameter(tensor.name, next(iter(tensor.parameters)))
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} input(s); send one "
                           "per input, in the order of inputs")
    inputs = [_input(tensor, raw[i] if raw else None) for i, tensor in enumerate(request.inputs)]
    # Most requests carry no parameters: reading an empty protobuf map still costs microseconds.
    parameters = parameters_of(request.parameters) if request.parameters else {}
    return InferRequest(request.model_name, request.model_version, request.id, inputs,
                        [_output(o) for o in request.outputs] if request.outputs else [], deadline, parameters)


def infer_response(result: InferResult, response: pb.ModelInferResponse | None = None) -> pb.ModelInferResponse:
    """``result`` as a ModelInferResponse: a new one, or ``response`` (empty) filled in place (a stream's)."""
    if response is None:
        response = pb.ModelInferResponse(model_name=result.model, model_version=result.version, id=result.id)
    else:
        response.model_name, response.model_version, response.id = result.model, result.version, result.id
    for output in result.outputs:
        tensor = response.outputs.add()
        tensor.name = output.name
        tensor.datatype = output.datatype
        tensor.shape.extend(output.array.shape)
        response.raw_output_contents.append(to_raw(output.array, output.datatype))
    for name, value in result.parameters.items():
        _set_parameter(response.parameters[name], value)
    return response


def _set_parameter(parameter: pb.InferParameter, value: object) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    else:
        parameter.string_param = str(value)


def _input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> InputTensor:
    datatype = tensor.datatype
    if datatype != "BYTES" and datatype not in NUMPY_OF:
        raise InvalidInput(f"input {tensor.name!r} has datatype {datatype or '(empty)'}, which is not a protocol "
                           f"datatype; send one of {', '.join([*NUMPY_OF, 'BYTES'])}")
    shape = tuple(tensor.shape)
    if min(shape, default=0) < 0:
        raise InvalidInput(f"input {tensor.name!r} has shape {list(shape)}; dimensions cannot be negative")
    parameters = parameters_of(tensor.parameters) if tensor.parameters else {}
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(f"input {tensor.name!r} sets both contents and raw_input_contents; send only one")
        dtype = NUMPY_OF.get(datatype)
        if dtype is not None and len(raw) == math.prod(shape) * dtype.itemsize:  # the common case, no messages built
            return InputTensor(tensor.name, datatype, shape, np.frombuffer(raw, dtype=dtype), parameters)
        where = f"raw_input_contents for input {tensor.name!r}"
        data = from_raw(raw, datatype, shape, where, f"{where} holds {len(raw)} bytes")
        return InputTensor(tensor.name, datatype, shape, data, parameters)
    if datatype not in CONTENTS_FIELD:
        raise InvalidInput(f"input {tensor.name!r} is {datatype}, which has no contents field; send it in "
                           "raw_input_contents")
    values = getattr(tensor.contents, CONTENTS_FIELD[datatype])
    if datatype == "BYTES":
        return InputTensor(tensor.name, datatype, shape, bytes_array(list(values)), parameters)
    try:  # int_contents carries INT8/INT16 and uint_contents UINT8/UINT16 in wider integers
        data = np.asarray(values, dtype=NUMPY_OF[datatype])
    except OverflowError:
        raise InvalidInput(f"input {tensor.name!r} holds values outside the range of {datatype}") from None
    return InputTensor(tensor.name, datatype, shape, data, parameters)


def _output(output: pb.ModelInferRequest.InferRequestedOutputTensor) -> OutputRequest:
    parameters = parameters_of(output.parameters)
    count = class_count(parameters.pop(CLASSIFICATION, 0), output.name)
    return OutputRequest(output.name, class_count=count, parameters=parameters)
