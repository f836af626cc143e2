"""Attributions through the standard protocol, and the garage that no training house had."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as triton

from driftline.registry.profile import Profile
from driftline.trainer import synthetic
from helpers import driftline, running_server


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("attribution") / "registry"
    for name in ("quiet", "garages"):
        driftline("train", name, "--registry", str(root), "--rows", "4000", "--seed", "1",
                  "--param", "n_estimators=60")
    driftline("train", "lin", "--registry", str(root), "--rows", "2000", "--estimator", "linear")
    driftline("train", "segments", "--registry", str(root), "--rows", "2000", "--estimator", "random_forest",
              "--target", "price_segment", "--param", "n_estimators=15", "--param", "max_depth=6")
    return root


# Rows the tests sent to each model so far: what its monitor has counted once it has caught up (it reads the
# batches off the response path).
SENT: dict[str, int] = {}


@pytest.fixture(scope="module")
def server(registry: Path):
    with running_server(registry, "--attribution-sample", "1.0", "--attribution-max-rows-per-s", "0", "--drift-window-rows", "100000") as running:
        yield running


def houses(n: int, seed: int, shift: str | None = None) -> np.ndarray:
    return synthetic.housing(n, seed=seed, shift=shift).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)


def ask(client, model: str, rows: np.ndarray, *names: str) -> triton.InferResult:
    request = triton.InferInput("input", list(rows.shape), "FP32")
    request.set_data_from_numpy(rows)
    return client.infer(model, [request], outputs=[triton.InferRequestedOutput(n) for n in names])


def test_attributions_add_up_to_the_prediction(server):
    client = triton.InferenceServerClient(url=server.address)
    meta = client.get_model_metadata("quiet")
    assert [(o.name, o.datatype, list(o.shape)) for o in meta.outputs] == [
        ("prediction", "FP32", [-1, 1]), ("attribution", "FP32", [-1, 11]), ("attribution_base", "FP32", [-1, 1])]
    rows = houses(64, seed=3)
    result = ask(client, "quiet", rows, "prediction", "attribution", "attribution_base")
    total = result.as_numpy("attribution").astype(np.float64).sum(axis=1) + result.as_numpy("attribution_base")[:, 0]
    np.testing.assert_allclose(total, result.as_numpy("prediction")[:, 0], rtol=1e-5)
    plain = client.infer("quiet", [ask_input(rows)])  # no outputs named: no attribution cost, none returned
    SENT["quiet"] = SENT.get("quiet", 0) + 2 * len(rows)
    assert [o.name for o in plain.get_response().outputs] == ["prediction"]
    client.close()


def ask_input(rows: np.ndarray) -> triton.InferInput:
    request = triton.InferInput("input", list(rows.shape), "FP32")
    request.set_data_from_numpy(rows)
    return request


def test_linear_attributions_are_coefficient_times_distance_from_the_mean(server, registry: Path):
    client = triton.InferenceServerClient(url=server.address)
    rows = houses(8, seed=4)
    result = ask(client, "lin", rows, "prediction", "attribution", "attribution_base")
    node = next(n for n in onnx.load(str(registry / "lin" / "1" / "model.onnx")).graph.node
                if n.op_type == "LinearRegressor")
    weights = np.array(next(a.floats for a in node.attribute if a.name == "coefficients"))
    means = np.array([c.mean for c in Profile.from_json((registry / "lin" / "1" / "profile.json").read_text())
                      .columns[:11]])
    np.testing.assert_allclose(result.as_numpy("attribution"), weights * (rows - means), rtol=1e-4, atol=1.0)
    client.close()


def test_classifier_attributions_explain_the_predicted_class(server):
    client = triton.InferenceServerClient(url=server.address)
    rows = houses(16, seed=5)
    result = ask(client, "segments", rows, "label", "probabilities", "attribution", "attribution_base")
    total = result.as_numpy("attribution").sum(axis=1) + result.as_numpy("attribution_base")[:, 0]
    chosen = result.as_numpy("probabilities")[np.arange(16), result.as_numpy("label").reshape(-1)]  # label: [N, 1]
    np.testing.assert_allclose(total, chosen, rtol=1e-4, atol=1e-5)  # a forest's margin is its probability
    client.close()


def monitored(address: str, model: str, rows: int) -> dict:
    deadline = time.monotonic() + 60
    while True:
        summary = json.loads(driftline("drift", model, "--server", address, "--json").stdout)
        if summary["attribution"]["sampled_rows"] >= rows or time.monotonic() > deadline:
            return summary
        time.sleep(0.05)


def test_garages_no_training_house_had_are_flagged(server):
    # Earlier tests sent other rows to "quiet" (one a 450 m2 house, rightly flagged): count from here, once the
    # monitor has counted them all.
    before = monitored(server.address, "quiet", SENT.get("quiet", 0))["attribution"]
    client = triton.InferenceServerClient(url=server.address)
    for chunk in np.array_split(houses(600, seed=21), 6):
        client.infer("quiet", [ask_input(chunk)])
    for chunk in np.array_split(houses(600, seed=21, shift="big_garages"), 6):
        client.infer("garages", [ask_input(chunk)])
    client.close()
    quiet = monitored(server.address, "quiet", before["sampled_rows"] + 600)["attribution"]
    garages = monitored(server.address, "garages", 600)["attribution"]
    assert quiet["sampled_rows"] == before["sampled_rows"] + 600
    assert quiet["flagged_rows"] == before["flagged_rows"], quiet["examples"]
    assert garages["sampled_rows"] == 600 and garages["flagged_rows"] > 300
    assert all(example.startswith("garage_area=") for example in garages["examples"])
    assert [c["name"] for c in garages["features"]][5] == "attribution_share[garage_area]"


def test_explain_prints_contributions_largest_first(server, tmp_path: Path):
    row = dict(zip(synthetic.FEATURES, houses(1, seed=8)[0].tolist(), strict=True))
    out = driftline("explain", "quiet", "--server", server.address, "--json", json.dumps(row),
                    "--plot", str(tmp_path / "why.png")).stdout
    lines = [line for line in out.splitlines() if " = " in line and not line.strip().startswith("=")]
    sizes = [abs(float(line.split()[0].replace(",", ""))) for line in lines]
    assert len(lines) == 11 and sizes == sorted(sizes, reverse=True)
    assert (tmp_path / "why.png").read_bytes()[:4] == b"\x89PNG"
