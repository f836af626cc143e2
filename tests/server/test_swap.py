"""Hot-swap under load, rollback, refusals, memory across many swaps, and the production alias."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton

from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.trainer import synthetic
from helpers import driftline, running_server, wait_until

WIDTH = 11
ROWS = synthetic.housing(8, seed=5).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """housing 1 and 2 (different data, different predictions), and 3 with other features."""
    root = tmp_path_factory.mktemp("swap") / "registry"
    for seed in ("1", "2"):
        driftline("train", "housing", "--registry", str(root), "--rows", "600", "--seed", seed,
                  "--param", "n_estimators=15")
    driftline("train", "housing", "--registry", str(root), "--rows", "600", "--estimator", "linear",
              "--features", "living_area,lot_area")
    return root


def expected(registry: Path, version: int) -> np.ndarray:
    session = ort.InferenceSession(str(registry / "housing" / str(version) / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"input": ROWS})[0]


def admin(address: str) -> driftline_pb2_grpc.AdminStub:
    return driftline_pb2_grpc.AdminStub(grpc.insecure_channel(address))


ANSWERS_PER_PHASE = 150  # answers to requests sent after each swap returned (and before the first swap)


def test_swaps_under_load_fail_no_request(versions: Path, tmp_path: Path):
    """Three swaps under 16 callers: no request fails, and every request sent after a swap returned is answered by
    the new version. Each phase lasts a fixed number of answers, not a time window, so a slow machine only makes
    the test slower."""
    registry = tmp_path / "registry"
    shutil.copytree(versions, registry)
    truth = {"1": expected(registry, 1), "2": expected(registry, 2)}
    with running_server(registry, "--model", "housing:1") as server:
        stop = threading.Event()
        seen: list[tuple[float, float, str]] = []  # (sent, answered, version)
        failures: list[BaseException] = []

        def caller():
            client = triton.InferenceServerClient(url=server.address)
            request = triton.InferInput("input", list(ROWS.shape), "FP32")
            request.set_data_from_numpy(ROWS)
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    result = client.infer("housing", [request])
                    version = result.get_response().model_version
                    np.testing.assert_array_equal(result.as_numpy("prediction"), truth[version])
                except Exception as exc:  # noqa: BLE001 - every failure is recorded and fails the test
                    failures.append(exc)
                    continue
                seen.append((sent, time.monotonic(), version))
            client.close()

        def answered_after(moment: float) -> None:
            """Wait until ANSWERS_PER_PHASE requests sent after ``moment`` have been answered."""
            def no_failures() -> None:
                assert not failures, failures[:3]

            wait_until(lambda: sum(1 for sent, _, _ in list(seen) if sent > moment) >= ANSWERS_PER_PHASE,
                       "the callers stopped getting answers", 300, no_failures)

        threads = [threading.Thread(target=caller) for _ in range(16)]
        for t in threads:
            t.start()
        stub = admin(server.address)
        swaps = []
        try:
            answered_after(0.0)
            for target in ("2", "1", "2"):
                asked = time.monotonic()
                response = stub.Swap(dpb.SwapRequest(name="housing", version=target), timeout=60)
                swaps.append((asked, time.monotonic(), response.version))
                answered_after(swaps[-1][1])  # traffic goes on after each swap, the last one too
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
        assert failures == []
        # Once a swap has returned, no answer comes from the version it replaced: every request sent after it
        # returned, and answered before the next swap was asked for, names the new version.
        for (_, returned, version), following in zip(swaps, swaps[1:] + [(float("inf"), 0, None)], strict=True):
            after = [v for sent, answered, v in seen if returned < sent and answered < following[0]]
            assert len(after) >= ANSWERS_PER_PHASE and set(after) == {version}, Counter(after)
        assert set(Counter(v for _, _, v in seen)) == {"1", "2"}


def test_rollback_and_the_old_versions_final_drift(versions: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    shutil.copytree(versions, registry)
    with running_server(registry, "--model", "housing:1") as server:
        out = driftline("swap", "housing", "2", "--server", server.address).stdout
        assert "serving version 2 (was version 1)" in out
        out = driftline("rollback", "housing", "--server", server.address).stdout
        assert "serving version 1 (was version 2)" in out
        # Version 2 is released, but its final drift report can still be read.
        report = driftline("drift", "housing", "--server", server.address, "--version", "2", "--json").stdout
        assert '"version": "2"' in report


def test_incompatible_version_is_refused_unless_forced(versions: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    shutil.copytree(versions, registry)
    with running_server(registry, "--model", "housing:1") as server:
        refused = driftline("swap", "housing", "3", "--server", server.address, check=False)
        assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr
        assert "clients would break" in refused.stderr
        client = triton.InferenceServerClient(url=server.address)
        assert client.get_model_metadata("housing").versions == ["1"]
        forced = driftline("swap", "housing", "3", "--force", "--server", server.address).stdout
        assert "serving version 3" in forced
        client.close()


def test_corrupt_version_is_refused_and_the_old_one_keeps_serving(versions: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    shutil.copytree(versions, registry)
    path = registry / "housing" / "2" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    with running_server(registry, "--model", "housing:1") as server:
        refused = driftline("swap", "housing", "2", "--server", server.address, check=False)
        assert refused.returncode == 1 and "DATA_LOSS" in refused.stderr and "sha256" in refused.stderr
        client = triton.InferenceServerClient(url=server.address)
        request = triton.InferInput("input", list(ROWS.shape), "FP32")
        request.set_data_from_numpy(ROWS)
        assert client.infer("housing", [request]).get_response().model_version == "1"
        client.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_fifty_swaps_leave_memory_flat(versions: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    shutil.copytree(versions, registry)
    with running_server(registry, "--model", "housing:1") as server:
        stub = admin(server.address)
        for i in range(10):  # warm: allocators and caches reach their working size
            stub.Swap(dpb.SwapRequest(name="housing", version=str(1 + i % 2)), timeout=60)
        before = rss_bytes(server.process.pid)
        for i in range(50):
            stub.Swap(dpb.SwapRequest(name="housing", version=str(1 + i % 2)), timeout=60)
        grown = rss_bytes(server.process.pid) - before
        assert grown < 64 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB over 50 swaps"


def test_promote_moves_production_and_a_polling_server_follows(versions: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    shutil.copytree(versions, registry)
    driftline("promote", "housing", "1", "--registry", str(registry))
    with running_server(registry, "--poll", "0.2") as server:
        client = triton.InferenceServerClient(url=server.address)
        assert client.get_model_metadata("housing").versions == ["1"]  # production wins over latest
        out = driftline("promote", "housing", "2", "--registry", str(registry)).stdout
        assert "production -> version 2" in out and "previous=1" in out
        deadline = time.monotonic() + 60
        while client.get_model_metadata("housing").versions != ["2"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get_model_metadata("housing").versions == ["2"]
        client.close()


def test_swap_reaches_every_worker(versions: Path, tmp_path: Path):
    registry = tmp_path / "registry"
    shutil.copytree(versions, registry)
    with running_server(registry, "--model", "housing:1", "--workers", "2") as server:
        out = driftline("swap", "housing", "2", "--server", server.address).stdout
        assert "on 2 worker(s)" in out
        for _ in range(12):  # new connections land on both workers
            client = triton.InferenceServerClient(url=server.address)
            assert client.get_model_metadata("housing").versions == ["2"]
            client.close()
