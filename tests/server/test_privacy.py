"""Privacy by default: what one caller sent does not reach the next reader of the drift report, and
VersionInfo gives strangers lineage, not the training profile or the machine's paths."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.trainer import synthetic
from helpers import RunningServer, driftline, running_server

TOKEN = "privacy-admin-9d1e"
NAME = "Jan Kowalski 85010112345"  # a personal datum typed into a number's cell
GARAGE = 43210.5  # a live value no training house had (training garages are under 1,000 m2)
DATA_FOLDER = "private-data-folder"
HTTP_LINE = re.compile(r"; http http://[^ ;]+:(\d+)")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(DATA_FOLDER)
    synthetic.housing(2000, seed=1).select([*synthetic.FEATURES, "price"]).write_csv(folder / "houses.csv")
    root = tmp_path_factory.mktemp("privacy") / "registry"
    # Linear: exact attributions, so the huge garage surely drives the answer and is flagged.
    driftline("train", "lin", "--registry", str(root), "--data", str(folder / "houses.csv"), "--target", "price",
              "--estimator", "linear")
    return root


def send_private_rows(address: str) -> None:
    """One answered row with a garage no training house had; one request refused for a name in a number cell."""
    client = triton.InferenceServerClient(url=address)
    row = synthetic.housing(1, seed=5).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
    row[0, synthetic.FEATURES.index("garage_area")] = GARAGE
    request = triton.InferInput("input", list(row.shape), "FP32")
    request.set_data_from_numpy(row)
    client.infer("lin", [request])
    cells = np.array([[str(x).encode() for x in row[0]]], dtype=object)
    cells[0, synthetic.FEATURES.index("bedrooms")] = NAME.encode()
    text = triton.InferInput("input", list(cells.shape), "BYTES")
    text.set_data_from_numpy(cells)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("lin", [text])
    assert NAME in refused.value.message()  # the caller's own error may name the caller's own value
    client.close()


def drift_report(address: str) -> dpb.DriftReportResponse:
    """The report once the sampled row has reached the monitor (it is updated off the response path)."""
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(address) as channel:
        stub = driftline_pb2_grpc.MonitoringStub(channel)
        while True:
            report = stub.DriftReport(dpb.DriftRequest(name="lin"), timeout=30)
            if json.loads(report.attribution_flags_json)["sampled_rows"] >= 1 or time.monotonic() > deadline:
                return report
            time.sleep(0.05)


def test_the_drift_report_withholds_what_callers_sent(registry: Path):
    with running_server(registry, "--attribution-sample", "1.0", "--attribution-max-rows-per-s", "0") as server:
        send_private_rows(server.address)
        report = drift_report(server.address)
        table = driftline("drift", "lin", "--server", server.address).stdout
    validation, flags = json.loads(report.validation_json), json.loads(report.attribution_flags_json)
    # Counts, columns and reasons stay: an operator still sees what is wrong, and where.
    assert validation["requests_rejected"] == 1 and validation["counts"]["bedrooms"]["not_a_number"] == 1
    assert validation["counts"]["garage_area"]["above_training_range"] == 1
    assert "row 0, feature 'bedrooms': text where a number belongs (value withheld)" in validation["examples"]
    assert "row 0, feature 'garage_area': a value above the training range (value withheld)" in validation["examples"]
    assert flags["flagged_rows"] == 1
    assert flags["examples"][0].startswith("garage_area=(value withheld) (outside the training range) drives ")
    for published in (report.validation_json, report.attribution_flags_json, table):
        assert "Kowalski" not in published and "43210" not in published and "43,210" not in published


def test_the_operator_may_ask_for_the_values(registry: Path):
    with running_server(registry, "--attribution-sample", "1.0", "--attribution-max-rows-per-s", "0", "--show-rejected-values") as server:
        send_private_rows(server.address)
        report = drift_report(server.address)
    assert NAME in report.validation_json and "43210" in report.validation_json
    assert json.loads(report.attribution_flags_json)["examples"][0].startswith("garage_area=43210.5 (training range")


def http_port(server: RunningServer) -> int:
    return int(next(m for line in list(server.log) if (m := HTTP_LINE.search(line))).group(1))


def version_info(address: str, token: str | None = None) -> dpb.VersionInfoResponse:
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        return driftline_pb2_grpc.DriftlineStub(channel).VersionInfo(dpb.VersionInfoRequest(name="lin"),
                                                                    metadata=metadata, timeout=30)


def test_version_info_gives_strangers_lineage_not_the_profile_or_paths(registry: Path, tmp_path: Path):
    # 0.0.0.0 listens beyond loopback (the test connects through 127.0.0.1 only); metrics stay off it.
    with running_server(registry, "--host", "0.0.0.0", "--admin-token", TOKEN, "--http-port", "0",
                        "--no-metrics") as server:
        stranger = version_info(server.address)
        admin = version_info(server.address, TOKEN)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port(server)}/v2/models/lin/driftline",
                                    timeout=30) as answer:
            over_http = json.loads(answer.read())
        asked = urllib.request.Request(f"http://127.0.0.1:{http_port(server)}/v2/models/lin/driftline",
                                       headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(asked, timeout=30) as answer:
            admin_over_http = json.loads(answer.read())
        plot = tmp_path / "drift.png"
        refused = driftline("drift", "lin", "--server", server.address, "--plot", str(plot), check=False,
                            env={"DRIFTLINE_ADMIN_TOKEN": ""})
        drawn = driftline("drift", "lin", "--server", server.address, "--plot", str(plot),
                          env={"DRIFTLINE_ADMIN_TOKEN": TOKEN})
    lineage = json.loads(stranger.metadata_json)
    assert lineage["data_version"].startswith("sha256:") and stranger.feature_names == admin.feature_names
    assert lineage["extra"]["data"] == "houses.csv"  # which file, not where it lives
    for answer in (stranger.metadata_json, admin.metadata_json, json.dumps(over_http)):
        assert DATA_FOLDER not in answer and str(registry) not in answer
    assert stranger.registry == "" and stranger.profile_json == ""
    assert over_http.get("profile_json", "") == "" and over_http.get("registry", "") == ""
    assert admin.profile_json.startswith("{") and admin.registry == ""
    assert admin_over_http["profile_json"] == admin.profile_json  # the same rule over HTTP, token in the header
    # --plot draws the training profile: it asks with the token it was given, and says so without one.
    assert refused.returncode == 1 and "--admin-token" in refused.stderr
    assert "plot written" in drawn.stdout and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _no_inherited_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token in the developer's environment would make every CLI call an admin call."""
    if "DRIFTLINE_ADMIN_TOKEN" in os.environ:
        monkeypatch.delenv("DRIFTLINE_ADMIN_TOKEN")
