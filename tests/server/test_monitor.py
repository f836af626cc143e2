"""The version monitor: windows built from mergeable sub-window states, and the monitor thread."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.kernels.drift import state_of
from driftline.registry.profile import build_profile
from driftline.server.batcher import Batch
from driftline.server.monitor import DriftSettings, MonitorThread, VersionMonitor
from helpers import Clock


@pytest.fixture(scope="module")
def profile():
    rng = np.random.default_rng(0)
    training = np.column_stack([rng.normal(size=5000), rng.normal(size=5000)]).astype(np.float32)
    return build_profile(training, ["x", "prediction"])


def batch(rows: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return (rng.normal(shift, size=(rows, 1)).astype(np.float32),
            {"prediction": rng.normal(size=(rows, 1)).astype(np.float32)})


def test_row_window_keeps_about_the_last_n_rows(profile):
    monitor = VersionMonitor(profile, 1, ["prediction"], DriftSettings(window_rows=1000, slots=10))
    for seed in range(30):
        monitor.update(*batch(100, seed))
    window, total = monitor.states()
    assert total.rows == 3000
    assert 900 <= window.rows <= 1000  # the oldest sub-window leaves whole


def test_window_equals_the_state_of_its_rows(profile):
    """Merging sub-windows is exact: the window is the state of exactly the rows it covers."""
    monitor = VersionMonitor(profile, 1, ["prediction"], DriftSettings(window_rows=400, slots=4))
    batches = [batch(100, seed) for seed in range(7)]
    for rows, outputs in batches:
        monitor.update(rows, outputs)
    window, _ = monitor.states()
    kept = batches[-window.rows // 100:]
    expected = state_of(np.concatenate([np.hstack([r, o["prediction"]]) for r, o in kept]).astype(np.float64),
                        profile.layout)
    np.testing.assert_array_equal(window.counts, expected.counts)
    np.testing.assert_allclose(window.mean, expected.mean, rtol=1e-12)


def test_time_window_forgets_old_traffic(profile):
    clock = Clock()
    monitor = VersionMonitor(profile, 1, ["prediction"], DriftSettings(window_seconds=60, slots=6), clock=clock)
    monitor.update(*batch(600, 0, shift=3.0))  # drifted, long ago
    clock.now = 200.0
    for seed in range(6):
        clock.now += 10
        monitor.update(*batch(100, seed + 1))
    report = monitor.report()
    assert report.since_live_rows == 1200
    assert report.current_rows <= 600
    assert not any(c.alarm for c in report.current)  # the drifted rows have left the window
    assert any(c.alarm for c in report.since_live)


def test_thread_applies_every_batch(profile):
    thread = MonitorThread()
    monitor = VersionMonitor(profile, 1, ["prediction"], DriftSettings(window_rows=100_000))
    observe = thread.observer(monitor)
    for seed in range(200):
        rows, outputs = batch(5, seed)
        observe(Batch(version=None, rows=rows, outputs=outputs, requests=1))
    thread.flush()
    assert monitor.states()[1].rows == 1000
    assert thread.failures == 0
    thread.close()


def test_a_monitor_that_falls_behind_counts_rows_instead_of_queueing_them(profile, monkeypatch):
    """A flood of rows the monitor cannot keep up with is bounded in memory: beyond the bound, batches are
    counted (and the report says so), not queued."""
    thread = MonitorThread(max_queued_rows=500)
    monitor = VersionMonitor(profile, 1, ["prediction"], DriftSettings(window_rows=100_000))
    busy = __import__("threading").Event()
    update = monitor.update

    def slow(rows, outputs):  # the monitor thread stuck on a long update, as under a flood
        busy.wait(30)
        update(rows, outputs)

    monkeypatch.setattr(monitor, "update", slow)
    observe = thread.observer(monitor)
    for seed in range(40):
        rows, outputs = batch(100, seed)
        observe(Batch(version=None, rows=rows, outputs=outputs, requests=1))
    busy.set()
    thread.flush()
    counted = monitor.states()[1].rows
    assert monitor.skipped_rows > 0 and counted + monitor.skipped_rows == 4000
    assert counted <= 600  # the bound (500 queued rows) and the batch in hand when it filled
    assert "were not counted" in monitor.report().window
    thread.close()


def test_attribution_sampling_is_bounded_in_rows_per_second(profile):
    # 10% of a flood of rows would cost the server a fifth of its CPU; the bound keeps the explained rows to the
    # per-second budget however many rows arrive, and refills it as time passes.
    clock = Clock()
    settings = DriftSettings(window_rows=100_000, attribution_sample=1.0, attribution_max_rows_per_s=100)
    monitor = VersionMonitor(profile, 1, ["prediction"], settings, clock=clock)
    first = monitor._within_budget(np.arange(1000))
    assert len(first) == 100 and len(set(first.tolist())) == 100 and np.all(np.diff(first) > 0)
    assert len(monitor._within_budget(np.arange(1000))) == 0  # spent until the clock moves
    clock.now += 0.5
    assert len(monitor._within_budget(np.arange(1000))) == 50
    clock.now += 60  # a quiet minute saves up one second's worth, not sixty
    assert len(monitor._within_budget(np.arange(1000))) == 100
    unbounded = VersionMonitor(profile, 1, ["prediction"], DriftSettings(attribution_max_rows_per_s=0), clock=clock)
    assert len(unbounded._within_budget(np.arange(1000))) == 1000
