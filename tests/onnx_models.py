"""ONNX models like the ones Triton's example clients talk to, built with the ``onnx`` helper API,
and what the tests need to publish and serve them.

The models (names as in Triton's example repository where there is one):

- ``simple``: INPUT0, INPUT1 INT32 [-1, 16] -> OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
- ``simple_int8``: the same with INT8 (Triton's ``simple_int8``, used by the explicit int8 client).
- ``simple_string``: INPUT0, INPUT1 BYTES [-1, 16] holding decimal integers -> their sum and difference as
  decimal strings (Cast string -> int32, Add/Sub, Cast int32 -> string).
- ``simple_identity``: INPUT0 BYTES [-1, -1] -> OUTPUT0, the same strings.
- ``fixed16``: FIXED_IN FP32 [1, 16] -> FIXED_OUT = 2 * FIXED_IN + 1; no dynamic dimension, so Triton
  reports ``max_batch_size: 0`` for it.
- ``tensor3``: X FP64 [-1, 3, 4] -> ROW_SUM FP64 [-1, 3] (sum over the last axis), and H FP16 [-1, 2, 2, 2]
  -> H_TWICE FP16 [-1, 2, 2, 2] (H + H): rank 3 and 4 with a dynamic first dimension.
- ``all_types``: one input per remaining datatype, ``<DT>_IN`` [-1, 4] -> ``<DT>_OUT`` = x + x (BOOL: not x).
- ``densenet_onnx``: data_0 FP32 [3, 224, 224] (no batch dimension) -> fc6_1 FP32 [1000, 1, 1], a stand-in
  for the model Triton's raw ``grpc_client.py`` example asks (channel means times a fixed [3, 1000] matrix).
- ``softmax3``: x FP32 [-1, 4] -> probabilities FP32 [-1, 3] = softmax(x @ W3), a classifier without labels.
- ``spin``: work that is slow on purpose, its run time set by the request: N INT64 [-1, 1] -> Y = N after a Loop
  of max(N) turns (about a microsecond a turn in onnxruntime); ``spin(tabular=True)`` is the same as a one-feature
  table, input FP32 [-1, 1] -> prediction FP32 [-1, 1], which the compiled door batches itself.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from helpers import RunningServer, driftline, table_request

OPSET = 17
IR_VERSION = 8  # onnxruntime accepts it; opset 17 needs at least 8

# OIP datatype -> (ONNX element type, numpy dtype) for the all_types model.
ALL_TYPES: dict[str, tuple[int, np.dtype]] = {
    "BOOL": (TensorProto.BOOL, np.dtype(bool)),
    "INT8": (TensorProto.INT8, np.dtype(np.int8)),
    "UINT8": (TensorProto.UINT8, np.dtype(np.uint8)),
    "INT16": (TensorProto.INT16, np.dtype(np.int16)),
    "UINT16": (TensorProto.UINT16, np.dtype(np.uint16)),
    "INT32": (TensorProto.INT32, np.dtype(np.int32)),
    "UINT32": (TensorProto.UINT32, np.dtype(np.uint32)),
    "INT64": (TensorProto.INT64, np.dtype(np.int64)),
    "UINT64": (TensorProto.UINT64, np.dtype(np.uint64)),
    "FP16": (TensorProto.FLOAT16, np.dtype(np.float16)),
    "FP32": (TensorProto.FLOAT, np.dtype(np.float32)),
    "FP64": (TensorProto.DOUBLE, np.dtype(np.float64)),
}

# The weights of softmax3: fixed, so a test can compute the expected probabilities itself.
SOFTMAX_W = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -0.5], [-1.5, 0.5, 1.0], [0.25, 0.0, -2.0]], dtype=np.float32)
DENSENET_W = np.linspace(-1.0, 1.0, 3 * 1000, dtype=np.float32).reshape(3, 1000)


def _tensor(name: str, elem_type: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _model(name: str, nodes: list, inputs: list, outputs: list, initializers: list | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="driftline-tests")
    onnx.checker.check_model(model, full_check=True)
    return model


def spin(tabular: bool = False) -> onnx.ModelProto:
    """See the module's list: a request of N turns holds a version that runs one batch at a time for N us."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["count_in", "one"], ["count_out"])],
        "turn",
        [_tensor("i", TensorProto.INT64, []), _tensor("cond_in", TensorProto.BOOL, []),
         _tensor("count_in", TensorProto.INT64, [])],
        [_tensor("cond_out", TensorProto.BOOL, []), _tensor("count_out", TensorProto.INT64, [])],
        [numpy_helper.from_array(np.array(1, dtype=np.int64), "one")],
    )
    given, answer, elem = ("input", "prediction", TensorProto.FLOAT) if tabular else ("N", "Y", TensorProto.INT64)
    nodes = [helper.make_node("ReduceMax", [given], ["most"], keepdims=0),
             helper.make_node("Cast", ["most"], ["turns"], to=TensorProto.INT64),
             helper.make_node("Loop", ["turns", "", "zero"], ["counted"], body=body),
             helper.make_node("Sub", ["counted", "turns"], ["nothing"]),  # 0, but only once the loop has run
             helper.make_node("Cast", ["nothing"], ["no_change"], to=elem),
             helper.make_node("Add", [given, "no_change"], [answer])]
    return _model("spin", nodes, [_tensor(given, elem, ["batch", 1])], [_tensor(answer, elem, ["batch", 1])],
                  [numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")])


SLOW_TURNS = 3_000_000  # turns of a spin request that holds its version: seconds on a two-core machine


def publish_spin_table(registry: Path) -> None:
    """``spin(tabular=True)`` published as version 1 of ``spin`` with a one-column reference (turns 0-99), so it is
    a table: validated, monitored, and batched by the compiled door itself."""
    reference = registry.parent / "spin-turns.csv"
    reference.write_text("turns\n" + "".join(f"{turns}\n" for turns in range(100)))
    publish(registry, "spin", spin(tabular=True), "--reference", str(reference))


def spin_request(turns: int, rows: int = 1):  # noqa: ANN201 - tritonclient's ModelInferRequest
    """A request to ``spin`` (the table) of ``rows`` rows whose largest is ``turns``."""
    column = np.zeros((rows, 1), dtype="<f4")
    column[0, 0] = turns
    return table_request(column, model="spin")


def spin_answer(response) -> int:  # noqa: ANN001 - a ModelInferResponse
    return int(np.frombuffer(response.raw_output_contents[0], "<f4").max())


def _add_sub(name: str, elem_type: int) -> onnx.ModelProto:
    io = ["batch", 16]
    return _model(name, [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
                         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
                  [_tensor("INPUT0", elem_type, io), _tensor("INPUT1", elem_type, io)],
                  [_tensor("OUTPUT0", elem_type, io), _tensor("OUTPUT1", elem_type, io)])


def simple() -> onnx.ModelProto:
    return _add_sub("simple", TensorProto.INT32)


def simple_int8() -> onnx.ModelProto:
    return _add_sub("simple_int8", TensorProto.INT8)


def simple_string() -> onnx.ModelProto:
    io = ["batch", 16]
    nodes = [
        helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
        helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Sub", ["a", "b"], ["difference"]),
        helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
        helper.make_node("Cast", ["difference"], ["OUTPUT1"], to=TensorProto.STRING),
    ]
    return _model("simple_string", nodes,
                  [_tensor("INPUT0", TensorProto.STRING, io), _tensor("INPUT1", TensorProto.STRING, io)],
                  [_tensor("OUTPUT0", TensorProto.STRING, io), _tensor("OUTPUT1", TensorProto.STRING, io)])


def simple_identity() -> onnx.ModelProto:
    io = ["batch", "length"]
    return _model("simple_identity", [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
                  [_tensor("INPUT0", TensorProto.STRING, io)], [_tensor("OUTPUT0", TensorProto.STRING, io)])


def fixed16() -> onnx.ModelProto:
    nodes = [helper.make_node("Mul", ["FIXED_IN", "two"], ["doubled"]),
             helper.make_node("Add", ["doubled", "one"], ["FIXED_OUT"])]
    constants = [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
                 numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")]
    return _model("fixed16", nodes, [_tensor("FIXED_IN", TensorProto.FLOAT, [1, 16])],
                  [_tensor("FIXED_OUT", TensorProto.FLOAT, [1, 16])], constants)


def tensor3() -> onnx.ModelProto:
    nodes = [helper.make_node("ReduceSum", ["X", "last_axis"], ["ROW_SUM"], keepdims=0),
             helper.make_node("Add", ["H", "H"], ["H_TWICE"])]
    return _model("tensor3", nodes,
                  [_tensor("X", TensorProto.DOUBLE, ["batch", 3, 4]),
                   _tensor("H", TensorProto.FLOAT16, ["batch", 2, 2, 2])],
                  [_tensor("ROW_SUM", TensorProto.DOUBLE, ["batch", 3]),
                   _tensor("H_TWICE", TensorProto.FLOAT16, ["batch", 2, 2, 2])],
                  [numpy_helper.from_array(np.array([-1], dtype=np.int64), "last_axis")])


def all_types() -> onnx.ModelProto:
    nodes, inputs, outputs = [], [], []
    for datatype, (elem_type, _) in ALL_TYPES.items():
        source, target = f"{datatype}_IN", f"{datatype}_OUT"
        if datatype == "BOOL":
            nodes.append(helper.make_node("Not", [source], [target]))
        else:
            nodes.append(helper.make_node("Add", [source, source], [target]))
        inputs.append(_tensor(source, elem_type, ["batch", 4]))
        outputs.append(_tensor(target, elem_type, ["batch", 4]))
    return _model("all_types", nodes, inputs, outputs)


def all_types_expected(datatype: str, values: np.ndarray) -> np.ndarray:
    return np.logical_not(values) if datatype == "BOOL" else values + values


def densenet_onnx() -> onnx.ModelProto:
    nodes = [helper.make_node("ReduceMean", ["data_0"], ["means"], axes=[1, 2], keepdims=0),
             helper.make_node("Unsqueeze", ["means", "zero"], ["row"]),
             helper.make_node("MatMul", ["row", "W"], ["scores"]),
             helper.make_node("Reshape", ["scores", "out_shape"], ["fc6_1"])]
    constants = [numpy_helper.from_array(DENSENET_W, "W"),
                 numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
                 numpy_helper.from_array(np.array([1000, 1, 1], dtype=np.int64), "out_shape")]
    return _model("densenet_onnx", nodes, [_tensor("data_0", TensorProto.FLOAT, [3, 224, 224])],
                  [_tensor("fc6_1", TensorProto.FLOAT, [1000, 1, 1])], constants)


def softmax3() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "W"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)]
    return _model("softmax3", nodes, [_tensor("x", TensorProto.FLOAT, ["batch", 4])],
                  [_tensor("probabilities", TensorProto.FLOAT, ["batch", 3])],
                  [numpy_helper.from_array(SOFTMAX_W, "W")])


def softmax3_expected(x: np.ndarray) -> np.ndarray:
    logits = x.astype(np.float64) @ SOFTMAX_W.astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


BUILDERS: dict[str, Callable[[], onnx.ModelProto]] = {
    "simple": simple, "simple_int8": simple_int8, "simple_string": simple_string,
    "simple_identity": simple_identity, "fixed16": fixed16, "tensor3": tensor3, "all_types": all_types,
    "densenet_onnx": densenet_onnx, "softmax3": softmax3,
}
# A driftline-trained classifier (label INT64 [-1], probabilities FP32 [-1, 3]; classes 0, 1, 2).
CLASSIFIER = "segments"


HOUSE = [84, 400, 3, 1, 1, 18, 0, 1995, 3, 8, 1]  # one row of the trained classifier's 11 features


def sample_inputs(name: str, rows: int = 2) -> list[tuple[str, str, np.ndarray]]:
    """(input name, datatype, data) of a valid request to model ``name`` with ``rows`` rows (where it batches)."""
    counting = np.arange(rows * 16).reshape(rows, 16)
    if name in ("simple", "simple_int8"):
        dtype = np.int32 if name == "simple" else np.int8
        datatype = "INT32" if name == "simple" else "INT8"
        return [("INPUT0", datatype, (counting % 100).astype(dtype)), ("INPUT1", datatype, np.ones((rows, 16), dtype))]
    if name == "simple_string":
        return [("INPUT0", "BYTES", numbers_as_text(counting)),
                ("INPUT1", "BYTES", numbers_as_text(np.ones((rows, 16))))]
    if name == "simple_identity":
        return [("INPUT0", "BYTES", np.array([[b"a", b"b\x00c", "\u017c".encode(), b""]] * rows, dtype=object))]
    if name == "fixed16":
        return [("FIXED_IN", "FP32", np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16))]
    if name == "tensor3":
        return [("X", "FP64", np.arange(rows * 12, dtype=np.float64).reshape(rows, 3, 4)),
                ("H", "FP16", np.ones((rows, 2, 2, 2), dtype=np.float16))]
    if name == "all_types":
        return [(f"{dt}_IN", dt, (np.arange(rows * 4) % 2 == 0 if dt == "BOOL" else np.arange(rows * 4) % 50)
                 .astype(dtype).reshape(rows, 4)) for dt, (_, dtype) in ALL_TYPES.items()]
    if name == "densenet_onnx":
        return [("data_0", "FP32", np.full((3, 224, 224), 0.25, dtype=np.float32))]
    if name == "softmax3":
        return [("x", "FP32", np.random.default_rng(rows).normal(size=(rows, 4)).astype(np.float32))]
    if name == CLASSIFIER:
        return [("input", "FP32", np.array([HOUSE] * rows, dtype=np.float32))]
    raise KeyError(name)


def grpc_inputs(samples: list[tuple[str, str, np.ndarray]]) -> list:
    import tritonclient.grpc as grpcclient

    return [tensor(grpcclient, name, data, datatype) for name, datatype, data in samples]


# Building requests with any of tritonclient's client modules (tritonclient.grpc, tritonclient.http and their
# .aio variants all have InferInput and InferRequestedOutput), and checking what the example models answer.
# ``binary`` is for HTTP alone: True sends (or asks for) the tensor in binary, False as JSON; None leaves the
# argument out, as a gRPC client must.


def tensor(client_module, name: str, data: np.ndarray, datatype: str, binary: bool | None = None):
    """An input ``name`` of ``client_module`` holding ``data``."""
    built = client_module.InferInput(name, list(data.shape), datatype)
    if binary is None:
        built.set_data_from_numpy(data)
    else:
        built.set_data_from_numpy(data, binary_data=binary)
    return built


def requested(client_module, name: str, binary: bool | None = None):
    """A request for output ``name``."""
    if binary is None:
        return client_module.InferRequestedOutput(name)
    return client_module.InferRequestedOutput(name, binary_data=binary)


def numbers_as_text(numbers: np.ndarray) -> np.ndarray:
    """Integers as BYTES elements the way simple_string reads them: each its decimal digits, in an object array
    of the same shape (tritonclient's form for BYTES)."""
    return np.asarray(numbers).astype(np.int64).astype(np.bytes_).astype(np.object_)


def text_as_numbers(text: np.ndarray) -> np.ndarray:
    """The other way: elements holding decimal digits (bytes or str) as integers, same shape."""
    return np.vectorize(int, otypes=[np.int64])(text)


# The element type of each model that adds and subtracts, and the numpy type its numbers are made in.
ADD_SUB_TYPES = {"simple": ("INT32", np.int32), "simple_int8": ("INT8", np.int8), "simple_string": ("BYTES", np.int32)}


class AddSub:
    """A request to ``simple``, ``simple_int8`` or ``simple_string`` and the check of its answer.

    INPUT0 is ``first`` (by default one row counting 0 to 15), INPUT1 the same shape filled with ``second``;
    OUTPUT0 must be their sum and OUTPUT1 their difference, element by element. For simple_string the numbers
    travel as decimal text both ways.
    """

    def __init__(self, model: str = "simple", first: np.ndarray | None = None, second: int = 1):
        self.model = model
        self.datatype, dtype = ADD_SUB_TYPES[model]
        self.first = np.arange(16, dtype=dtype).reshape(1, 16) if first is None else first
        self.second = np.full_like(self.first, second)

    def sent(self) -> list[tuple[str, np.ndarray]]:
        """(input name, data as it goes on the wire) for INPUT0 and INPUT1."""
        numbers = [("INPUT0", self.first), ("INPUT1", self.second)]
        if self.datatype == "BYTES":
            return [(name, numbers_as_text(data)) for name, data in numbers]
        return numbers

    def inputs(self, client_module, binary: tuple[bool, bool] | None = None) -> list:
        """INPUT0 and INPUT1; ``binary``: per input, as ``tensor`` takes it."""
        per_input = binary or (None, None)
        return [tensor(client_module, name, data, self.datatype, how)
                for (name, data), how in zip(self.sent(), per_input, strict=True)]

    def outputs(self, client_module, binary: tuple[bool, bool] | None = None) -> list:
        """Requests for OUTPUT0 and OUTPUT1; ``binary``: per output, as ``requested`` takes it."""
        per_output = binary or (None, None)
        return [requested(client_module, name, how)
                for name, how in zip(("OUTPUT0", "OUTPUT1"), per_output, strict=True)]

    def check(self, result) -> None:
        """``result``: an InferResult of tritonclient (gRPC or HTTP)."""
        self.check_outputs(result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1"))

    def check_outputs(self, total, difference) -> None:
        read = text_as_numbers if self.datatype == "BYTES" else np.asarray
        np.testing.assert_array_equal(read(total), self.first + self.second, err_msg="incorrect sum")
        np.testing.assert_array_equal(read(difference), self.first - self.second, err_msg="incorrect difference")


def identity_samples() -> list[np.ndarray]:
    """What the string examples send simple_identity: strings holding NUL bytes, as an object array and as a
    numpy bytes array, one row of 16."""
    with_nul = np.full((1, 16), b"he\x00llo", dtype=np.object_)
    raw = np.array([[b"\x00\x01\x02\x03"] * 16])  # dtype S4
    return [with_nul, raw]


def identity_request(client_module, strings: np.ndarray, binary: bool | None = None) -> tuple[list, list]:
    """Inputs and outputs of a request to simple_identity that sends ``strings`` as INPUT0 and asks for OUTPUT0."""
    return [tensor(client_module, "INPUT0", strings, "BYTES", binary)], [requested(client_module, "OUTPUT0", binary)]


def assert_echoed(sent: np.ndarray, echoed: np.ndarray, as_json: bool = False) -> None:
    """simple_identity gave back what was sent, by the string examples' measure: a numpy bytes array is compared
    with the answer turned to str and encoded again; an object array with the answer as it is, or, where the answer
    came as JSON (text, not bytes), with each element's UTF-8 encoding."""
    if sent.dtype != np.object_:
        comparable = np.char.encode(echoed.astype(str))
    elif as_json:
        comparable = np.vectorize(lambda element: str(element).encode("utf-8"), otypes=[np.object_])(echoed)
    else:
        comparable = echoed
    assert np.array_equal(sent, comparable), comparable


def write(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def publish(registry: Path, name: str, model: onnx.ModelProto, *extra: str, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    """``driftline publish NAME --onnx FILE`` (no reference unless ``extra`` passes one)."""
    path = write(model, registry.parent / "onnx" / f"{name}.onnx")
    return driftline("publish", name, "--onnx", str(path), "--registry", str(registry), *extra, check=check)


def train_classifier(registry: Path, name: str = CLASSIFIER) -> None:
    driftline("train", name, "--registry", str(registry), "--target", "price_segment", "--estimator", "logistic",
              "--rows", "600", "--seed", "3")


_built: dict[str, Path] = {}


def example_registry(tmp_path_factory) -> Path:
    """A registry with every model above and the trained classifier, built once per test session.

    Servers only read it; a test that changes what is served copies it first (``copy_registry``).
    """
    if "examples" not in _built:
        registry = tmp_path_factory.mktemp("triton-examples") / "registry"
        for name, build in BUILDERS.items():
            publish(registry, name, build())
        train_classifier(registry)
        _built["examples"] = registry
    return _built["examples"]


def copy_registry(source: Path, target: Path) -> Path:
    shutil.copytree(source, target / "registry")
    return target / "registry"


@functools.cache
def serve_flags() -> tuple[str, ...]:
    """Flags every test server gets: the HTTP port (``--http-port``, default 8000) chosen by the OS, so that
    servers of parallel tests never fight over 8000. Only where ``driftline serve`` has the flag, so the
    gRPC tests run (and fail on their own merits) before the HTTP front end exists."""
    help_text = subprocess.run([sys.executable, "-m", "driftline", "serve", "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    return ("--http-port", "0") if "--http-port" in help_text else ()


HTTP_LINE = re.compile(r"; http http://(?P<host>[^ ;/]+):(?P<port>\d+)")
METRICS_LINE = re.compile(r"; metrics http://(?P<host>[^ ;/]+):(?P<port>\d+)/metrics")


def http_url(server: RunningServer) -> str:
    """host:port of the server's HTTP front end, as its start line announces it (tritonclient.http's url form)."""
    for line in list(server.log):
        if match := HTTP_LINE.search(line):
            return f"{match.group('host')}:{match.group('port')}"
    raise AssertionError("the start line names no HTTP port ('; http http://HOST:PORT'):\n" + "".join(server.log))


def metrics_url(server: RunningServer) -> str:
    for line in list(server.log):
        if match := METRICS_LINE.search(line):
            return f"http://{match.group('host')}:{match.group('port')}/metrics"
    raise AssertionError("the start line names no metrics port:\n" + "".join(server.log))
