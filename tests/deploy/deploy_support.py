"""What the deployment tests share: the repository's paths, and the image's entrypoint script run for real."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import RunningServer, listening

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "docker" / "entrypoint.sh"
INSTALL = ROOT / "deploy" / "docker" / "install.sh"
HTTP = re.compile(r"; http http://[^ ;]+:(?P<port>\d+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def entrypoint_env(**variables: str) -> dict[str, str]:
    """The environment a container would give the entrypoint: `driftline` on PATH, and DRIFTLINE_* as told."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **variables}


@contextmanager
def run_entrypoint(*args: str, env: dict[str, str]) -> Iterator[RunningServer]:
    """The image's entrypoint script, started as the container runtime starts it; yields once it listens."""
    # Started outside the checkout, as in the image (WORKDIR /home/driftline): nothing found by the working folder.
    process = subprocess.Popen(["sh", str(ENTRYPOINT), *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=tempfile.gettempdir())
    with listening(process, "the entrypoint's server", stop_wait_s=30) as server:
        yield server
