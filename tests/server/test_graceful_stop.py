"""SIGTERM: readiness goes, accepted calls finish within the grace period, the server exits 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton

from helpers import driftline, running_server, wait_until

ROWS = 300_000  # one request: a fraction of a second of onnxruntime, so that others wait behind it
CALLS = 6
WAIT_S = 120


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("graceful") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "400", "--param", "n_estimators=5")
    return root


def queued(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=30).read().decode()
    return sum(float(m) for m in re.findall(r'^driftline_queue_depth_requests\{[^}]*\} (\S+)$', text, re.M))


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_lets_accepted_calls_finish_and_exits_0(registry: Path, workers: str):
    rows = np.random.default_rng(0).uniform(0, 1000, (ROWS, 11)).astype(np.float32)
    with running_server(registry, "--workers", workers, "--max-batch-size", str(ROWS), "--max-concurrent-batches",
                        "1", "--metrics-port", "0", "--no-drift", "--shutdown-grace", str(WAIT_S)) as server:
        metrics_url = re.search(r"metrics (http://\S+/metrics)", "".join(server.log)).group(1)
        answers: list[object] = []

        def call() -> None:
            client = triton.InferenceServerClient(url=server.address)
            request = triton.InferInput("input", list(rows.shape), "FP32")
            request.set_data_from_numpy(rows)
            try:
                answers.append(client.infer("housing", [request], client_timeout=WAIT_S).as_numpy("prediction").shape)
            except Exception as exc:  # noqa: BLE001 - recorded, and fails the test
                answers.append(exc)

        threads = [threading.Thread(target=call) for _ in range(CALLS)]
        for thread in threads:
            thread.start()
        # Accepted, not merely sent: the server holds them in its queues behind the batch it runs.
        wait_until(lambda: queued(metrics_url) >= 1, "the calls never queued up", WAIT_S)
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(WAIT_S)
        # One call was running and at least one waited behind it when the signal came: those were
        # accepted and must be answered.
        answered = [a for a in answers if a == (ROWS, 1)]
        refused = [a for a in answers if a != (ROWS, 1)]
        # With two workers the metric read is one worker's, and the kernel may have given the other worker the
        # calls that queued there: only the one running when the signal came is sure to be accepted.
        assert len(answered) >= (2 if workers == "1" else 1), answers
        # gRPC turns away calls whose request had not fully arrived (UNAVAILABLE, or CANCELLED for
        # one still uploading): the server never started them, so nothing of them ran.
        assert all(a.status() in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED") for a in refused), refused
        assert server.process.wait(WAIT_S) == 0


def worker_count(parent: int) -> int:
    children = " ".join((task / "children").read_text() for task in Path(f"/proc/{parent}/task").iterdir()).split()
    count = 0
    for child in children:
        try:
            count += b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
    return count


def test_sigterm_to_every_process_while_starting_stops_cleanly(registry: Path):
    """As systemd (KillMode=control-group) or a terminal's Ctrl-C does: every process hears it, workers included."""
    process = subprocess.Popen([sys.executable, "-m", "driftline", "serve", "--registry", str(registry), "--port", "0",
                                "--workers", "2", "--no-http", "--no-metrics"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # started, still importing and loading: not serving yet
        wait_until(lambda: worker_count(process.pid) >= 2, "the workers never started", WAIT_S)
        workers = [int(c) for task in Path(f"/proc/{process.pid}/task").iterdir()
                   for c in (task / "children").read_text().split()
                   if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        os.killpg(process.pid, signal.SIGTERM)
        out, _ = process.communicate(timeout=WAIT_S)
        assert process.returncode == 0, out
        assert "driftline serving" not in out and "Traceback" not in out
        for pid in workers:  # none is left behind holding the port
            assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
