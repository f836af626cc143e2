"""What the benchmark scripts share: servers as subprocesses, peer virtual environments, training,
and ``driftline bench`` runs read back as JSON.

Everything listens on and is driven at 127.0.0.1 only. Every server is started in its own process
(its children, e.g. ``--workers`` or Triton's backend stubs, hang below it) and stopped in
``finally``: SIGTERM to the process and each descendant by pid, SIGKILL to whatever is left after
a grace period.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from driftline.cli.bench import LOCAL_HOST, process_tree

HOST = LOCAL_HOST
BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
ENVS = BENCH_DIR / ".envs"
OUT = BENCH_DIR / "out"
PEERS = BENCH_DIR / "peers"
READY_LINE = re.compile(r"serving .* on (?P<host>[^ ]+):(?P<port>\d+)")
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0


# -- servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 40) -> str:
        return "".join(self.log[-lines:])


def free_port() -> int:
    """A port that was free a moment ago, for servers that cannot take port 0."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def model_ready(address: str, model: str, timeout_s: float) -> bool:
    import grpc
    from driftline.proto import grpc_service_pb2 as pb
    from driftline.proto import grpc_service_pb2_grpc as pb_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=2).ready:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.25)
    return False


def start(name: str, argv: Sequence[str], *, model: str, port: int | None = None, env: dict | None = None,
          cwd: Path | None = None, timeout_s: float = START_TIMEOUT_S) -> Server:
    """Start a server; its port comes from a 'serving ... on HOST:PORT' line, or is ``port``. Then wait
    until it says the model is ready."""
    process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})}, cwd=cwd, errors="replace")
    server = Server(name, process, port or 0)
    deadline = time.monotonic() + timeout_s
    try:
        if port is None:
            while True:
                line = process.stdout.readline()
                if not line:
                    raise RuntimeError(f"{name} exited before listening:\n{server.tail()}")
                server.log.append(line)
                match = READY_LINE.search(line)
                if match:
                    if match.group("host") != HOST:
                        raise RuntimeError(f"{name} listens on {match.group('host')}, expected {HOST}")
                    server.port = int(match.group("port"))
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start in {timeout_s:.0f} s:\n{server.tail()}")
        # Keep draining its output, so a chatty server never blocks on a full pipe.
        threading.Thread(target=lambda: server.log.extend(process.stdout), daemon=True).start()
        if not model_ready(server.address, model, max(deadline - time.monotonic(), 5.0)):
            raise RuntimeError(f"{name}: model {model!r} not ready in {timeout_s:.0f} s:\n{server.tail()}")
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}):\n{server.tail()}")
    except BaseException:
        stop(server)
        raise
    return server


def stop(server: Server) -> None:
    """SIGTERM to the server and each of its descendants (by pid), SIGKILL after the grace period."""
    tree = [pid for pid in process_tree(server.pid)] if server.process.poll() is None else []
    for pid in tree:
        _signal(pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        print(f"warning: {server.name} ignored SIGTERM for {STOP_GRACE_S:.0f} s; killing it", file=sys.stderr)
    deadline = time.monotonic() + 3
    for pid in tree:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextmanager
def running(name: str, argv: Sequence[str], **kwargs) -> Iterator[Server]:
    server = start(name, argv, **kwargs)
    try:
        yield server
    finally:
        stop(server)


def driftline_serve_argv(registry: Path, model: str, *extra: str, python: str = sys.executable) -> list[str]:
    # --device cpu: every peer runs onnxruntime's CPU provider, so driftline must too.
    return [python, "-m", "driftline", "serve", "--registry", str(registry), "--model", model,
            "--host", HOST, "--port", "0", "--device", "cpu", *extra]


# -- the client -------------------------------------------------------------------------------


def bench_argv(server: Server, model: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "driftline", "bench", "--server", server.address, "--model", model,
            "--server-pid", str(server.pid), "--json", *args]


def bench(server: Server, model: str, *args: str, timeout_s: float = 300) -> dict:
    """One ``driftline bench`` run in its own process; its JSON report plus the command."""
    argv = bench_argv(server, model, *args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode not in (0, 1) or not result.stdout.strip().startswith("{"):
        raise RuntimeError(f"driftline bench failed ({result.returncode}):\n{result.stdout[-2000:]}\n"
                           f"{result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    report["command"] = display_command(argv)
    if server.process.poll() is not None:
        raise RuntimeError(f"{server.name} exited ({server.process.returncode}) during the run:\n{server.tail()}")
    return report


def display_command(argv: Sequence[str]) -> str:
    """The command as a person would type it: `driftline ...` rather than the venv's python path."""
    argv = list(argv)
    if argv[:3] == [sys.executable, "-m", "driftline"]:
        argv = ["driftline", *argv[3:]]
    return shlex.join(str(a).replace(str(ROOT) + "/", "") for a in argv)


# -- peers' virtual environments --------------------------------------------------------------


class EnvUnavailable(RuntimeError):
    """A peer that cannot be installed here; the comparison goes on without it."""


def ensure_env(name: str, requirements: Sequence[str], log: Path | None = None) -> Path:
    """benchmarks/.envs/NAME with ``requirements`` installed (once: a stamp file remembers them)."""
    env = ENVS / name
    python = env / "bin" / "python"
    stamp = env / ".requirements"
    wanted = "\n".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    ENVS.mkdir(parents=True, exist_ok=True)
    log = log or ENVS / f"{name}.log"
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", str(env)],
             [str(python), "-m", "pip", "install", "--quiet", *requirements]]
    with open(log, "w") as out:
        for step in steps:
            out.write("$ " + shlex.join(step) + "\n")
            out.flush()
            try:
                result = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=1200)
            except subprocess.TimeoutExpired:
                raise EnvUnavailable(f"{name}: '{shlex.join(step)}' took over 20 minutes (log: {log})") from None
            if result.returncode != 0:
                raise EnvUnavailable(f"{name}: '{shlex.join(step)}' failed ({result.returncode}); see {log}")
    stamp.write_text(wanted)
    return python


# -- models -----------------------------------------------------------------------------------


def train(registry: Path, model: str, *params: str, rows: int = 4000, python: str = sys.executable) -> Path:
    """Publish a freshly trained synthetic housing model with the real CLI (once per registry).

    ``python``: the interpreter whose driftline trains (an older install writes a format every later one reads).
    """
    if (registry / model).is_dir() and any(p.name.isdigit() for p in (registry / model).iterdir()):
        return latest_model_file(registry, model)
    argv = [python, "-m", "driftline", "train", model, "--registry", str(registry), "--synthetic", "housing",
            "--rows", str(rows), "--seed", "0", *(x for p in params for x in ("--param", p))]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(f"training {model} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return latest_model_file(registry, model)


def latest_model_file(registry: Path, model: str) -> Path:
    versions = [int(p.name) for p in (registry / model).iterdir() if p.name.isdigit()]
    if not versions:
        raise RuntimeError(f"no published versions of {model!r} in {registry}")
    return registry / model / str(max(versions)) / "model.onnx"
