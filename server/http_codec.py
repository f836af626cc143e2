"""The HTTP/JSON wire format of an inference: request body -> request path -> response body.

The Open Inference Protocol's REST binding, with Triton's binary tensor extension: when the header
``Inference-Header-Content-Length: N`` is present, the first N bytes of the body are the JSON and the
rest are the raw tensors of the inputs that say ``parameters.binary_data_size``, in input order. An
output asked with ``parameters.binary_data: true`` (or every output, with the request parameter
``binary_data_output: true``) is answered the same way. Raw bytes are viewed with ``np.frombuffer``;
JSON ``data`` (flat or nested, row-major; BYTES as strings) is checked to be of the declared kind,
never silently converted. Parameters consumed here are those of the binary extension and
``classification``; every other one is passed on to the request path, which honours or refuses it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from driftline.datatypes import NUMPY_OF
from driftline.errors import InvalidInput
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

BINARY_SIZE = "binary_data_size"
BINARY = "binary_data"
BINARY_OUTPUT = "binary_data_output"
CLASSIFICATION = "classification"
DATATYPES = (*NUMPY_OF, "BYTES")
_DATATYPE_SET = frozenset(DATATYPES)
_NO_BYTES = memoryview(b"")

# Which numpy kinds JSON numbers may arrive as, per datatype: a float is not an integer, a number is not a bool.
_KINDS = {"BOOL": "b", "FP16": "iuf", "FP32": "iuf", "FP64": "iuf"}
_INTEGER_KINDS = "iu"
_REQUEST_FIELDS = frozenset({"id", "parameters", "inputs", "outputs", "model_name", "model_version"})
_ABSENT: Any = object()  # a field the document does not have (None would be JSON null, which is refused)
_INPUT_FIELDS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_FIELDS = frozenset({"name", "parameters"})


class Parsed:
    """An infer request as the request path takes it, and how its answer must be encoded."""

    __slots__ = ("request", "binary_default", "binary_of")

    def __init__(self, request: InferRequest, binary_default: bool, binary_of: dict[str, bool]) -> None:
        self.request = request
        self.binary_default = binary_default  # for outputs not named in the request
        self.binary_of = binary_of  # output name -> answer in binary


def parse_infer(body: bytes, header_length: int | None, model: str, version: str) -> Parsed:
    """``header_length``: the Inference-Header-Content-Length header (None when absent: all JSON).

    This runs for every HTTP inference, so what it checks costs as little as the check allows: an error's
    words are composed only when it is raised, and field names are checked as one set comparison."""
    if header_length is None:
        document, binary = json_object(body), _NO_BYTES
    else:
        view = memoryview(body)
        if not 0 < header_length <= len(view):
            raise InvalidInput(f"Inference-Header-Content-Length is {header_length} but the body has {len(view)} bytes")
        document, binary = json_object(view[:header_length]), view[header_length:]
    refuse_unknown(document, _REQUEST_FIELDS, "the inference request")
    if "model_name" in document or "model_version" in document:
        _check_target(document, model, version)
    parameters = document.get("parameters", _ABSENT)
    binary_default = False
    if parameters is _ABSENT:
        parameters = {}
    else:
        parameters = dict(_object(parameters, "request 'parameters'"))
        if BINARY_OUTPUT in parameters:
            binary_default = _flag(parameters.pop(BINARY_OUTPUT), "request parameter {!r}", BINARY_OUTPUT)
    inputs = _inputs(document.get("inputs"), binary)
    outputs = document.get("outputs", _ABSENT)
    outputs, binary_of = ([], {}) if outputs is _ABSENT else _outputs(outputs, binary_default)
    request_id = document.get("id", "")
    if type(request_id) is not str:
        raise InvalidInput(f"request 'id' must be a string, got {request_id!r}")
    request = InferRequest(model, version, request_id, inputs, outputs, None, parameters)
    return Parsed(request, binary_default, binary_of)


def encode_result(result: InferResult, parsed: Parsed) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON part when binary tensors follow it (else None)."""
    outputs, raw = [], []
    for tensor in result.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.array.shape)}
        if parsed.binary_of.get(tensor.name, parsed.binary_default):
            data = to_raw(tensor.array, tensor.datatype)
            entry["parameters"] = {BINARY_SIZE: len(data)}
            raw.append(data)
        else:
            entry["data"] = _json_data(tensor.name, tensor.array, tensor.datatype)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": result.model, "model_version": result.version}
    if result.id:
        document["id"] = result.id
    if result.parameters:
        document["parameters"] = result.parameters
    document["outputs"] = outputs
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raw:
        return header, None
    return b"".join([header, *raw]), len(header)


def json_object(raw: bytes | memoryview) -> dict[str, Any]:
    """A request body (or its JSON header) that must be one JSON object."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    return _object(document, "the request body")


def _object(value: Any, what: str, *args: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object; ``what`` (formatted with ``args`` only on error) names it."""
    if type(value) is not dict:
        raise InvalidInput(f"{what.format(*args)} must be a JSON object, got {type(value).__name__}")
    return value


def refuse_unknown(document: dict[str, Any], known: frozenset[str], where: str, *args: Any) -> None:
    """Refuse the first field not in ``known``; ``where`` (formatted with ``args`` only on error) names the place."""
    if document.keys() <= known:
        return
    key = next(k for k in document if k not in known)
    raise InvalidInput(f"field {key!r} is not part of {where.format(*args)}; known fields: {', '.join(sorted(known))}")


def _check_target(document: dict[str, Any], model: str, version: str) -> None:
    """KServe's client repeats the model in the body; it must agree with the URL."""
    for key, expected in (("model_name", model), ("model_version", version)):
        if key in document and document[key] != expected:
            raise InvalidInput(f"the body's {key} {document[key]!r} differs from the URL's {expected!r}")


def _flag(value: Any, what: str, *args: Any) -> bool:
    if type(value) is not bool:
        raise InvalidInput(f"{what.format(*args)} must be true or false, got {value!r}")
    return value


def _inputs(entries: Any, binary: memoryview) -> list[InputTensor]:
    if not isinstance(entries, list) or not entries:
        raise InvalidInput("the request needs 'inputs': a list of {name, shape, datatype, data} objects")
    inputs, at = [], 0
    for entry in entries:
        tensor, used = _input(_object(entry, "each of 'inputs'"), binary, at)
        inputs.append(tensor)
        at += used
    if at != len(binary):
        raise InvalidInput(f"the body has {len(binary) - at} bytes after the JSON header that no input's "
                           f"{BINARY_SIZE} accounts for")
    return inputs


def _input(entry: dict[str, Any], binary: memoryview, at: int) -> tuple[InputTensor, int]:
    """The input, and how many bytes of the binary part it took."""
    name = entry.get("name")
    if type(name) is not str or not name:
        raise InvalidInput(f"each input needs a 'name' (a string), got {name!r}")
    refuse_unknown(entry, _INPUT_FIELDS, "input {!r}", name)
    datatype = entry.get("datatype")
    if type(datatype) is not str or datatype not in _DATATYPE_SET:  # (a JSON list or object cannot be hashed)
        raise InvalidInput(f"input {name!r} has datatype {datatype!r}, which is not a protocol datatype; send one "
                           f"of {', '.join(DATATYPES)}")
    shape = _shape(name, entry.get("shape"))
    parameters = entry.get("parameters", _ABSENT)
    parameters = {} if parameters is _ABSENT else dict(_object(parameters, "'parameters' of input {!r}", name))
    size = parameters.pop(BINARY_SIZE, None)
    if size is None:
        if "data" not in entry:
            raise InvalidInput(f"input {name!r} has neither 'data' nor parameter {BINARY_SIZE!r}")
        return InputTensor(name, datatype, shape, _from_json(name, datatype, shape, entry["data"]), parameters), 0
    if "data" in entry:
        raise InvalidInput(f"input {name!r} has both 'data' and parameter {BINARY_SIZE!r}; send one")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or at + size > len(binary):
        raise InvalidInput(f"input {name!r} says {BINARY_SIZE} {size!r}, but {len(binary) - at} bytes of binary "
                           "data are left after the JSON header")
    data = from_raw(binary[at:at + size], datatype, shape, f"the binary data of input {name!r}",
                    f"input {name!r} has {BINARY_SIZE} {size}")
    return InputTensor(name, datatype, shape, data, parameters), size


def _shape(name: str, shape: Any) -> tuple[int, ...]:
    if type(shape) is list:
        for d in shape:
            if type(d) is not int or d < 0:  # JSON numbers arrive as int or float; true/false as bool
                break
        else:
            return tuple(shape)
    raise InvalidInput(f"input {name!r} has shape {shape!r}; send a list of non-negative integers")


def _from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    if datatype == "BYTES":
        return _strings(name, data)
    try:
        values = np.asarray(data)
    except ValueError:  # ragged nesting
        raise InvalidInput(f"input {name!r}: 'data' is not a regular (flat or nested) list of values") from None
    values = values.reshape(-1)
    if not values.size:
        return np.empty(0, NUMPY_OF[datatype])
    kinds = _KINDS.get(datatype, _INTEGER_KINDS)
    if values.dtype.kind not in kinds:
        expected = {"b": "true or false", "iuf": "numbers"}.get(kinds, "whole numbers")
        raise InvalidInput(f"input {name!r} is {datatype}: its 'data' must hold {expected} "
                           f"(found {_first_misfit(values, kinds)!r})")
    typed = values.astype(NUMPY_OF[datatype], copy=False)
    if kinds is _INTEGER_KINDS and typed.dtype != values.dtype and not np.array_equal(typed, values):
        raise InvalidInput(f"input {name!r} holds values outside the range of {datatype}")
    return typed


def _first_misfit(values: np.ndarray, kinds: str) -> Any:
    for value in values.tolist():
        if np.asarray(value).dtype.kind not in kinds:
            return value
    return values[0]


def _strings(name: str, data: Any) -> np.ndarray:
    """JSON strings -> a flat object array of UTF-8 bytes."""
    cells: list[bytes] = []
    stack = [data]
    while stack:  # row-major order for nested lists: walk them depth first
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            cells.append(item.encode())
        else:
            raise InvalidInput(f"input {name!r} is BYTES: its 'data' must hold strings (found {item!r})")
    return bytes_array(cells)


def _outputs(entries: Any, binary_default: bool) -> tuple[list[OutputRequest], dict[str, bool]]:
    if not isinstance(entries, list):
        raise InvalidInput("'outputs' must be a list of {name, parameters} objects")
    outputs, binary_of = [], {}
    for entry in entries:
        entry = _object(entry, "each of 'outputs'")
        name = entry.get("name")
        if type(name) is not str or not name:
            raise InvalidInput(f"each requested output needs a 'name' (a string), got {name!r}")
        refuse_unknown(entry, _OUTPUT_FIELDS, "requested output {!r}", name)
        parameters = dict(_object(entry.get("parameters", {}), "'parameters' of output {!r}", name))
        binary = _flag(parameters.pop(BINARY, binary_default), "parameter {!r} of output {!r}", BINARY, name)
        count = class_count(parameters.pop(CLASSIFICATION, 0), name)
        outputs.append(OutputRequest(name, class_count=count, binary=binary, parameters=parameters))
        binary_of[name] = binary
    return outputs, binary_of


def _json_data(name: str, array: np.ndarray, datatype: str) -> Any:
    if datatype != "BYTES":
        return np.ascontiguousarray(array.reshape(-1))  # orjson writes numpy arrays itself
    try:
        return [c.decode() if isinstance(c, bytes) else str(c) for c in array.reshape(-1)]
    except UnicodeDecodeError:
        raise InvalidInput(f"output {name!r} holds bytes that are not UTF-8 text, which JSON cannot carry; ask for "
                           f"it with parameter {BINARY!r}: true") from None
