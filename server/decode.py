"""A request's tensors -> the model's inputs, checked against the served version's signature.

Front ends hand over flat numpy arrays (:mod:`driftline.server.tensors`); here they are checked by
name, datatype and shape and reshaped without a copy. Every message names the input and says what
the model takes, so the caller knows what to fix.
"""

from __future__ import annotations

import math

import numpy as np

from driftline.datatypes import NUMPY_OF
from driftline.errors import InvalidInput, NotANumber
from driftline.kernels.validate import MISSING_MARKERS, not_a_number_message
from driftline.registry import TensorSpec
from driftline.server.model import ServedVersion
from driftline.server.tensors import InputTensor, OutputRequest

# A tabular version converts numbers sent in another numeric type, and numbers written as text.
TABULAR_DATATYPES = ("FP32", "FP64", "INT32", "INT64", "BYTES")
# A mixed table's number columns take any of these (converted to the model's type); its string columns take BYTES.
NUMBER_DATATYPES = ("FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
                    "BOOL")
MAX_TEXT_BYTES = 64 * 1024  # one text cell; beyond it a request is refused (a listing is not a megabyte)
# A value a client sent, quoted back in an error, is cut to this many characters: enough to recognise it, and a
# 3 MiB cell quoted whole would not fit the status a gRPC client can read (its metadata limit is 8-16 KiB).
ECHO_CHARS = 200


def echoed(value: object) -> str:
    """``repr(value)`` for an error message, cut to :data:`ECHO_CHARS` characters."""
    if isinstance(value, (str, bytes)) and len(value) > ECHO_CHARS:
        return f"{value[:ECHO_CHARS]!r}... ({len(value):,} in all)"
    shown = repr(value)
    return shown if len(shown) <= ECHO_CHARS else f"{shown[:ECHO_CHARS]}... ({len(shown):,} characters in all)"


def _cut(text: str) -> str:
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "..."


def decode_inputs(tensors: list[InputTensor], served: ServedVersion) -> tuple[dict[str, np.ndarray], int]:
    """Each model input as an array of its dtype and shape, and the rows (first dimension) they share."""
    by_name: dict[str, InputTensor] = {}
    for tensor in tensors:
        if tensor.name in by_name:
            raise InvalidInput(f"input {tensor.name!r} appears twice in the request; send each input once")
        by_name[tensor.name] = tensor
    if served.tabular and served.input.name not in by_name and len(by_name) > 1:
        return _tabular_by_column(by_name, served)
    unknown = [n for n in by_name if n not in served.input_names]
    missing = [n for n in served.input_names if n not in by_name]
    if unknown or missing:
        raise InvalidInput(_signature_mismatch(served, unknown, missing))
    if served.table is not None:
        arrays = {spec.name: _column(by_name[spec.name], spec) for spec in served.inputs}
        return arrays, _shared_rows(arrays, served)
    if served.tabular:
        rows = _tabular(by_name[served.input.name], served)
        return {served.input.name: rows}, len(rows)
    arrays = {spec.name: _tensor(by_name[spec.name], spec, served) for spec in served.inputs}
    return arrays, _shared_rows(arrays, served)


def requested_outputs(requested: list[OutputRequest], served: ServedVersion) -> tuple[OutputRequest, ...]:
    """What to answer, in the order asked; every model output (not the attributions) when none is named."""
    if not requested:
        return served.every_output
    seen: set[str] = set()
    for output in requested:
        if output.name not in served.offered_outputs:
            raise InvalidInput(
                f"unknown output {output.name!r}: {served.name} version {served.version} has outputs "
                f"{', '.join(served.offered_outputs)}"
            )
        if output.name in seen:
            raise InvalidInput(f"output {output.name!r} is requested twice; ask for each output once")
        seen.add(output.name)
    return tuple(requested)


def describe(spec: TensorSpec) -> str:
    return f"{spec.name!r} ({spec.datatype}, shape {list(spec.shape)})"


def _column(tensor: InputTensor, spec: TensorSpec) -> np.ndarray:
    """One column of a mixed table as [rows, 1]: numbers converted to the model's type, strings as str."""
    name = tensor.name
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
        raise InvalidInput(f"column {name!r} has shape {shape}; send it as [rows, 1] (or [rows]) with at least one "
                           f"row: it is one column of a table ({describe(spec)})")
    _check_count(tensor, tuple(shape))
    rows = shape[0]
    if spec.datatype == "BYTES":
        if tensor.datatype != "BYTES":
            raise InvalidInput(f"column {name!r} takes text (BYTES); got {tensor.datatype or '(empty)'} numbers: send "
                               "the value as a UTF-8 string")
        cells = []
        for r, cell in enumerate(tensor.data):
            raw = cell if isinstance(cell, bytes) else str(cell).encode()
            if len(raw) > MAX_TEXT_BYTES:
                raise InvalidInput(f"column {name!r}, row {r}: {len(raw):,} bytes of text; at most {MAX_TEXT_BYTES:,} "
                                   "are accepted in one cell; nothing in this request was run")
            cells.append(raw.decode("utf-8", errors="replace"))
        return np.array(cells, dtype=object).reshape(rows, 1)
    if tensor.datatype not in NUMBER_DATATYPES:
        raise InvalidInput(f"column {name!r} takes numbers ({spec.datatype}); got {tensor.datatype or '(empty)'}: "
                           "send numbers (FP32, FP64, INT32 or INT64), not text")
    return tensor.data.reshape(rows, 1).astype(NUMPY_OF[spec.datatype], copy=False)


def _tabular_by_column(by_name: dict[str, InputTensor], served: ServedVersion) -> tuple[dict[str, np.ndarray], int]:
    """A tabular version's rows sent as one [rows, 1] input per feature (as a table's columns are sent)."""
    features = served.metadata.feature_names
    unknown = [n for n in by_name if n not in features]
    missing = [f for f in features if f not in by_name]
    if unknown or missing:
        problem = f"unknown column {unknown[0]!r}" if unknown else f"column {missing[0]!r} is missing"
        listed = ", ".join(features[:12]) + (", ..." if len(features) > 12 else "")
        raise InvalidInput(f"{problem}: {served.name} version {served.version} takes {describe(served.input)}, or "
                           f"one [rows, 1] input per feature: {listed}")
    spec = TensorSpec(served.input.name, served.input.datatype, (-1, 1))
    columns = []
    for f in features:
        tensor = by_name[f]
        if tensor.datatype == "BYTES":
            columns.append(_numbers_from_text(tensor.data, len(tensor.data), 1, served, (f,)))
        else:
            columns.append(_column(tensor, spec))
    if len({len(c) for c in columns}) > 1:
        raise InvalidInput("columns disagree on the number of rows; send the same rows for every column")
    rows = np.ascontiguousarray(np.hstack(columns), dtype=served.input_dtype)
    return {served.input.name: rows}, len(rows)


def _signature_mismatch(served: ServedVersion, unknown: list[str], missing: list[str]) -> str:
    takes = ", ".join(describe(s) for s in served.inputs)
    kind = "column" if served.table is not None else "input"
    problem = f"unknown {kind} {unknown[0]!r}" if unknown else f"{kind} {missing[0]!r} is missing"
    return f"{problem}: {served.name} version {served.version} takes {takes}"


def _tensor(tensor: InputTensor, spec: TensorSpec, served: ServedVersion) -> np.ndarray:
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"input {tensor.name!r} has datatype {tensor.datatype or '(empty)'}; "
                           f"{served.name} takes {describe(spec)}")
    shape = tuple(tensor.shape)
    fits = len(shape) == len(spec.shape) and all(
        (want == -1 and got >= 0) or got == want for got, want in zip(shape, spec.shape, strict=True))
    if not fits or (served.batching and shape[0] < 1):
        rows = "; send at least one row" if fits else ""
        raise InvalidInput(f"input {tensor.name!r} has shape {list(shape)}; {served.name} version {served.version} "
                           f"takes {describe(spec)} (-1: any size){rows}")
    _check_count(tensor, shape)
    data = tensor.data
    if spec.datatype == "BYTES":
        # onnxruntime's string tensors hold str; the protocol carries bytes (UTF-8 for text).
        data = np.array([c.decode("utf-8", errors="replace") if isinstance(c, bytes) else str(c) for c in data],
                        dtype=object)
    return data.reshape(shape)


def _check_count(tensor: InputTensor, shape: tuple[int, ...]) -> None:
    needed = math.prod(shape)
    if len(tensor.data) != needed:
        raise InvalidInput(f"input {tensor.name!r} carries {len(tensor.data)} values ({tensor.datatype}); "
                           f"shape {list(shape)} needs {needed}")


def _shared_rows(arrays: dict[str, np.ndarray], served: ServedVersion) -> int:
    if not served.batching:
        return 1  # the whole request is one unit of work
    rows = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"{n!r} {r}" for n, r in rows.items())
        raise InvalidInput(f"inputs disagree on the batch size (first dimension): {listed}; send the same rows "
                           "for every input")
    return next(iter(rows.values()))


def _tabular(tensor: InputTensor, served: ServedVersion) -> np.ndarray:
    """A tabular version's rows as a C-contiguous [rows, width] array of the model's dtype."""
    spec = served.input
    if tensor.datatype not in TABULAR_DATATYPES:
        raise InvalidInput(
            f"input {tensor.name!r} has datatype {tensor.datatype or '(empty)'}; send one of "
            f"{', '.join(TABULAR_DATATYPES)} (converted to the model's {spec.datatype})"
        )
    shape = list(tensor.shape)
    if len(shape) != 2:
        raise InvalidInput(
            f"input {tensor.name!r} has shape {shape} (rank {len(shape)}); expected rank 2: [rows, {served.width}]"
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
    _check_count(tensor, (rows, width))
    if tensor.datatype == "BYTES":
        return _numbers_from_text(tensor.data, rows, width, served)
    array = tensor.data.reshape(rows, width)
    if array.dtype != served.input_dtype:
        array = array.astype(served.input_dtype)
    return array


def _numbers_from_text(cells: np.ndarray, rows: int, width: int, served: ServedVersion,
                       features: tuple[str, ...] | None = None) -> np.ndarray:
    """Numbers written as text (as some clients send them), checked cell by cell.

    A cell that is not a number is refused with the trainer's and ``driftline validate``'s own wording.
    """
    values = np.empty(rows * width, dtype=np.float64)
    features = features or served.metadata.feature_names
    for i, cell in enumerate(cells):
        text = (cell.decode("utf-8", errors="replace") if isinstance(cell, bytes) else str(cell)).strip()
        if text.lower() in MISSING_MARKERS:
            values[i] = np.nan
            continue
        try:
            values[i] = float(text)
        except ValueError:
            raise NotANumber(not_a_number_message(i // width, features[i % width], _cut(text))
                             + "; nothing in this request was run", features[i % width]) from None
    return values.reshape(rows, width).astype(served.input_dtype)
