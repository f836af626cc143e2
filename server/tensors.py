"""What a front end hands the request path, and what it gets back: tensors in plain numpy.

gRPC and HTTP parse their own wire formats into an :class:`InferRequest` and encode an
:class:`InferResult`; everything between (finding the version, checking inputs against its
signature, batching, running, monitoring, classification) is one path shared by both
(:mod:`driftline.server.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import math
import sys

import numpy as np

from driftline.datatypes import NUMPY_OF
from driftline.errors import InvalidInput

_NATIVE_LITTLE = sys.byteorder == "little"


@dataclass(slots=True)
class InputTensor:
    """One input as the client sent it, not yet checked against the model.

    ``data`` holds the values flat, in row-major order: a numpy array of the datatype's dtype
    (``driftline.datatypes.NUMPY_OF``) or, for BYTES, a numpy object array of ``bytes``. A front end
    checks only what its wire format defines (e.g. a raw buffer's byte count); the request path checks
    names, datatypes and shapes against the served version.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, object] = field(default_factory=dict)  # those the front end did not consume


@dataclass(slots=True)
class OutputRequest:
    """An output the client asked for by name."""

    name: str
    class_count: int = 0  # Triton's classification extension: top-k "score:index[:label]" instead of the tensor
    binary: bool = False  # HTTP only: answer this output in the binary tensor extension
    parameters: dict[str, object] = field(default_factory=dict)  # those the front end did not consume


@dataclass(slots=True)
class InferRequest:
    model: str
    version: str  # "" for the model's default version
    id: str
    inputs: list[InputTensor]
    outputs: list[OutputRequest]  # empty: every output the model has (not the attributions)
    deadline: float | None = None  # time.monotonic() seconds
    parameters: dict[str, object] = field(default_factory=dict)  # request-level, those the front end did not consume


@dataclass(slots=True)
class OutputTensor:
    name: str
    datatype: str
    array: np.ndarray  # shaped as answered; BYTES: an object array of bytes
    binary: bool = False  # HTTP only: as asked in the request


@dataclass(slots=True)
class InferResult:
    model: str
    version: str
    id: str
    outputs: list[OutputTensor]
    parameters: dict[str, str | int | bool] = field(default_factory=dict)


def bytes_array(cells: list[bytes] | tuple[bytes, ...]) -> np.ndarray:
    """A flat object array of bytes (the form BYTES tensors take on the request path)."""
    out = np.empty(len(cells), dtype=object)
    out[:] = cells
    return out


def split_bytes(raw: bytes | memoryview, where: str) -> np.ndarray:
    """The elements of a raw BYTES tensor: each is a 4-byte little-endian length, then that many bytes."""
    view = memoryview(raw)
    cells: list[bytes] = []
    at, end = 0, len(view)
    while at + 4 <= end:
        size = int.from_bytes(view[at:at + 4], "little")
        if at + 4 + size > end:
            break
        cells.append(bytes(view[at + 4:at + 4 + size]))
        at += 4 + size
    if at != end:
        raise InvalidInput(f"{where} is not a valid BYTES tensor: each element must be a 4-byte little-endian "
                           f"length followed by that many bytes (stopped at byte {at} of {end})")
    return bytes_array(cells)


def join_bytes(array: np.ndarray) -> bytes:
    """The raw form of a BYTES tensor (the inverse of :func:`split_bytes`)."""
    parts = []
    for cell in array.reshape(-1):
        data = cell if isinstance(cell, bytes) else str(cell).encode()
        parts.append(len(data).to_bytes(4, "little"))
        parts.append(data)
    return b"".join(parts)


def from_raw(raw: bytes | memoryview, datatype: str, shape: tuple[int, ...], where: str, size_said: str
             ) -> np.ndarray:
    """A tensor's flat values from its raw little-endian bytes (gRPC's raw contents, HTTP's binary extension),
    viewed without a copy. ``where`` names the bytes and ``size_said`` states their size, each in the front
    end's own words, for the error that says what to fix."""
    if datatype == "BYTES":
        return split_bytes(raw, where)
    dtype = NUMPY_OF[datatype]
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(f"{size_said}; shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes "
                           f"({count} values x {dtype.itemsize} bytes)")
    return np.frombuffer(raw, dtype=dtype)


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """The raw little-endian form of an output (the inverse of :func:`from_raw`)."""
    if datatype == "BYTES":
        return join_bytes(array)
    if _NATIVE_LITTLE and array.dtype.byteorder in "=|":
        return array.tobytes()  # C order, whatever the strides: the common case, without building a dtype
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def class_count(value: object, output: str) -> int:
    """The ``classification`` parameter of a requested output: how many top classes to answer (0: not asked)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"parameter 'classification' of output {output!r} must be a positive integer (the "
                           f"number of top classes), got {value!r}")
    return value
