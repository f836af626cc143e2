"""Test helpers: the real CLI in a subprocess, and a real server on a free loopback port."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY_LINE = re.compile(r"driftline serving .* on (?P<host>[^ ]+):(?P<port>\d+) ")
_servers = itertools.count()
START_TIMEOUT_S = 120  # a cold start imports onnxruntime; CI machines are slow and shared
# Every running_server serves through this gRPC front end when set (compiled or python): the protocol tests, run
# once per door (tests/server/test_compiled_door.py says how).
FRONT_END = os.environ.get("DRIFTLINE_TEST_FRONT_END", "")


def driftline(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``driftline`` command as a user would, in its own process."""
    result = subprocess.run(
        [sys.executable, "-m", "driftline", *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"driftline {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def published_version(result: subprocess.CompletedProcess[str]) -> int:
    match = re.search(r"published \S+ version (\d+)", result.stdout)
    assert match, result.stdout
    return int(match.group(1))


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    port: int
    log: list[str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def running_server(registry: Path, *extra: str) -> Iterator[RunningServer]:
    """``driftline serve`` on port 0; the port is read from the line it prints once listening."""
    if "--workers" not in extra:
        extra = ("--workers", "1", *extra)  # one process is enough unless a test is about workers
    if "--replica-id" not in extra:
        # A replica of its own: with the host name, a server would resume the drift state an earlier test's server
        # wrote to a shared registry (restarts resume; tests/server/test_fleet_drift.py tests that on purpose).
        extra = ("--replica-id", f"test-{next(_servers)}-{os.getpid()}", *extra)
    if FRONT_END and "--front-end" not in extra:
        extra = ("--front-end", FRONT_END, *extra)  # the whole suite against one door: DRIFTLINE_TEST_FRONT_END
    process = subprocess.Popen(
        [sys.executable, "-m", "driftline", "serve", "--registry", str(registry), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    with listening(process, "server") as server:
        yield server


@contextmanager
def listening(process: subprocess.Popen[str], what: str, stop_wait_s: float = 15) -> Iterator[RunningServer]:
    """A started server process, once it prints the line saying where it listens; stopped (SIGTERM) at the end."""
    log: list[str] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        port = None
        while port is None:
            line = process.stdout.readline()
            if not line:
                raise AssertionError(f"{what} exited before listening:\n" + "".join(log))
            log.append(line)
            match = READY_LINE.search(line)
            if match:
                port = int(match.group("port"))
            elif time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start in time:\n" + "".join(log))
        # Keep reading, so a chatty server never blocks on a full pipe.
        threading.Thread(target=lambda: log.extend(process.stdout), daemon=True).start()
        yield RunningServer(process, port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def sample_metadata(**changes):
    """A small, valid VersionMetadata for registry tests that need no real model."""
    from driftline.registry import Feature, TensorSpec, VersionMetadata

    base = dict(
        features=(Feature("a", "Float64"), Feature("b", "Float64")),
        inputs=(TensorSpec("input", "FP32", (-1, 2)),),
        outputs=(TensorSpec("prediction", "FP32", (-1, 1)),),
        task="regression", estimator="linear", parameters={}, metrics={"r2": 0.5},
        data_version="sha256:" + "0" * 64, data_rows=10, code_version="0.1.0",
        created_at="2026-01-01T00:00:00+00:00", source="test",
    )
    return VersionMetadata(**{**base, **changes})


def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 120.0,
               each: Callable[[], None] = lambda: None, pause_s: float = 0.005) -> None:
    """Poll until ``condition()`` holds, running ``each()`` every turn (to fail early, or to nudge).

    The limit is a liveness bound, far above what any machine needs: it turns "never" into a failure naming
    ``what`` instead of a hung test. It says nothing about speed.
    """
    give_up = time.monotonic() + limit_s
    while not condition():
        each()
        if time.monotonic() > give_up:
            raise AssertionError(f"{what} (waited {limit_s:g} s)")
        time.sleep(pause_s)


def hold_the_version(send_slow: Callable[[], object], statistics: Callable[[], object]):  # noqa: ANN201
    """Send a slow request (``send_slow()``: its future) and return it, and the version's ModelStatistics from
    before, once the server says it started running it: a batch's queue time is counted when the batch starts.
    What is sent next while it runs waits in the version's queue (or is refused when that is full)."""
    before = statistics()
    slow = send_slow()

    def still_running() -> None:
        assert not slow.done(), f"the slow request ended before it was seen starting: {slow.exception()}"

    wait_until(lambda: statistics().inference_stats.queue.count != before.inference_stats.queue.count,
               "the slow request never started", 120, still_running)
    assert statistics().execution_count == before.execution_count, "the slow request already finished"
    return slow, before


class Clock:
    """A clock the test moves by hand (``clock.now += 60``), for monitors' time windows."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def table_request(rows, *, model: str = "housing", raw: bool = True, **fields):  # noqa: ANN001, ANN201 - numpy rows
    """tritonclient's own ModelInferRequest for a table (one FP32 ``input``; the housing model unless ``model``
    says otherwise): ``rows`` as raw bytes, or typed contents."""
    from tritonclient.grpc import service_pb2

    message = service_pb2.ModelInferRequest(**{"model_name": model, **fields})  # fields may name another model
    tensor = message.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    if raw:
        message.raw_input_contents.append(rows.tobytes())
    else:
        tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    return message


DOOR_COUNTS = re.compile(r"(\d+) calls batched in C\+\+, (\d+) forwarded to the Python door")


def door_counts(server: RunningServer) -> tuple[int, int]:
    """What a stopped compiled door says it did: (calls batched in C++, calls forwarded to the Python door)."""
    wait_until(lambda: any(DOOR_COUNTS.search(line) for line in list(server.log)), "the door's last line", 30)
    match = next(m for line in list(server.log) if (m := DOOR_COUNTS.search(line)))
    return int(match[1]), int(match[2])
