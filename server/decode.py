"""Protocol request -> the model's input rows, checked against the served version's signature.

Raw tensors are viewed with ``np.frombuffer`` (no copy); a conversion happens only when the
client's datatype differs from the model's.
"""

from __future__ import annotations

import numpy as np

from driftline.datatypes import CONTENTS_FIELD, NUMPY_OF
from driftline.errors import InvalidInput, NotANumber
from driftline.kernels.validate import MISSING_MARKERS, not_a_number_message
from driftline.proto import grpc_service_pb2 as pb
from driftline.server.model import ServedVersion

ACCEPTED_DATATYPES = ("FP32", "FP64", "INT32", "INT64", "BYTES")


def decode_rows(request: pb.ModelInferRequest, served: ServedVersion) -> np.ndarray:
    """The request's single input as a C-contiguous [rows, width] array of the model's dtype."""
    spec = served.input
    expected = f"{spec.name!r} ({spec.datatype}, shape [-1, {served.width}])"
    if len(request.inputs) != 1:
        names = ", ".join(repr(t.name) for t in request.inputs) or "none"
        raise InvalidInput(f"{served.name} takes exactly one input {expected}; the request has {names}")
    tensor = request.inputs[0]
    if tensor.name != spec.name:
        raise InvalidInput(f"unknown input {tensor.name!r}: {served.name} takes one input {expected}")
    if tensor.datatype not in ACCEPTED_DATATYPES:
        raise InvalidInput(
            f"input {tensor.name!r} has datatype {tensor.datatype or '(empty)'}; send one of "
            f"{', '.join(ACCEPTED_DATATYPES)} (converted to the model's {spec.datatype})"
        )
    rows, width = _shape(tensor, served)
    if tensor.datatype == "BYTES":
        return _numbers_from_text(request, tensor, rows, width, served)
    values = _values(request, tensor, rows * width)
    array = values.reshape(rows, width)
    if array.dtype != served.input_dtype:
        array = array.astype(served.input_dtype)
    return array


def requested_outputs(request: pb.ModelInferRequest, served: ServedVersion) -> tuple[str, ...]:
    """Output names to return, in the order asked; every output when none is named."""
    if not request.outputs:
        return served.output_names  # attributions cost extra: only when asked for by name
    names = tuple(o.name for o in request.outputs)
    unknown = [n for n in names if n not in served.offered_outputs]
    if unknown:
        raise InvalidInput(
            f"unknown output {unknown[0]!r}: {served.name} version {served.version} has outputs "
            f"{', '.join(served.offered_outputs)}"
        )
    return names


def _shape(tensor: pb.ModelInferRequest.InferInputTensor, served: ServedVersion) -> tuple[int, int]:
    shape = list(tensor.shape)
    if len(shape) != 2:
        raise InvalidInput(
            f"input {tensor.name!r} has shape {shape} (rank {len(shape)}); expected rank 2: "
            f"[rows, {served.width}]"
        )
    rows, width = shape
    if width != served.width:
        features = served.metadata.feature_names
        listed = ", ".join(features[:12]) + (", ..." if len(features) > 12 else "")
        raise InvalidInput(
            f"input {tensor.name!r} has {width} features per row (shape {shape}); "
            f"{served.name} version {served.version} expects {served.width}: {listed}"
        )
    if rows < 1:
        raise InvalidInput(f"input {tensor.name!r} has shape {shape}; send at least one row")
    return rows, width


def _values(request: pb.ModelInferRequest, tensor: pb.ModelInferRequest.InferInputTensor, count: int) -> np.ndarray:
    dtype = NUMPY_OF[tensor.datatype]
    field = CONTENTS_FIELD[tensor.datatype]
    if request.raw_input_contents:
        if len(request.raw_input_contents) != len(request.inputs):
            raise InvalidInput(
                f"raw_input_contents has {len(request.raw_input_contents)} entries for {len(request.inputs)} "
                "input(s); send one per input, in the order of inputs"
            )
        if tensor.HasField("contents"):
            raise InvalidInput(f"input {tensor.name!r} sets both contents and raw_input_contents; send only one")
        raw = request.raw_input_contents[0]
        needed = count * dtype.itemsize
        if len(raw) != needed:
            raise InvalidInput(
                f"raw_input_contents for input {tensor.name!r} holds {len(raw)} bytes; shape "
                f"{list(tensor.shape)} of {tensor.datatype} needs {needed} ({count} values x {dtype.itemsize} bytes)"
            )
        return np.frombuffer(raw, dtype=dtype)
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidInput(
            f"input {tensor.name!r} carries {len(values)} values in contents.{field}; shape "
            f"{list(tensor.shape)} needs {count}"
        )
    return np.asarray(values, dtype=dtype)


def _numbers_from_text(request: pb.ModelInferRequest, tensor: pb.ModelInferRequest.InferInputTensor, rows: int,
                       width: int, served: ServedVersion) -> np.ndarray:
    """A BYTES tensor of numbers written as text (as some clients send them), checked cell by cell.

    A cell that is not a number is refused with the trainer's and ``driftline validate``'s own wording.
    """
    cells = _text_cells(request, tensor, rows * width)
    values = np.empty(rows * width, dtype=np.float64)
    features = served.metadata.feature_names
    for i, cell in enumerate(cells):
        text = cell.decode("utf-8", errors="replace").strip()
        if text.lower() in MISSING_MARKERS:
            values[i] = np.nan
            continue
        try:
            values[i] = float(text)
        except ValueError:
            raise NotANumber(not_a_number_message(i // width, features[i % width], text)
                             + "; nothing in this request was run", features[i % width]) from None
    return values.reshape(rows, width).astype(served.input_dtype)


def _text_cells(request: pb.ModelInferRequest, tensor: pb.ModelInferRequest.InferInputTensor, count: int
                ) -> list[bytes]:
    if not request.raw_input_contents:
        cells = list(tensor.contents.bytes_contents)
    else:
        # Raw BYTES: each element is a 4-byte little-endian length, then that many bytes.
        raw, cells, at = request.raw_input_contents[0], [], 0
        while at + 4 <= len(raw):
            size = int.from_bytes(raw[at:at + 4], "little")
            cells.append(raw[at + 4:at + 4 + size])
            at += 4 + size
        if at != len(raw):
            raise InvalidInput(f"raw_input_contents for input {tensor.name!r} is not a valid BYTES tensor "
                               "(4-byte length, then the bytes, per element)")
    if len(cells) != count:
        raise InvalidInput(f"input {tensor.name!r} carries {len(cells)} BYTES elements; shape "
                           f"{list(tensor.shape)} needs {count}")
    return cells
