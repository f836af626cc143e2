"""Fleet drift states in the registry: written and read whole, merged exactly, resumed, aged out by the rule.

Each rule runs on a local folder and on an fsspec object store (``memory://``)."""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from driftline.errors import InvalidInput, NotFound
from driftline.registry import fleet as stored
from driftline.registry import open_registry
from driftline.registry.profile import build_profile
from driftline.server import fleet
from driftline.server.monitor import DriftSettings, VersionMonitor
from helpers import sample_metadata

SETTINGS = DriftSettings(window_rows=600, slots=6)


@pytest.fixture(scope="module")
def profile():
    rng = np.random.default_rng(0)
    training = np.column_stack([rng.normal(size=4000), rng.exponential(size=4000), rng.normal(size=4000)])
    return build_profile(training.astype(np.float32), ["a", "b", "prediction"])


@pytest.fixture(params=["local", "memory"])
def registry(request, tmp_path: Path, profile):
    location = str(tmp_path / "registry") if request.param == "local" else f"memory://fleet-{uuid.uuid4().hex}"
    registry = open_registry(location)
    files = {"model.onnx": b"not loaded by a report", "metadata.json": sample_metadata().to_json().encode(),
             "profile.json": profile.to_json().encode()}
    assert registry.publish("m", files) == 1
    return registry


def traffic(rows: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(shift, size=rows), rng.exponential(1 + shift, size=rows)]).astype(np.float32)
    return X, {"prediction": rng.normal(shift, size=(rows, 1)).astype(np.float32)}


def monitor_of(profile, clock=time.monotonic, settings: DriftSettings = SETTINGS) -> VersionMonitor:
    return VersionMonitor(profile, 2, ["prediction"], settings, clock=clock, features=("a", "b"))


def document(monitor: VersionMonitor, replica: str, written_at: float | None = None, interval: float = 10.0) -> dict:
    return {"format": stored.FORMAT, "model": "m", "version": 1, "replica": replica, "run": uuid.uuid4().hex,
            "written_at": time.time() if written_at is None else written_at, "interval_s": interval,
            "stale_after_s": stored.STALE_INTERVALS * interval, **fleet.snapshot(monitor),
            "validation": {"requests_rejected": 1, "rows_rejected": 2, "rows_flagged": 3, "counts": {"a": {"nan": 2}},
                           "examples": [f"{replica} example"]}}


def test_written_state_reads_back_whole(registry, profile):
    monitor = monitor_of(profile)
    monitor.update(*traffic(250, 1))
    written = document(monitor, "pod-a")
    stored.write(registry.storage, written)
    assert stored.read(registry.storage, "m", 1, "pod-a") == json.loads(json.dumps(written))
    assert stored.read(registry.storage, "m", 1, "pod-b") is None
    assert stored.versions(registry.storage, "m") == [1]
    assert registry.models() == ["m"] and registry.versions("m") == [1]  # hidden from the registry's listing


def test_merge_of_replicas_equals_one_monitor_fed_every_row(registry, profile):
    """The acceptance rule in one process: the fleet's report is the report of one monitor fed all rows."""
    one, replicas = monitor_of(profile), [monitor_of(profile) for _ in range(3)]
    for seed in range(9):
        batch = traffic(60, seed, shift=1.5)
        one.update(*batch)
        replicas[seed % 3].update(*batch)
    for i, monitor in enumerate(replicas):
        stored.write(registry.storage, document(monitor, f"pod-{i}"))
    merged = fleet.merged(registry, "m", 1)
    window, total = merged.states()
    expected_window, expected_total = one.states()
    for got, expected in ((window, expected_window), (total, expected_total)):
        assert np.array_equal(got.counts, expected.counts) and np.array_equal(got.missing, expected.missing)
        assert np.allclose(got.mean, expected.mean) and np.allclose(got.m2, expected.m2)
        assert np.array_equal(got.min, expected.min) and np.array_equal(got.max, expected.max)
    response = fleet.response_of(merged)
    single = one.report()
    assert response.since_live.rows == single.since_live_rows == 540
    columns = list(response.since_live.features) + list(response.since_live.outputs)
    for mine, theirs in zip(columns, single.since_live, strict=True):
        assert mine.name == theirs.name and mine.alarm == theirs.alarm and list(mine.alarms) == list(theirs.alarms)
        for statistic in ("psi", "js", "ks", "wasserstein", "mean_shift", "p_value"):
            assert math.isclose(getattr(mine, statistic), getattr(theirs, statistic), rel_tol=1e-9, abs_tol=1e-12)
    assert json.loads(response.validation_json)["rows_flagged"] == 9
    assert json.loads(response.fleet_json)["replicas"] == ["pod-0", "pod-1", "pod-2"]


def test_stale_states_are_left_out_and_named(registry, profile):
    monitor = monitor_of(profile)
    monitor.update(*traffic(100, 1))
    now = time.time()
    stored.write(registry.storage, document(monitor, "fresh", written_at=now - 5, interval=10))
    stored.write(registry.storage, document(monitor, "gone", written_at=now - 31, interval=10))  # 3 x 10 s < 31 s
    found = stored.read_version(registry.storage, "m", 1, now)
    assert found.replicas == ["fresh"] and [s.replica for s in found.stale] == ["gone"]
    assert round(found.stale[0].age_s) == 31
    assert stored.read_version(registry.storage, "m", 1, now, max_age=60).replicas == ["fresh", "gone"]
    assert stored.read_version(registry.storage, "m", 1, now, skip=["fresh"]).replicas == []
    report = json.loads(fleet.response_of(fleet.merged(registry, "m", 1, now=now)).fleet_json)
    assert report["replicas"] == ["fresh"] and report["stale"] == [{"replica": "gone", "age_s": 31.0}]
    with pytest.raises(NotFound, match="gone"):
        fleet.merged(registry, "m", 1, now=now + 3600)


def test_long_stale_states_are_removed_by_a_later_writer(registry, profile):
    monitor = monitor_of(profile)
    now = time.time()
    stored.write(registry.storage, document(monitor, "old", written_at=now - 30 - stored.FORGET_AFTER_S - 1))
    stored.write(registry.storage, document(monitor, "recent", written_at=now - 40))  # stale, but not for long
    stored.write(registry.storage, document(monitor, "me", written_at=now - stored.FORGET_AFTER_S * 2))
    assert stored.forget(registry.storage, "m", 1, now, keep=["me"]) == ["old"]
    assert stored.read(registry.storage, "m", 1, "old") is None
    assert stored.read(registry.storage, "m", 1, "recent") is not None


def test_unreadable_state_is_named_not_fatal(registry, profile):
    monitor = monitor_of(profile)
    stored.write(registry.storage, document(monitor, "good"))
    registry.storage.replace(stored.key("m", 1, "broken"), b"{not json")
    found = stored.read_version(registry.storage, "m", 1, time.time())
    assert found.replicas == ["good"] and found.unreadable[0].startswith("broken: ")


def test_restart_resumes_the_window_and_since_live_state(profile):
    before = monitor_of(profile)
    for seed in range(12):  # 720 rows through a 600-row window of 6 sub-windows
        before.update(*traffic(60, seed))
    saved = json.loads(json.dumps(document(before, "pod-a")))
    after = monitor_of(profile)
    fleet.resume(after, saved, time.time())
    for got, expected in zip(after.states(), before.states(), strict=True):
        assert np.array_equal(got.counts, expected.counts) and np.allclose(got.mean, expected.mean)
    # The window moves on from where it was: the next rows push the oldest saved sub-window out, as before.
    for monitor in (before, after):
        monitor.update(*traffic(100, 99))
    assert np.array_equal(after.states()[0].counts, before.states()[0].counts)
    assert after.states()[1].rows == 820


def test_resume_keeps_rows_served_before_it(profile):
    saved_from = monitor_of(profile)
    saved_from.update(*traffic(80, 1))
    monitor = monitor_of(profile)
    monitor.update(*traffic(30, 2))  # traffic reached the restarted replica before its old state was read
    fleet.resume(monitor, document(saved_from, "pod-a"), time.time())
    assert [s.rows for s in monitor.states()] == [110, 110]


def test_a_resumed_time_window_ends_where_it_did(profile):
    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    settings = DriftSettings(window_seconds=60, slots=6)
    before = monitor_of(profile, clock, settings)
    for _ in range(4):
        before.update(*traffic(50, 1))
        clock.now += 10
    written_at = time.time()
    saved = document(before, "pod-a", written_at=written_at)
    # Written with sub-windows 10, 20, 30 and 40 s old; back 35 s later, those are 45..75 s old: the two still
    # under 60 s stay in the window, the others have left it, as they would have on a server that never stopped.
    after = monitor_of(profile, Clock(), settings)
    fleet.resume(after, saved, written_at + 35)
    assert after.states()[0].rows == 100 and after.states()[1].rows == 200
    assert fleet.window_of(saved, written_at + 35).rows == 100


def test_replica_ids_must_be_file_names():
    assert stored.check_replica_id("driftline-7c9f8d-x2x4q") == "driftline-7c9f8d-x2x4q"
    for bad in ("", ".hidden", "a/b", "../up", "x" * 300):
        with pytest.raises(InvalidInput):
            stored.check_replica_id(bad)
    assert fleet.replica_of("pod", 2, 4) == "pod-w2" and fleet.replica_of("pod", 0, 1) == "pod"
