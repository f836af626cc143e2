"""Drift end to end: a housing model, in-distribution traffic stays quiet, shifted traffic alarms
on the shifted features (and the prediction where the shift moves it), not on the untouched ones."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from driftline.trainer import synthetic
from helpers import driftline, running_server

ROWS = 2000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("drift") / "registry"
    for name in ("quiet", "garages", "district"):
        driftline("train", name, "--registry", str(root), "--rows", "4000", "--seed", "1",
                  "--param", "n_estimators=30")
    with running_server(root, "--drift-window-rows", "100000") as running:
        yield running


def send(address: str, model: str, shift: str | None) -> None:
    frame = synthetic.housing(ROWS, seed=99, shift=shift)
    rows = frame.select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
    client = triton.InferenceServerClient(url=address)
    for chunk in np.array_split(rows, 20):
        request = triton.InferInput("input", list(chunk.shape), "FP32")
        request.set_data_from_numpy(chunk)
        client.infer(model, [request])
    client.close()


_sent: set[str] = set()


def send_once(address: str, model: str, shift: str | None) -> None:
    """Send a model its traffic unless an earlier test already did (so each test also runs on its own)."""
    if model not in _sent:
        send(address, model, shift)
        _sent.add(model)


def report(address: str, model: str) -> dict:
    """The drift JSON once every sent row has reached the monitor (updates run off the response path)."""
    deadline = time.monotonic() + 60
    while True:
        summary = json.loads(driftline("drift", model, "--server", address, "--json").stdout)
        if summary["rows"] >= ROWS or time.monotonic() > deadline:
            return summary
        time.sleep(0.05)


def alarmed(summary: dict) -> set[str]:
    return {c["name"] for c in summary["features"] + summary["prediction"] if c["alarm"]}


def test_in_distribution_traffic_raises_no_alarm(server):
    send(server.address, "quiet", None)
    summary = report(server.address, "quiet")
    assert summary["rows"] == ROWS
    assert alarmed(summary) == set() and summary["alarm"] is False
    names = [c["name"] for c in summary["features"]]
    assert names == list(synthetic.FEATURES)
    assert [c["name"] for c in summary["prediction"]] == ["prediction"]
    assert set(summary["features"][0]) >= {"name", "psi", "js", "ks", "wasserstein", "mean_shift", "alarm"}


def test_big_garages_alarm_on_garage_area_only(server):
    send_once(server.address, "garages", "big_garages")
    summary = report(server.address, "garages")
    assert summary["alarm"] is True
    assert alarmed(summary) - {"prediction"} == {"garage_area"}


def test_new_district_alarms_on_distance_and_prediction(server):
    send(server.address, "district", "new_district")
    summary = report(server.address, "district")
    flagged = alarmed(summary)
    assert {"distance_to_center", "prediction"} <= flagged
    # Distance drives lot and house sizes in this market; the age of the stock does not move.
    assert not flagged & {"year_built", "condition", "has_basement"}, flagged


def test_table_and_plot(server, tmp_path: Path):
    send_once(server.address, "garages", "big_garages")
    report(server.address, "garages")  # every row has reached the monitor
    table = driftline("drift", "garages", "--server", server.address).stdout
    lines = table.splitlines()
    # The header names an ALARM column whatever the data; the verdict is the first line's last word.
    assert lines[0].startswith("garages version 1: ") and lines[0].endswith(": ALARM"), lines[0]
    cells = {line.split()[0]: line.split() for line in lines[2:] if line.split()}
    statistics = {"psi", "js", "ks", "mean_shift", "test"}
    assert set(cells["garage_area"][-1].split(",")) <= statistics, cells["garage_area"]  # its alarms, named
    assert set(cells["garage_area"][-1].split(",")) & {"psi", "ks"}, cells["garage_area"]
    assert not set(cells["year_built"][-1].split(",")) & statistics, cells["year_built"]  # untouched: no alarm
    plot = tmp_path / "drift.png"
    driftline("drift", "garages", "--server", server.address, "--plot", str(plot))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_version_without_profile_says_why(server):
    with grpc.insecure_channel(server.address) as channel:
        from driftline.proto import driftline_pb2 as dpb
        from driftline.proto import driftline_pb2_grpc

        with pytest.raises(grpc.RpcError) as caught:
            driftline_pb2_grpc.MonitoringStub(channel).DriftReport(dpb.DriftRequest(name="nope"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
