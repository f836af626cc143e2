"""Hostile requests, generated: whatever a client sends, the server answers with a proper status and keeps serving.

Hypothesis builds gRPC ``ModelInferRequest``s (with tritonclient's generated messages, as a stock client sends
them) and HTTP/JSON inference bodies, most of them a valid request to a served model with one to four things
broken (model name, version, input names, datatypes, shapes, raw contents of the wrong length, typed contents of
the wrong kind, parameters of every kind, requested outputs), some of them made up from nothing. Served: a trained
housing model and ONNX models published without a reference (``all_types``, ``tensor3``, ``simple_string``).

The properties:
- gRPC: every answer is OK or one of the codes a refusal may carry; never UNKNOWN (a handler that raised through
  the boundary) or INTERNAL (a bug the boundary caught);
- HTTP: every answer is 2xx, 4xx or 503, and an error answer is a JSON object with an ``error`` message; never 500;
- afterwards the server is ready, serves a valid request with the right answer, and its RSS grew by less than a
  generous bound.

Examples are derandomized and bounded (the ``ci`` profile; ``HYPOTHESIS_PROFILE=deep`` runs many more), so the file
takes about a minute on a two-core machine and fails the same way on every run.
"""

from __future__ import annotations

import http.client
import json
import os
import struct
import urllib.parse
from pathlib import Path

import grpc
import numpy as np
import onnx_models
import pytest
from driftline.trainer import synthetic
from helpers import driftline, running_server
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

settings.register_profile("ci", max_examples=500, deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("deep", max_examples=3000, deadline=None, derandomize=False, database=None,
                          print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
# How many examples each test gets, relative to the profile's max_examples.
GRPC_EXAMPLES = settings.get_profile(PROFILE).max_examples
HTTP_EXAMPLES = settings.get_profile(PROFILE).max_examples

ALLOWED_GRPC = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OUT_OF_RANGE,
}
RSS_GROWTH_BOUND = 256 * 1024 * 1024  # generous: the point is "not unbounded", not a tight budget
ONNX_MODELS = ("all_types", "tensor3", "simple_string")
HOUSE = synthetic.housing(4, seed=3).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BYTES", "BF16")
BAD_DATATYPES = ("", "fp32", "FLOAT", "FP8", "STRING", "INT128", "FP32 ", "BYTES\x00", "ＦＰ３２", "../FP32")
HOSTILE_TEXT = ("", " ", "../housing", "..", "/", "housing/../housing", "housing\x00", "²", "٣", "Ⅻ", "1e3", "0x1",
                "-1", "0", "+1", " 1", "1 ", "01", "9" * 30, "Mokotów", "\ud7ff", "%2F", "housing;1",
                "\u202ehousing", "🏠")
HUGE = (2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, -(2**63), -(2**31))


# -- the served world ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    registry = tmp_path_factory.mktemp("fuzz") / "registry"
    driftline("train", "housing", "--registry", str(registry), "--rows", "1000", "--param", "n_estimators=10")
    for name in ONNX_MODELS:
        onnx_models.publish(registry, name, onnx_models.BUILDERS[name]())
    with running_server(registry, *onnx_models.serve_flags()) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.address) as open_channel:
        yield open_channel


@pytest.fixture(scope="module")
def fuzz_stub(channel):
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def rss_before(server, fuzz_stub) -> int:
    """The server's RSS once every model has answered a valid request (allocators at their working size)."""
    for name in ("housing", *ONNX_MODELS):
        for _ in range(3):
            fuzz_stub.ModelInfer(valid_request(name), timeout=60)
    return rss_bytes(server.process.pid)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- valid requests, the starting point of most examples ----------------------------------------------------------
def samples(name: str, rows: int = 2) -> list[tuple[str, str, np.ndarray]]:
    if name == "housing":
        return [("input", "FP32", HOUSE[:rows])]
    return onnx_models.sample_inputs(name, rows)


def raw_bytes(datatype: str, array: np.ndarray) -> bytes:
    if datatype == "BYTES":
        out = bytearray()
        for element in array.reshape(-1):
            data = element if isinstance(element, bytes) else str(element).encode()
            out += struct.pack("<I", len(data)) + data
        return bytes(out)
    return np.ascontiguousarray(array).tobytes()


def valid_request(name: str, rows: int = 2) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=name, id="fuzz")
    for input_name, datatype, array in samples(name, rows):
        message.inputs.add(name=input_name, datatype=datatype, shape=list(array.shape))
        message.raw_input_contents.append(raw_bytes(datatype, array))
    return message


# -- strategies ---------------------------------------------------------------------------------------------------
LONG = st.integers(300, 5000).map(lambda n: "h" * n)  # a long name (mapped, so reports stay short)
texts = st.one_of(st.sampled_from(HOSTILE_TEXT), LONG, st.text(max_size=40))
versions = st.one_of(st.sampled_from(("", "1", "2", "0", "-1", "²", "٣", "1.0", "v1", "9" * 30, "../1", " 1")), texts)
dims = st.one_of(st.integers(-3, 20), st.sampled_from(HUGE))
shapes = st.lists(dims, max_size=6)
datatypes = st.one_of(st.sampled_from(DATATYPES), st.sampled_from(BAD_DATATYPES), st.text(max_size=8))
raw_contents = st.one_of(st.binary(max_size=300), st.binary(min_size=4000, max_size=20000))


def parameter(message: pb.InferParameter, kind: str, value) -> None:
    setattr(message, kind, value)


parameter_values = st.one_of(
    st.tuples(st.just("bool_param"), st.booleans()),
    st.tuples(st.just("int64_param"), st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from((0, 1, -1)))),
    st.tuples(st.just("uint64_param"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("double_param"), st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.just("string_param"), texts),
)
parameter_names = st.one_of(st.sampled_from(("timeout", "priority", "sequence_id", "sequence_start", "sequence_end",
                                             "binary_data", "binary_data_size", "classification",
                                             "triton_enable_empty_final_response", "shared_memory_region")), texts)
parameter_maps = st.dictionaries(parameter_names, parameter_values, max_size=3)


def fill_parameters(target, chosen: dict) -> None:
    for key, (kind, value) in chosen.items():
        parameter(target[key], kind, value)


EDGES = (0, 1, -1, 127, 128, -128, -129, 255, 256, 32767, 32768, -32768, -32769, 65535, 65536, 2**31 - 1, -(2**31),
         2**32 - 1, 2**63 - 1, -(2**63), 2**64 - 1)  # the ends of every integer datatype, and one past them


def whole_numbers(low: int, high: int) -> st.SearchStrategy[int]:
    """Integers a contents field can carry, often at the edge of a narrower datatype's range."""
    return st.one_of(st.integers(low, high), st.sampled_from([e for e in EDGES if low <= e <= high]))


CONTENT_FIELDS = {
    "bool_contents": st.lists(st.booleans(), max_size=80),
    "int_contents": st.lists(whole_numbers(-(2**31), 2**31 - 1), max_size=80),
    "int64_contents": st.lists(whole_numbers(-(2**63), 2**63 - 1), max_size=80),
    "uint_contents": st.lists(whole_numbers(0, 2**32 - 1), max_size=80),
    "uint64_contents": st.lists(whole_numbers(0, 2**64 - 1), max_size=80),
    "fp32_contents": st.lists(st.floats(width=32), max_size=80),
    "fp64_contents": st.lists(st.floats(), max_size=80),
    "bytes_contents": st.lists(st.binary(max_size=20), max_size=40),
}
FIELD_OF = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
            "UINT64": "uint64_contents", "FP16": "fp32_contents", "FP32": "fp32_contents", "FP64": "fp64_contents",
            "BYTES": "bytes_contents"}  # the protocol's contents field for each datatype
contents = st.one_of(*(st.tuples(st.just(field), values) for field, values in CONTENT_FIELDS.items()))
served_models = st.sampled_from(("housing", *ONNX_MODELS))


@st.composite
def grpc_requests(draw) -> pb.ModelInferRequest:
    """A valid request with one to four things broken, or (one in five) a request made up from nothing."""
    if draw(st.integers(0, 4)) == 0:
        return draw(made_up_requests())
    name = draw(served_models)
    message = valid_request(name, draw(st.integers(1, 3)))
    for _ in range(draw(st.integers(1, 4))):
        draw(st.sampled_from(MUTATIONS))(draw, message)
    return message


@st.composite
def made_up_requests(draw) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=draw(st.one_of(served_models, texts)), model_version=draw(versions),
                                   id=draw(texts))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 4))):
        tensor = message.inputs.add(name=draw(st.one_of(st.sampled_from(("input", "X", "H", "INPUT0", "INT8_IN")),
                                                        texts)),
                                    datatype=draw(datatypes), shape=draw(shapes))
        fill_parameters(tensor.parameters, draw(parameter_maps))
        if raw:
            message.raw_input_contents.append(draw(raw_contents))
        elif tensor.datatype in FIELD_OF and draw(st.booleans()):  # the datatype's own field
            getattr(tensor.contents, FIELD_OF[tensor.datatype]).extend(draw(CONTENT_FIELDS[FIELD_OF[tensor.datatype]]))
        else:
            field, values = draw(contents)
            getattr(tensor.contents, field).extend(values)
    fill_parameters(message.parameters, draw(parameter_maps))
    for _ in range(draw(st.integers(0, 2))):
        output = message.outputs.add(name=draw(st.one_of(st.sampled_from(("prediction", "attribution", "Y")), texts)))
        fill_parameters(output.parameters, draw(parameter_maps))
    return message


def _mutate_name(draw, message):
    message.model_name = draw(texts)


def _mutate_version(draw, message):
    message.model_version = draw(versions)


def _mutate_input_name(draw, message):
    if message.inputs:
        draw(st.sampled_from(message.inputs)).name = draw(texts)


def _mutate_datatype(draw, message):
    if message.inputs:
        draw(st.sampled_from(message.inputs)).datatype = draw(datatypes)


def _mutate_shape(draw, message):
    if message.inputs:
        tensor = draw(st.sampled_from(message.inputs))
        del tensor.shape[:]
        tensor.shape.extend(draw(shapes))


def _mutate_raw(draw, message):
    if message.raw_input_contents:
        index = draw(st.integers(0, len(message.raw_input_contents) - 1))
        current = message.raw_input_contents[index]
        message.raw_input_contents[index] = draw(st.one_of(
            raw_contents, st.just(current[:-1]), st.just(current + b"\x00"), st.just(current[: len(current) // 2])))


def _drop_or_add_raw(draw, message):
    if draw(st.booleans()) and message.raw_input_contents:
        del message.raw_input_contents[-1]
    else:
        message.raw_input_contents.append(draw(raw_contents))


def _typed_contents(draw, message):
    """Contents in the typed fields instead of (or as well as) raw_input_contents: half the time the field that
    belongs to the tensor's datatype (with values of the field's whole range), else any field."""
    if not message.inputs:
        return
    tensor = draw(st.sampled_from(message.inputs))
    if draw(st.booleans()):  # a well-formed typed request: no raw contents at all
        del message.raw_input_contents[:]
        tensor.datatype = draw(st.sampled_from(sorted(FIELD_OF)))
        field = FIELD_OF[tensor.datatype]
        values = draw(CONTENT_FIELDS[field].filter(bool))  # at least one value
    else:
        if draw(st.booleans()):
            del message.raw_input_contents[:]
        field, values = draw(contents)
    getattr(tensor.contents, field).extend(values)


def _drop_or_add_input(draw, message):
    if draw(st.booleans()) and message.inputs:
        del message.inputs[-1]
    else:
        message.inputs.add(name=draw(texts), datatype=draw(datatypes), shape=draw(shapes))


def _parameters(draw, message):
    fill_parameters(message.parameters, draw(parameter_maps))


def _tensor_parameters(draw, message):
    if message.inputs:
        fill_parameters(draw(st.sampled_from(message.inputs)).parameters, draw(parameter_maps))


def _outputs(draw, message):
    for _ in range(draw(st.integers(1, 3))):
        output = message.outputs.add(name=draw(st.one_of(
            st.sampled_from(("prediction", "attribution", "attribution_base", "ROW_SUM", "H_TWICE", "OUTPUT0",
                             "FP32_OUT", "driftline_encoded")), texts)))
        fill_parameters(output.parameters, draw(parameter_maps))


MUTATIONS = (_mutate_name, _mutate_version, _mutate_input_name, _mutate_datatype, _mutate_shape, _mutate_shape,
             _mutate_raw, _drop_or_add_raw, _typed_contents, _typed_contents, _typed_contents, _drop_or_add_input,
             _parameters, _tensor_parameters, _outputs)  # typed contents thrice: each datatype has its own decoding


# -- HTTP bodies --------------------------------------------------------------------------------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                         texts)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                                  st.dictionaries(texts, inner, max_size=4)),
                           max_leaves=30)


def valid_body(name: str, rows: int = 2) -> dict:
    inputs = []
    for input_name, datatype, array in samples(name, rows):
        data = [x.decode() if isinstance(x, bytes) else x for x in array.reshape(-1).tolist()]
        inputs.append({"name": input_name, "datatype": datatype, "shape": list(array.shape), "data": data})
    return {"id": "fuzz", "inputs": inputs}


@st.composite
def http_requests(draw) -> tuple[str, bytes]:
    """(path, body): a valid body with one to four things broken, or bytes that are not even JSON."""
    name = draw(served_models)
    path_name, version = name, None
    body: dict = valid_body(name, draw(st.integers(1, 3)))
    for _ in range(draw(st.integers(1, 4))):
        what = draw(st.sampled_from(("name", "version", "input", "field", "top", "outputs", "parameters", "data")))
        inputs = body.get("inputs")
        if what == "name":
            path_name = draw(texts)
        elif what == "version":
            version = draw(versions)
        elif what == "input" and isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
            tensor = inputs[draw(st.integers(0, len(inputs) - 1))]
            key = draw(st.sampled_from(("name", "datatype", "shape", "data", "parameters", "extra")))
            tensor[key] = draw(st.one_of(json_values, st.sampled_from(DATATYPES), shapes, st.lists(dims, max_size=3)))
        elif what == "field" and isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) and inputs[0]:
            del inputs[0][draw(st.sampled_from(sorted(inputs[0])))]
        elif what == "top":
            body[draw(st.sampled_from(("inputs", "outputs", "id", "parameters", "unexpected")))] = draw(json_values)
        elif what == "outputs":
            body["outputs"] = [{"name": draw(texts), "parameters": draw(st.dictionaries(parameter_names, json_values,
                                                                                        max_size=3))}]
        elif what == "parameters":
            body["parameters"] = draw(st.dictionaries(parameter_names, json_values, max_size=3))
        elif what == "data" and isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
            inputs[0]["data"] = draw(st.lists(json_scalars, max_size=40))
    raw = json.dumps(body).encode()
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.one_of(st.binary(max_size=200), st.just(raw[: len(raw) // 2]), st.just(b"\xff" + raw)))
    quoted = urllib.parse.quote(path_name, safe="")
    path = f"/v2/models/{quoted}" + (f"/versions/{urllib.parse.quote(version, safe='')}" if version is not None
                                     else "") + "/infer"
    return path, raw


# -- the properties -----------------------------------------------------------------------------------------------
@settings(settings.get_profile(PROFILE), max_examples=GRPC_EXAMPLES)
@given(message=grpc_requests())
def test_grpc_answers_every_request_with_a_proper_status(fuzz_stub, rss_before, message):
    try:
        fuzz_stub.ModelInfer(message, timeout=60)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code, details = error.code(), error.details()
    event(code.name)  # --hypothesis-show-statistics shows how the answers spread
    assert code in ALLOWED_GRPC, f"{code.name}: {details!r} for {message}"
    assert code == grpc.StatusCode.OK or details, f"{code.name} without a message"


@settings(settings.get_profile(PROFILE), max_examples=HTTP_EXAMPLES)
@given(request=http_requests())
def test_http_answers_every_request_with_a_proper_status(server, rss_before, request):
    path, body = request
    connection = http.client.HTTPConnection(onnx_models.http_url(server), timeout=60)
    try:
        connection.request("POST", path, body=body, headers={"content-type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    event(str(response.status))
    assert 200 <= response.status < 300 or 400 <= response.status < 500 or response.status == 503, (
        f"{response.status} {payload[:500]!r} for POST {path} {body[:500]!r}")
    if response.status >= 400:
        document = json.loads(payload)
        assert isinstance(document, dict) and isinstance(document.get("error"), str) and document["error"], payload


@pytest.mark.parametrize(("datatype", "field", "value"), [
    ("UINT8", "uint_contents", 256), ("UINT16", "uint_contents", 70_000), ("INT8", "int_contents", 200),
    ("INT8", "int_contents", -200), ("INT16", "int_contents", 40_000), ("INT16", "int_contents", -40_000),
])
def test_typed_contents_outside_the_datatypes_range_are_refused(fuzz_stub, datatype, field, value):
    """Found by this file's fuzzing: a typed contents value the datatype cannot hold (the field is wider: int32 for
    INT8/INT16, uint32 for UINT8/UINT16) answered INTERNAL over gRPC; HTTP already refused it."""
    message = pb.ModelInferRequest(model_name="all_types")
    for other, (_, dtype) in onnx_models.ALL_TYPES.items():
        tensor = message.inputs.add(name=f"{other}_IN", datatype=other, shape=[1, 4])
        values = [value, 1, 2, 3] if other == datatype else np.zeros(4, dtype).tolist()
        getattr(tensor.contents, field if other == datatype else FIELD_OF[other]).extend(values)
    with pytest.raises(grpc.RpcError) as refused:
        fuzz_stub.ModelInfer(message, timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert f"{datatype}_IN" in refused.value.details()


def test_after_the_fuzzing_the_server_is_ready_serves_and_did_not_grow(server, fuzz_stub, rss_before):
    # Runs after the property tests above (pytest keeps a module's order), on the same server.
    assert fuzz_stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
    for name in ("housing", *ONNX_MODELS):
        assert fuzz_stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=30).ready
    answer = fuzz_stub.ModelInfer(valid_request("tensor3", 2), timeout=60)
    sums = np.frombuffer(answer.raw_output_contents[[o.name for o in answer.outputs].index("ROW_SUM")], "<f8")
    np.testing.assert_array_equal(sums.reshape(2, 3), np.arange(24, dtype=np.float64).reshape(2, 3, 4).sum(axis=-1))
    housing = fuzz_stub.ModelInfer(valid_request("housing", 2), timeout=60)
    assert housing.model_name == "housing" and len(housing.raw_output_contents[0]) == 2 * 4
    grown = rss_bytes(server.process.pid) - rss_before
    assert grown < RSS_GROWTH_BOUND, f"RSS grew by {grown / 1e6:.1f} MB over the fuzzing"
