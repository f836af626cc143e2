"""A damaged newest version: serve falls back to the newest intact one, and says so."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

from driftline.trainer import synthetic
from helpers import driftline, running_server

ROWS = synthetic.housing(4, seed=3).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)


def test_a_byte_flipped_newest_version_falls_back_to_the_newest_intact_one(tmp_path: Path):
    registry = tmp_path / "registry"
    for seed in ("1", "2", "3"):
        driftline("train", "housing", "--registry", str(registry), "--rows", "400", "--seed", seed,
                  "--param", "n_estimators=5")
    path = registry / "housing" / "3" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    with running_server(registry, "--metrics-port", "0") as server:
        log = "".join(server.log)
        assert "housing:2 (newest intact; version 3 is damaged)" in log
        assert "FALLBACK: serving version 2" in log
        client = triton.InferenceServerClient(url=server.address)
        request = triton.InferInput("input", list(ROWS.shape), "FP32")
        request.set_data_from_numpy(ROWS)
        assert client.infer("housing", [request]).get_response().model_version == "2"
        client.close()
        metrics_url = re.search(r"metrics (http://\S+/metrics)", log).group(1)
        scraped = urllib.request.urlopen(metrics_url, timeout=30).read().decode()
        assert 'driftline_version_fallbacks_total{model="housing",version="3"} 1.0' in scraped
        # A swap to "latest" is the newest intact one too, not a failure.
        out = driftline("swap", "housing", "latest", "--server", server.address).stdout
        assert "serving version 2" in out
