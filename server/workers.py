"""``--workers N``: N server processes sharing one port through SO_REUSEPORT.

Python runs one request handler at a time per process, so using every core takes processes. The
kernel spreads incoming *connections* across the processes listening on the port; each worker is
a complete server (models, batchers, statistics) and answers cross-worker calls through its peers
(``peers.py``). This parent process only starts, watches and stops the workers.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import queue
import signal
import socket
import tempfile
import sys
import time

from driftline.server.settings import ServerSettings

log = logging.getLogger("driftline.server")
START_TIMEOUT_S = 300


def run_workers(settings: ServerSettings, count: int) -> int:
    context = mp.get_context("spawn")  # a fresh interpreter per worker: no inherited threads or sessions
    reserve, port = _reserve_port(settings.host, settings.port)
    peer_dir = tempfile.mkdtemp(prefix="driftline-peers-")
    ready: mp.Queue = context.Queue()
    worker = dataclasses.replace(settings, port=port, reuse_port=True, peer_dir=peer_dir, workers=count)
    processes = {i: _start(context, worker, i, ready) for i in range(count)}
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        summaries = _wait_ready(processes, ready, count)
        if summaries is None:
            return 2
        print(f"{summaries[0]} [{count} workers]", flush=True)
        while not stopping:
            time.sleep(0.2)
            for index, process in list(processes.items()):
                if not process.is_alive() and not stopping:
                    log.error("worker %d exited with %s; starting it again", index, process.exitcode)
                    processes[index] = _start(context, worker, index, ready)
    finally:
        for process in processes.values():
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for process in processes.values():
            process.join(timeout=settings.shutdown_grace_s + 10)
            if process.is_alive():
                process.kill()
        reserve.close()
    return 0


def _wait_ready(processes: dict[int, mp.Process], ready: mp.Queue, count: int) -> list[str] | None:
    """Each worker's start line; None when a worker dies first (it has logged why)."""
    summaries: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(summaries) < count:
        try:
            summaries.append(ready.get(timeout=0.2))
        except queue.Empty:
            dead = [i for i, p in processes.items() if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                log.error("worker %s did not start; stopping", dead or "(timeout)")
                return None
    return summaries


def _start(context: mp.context.SpawnContext, settings: ServerSettings, index: int, ready: mp.Queue) -> mp.Process:
    process = context.Process(target=_worker_main, args=(dataclasses.replace(settings, worker_index=index), ready),
                              name=f"driftline-worker-{index}", daemon=False)
    process.start()
    return process


def _worker_main(settings: ServerSettings, ready: mp.Queue) -> None:
    import asyncio

    from driftline.server.app import serve

    from driftline.errors import DriftlineError

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s worker-{settings.worker_index} "
                        "%(name)s: %(message)s")
    try:
        asyncio.run(serve(settings, announce=ready.put))
    except DriftlineError as exc:
        print(f"driftline serve: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) so that port 0 becomes one concrete port all workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock, sock.getsockname()[1]
