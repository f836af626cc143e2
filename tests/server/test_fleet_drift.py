"""Fleet-wide drift end to end (issue 15, part 4): two real servers share a registry, each is fed half of a
shifted stream, and ``driftline drift NAME --registry R`` reports what one server fed all of it reports; a
replica killed without warning and restarted under its id resumes its window from its last written state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from driftline.registry import fleet as stored
from driftline.registry import open_registry
from driftline.trainer import synthetic
from helpers import driftline, running_server, wait_until

ROWS = 2000
MODEL = "garages"
# A window that holds every row, so "the union of each replica's window" and one server's window hold the same
# rows; no attribution sampling, whose random choice of rows differs between one server and two.
SERVE = ("--drift-window-rows", "100000", "--attribution-sample", "0", "--no-metrics", "--no-http")
STATISTICS = ("psi", "js", "ks", "wasserstein", "mean_shift", "p_value", "p_adjusted")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fleet") / "registry"
    driftline("train", MODEL, "--registry", str(root), "--rows", "4000", "--seed", "1", "--param", "n_estimators=30")
    return root


def rows() -> np.ndarray:
    frame = synthetic.housing(ROWS, seed=99, shift="big_garages")
    return frame.select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)


def send(address: str, chunk_rows: np.ndarray) -> None:
    client = triton.InferenceServerClient(url=address)
    for chunk in np.array_split(chunk_rows, 10):
        request = triton.InferInput("input", list(chunk.shape), "FP32")
        request.set_data_from_numpy(chunk)
        client.infer(MODEL, [request])
    client.close()


def drift_json(*args: str) -> dict:
    return json.loads(driftline("drift", MODEL, *args, "--json").stdout)


def server_report(address: str, expected: int, *extra: str) -> dict:
    """The server's report once every sent row reached its monitor (updates run off the response path)."""
    found: dict = {}

    def arrived() -> bool:
        found.update(drift_json("--server", address, "--since-live", *extra))
        return found["rows"] >= expected

    wait_until(arrived, f"{expected} rows in {address}'s drift report", pause_s=0.05)
    return found


def written_rows(root: Path, replica: str) -> int:
    document = stored.read(open_registry(str(root)).storage, MODEL, 1, replica)
    if document is None:
        return 0
    from driftline.kernels.drift import DriftState

    return DriftState.from_dict(document["since_live"]).rows


def same_statistics(fleet: dict, single: dict) -> None:
    assert fleet["rows"] == single["rows"]
    assert fleet["alarm"] == single["alarm"]
    for group in ("features", "prediction"):
        assert [c["name"] for c in fleet[group]] == [c["name"] for c in single[group]]
        for mine, theirs in zip(fleet[group], single[group], strict=True):
            assert mine["rows"] == theirs["rows"], mine["name"]
            assert mine["alarms"] == theirs["alarms"], mine["name"]
            for statistic in STATISTICS:
                a, b = mine[statistic], theirs[statistic]
                assert (a is None) == (b is None), (mine["name"], statistic, a, b)
                if a is not None:
                    assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), (mine["name"], statistic, a, b)


@pytest.fixture(scope="module")
def single(registry: Path) -> dict[str, dict]:
    """One server fed every row (it writes nothing to the registry: --fleet-interval 0)."""
    with running_server(registry, *SERVE, "--fleet-interval", "0") as server:
        send(server.address, rows())
        server_report(server.address, ROWS)
        return {"since_live": drift_json("--server", server.address, "--since-live"),
                "window": drift_json("--server", server.address)}


def test_two_replicas_merge_to_what_one_server_reports_and_a_killed_one_resumes(registry: Path, single: dict):
    data = rows()
    half = ROWS // 2
    # A state counts as stale after three intervals: 6 s, so a write (two fsyncs) or a CLI start slowed by a busy
    # machine cannot age a live replica out between the writes and the reads below.
    fleet = ("--fleet-interval", "2")
    with running_server(registry, *SERVE, *fleet, "--replica-id", "pod-a") as a, \
            running_server(registry, *SERVE, *fleet, "--replica-id", "pod-b") as b:
        send(a.address, data[:half])
        send(b.address, data[half:])
        wait_until(lambda: written_rows(registry, "pod-a") == half and written_rows(registry, "pod-b") == ROWS - half,
                   "both replicas' states written to the registry", pause_s=0.05)

        merged = drift_json("--registry", str(registry), "--since-live")
        same_statistics(merged, single["since_live"])
        assert merged["fleet"]["replicas"] == ["pod-a", "pod-b"] and merged["fleet"]["stale"] == []
        window = drift_json("--registry", str(registry))
        same_statistics(window, single["window"])
        assert "on each of 2 replicas (the union of their windows)" in window["window"]
        # Any replica answers for the fleet: its own state live, the other's as written.
        same_statistics(drift_json("--server", b.address, "--fleet", "--since-live"), single["since_live"])
        # ...while without --fleet it answers for itself only, as before.
        assert drift_json("--server", b.address, "--since-live")["rows"] == ROWS - half

        # SIGKILL: no goodbye write. The restarted replica resumes from what it wrote last.
        a.process.kill()
        a.process.wait()
        with running_server(registry, *SERVE, *fleet, "--replica-id", "pod-a") as again:
            resumed = drift_json("--server", again.address)
            assert resumed["rows"] == half, "the window resumes from the last written state"
            assert drift_json("--server", again.address, "--since-live")["rows"] == half
            send(again.address, data[:100])
            server_report(again.address, half + 100)
            wait_until(lambda: written_rows(registry, "pod-a") == half + 100, "the resumed replica writes on",
                       pause_s=0.05)
            assert drift_json("--registry", str(registry), "--since-live")["rows"] == ROWS + 100


def test_a_replica_that_stopped_writing_ages_out_and_is_named(registry: Path, tmp_path: Path):
    """A state older than the rule allows is left out of the merge and named as stale."""
    with running_server(registry, *SERVE, "--fleet-interval", "0.2", "--replica-id", "short-lived") as server:
        send(server.address, rows()[:300])
        wait_until(lambda: written_rows(registry, "short-lived") == 300, "the state written", pause_s=0.05)
    # Stopped (SIGTERM): its last write stays, and is stale 3 intervals (0.6 s) later.
    storage = open_registry(str(registry)).storage
    document = stored.read(storage, MODEL, 1, "short-lived")
    wait_until(lambda: stored.is_stale(document, __import__("time").time()), "the state aged", pause_s=0.05)
    report = drift_json("--registry", str(registry), "--since-live", "--fleet-max-age", "3600")
    assert "short-lived" in report["fleet"]["replicas"]
    result = driftline("drift", MODEL, "--registry", str(registry), "--json", check=False)
    if result.returncode == 0:  # other replicas of this module may still be live: the stale one is named
        assert "short-lived" in [s["replica"] for s in json.loads(result.stdout)["fleet"]["stale"]]
    else:
        assert "no live replica" in result.stderr and "short-lived" in result.stderr
    table = driftline("drift", MODEL, "--registry", str(registry), "--fleet-max-age", "3600").stdout
    assert "fleet: " in table and "short-lived" in table


def test_a_registry_that_refuses_the_write_does_not_stop_serving(registry: Path, tmp_path: Path):
    """A write that fails is logged and counted; requests and the server's own report go on as before."""
    import re
    import shutil
    import urllib.request

    root = tmp_path / "registry"
    shutil.copytree(registry, root, ignore=shutil.ignore_patterns(".fleet", ".serving"))
    (root / MODEL / ".fleet").write_text("a file where the fleet folder would go")  # every write now fails
    serve = ("--drift-window-rows", "100000", "--attribution-sample", "0", "--no-http", "--metrics-port", "0")
    with running_server(root, *serve, "--fleet-interval", "0.1", "--replica-id", "pod-x") as server:
        send(server.address, rows()[:200])
        assert server_report(server.address, 200)["rows"] == 200
        port = int(re.search(r"metrics http://[^:]+:(\d+)/metrics", "".join(server.log)).group(1))

        def failures() -> float:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            found = re.search(r'driftline_fleet_writes_total\{result="failed"\} (\S+)', text)
            return float(found.group(1)) if found else 0.0

        wait_until(lambda: failures() >= 2, "failed fleet writes counted", pause_s=0.1)
        send(server.address, rows()[200:300])  # still serving
        assert server_report(server.address, 300)["rows"] == 300
        # What adds up across pods is exported as such: since-live counts and sums, not only per-pod ratios.
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        garage = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
                  if s.labels.get("feature") == "garage_area" and s.name.startswith("driftline_drift_values")}
        assert garage["driftline_drift_values_total"] == 300
        assert garage["driftline_drift_values_outside_training_total"] > 0  # big garages: above the training range
        sent = rows()[:300, list(synthetic.FEATURES).index("garage_area")].astype(float)
        assert math.isclose(garage["driftline_drift_values_sum"] / 300, sent.mean(), rel_tol=1e-6)
    assert sum("fleet: cannot write garages version 1" in line for line in server.log) == 1, "said once, not per try"
