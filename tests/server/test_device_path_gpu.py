"""The device path on a real GPU, with CuPy: skipped where either is missing, and under numba's simulator (whose fake
device arrays cannot meet CuPy's real ones). The same checks as tests/server/test_device_batch.py and
tests/kernels/test_device_path_cuda.py make on the host, here with onnxruntime's CUDA provider and device buffers.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest

from driftline.server.providers import CUDA, gpu_visible

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or not gpu_visible() or CUDA not in ort.get_available_providers():
    pytest.skip("needs a GPU and onnxruntime's CUDA provider (and not numba's simulator)", allow_module_level=True)
cupy = pytest.importorskip("cupy", reason="the device path needs CuPy: pip install 'driftline[gpu]'")

from driftline.registry import Registry  # noqa: E402
from driftline.server import metrics  # noqa: E402
from driftline.server.device_memory import MIB, CupyMemory, LazyDeviceMemory  # noqa: E402
from driftline.server.model import load_version  # noqa: E402
from driftline.server.monitor import DriftSettings, VersionMonitor  # noqa: E402
from driftline.server.run import run_batch  # noqa: E402
from driftline.trainer import synthetic  # noqa: E402
from driftline.trainer.train import TrainConfig, publish, train  # noqa: E402


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory):
    registry = Registry(tmp_path_factory.mktemp("gpu") / "registry")
    trained = train(TrainConfig(model="housing", rows=2000, params={"n_estimators": 40}))
    number = publish(registry, "housing", trained.onnx_model, trained.metadata, trained.profile, trained.schema)
    return registry.open("housing", number)


def houses(n: int, seed: int) -> np.ndarray:
    rows = synthetic.housing(n, seed=seed).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
    rows[::9, 4] = np.nan
    return rows


def test_a_version_on_the_gpu_takes_the_device_path_and_answers_as_the_cpu(stored):
    gpu = load_version(stored, [CUDA, "CPUExecutionProvider"], 1, LazyDeviceMemory(512))
    cpu = load_version(stored, ["CPUExecutionProvider"], 1)
    assert gpu.device_path == "cuda" and cpu.device_path == "cpu"
    for rows in (1, 64, 4096):
        X = houses(rows, seed=rows)
        answered = run_batch(gpu, {"input": X}, rows)
        np.testing.assert_allclose(answered[0], cpu.session.run(None, {"input": X})[0], rtol=1e-5)
        assert isinstance(answered.device.outputs["prediction"], cupy.ndarray)


def test_the_monitor_reads_a_gpu_batch_where_it_is(stored):
    gpu = load_version(stored, [CUDA, "CPUExecutionProvider"], 1, LazyDeviceMemory(512))
    settings = DriftSettings(window_rows=1_000_000, attribution_sample=1.0, attribution_max_rows_per_s=0)
    host, device = (VersionMonitor(gpu.profile, gpu.width, gpu.output_names, settings, explainer=gpu.explainer,
                                   features=gpu.column_names) for _ in range(2))
    X = houses(20_000, seed=3)
    answered = run_batch(gpu, {"input": X}, len(X))
    answers = {"prediction": answered[0]}
    host.update(X, answers)
    device.update_device(answered.device.inputs["input"], answered.device.outputs, answers, cupy)
    for on_device, on_host in zip(device.states(), host.states(), strict=True):
        width = gpu.width + 1  # features and the prediction bin identically; shares agree to rounding
        np.testing.assert_array_equal(on_device.counts[:width], on_host.counts[:width])
        np.testing.assert_array_equal(on_device.n, on_host.n)
        np.testing.assert_allclose(on_device.mean, on_host.mean, rtol=1e-9, atol=1e-9)


def test_a_batch_past_the_device_bound_is_answered_on_the_cpu(stored, monkeypatch):
    monkeypatch.setattr(metrics, "recording", True)  # as with a metrics endpoint
    gpu = load_version(stored, [CUDA, "CPUExecutionProvider"], 1, LazyDeviceMemory(512))
    cpu = load_version(stored, ["CPUExecutionProvider"], 1)
    small = CupyMemory(limit_bytes=1 * MIB)  # caps CuPy's pool (one per process) at 1 MiB from here on
    gpu.device.memory = small
    label = {"model": "housing", "version": str(gpu.version), "reason": "cupy"}
    before = metrics.REGISTRY.get_sample_value("driftline_device_fallbacks_total", label) or 0.0
    X = houses(100_000, seed=4)  # 4.4 MB of inputs
    try:
        answered = run_batch(gpu, {"input": X}, len(X))
    finally:
        cupy.get_default_memory_pool().set_limit(size=0)  # 0: no limit, for whatever runs next
    np.testing.assert_allclose(answered[0], cpu.session.run(None, {"input": X})[0], rtol=1e-5)
    assert answered.device is None
    assert metrics.REGISTRY.get_sample_value("driftline_device_fallbacks_total", label) == before + 1
