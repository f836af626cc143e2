"""The HTTP wire format on its own: bodies written by tritonclient.http itself are parsed into the request
path's tensors, and answers are encoded into bodies tritonclient.http reads back (KServe's client is tested
end to end, in test_http.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as httpclient

from driftline.errors import InvalidInput
from driftline.server.http_codec import encode_result, parse_infer
from driftline.server.tensors import InferResult, OutputTensor, bytes_array, split_bytes


def triton_body(inputs, outputs=None, **kwargs) -> tuple[bytes, int | None]:
    body, header_length = httpclient.InferenceServerClient.generate_request_body(inputs, outputs, **kwargs)
    return (body.encode() if isinstance(body, str) else body), header_length


def infer_input(name: str, array: np.ndarray, datatype: str, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_tritonclient_json_and_binary_inputs_become_flat_arrays():
    ints = np.arange(32, dtype=np.int32).reshape(2, 16)
    floats = np.linspace(0, 1, 22, dtype=np.float32).reshape(2, 11)
    words = np.array([["a", "bb"], ["ccc", ""]], dtype=object)
    body, header_length = triton_body([infer_input("I", ints, "INT32", False), infer_input("F", floats, "FP32", True),
                                       infer_input("S", words, "BYTES", True)], request_id="r1")
    parsed = parse_infer(body, header_length, "simple", "")
    request = parsed.request
    assert (request.model, request.version, request.id) == ("simple", "", "r1")
    i, f, s = request.inputs
    assert (i.name, i.datatype, i.shape, i.data.dtype) == ("I", "INT32", (2, 16), np.int32)
    np.testing.assert_array_equal(i.data, ints.reshape(-1))
    np.testing.assert_array_equal(f.data, floats.reshape(-1))
    assert s.data.tolist() == [b"a", b"bb", b"ccc", b""]
    assert request.outputs == [] and parsed.binary_default  # no outputs named: all binary, as tritonclient asks
    assert request.parameters == {} and i.parameters == {} and f.parameters == {}


def test_nested_json_data_and_json_strings():
    document = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2.5], [3, 4]]},
                           {"name": "s", "shape": [2], "datatype": "BYTES", "data": [["héllo"], ["x"]]},
                           {"name": "b", "shape": [2], "datatype": "BOOL", "data": [True, False]}]}
    x, s, b = parse_infer(json.dumps(document).encode(), None, "m", "2").request.inputs
    assert x.data.dtype == np.float64 and x.data.tolist() == [1, 2.5, 3, 4]
    assert s.data.tolist() == ["héllo".encode(), b"x"]
    assert b.data.dtype == np.bool_ and b.data.tolist() == [True, False]


def test_outputs_binary_choice_and_classification():
    outputs = [httpclient.InferRequestedOutput("a", binary_data=True),
               httpclient.InferRequestedOutput("b", binary_data=False, class_count=2)]
    body, header_length = triton_body([infer_input("x", np.zeros((1, 2), np.float32), "FP32", False)], outputs)
    parsed = parse_infer(body, header_length, "m", "")
    assert [(o.name, o.binary, o.class_count, o.parameters) for o in parsed.request.outputs] == [
        ("a", True, 0, {}), ("b", False, 2, {})]
    assert parsed.binary_of == {"a": True, "b": False} and not parsed.binary_default


def test_parameters_not_consumed_here_go_on_to_the_request_path():
    document = {"parameters": {"timeout": 5, "binary_data_output": True, "mine": "x"},
                "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1],
                            "parameters": {"shared_memory_region": "r"}}],
                "outputs": [{"name": "y", "parameters": {"binary_data": False, "other": 1}}]}
    request = parse_infer(json.dumps(document).encode(), None, "m", "").request
    assert request.parameters == {"timeout": 5, "mine": "x"}
    assert request.inputs[0].parameters == {"shared_memory_region": "r"}
    assert request.outputs[0].parameters == {"other": 1}


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "x", "shape": [1, 2], "datatype": "INT32", "data": [1, 2.5]}, "'x' is INT32: its 'data' must hold whole"),
    ({"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 300]}, "outside the range of INT8"),
    ({"name": "x", "shape": [2], "datatype": "UINT8", "data": [1, -1]}, "outside the range of UINT8"),
    ({"name": "x", "shape": [2], "datatype": "FP32", "data": ["1", 2]}, "must hold numbers (found '1')"),
    ({"name": "x", "shape": [2], "datatype": "BOOL", "data": [1, 0]}, "must hold true or false"),
    ({"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", 1]}, "must hold strings (found 1)"),
    ({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]}, "not a regular"),
    ({"name": "x", "shape": [2], "datatype": "FP8", "data": [1, 2]}, "datatype 'FP8'"),
    ({"name": "x", "shape": [-1, 2], "datatype": "FP32", "data": [1, 2]}, "non-negative integers"),
    ({"name": "x", "shape": [1], "datatype": "FP32"}, "neither 'data' nor parameter 'binary_data_size'"),
    ({"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "contents": {}}, "field 'contents'"),
])
def test_json_tensors_are_refused_naming_the_input_and_the_problem(entry, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_infer(json.dumps({"inputs": [entry]}).encode(), None, "m", "")


@pytest.mark.parametrize(("document", "message"), [
    # The words of these errors are composed only when one is raised (parse_infer runs for every request): each
    # must still name the place exactly.
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": []}]},
     "'parameters' of input 'x' must be a JSON object, got list"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "extra": 1, "more": 2}]},
     "field 'extra' is not part of input 'x'; known fields: data, datatype, name, parameters, shape"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": ["FP32"], "data": [1]}]},
     "input 'x' has datatype ['FP32'], which is not a protocol datatype"),
    ({"inputs": [{"name": "x", "shape": [1, True], "datatype": "FP32", "data": [1]}]},
     "input 'x' has shape [1, True]; send a list of non-negative integers"),
    ({"inputs": [{"name": "x", "shape": [1.0], "datatype": "FP32", "data": [1]}]},
     "input 'x' has shape [1.0]; send a list of non-negative integers"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": None},
     "request 'parameters' must be a JSON object, got NoneType"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": None},
     "'outputs' must be a list of {name, parameters} objects"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
      "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]},
     "parameter 'binary_data' of output 'y' must be true or false, got 'yes'"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{"name": "y", "p": 1}]},
     "field 'p' is not part of requested output 'y'; known fields: name, parameters"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
      "outputs": [{"name": "y", "parameters": 1}]},
     "'parameters' of output 'y' must be a JSON object, got int"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "id": 7},
     "request 'id' must be a string, got 7"),
    ({"inputs": [], "stray": 1},
     "field 'stray' is not part of the inference request; known fields: id, inputs, model_name, model_version, "
     "outputs, parameters"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
      "parameters": {"binary_data_output": 0}},
     "request parameter 'binary_data_output' must be true or false, got 0"),
])
def test_errors_name_the_field_exactly(document, message):
    with pytest.raises(InvalidInput) as caught:
        parse_infer(json.dumps(document).encode(), None, "m", "")
    assert str(caught.value) == message or str(caught.value).startswith(message + ";")


def test_binary_byte_counts_are_checked():
    header = {"inputs": [{"name": "x", "shape": [1, 11], "datatype": "FP32", "parameters": {"binary_data_size": 40}}]}
    head = json.dumps(header).encode()
    with pytest.raises(InvalidInput, match=r"input 'x' has binary_data_size 40; shape \[1, 11\] of FP32 needs 44"):
        parse_infer(head + bytes(40), len(head), "m", "")
    with pytest.raises(InvalidInput, match="40 bytes of binary data are left"):
        parse_infer(head.replace(b"40", b"44") + bytes(40), len(head), "m", "")
    with pytest.raises(InvalidInput, match="4 bytes after the JSON header"):
        parse_infer(head.replace(b"40", b"44") + bytes(48), len(head), "m", "")
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length is 999"):
        parse_infer(head, 999, "m", "")


def test_bad_json_and_mismatched_model_are_refused():
    with pytest.raises(InvalidInput, match="not valid JSON"):
        parse_infer(b"{nope", None, "m", "")
    with pytest.raises(InvalidInput, match="needs 'inputs'"):
        parse_infer(b"{}", None, "m", "")
    with pytest.raises(InvalidInput, match="model_name 'other' differs from the URL's 'm'"):
        parse_infer(b'{"model_name": "other", "inputs": []}', None, "m", "")
    with pytest.raises(InvalidInput, match="must be true or false"):
        parse_infer(b'{"parameters": {"binary_data_output": 1}, "inputs": []}', None, "m", "")


def result() -> InferResult:
    return InferResult("m", "3", "req-1", [
        OutputTensor("y", "FP32", np.array([[1.5], [2.5]], dtype=np.float32)),
        OutputTensor("k", "INT64", np.array([7, 8], dtype=np.int64)),
        OutputTensor("s", "BYTES", bytes_array([b"0.9:1:cat", b"0.8:0:dog"]).reshape(2, 1)),
    ], {"driftline_flagged_rows": "1"})


def parsed_for(outputs: list[dict], binary_output: bool = False):
    document = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": outputs,
                "parameters": {"binary_data_output": binary_output}}
    return parse_infer(json.dumps(document).encode(), None, "m", "")


def test_json_answer_reads_back_with_tritonclient():
    body, header_length = encode_result(result(), parsed_for([]))
    assert header_length is None
    read = httpclient.InferenceServerClient.parse_response_body(body)
    assert read.get_response()["id"] == "req-1" and read.get_response()["model_version"] == "3"
    assert read.get_response()["parameters"] == {"driftline_flagged_rows": "1"}
    np.testing.assert_array_equal(read.as_numpy("y"), [[1.5], [2.5]])
    np.testing.assert_array_equal(read.as_numpy("k"), [7, 8])
    assert read.as_numpy("s").tolist() == [["0.9:1:cat"], ["0.8:0:dog"]]  # JSON strings come back as str


def test_binary_answer_reads_back_with_tritonclient():
    body, header_length = encode_result(result(), parsed_for([{"name": "y"}, {"name": "s"},
                                                              {"name": "k", "parameters": {"binary_data": False}}],
                                                             binary_output=True))
    header = json.loads(body[:header_length])
    assert [o.get("parameters") for o in header["outputs"]] == [
        {"binary_data_size": 8}, None, {"binary_data_size": 26}]
    read = httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(read.as_numpy("y"), [[1.5], [2.5]])
    assert read.as_numpy("y").dtype == np.float32
    assert read.as_numpy("s").tolist() == [[b"0.9:1:cat"], [b"0.8:0:dog"]]
    np.testing.assert_array_equal(read.as_numpy("k"), [7, 8])


def test_bytes_that_are_not_text_need_the_binary_form():
    answer = InferResult("m", "1", "", [OutputTensor("s", "BYTES", bytes_array([b"\xff\xfe"]))])
    with pytest.raises(InvalidInput, match="not UTF-8 text.*'binary_data': true"):
        encode_result(answer, parsed_for([]))
    body, header_length = encode_result(answer, parsed_for([], binary_output=True))
    assert split_bytes(body[header_length:], "s").tolist() == [b"\xff\xfe"]
