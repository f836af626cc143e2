"""The test models of ``onnx_models`` load in onnxruntime and compute what they say they do
(so a failure elsewhere is the server's, not the fixture's)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import onnx_models as m


def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def signature(model) -> tuple[list, list]:
    s = session(model)
    return ([(i.name, i.type, i.shape) for i in s.get_inputs()], [(o.name, o.type, o.shape) for o in s.get_outputs()])


@pytest.mark.parametrize("builder", [m.simple, m.simple_int8])
def test_add_sub(builder):
    dtype = np.int32 if builder is m.simple else np.int8
    a = np.arange(32, dtype=dtype).reshape(2, 16)
    b = np.full((2, 16), -1, dtype=dtype)
    total, difference = session(builder()).run(None, {"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(total, a + b)
    np.testing.assert_array_equal(difference, a - b)
    assert signature(builder())[0][0][2] == ["batch", 16]


def test_simple_string_adds_decimal_text():
    # onnxruntime takes string tensors as str objects (bytes objects would be str()-ed into "b'1'").
    a = np.array([[str(i) for i in range(16)]], dtype=object)
    b = np.array([["1"] * 16], dtype=object)
    total, difference = session(m.simple_string()).run(None, {"INPUT0": a, "INPUT1": b})
    assert total.tolist() == [[str(i + 1) for i in range(16)]]
    assert difference.tolist() == [[str(i - 1) for i in range(16)]]


def test_simple_identity_keeps_strings_with_nul():
    data = np.array([["he\x00llo", "\x00\x01\x02\x03", "zażółć"]], dtype=object)
    (out,) = session(m.simple_identity()).run(None, {"INPUT0": data})
    assert out.tolist() == data.tolist()
    assert signature(m.simple_identity())[0][0][2] == ["batch", "length"]


def test_fixed16_has_no_dynamic_dimension():
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    (out,) = session(m.fixed16()).run(None, {"FIXED_IN": x})
    np.testing.assert_allclose(out, 2 * x + 1)
    inputs, outputs = signature(m.fixed16())
    assert inputs == [("FIXED_IN", "tensor(float)", [1, 16])] and outputs[0][2] == [1, 16]
    with pytest.raises(Exception):  # onnxruntime itself refuses a second row
        session(m.fixed16()).run(None, {"FIXED_IN": np.zeros((2, 16), np.float32)})


def test_tensor3_reduces_and_doubles():
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    h = np.linspace(-2, 2, 16).astype(np.float16).reshape(2, 2, 2, 2)
    row_sum, twice = session(m.tensor3()).run(None, {"X": x, "H": h})
    np.testing.assert_array_equal(row_sum, x.sum(axis=2))
    assert row_sum.dtype == np.float64 and twice.dtype == np.float16
    np.testing.assert_array_equal(twice, h + h)


def test_all_types():
    feeds = {f"{dt}_IN": (np.arange(8) % 2 == 0 if dt == "BOOL" else np.arange(8).astype(dtype)).reshape(2, 4)
             for dt, (_, dtype) in m.ALL_TYPES.items()}
    results = session(m.all_types()).run(None, feeds)
    names = [o.name for o in session(m.all_types()).get_outputs()]
    assert names == [f"{dt}_OUT" for dt in m.ALL_TYPES]
    for dt, out in zip(m.ALL_TYPES, results, strict=True):
        assert out.dtype == m.ALL_TYPES[dt][1]
        np.testing.assert_array_equal(out, m.all_types_expected(dt, feeds[f"{dt}_IN"]))


def test_densenet_stand_in():
    data = np.full((3, 224, 224), 0.5, dtype=np.float32)
    (out,) = session(m.densenet_onnx()).run(None, {"data_0": data})
    assert out.shape == (1000, 1, 1)
    np.testing.assert_allclose(out.reshape(-1), 0.5 * m.DENSENET_W.sum(axis=0), rtol=1e-5, atol=1e-5)


def test_softmax3():
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    (probabilities,) = session(m.softmax3()).run(None, {"x": x})
    np.testing.assert_allclose(probabilities, m.softmax3_expected(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(m.BUILDERS))
def test_sample_requests_fit_their_models(name):
    """What the server tests send to each model is valid for it (strings as onnxruntime takes them: str)."""
    s = session(m.BUILDERS[name]())
    feeds = {}
    for input_name, datatype, data in m.sample_inputs(name, rows=3):
        assert data.dtype == (object if datatype == "BYTES" else m.ALL_TYPES[datatype][1]), (input_name, data.dtype)
        feeds[input_name] = np.vectorize(bytes.decode, otypes=[object])(data) if datatype == "BYTES" else data
    assert sorted(feeds) == sorted(i.name for i in s.get_inputs())
    outputs = s.run(None, feeds)
    assert all(o.shape[0] == (1 if name == "fixed16" else 1000 if name == "densenet_onnx" else 3) for o in outputs)
