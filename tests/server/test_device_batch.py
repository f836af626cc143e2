"""The device path's code on the host: onnxruntime's IO binding with CPU buffers (server/device_batch.py).

The same code runs on a GPU with CuPy; here it runs with numpy, answers exactly as ``session.run``, stays within
its memory bound by rerunning a batch on the CPU, and a CPU server never imports CuPy. The monitoring kernels fed
from the device path run in numba's simulator: tests/kernels/test_device_path_cuda.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton
from numba.cuda.cudadrv.driver import CudaAPIError

from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.registry import Registry, TensorSpec
from driftline.server import metrics
from driftline.server.batcher import Batcher, BatchSettings
from driftline.server.device_batch import DeviceRunner, RanOutputs, Staging, runner_for
from driftline.server.device_memory import DeviceOutOfMemory, HostMemory, LazyDeviceMemory, out_of_memory
from driftline.server.model import load_version
from driftline.server.run import run_batch
from driftline.trainer import synthetic
from driftline.trainer.train import TrainConfig, publish, train
from helpers import listening

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("device") / "registry"
    store = Registry(root)
    for name, config in (
        ("housing", TrainConfig(model="housing", rows=800, params={"n_estimators": 15})),
        ("segments", TrainConfig(model="segments", rows=800, estimator="random_forest", target="price_segment",
                                 params={"n_estimators": 5, "max_depth": 4})),
    ):
        trained = train(config)
        publish(store, name, trained.onnx_model, trained.metadata, trained.profile, trained.schema)
    return root


def served(registry: Path, name: str):
    store = Registry(registry)
    return load_version(store.open(name, store.latest(name)), CPU, 1, LazyDeviceMemory(None))


def houses(n: int, seed: int) -> np.ndarray:
    return synthetic.housing(n, seed=seed).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)


def host_runner(version, memory: HostMemory | None = None, outputs=None) -> DeviceRunner:
    """The device path's runner on CPU buffers; its CPU fallback is the version's own session."""
    return DeviceRunner(version.name, version.version, version.session, outputs or version.outputs,
                        memory or HostMemory(), lambda: version.session)


@pytest.mark.parametrize("name", ["housing", "segments"])
@pytest.mark.parametrize("rows", [1, 7, 4096])
def test_io_binding_answers_exactly_as_session_run(registry, name, rows):
    version = served(registry, name)
    X = houses(rows, seed=rows)
    X[::5, 2] = np.nan  # missing values take the trees' default branches on both paths
    expected = version.session.run(None, {"input": X})
    answered = host_runner(version).run({"input": X}, rows)
    assert len(answered) == len(expected) == len(version.outputs)
    for got, want in zip(answered, expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert set(answered.device.outputs) == set(version.output_names)
    runner = host_runner(version)
    runner.run({"input": X[:1]}, 1)  # the first run shows the outputs' shapes follow the signature...
    assert runner.preallocates is True
    for got, want in zip(runner.run({"input": X}, rows), expected, strict=True):  # ...then they go into its buffers
        np.testing.assert_array_equal(got, want)
    assert answered.device.inputs["input"] is not None and answered.device.xp is np


def test_outputs_of_a_shape_only_the_run_knows_are_allocated_by_onnxruntime(registry):
    """An output whose non-batch dimensions are not fixed is bound without a buffer: onnxruntime allocates it on
    the session's device and the answer is read through a view of its value."""
    version = served(registry, "segments")
    loose = tuple(TensorSpec(o.name, o.datatype, tuple(-1 for _ in o.shape)) for o in version.outputs)
    X = houses(33, seed=2)
    runner = host_runner(version, outputs=loose)
    for _ in range(2):
        answered = runner.run({"input": X}, 33)
        for got, want in zip(answered, version.session.run(None, {"input": X}), strict=True):
            np.testing.assert_array_equal(got, want)
    assert runner.preallocates is False


def test_a_cpu_server_keeps_the_cpu_path(registry):
    """The device path needs the CUDA provider in what the session really runs on; on the CPU nothing changes,
    and the runner would say why."""
    version = served(registry, "housing")
    assert version.device_path == "cpu" and version.device is None
    cpu = lambda: version.session  # noqa: E731 - never opened here
    runner, why = runner_for("housing", 1, version.session, version.inputs, version.outputs, LazyDeviceMemory(64),
                             cpu)
    assert runner is None and why == "the session runs on the CPU"
    assert runner_for("housing", 1, version.session, version.inputs, version.outputs, None, cpu) == (
        None, "off in the settings")


def fallbacks(model: str, version: int, reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("driftline_device_fallbacks_total",
                                             {"model": model, "version": str(version), "reason": reason}) or 0.0


def test_a_batch_past_the_memory_bound_is_answered_on_the_cpu_and_counted(registry, caplog, monkeypatch):
    monkeypatch.setattr(metrics, "recording", True)  # as with a metrics endpoint
    version = served(registry, "segments")
    X = houses(500, seed=5)
    expected = version.session.run(None, {"input": X})
    runner = host_runner(version, HostMemory(limit_bytes=1024))  # room for small batches only
    small = runner.run({"input": X[:10]}, 10)
    assert small.device is not None and runner.fallbacks == 0
    before = fallbacks(version.name, version.version, "bound")
    with caplog.at_level(logging.WARNING, logger="driftline.server"):
        answered = runner.run({"input": X}, 500)
    for got, want in zip(answered, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert answered.device is None  # answered from the CPU: nothing on the device for the monitor
    assert runner.fallbacks == 1
    assert fallbacks(version.name, version.version, "bound") == before + 1
    lines = [r.getMessage() for r in caplog.records if "out of device memory" in r.getMessage()]
    assert len(lines) == 1 and "500 rows runs on the CPU" in lines[0]
    assert runner.memory.used_bytes() <= 1024


def test_a_driver_out_of_memory_is_answered_on_the_cpu(registry, monkeypatch):
    """numba's out-of-memory error from the CUDA driver, raised by the allocator, takes the same way back."""

    class DriverMemory(HostMemory):
        full = False

        def empty(self, shape, dtype):
            if self.full:
                raise CudaAPIError(2, "Call to cuMemAlloc results in CUDA_ERROR_OUT_OF_MEMORY")
            return super().empty(shape, dtype)

    version = served(registry, "housing")
    X = houses(64, seed=6)
    memory = DriverMemory()
    version = dataclasses.replace(version, device=host_runner(version, memory))
    run_batch(version, {"input": X[:1]}, 1)  # the warm-up's run: from now on the outputs are allocated here
    memory.full = True
    monkeypatch.setattr(metrics, "recording", True)
    before = fallbacks("housing", version.version, "numba")
    answered = run_batch(version, {"input": X}, 64)
    np.testing.assert_array_equal(answered[0], version.session.run(None, {"input": X})[0])
    assert fallbacks("housing", version.version, "numba") == before + 1


def test_other_errors_are_the_batchs_own_and_are_not_rerun(registry):
    version = served(registry, "housing")
    runner = host_runner(version)
    with pytest.raises(Exception, match="input"):
        runner.run({"input": houses(4, seed=1)[:, :5]}, 4)  # a wrong shape is onnxruntime's complaint, not memory
    assert runner.fallbacks == 0


def test_device_out_of_memory_errors_are_recognised_by_their_allocator():
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

    class OutOfMemoryError(MemoryError):  # CuPy's, as its pool raises it (CuPy is not installed here)
        __module__ = "cupy.cuda.memory"

    assert out_of_memory(OutOfMemoryError("Out of memory allocating 1,024 bytes")) == "cupy"
    assert out_of_memory(CudaAPIError(2, "CUDA_ERROR_OUT_OF_MEMORY")) == "numba"
    assert out_of_memory(RuntimeException("Failed to allocate memory for requested buffer of size 4096")) == \
        "onnxruntime"
    assert out_of_memory(Fail("CUDA failure 2: out of memory")) == "onnxruntime"
    assert out_of_memory(DeviceOutOfMemory("past the bound")) == "bound"
    for other in (CudaAPIError(700, "CUDA_ERROR_ILLEGAL_ADDRESS"), InvalidArgument("Got invalid dimensions"),
                  ValueError("out of memory"), MemoryError()):
        assert out_of_memory(other) is None


def test_the_staging_buffer_is_reused_and_grown_not_made_per_batch():
    staging = Staging(lambda size: np.empty(size, np.uint8))
    rng = np.random.default_rng(0)
    for rows in (64, 10, 64, 1, 64):
        batch = rng.random((rows, 12)).astype(np.float32)
        np.testing.assert_array_equal(staging.hold("input", batch), batch)
    assert staging.grown == 1
    staging.hold("input", rng.random((1000, 12)).astype(np.float32))
    staging.hold("other", rng.random((3, 2)))
    assert staging.grown == 3


def test_the_host_bound_releases_what_batches_no_longer_hold():
    memory = HostMemory(limit_bytes=4000)
    for _ in range(10):
        memory.empty((100, 2), np.float64)  # 1,600 bytes, dropped at once
    held = memory.empty((100, 2), np.float64)
    assert memory.used_bytes() == 1600
    with pytest.raises(DeviceOutOfMemory):
        memory.empty((200, 2), np.float64)
    del held
    assert memory.used_bytes() == 0


def test_a_batch_through_the_batcher_carries_its_device_arrays_to_the_observers(registry):
    version = served(registry, "housing")
    version = dataclasses.replace(version, device=host_runner(version))
    seen = []

    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(version, BatchSettings(max_batch_size=64), pool, observers=[seen.append])
            futures = [batcher.submit({"input": houses(8, seed=s)}, None) for s in range(3)]
            return await asyncio.gather(*futures)

    answers = asyncio.run(scenario())
    for s, answer in enumerate(answers):
        np.testing.assert_array_equal(answer[0], version.session.run(None, {"input": houses(8, seed=s)})[0])
    assert sum(b.row_count for b in seen) == 24
    for batch in seen:
        assert batch.device is not None
        np.testing.assert_array_equal(batch.device.inputs["input"], batch.rows)
        np.testing.assert_array_equal(batch.device.outputs["prediction"], batch.outputs["prediction"])
    assert isinstance(run_batch(version, {"input": houses(2, seed=9)}, 2), RanOutputs)


WATCH_CUPY = """
import sys
class WatchCupy:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "cupy":
            print("CUPY IMPORT ATTEMPTED: " + name, flush=True)
        return None
sys.meta_path.insert(0, WatchCupy())
from driftline.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("device_path", ["auto", "off"])
def test_a_cpu_server_answers_as_before_and_never_imports_cupy(registry, device_path):
    process = subprocess.Popen(
        [sys.executable, "-c", WATCH_CUPY, "serve", "--registry", str(registry), "--port", "0", "--workers", "1",
         "--replica-id", f"device-{device_path}", "--metrics-port", "0", "--no-http", "--device-path", device_path],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with listening(process, "server") as server:
        X = houses(16, seed=11)
        request = triton.InferInput("input", list(X.shape), "FP32")
        request.set_data_from_numpy(X)
        with triton.InferenceServerClient(url=server.address) as client:
            answer = client.infer("housing", [request]).as_numpy("prediction")
        np.testing.assert_array_equal(answer, served(registry, "housing").session.run(None, {"input": X})[0])
        with grpc.insecure_channel(server.address) as channel:
            info = driftline_pb2_grpc.DriftlineStub(channel).VersionInfo(dpb.VersionInfoRequest(name="housing"))
        assert (info.device_path, list(info.execution_providers)) == ("cpu", ["CPUExecutionProvider"])
        url = re.search(r"metrics (http://\S+/metrics)", "".join(server.log)).group(1)
        scraped = urllib.request.urlopen(url, timeout=10).read().decode()
    assert 'device_path="cpu"' in scraped
    assert "driftline_device_memory_used_bytes" not in scraped  # nothing on a device: nothing to report
    log = "".join(server.log)
    assert "device path cpu" in log
    assert "CUPY IMPORT ATTEMPTED" not in log


def test_device_settings_are_checked():
    from driftline.server.settings import ServerSettings

    assert ServerSettings(registry="r", device_path="off", device_memory_mib=512).device_memory_mib == 512
    with pytest.raises(ValueError, match="device path must be auto or off"):
        ServerSettings(registry="r", device_path="gpu")
    with pytest.raises(ValueError, match="at least 1 MiB"):
        ServerSettings(registry="r", device_memory_mib=0)


def test_device_memory_is_reported_once_a_version_holds_some():
    class Started:  # what LazyDeviceMemory.started gives once the pool exists; HostMemory has the same figures
        started = HostMemory(limit_bytes=10_000)

    assert list(metrics._device_memory(None)) == []
    assert list(metrics._device_memory(LazyDeviceMemory(64))) == []  # no version on the device yet: nothing
    held = Started.started.empty((10, 10), np.float64)
    figures = {m.name: m.samples[0].value for m in metrics._device_memory(Started)}
    assert figures == {"driftline_device_memory_used_bytes": 800, "driftline_device_memory_limit_bytes": 10_000}
    del held


def test_the_array_module_of_a_batch_is_numpy_on_the_host_and_cupy_only_when_asked():
    from driftline.errors import Unavailable
    from driftline.server import arrays

    assert arrays.array_module("cpu") is np
    with pytest.raises(ValueError, match="cpu or cuda"):
        arrays.array_module("tpu")
    if "cupy" not in sys.modules and importlib.util.find_spec("cupy") is None:
        with pytest.raises(Unavailable, match=r"driftline\[gpu\]"):
            arrays.array_module("cuda")
        with pytest.raises(Unavailable):  # a version asking for the device then takes the CPU path (runner_for)
            LazyDeviceMemory(64).get()
    X = houses(5, seed=1)
    assert arrays.on_device(X, np) is X and arrays.to_host(X) is X  # host to host: no copy
    value = ort.OrtValue.ortvalue_from_numpy(X)
    np.testing.assert_array_equal(arrays.ortvalue_view(value, np), X)
