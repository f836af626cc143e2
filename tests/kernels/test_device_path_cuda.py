"""The monitor fed from the device path equals the monitor fed on the host. Runs on a GPU, or in the simulator:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/kernels/test_device_path_cuda.py

A version's batches run through the device path's runner (server/device_batch.py; CPU buffers and numpy here,
CuPy on a GPU) and its monitor reads the batch's arrays with the CUDA twins of the drift and TreeSHAP kernels
(server/device_monitor.py); the drift state, the sampled attribution shares and the rows they flag must equal what
the host kernels make of the same rows. Kept small for the simulator, where every CUDA thread is a Python thread.
"""

from __future__ import annotations

import pytest
from numba import cuda

if not cuda.is_available():
    pytest.skip("no CUDA device (NUMBA_ENABLE_CUDASIM=1 before numba's import simulates one)", allow_module_level=True)

import numpy as np  # noqa: E402

from driftline.kernels.drift import DriftState  # noqa: E402
from driftline.registry import Registry  # noqa: E402
from driftline.server.batcher import Batch  # noqa: E402
from driftline.server.device_batch import DeviceRunner  # noqa: E402
from driftline.server.device_memory import HostMemory  # noqa: E402
from driftline.server.model import load_version  # noqa: E402
from driftline.server.monitor import DriftSettings, MonitorThread, VersionMonitor  # noqa: E402
from helpers import Clock  # noqa: E402
from driftline.trainer import synthetic  # noqa: E402
from driftline.trainer.train import TrainConfig, publish, train  # noqa: E402


@pytest.fixture(scope="module")
def version(tmp_path_factory: pytest.TempPathFactory):
    registry = Registry(tmp_path_factory.mktemp("device-path") / "registry")
    trained = train(TrainConfig(model="housing", rows=600, params={"n_estimators": 4, "max_depth": 2}))
    number = publish(registry, "housing", trained.onnx_model, trained.metadata, trained.profile, trained.schema)
    return load_version(registry.open("housing", number), ["CPUExecutionProvider"], 1)


def monitor_of(version) -> VersionMonitor:
    # Every row explained (no sampling, no rate bound): the TreeSHAP twin's shares enter the state too.
    settings = DriftSettings(window_rows=100_000, attribution_sample=1.0, attribution_max_rows_per_s=0)
    return VersionMonitor(version.profile, version.width, version.output_names, settings, clock=Clock(),
                          explainer=version.explainer, features=version.column_names)


def assert_same(device: DriftState, host: DriftState, exact: int) -> None:
    """The first ``exact`` columns (features and outputs: the same values on both paths) bin identically. The
    attribution shares are the two TreeSHAP kernels' sums, equal to rounding; a tree model's shares take few
    distinct values and the profile's edges are some of them, so a share may sit in the next bin."""
    for f in ("missing", "n"):
        np.testing.assert_array_equal(getattr(device, f), getattr(host, f), err_msg=f)
    for f in ("counts", "min", "max"):
        np.testing.assert_array_equal(getattr(device, f)[:exact], getattr(host, f)[:exact], err_msg=f)
    np.testing.assert_array_equal(device.counts.sum(axis=1), host.counts.sum(axis=1))
    for f in ("mean", "m2", "min", "max"):
        np.testing.assert_allclose(getattr(device, f), getattr(host, f), rtol=1e-9, atol=1e-9, err_msg=f)


def test_the_monitor_fed_from_the_device_path_has_the_host_monitors_drift_state(version):
    assert any(s == "attribution_share" for s in monitor_of(version).sources.values())  # shares are monitored
    runner = DeviceRunner(version.name, version.version, version.session, version.outputs, HostMemory(),
                          lambda: version.session)
    host, device = monitor_of(version), monitor_of(version)
    thread = MonitorThread()
    observe = thread.observer(device)
    try:
        for seed, shift in ((1, None), (2, "big_garages"), (3, None)):
            rows = synthetic.housing(24, seed=seed, shift=shift).select(list(synthetic.FEATURES)).to_numpy()
            rows = rows.astype(np.float32)
            rows[::7, 3] = np.nan
            ran = runner.run({"input": rows}, len(rows))
            answers = dict(zip(version.output_names, ran, strict=True))
            host.update(rows, answers)
            observe(Batch(version, rows, answers, 1, device=ran.device))  # as the batcher hands a device batch over
        thread.flush()
    finally:
        thread.close()
    assert thread.failures == 0
    for on_device, on_host in zip(device.states(), host.states(), strict=True):
        assert on_device.rows == on_host.rows == 72
        assert_same(on_device, on_host, exact=version.width + 1)
    assert device.attribution.sampled_rows == host.attribution.sampled_rows == 72
    assert device.attribution.flagged_rows == host.attribution.flagged_rows
