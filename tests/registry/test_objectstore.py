"""The registry on an object store: a real S3 API (moto's server mode) on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as triton

from driftline.registry import open_registry
from driftline.registry.store import METADATA_FILE, MODEL_FILE
from helpers import driftline, running_server, sample_metadata
from moto_s3 import moto_s3

pytest.importorskip("moto", reason="moto[server] is a test dependency (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with moto_s3("models") as env:
        yield env


def files(model: bytes) -> dict[str, bytes]:
    return {MODEL_FILE: model, METADATA_FILE: sample_metadata().to_json().encode()}


def test_publish_open_and_aliases(s3):
    registry = open_registry("s3://models/basic")
    assert registry.models() == []
    assert [registry.publish("m", files(bytes([i]))) for i in range(3)] == [1, 2, 3]
    assert registry.versions("m") == [1, 2, 3] and registry.models() == ["m"]
    assert registry.open("m", 2).read(MODEL_FILE) == bytes([1])
    registry.promote("m", 2)
    registry.promote("m", 3)
    assert registry.aliases("m") == {"production": 3, "previous": 2}
    assert registry.resolve("m", "previous") == 2


def test_concurrent_publishers_get_distinct_versions(s3):
    registry = open_registry("s3://models/racing")
    with ThreadPoolExecutor(6) as pool:
        versions = list(pool.map(lambda i: registry.publish("m", files(str(i).encode())), range(12)))
    assert sorted(versions) == list(range(1, 13))


def test_crashed_publish_stays_invisible(s3):
    registry = open_registry("s3://models/crash")
    registry.publish("m", files(b"v1"))
    script = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = [{os.path.dirname(__file__)!r}, {os.path.dirname(os.path.dirname(__file__))!r}]
        import driftline.registry.objectstore as store
        from driftline.registry import open_registry
        from test_objectstore import files
        real = store.ObjectStorage.publish
        def dies_before_the_manifest(self, model, data, manifest):
            version = self._claim(model)
            for name, body in data.items():
                self.fs.pipe_file(self._path(f"{{model}}/{{version}}/{{name}}"), body)
            os._exit(9)
        store.ObjectStorage.publish = dies_before_the_manifest
        open_registry("s3://models/crash").publish("m", files(b"v2"))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, **s3})
    assert result.returncode == 9, result.stderr
    registry = open_registry("s3://models/crash")
    assert registry.versions("m") == [1] and registry.open("m").read(MODEL_FILE) == b"v1"
    assert registry.publish("m", files(b"v3")) == 3  # the crashed number is not reused


def test_train_and_serve_from_s3(s3):
    url = "s3://models/served"
    driftline("train", "housing", "--registry", url, "--rows", "500", "--param", "n_estimators=10", env=s3)
    listing = driftline("models", "list", "--registry", url, env=s3).stdout
    assert "housing" in listing
    with running_server(url) as server:  # inherits the endpoint from os.environ
        client = triton.InferenceServerClient(url=server.address)
        request = triton.InferInput("input", [2, 11], "FP32")
        request.set_data_from_numpy(np.ones((2, 11), dtype=np.float32))
        assert client.infer("housing", [request]).get_response().model_version == "1"
        client.close()
