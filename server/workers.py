"""``--workers N``: N server processes sharing one port through SO_REUSEPORT.

Python runs one request handler at a time per process, so using every core takes processes. The
kernel spreads incoming *connections* across the processes listening on the port; each worker is
a complete server (models, batchers, statistics) and answers cross-worker calls through its peers
(``peers.py``). This parent process claims the port (``ports.py``: no other server may join it),
then starts, watches, restarts and stops the workers.

A worker that dies is started again after a back-off (0.2 s, doubling to 10 s for a worker that
keeps dying); more than ``worker_restart_limit`` deaths within ``worker_restart_window_s`` and the
parent stops the whole server with exit code 1, so that a supervisor sees a crash loop instead of
a server limping on. A restarted worker serves what the server was last told to serve: it reads
the served-version record (``record.py``) before it opens the port.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import queue
import shutil
import signal
import sys
import tempfile
import time
from collections import deque

from driftline.server import ports, record
from driftline.server.settings import ServerSettings

log = logging.getLogger("driftline.server")
START_TIMEOUT_S = 300
WATCH_S = 0.1
FIRST_RESTART_S = 0.2
LAST_RESTART_S = 10.0
GAVE_UP = 1


def run_workers(settings: ServerSettings, count: int) -> int:
    context = mp.get_context("spawn")  # a fresh interpreter per worker: no inherited threads or sessions
    claim = ports.claim("gRPC", settings.host, settings.port, share=True)  # raises PortUnavailable
    peer_dir = tempfile.mkdtemp(prefix="driftline-peers-")
    served = record.for_server(settings, claim.port)
    served.prepare(fresh=settings.port == 0)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Before any worker starts: a SIGTERM from then on stops the workers gracefully, never orphans them.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ready: mp.Queue = context.Queue()
    worker = dataclasses.replace(settings, port=claim.port, reuse_port=True, peer_dir=peer_dir, workers=count)
    processes = {i: _start(context, worker, i, ready) for i in range(count)}
    code = 0
    try:
        summaries = _wait_ready(processes, ready, count, lambda: stopping)
        if summaries is None:
            return 0 if stopping else 2
        print(f"{summaries[0]} [{count} workers]", flush=True)
        code = _watch(context, worker, processes, ready, lambda: stopping)
        return code
    finally:
        _stop_all(processes, settings.shutdown_grace_s)
        claim.close()
        shutil.rmtree(peer_dir, ignore_errors=True)
        if settings.port == 0 and code == 0:
            served.remove()  # no later server can ask for this random port's past


def _watch(context: mp.context.SpawnContext, worker: ServerSettings, processes: dict[int, mp.Process],
           ready: mp.Queue, stopping) -> int:
    """Restart dead workers, with back-off, until told to stop (0) or until they keep dying (GAVE_UP)."""
    deaths: deque[tuple[float, int]] = deque()  # (when, worker index), within the window
    due: dict[int, float] = {}  # worker index -> when to start it again
    window, limit = worker.worker_restart_window_s, worker.worker_restart_limit
    while not stopping():
        time.sleep(WATCH_S)
        now = time.monotonic()
        _log_restarted(ready)
        for index, process in processes.items():
            if index in due or process.is_alive() or stopping():
                continue
            deaths.append((now, index))
            while deaths and deaths[0][0] < now - window:
                deaths.popleft()
            if len(deaths) > limit:
                log.error("workers died %d times within %.0f s (last: worker %d, exit code %s); giving up: "
                          "stopping the server", len(deaths), window, index, process.exitcode)
                return GAVE_UP
            mine = sum(1 for _, i in deaths if i == index)
            delay = min(LAST_RESTART_S, FIRST_RESTART_S * 2 ** (mine - 1))
            log.error("worker %d (pid %s) exited with %s; starting it again in %.1f s (its connections move to the "
                      "other workers meanwhile; %d of %d restarts allowed within %.0f s used)",
                      index, process.pid, process.exitcode, delay, len(deaths), limit, window)
            due[index] = now + delay
        for index, when in list(due.items()):
            if now >= when and not stopping():
                processes[index] = _start(context, worker, index, ready)
                del due[index]
    return 0


def _log_restarted(ready: mp.Queue) -> None:
    while True:
        try:
            line = ready.get_nowait()
        except queue.Empty:
            return
        log.info("a restarted worker is serving again: %s", line)


def _stop_all(processes: dict[int, mp.Process], grace_s: float) -> None:
    """SIGTERM every worker: each stops accepting, finishes what it took (within the grace) and exits."""
    for process in processes.values():
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    for process in processes.values():
        process.join(timeout=grace_s + 10)
        if process.is_alive():
            log.error("worker pid %d did not stop within %.0f s of the grace period; killing it", process.pid, grace_s)
            process.kill()
            process.join()


def _wait_ready(processes: dict[int, mp.Process], ready: mp.Queue, count: int, stopping) -> list[str] | None:
    """Each worker's start line; None when a worker dies first (it has logged why) or when told to stop."""
    summaries: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(summaries) < count:
        if stopping():
            return None
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
    from driftline.server import event_loop
    from driftline.server.app import serve

    from driftline.errors import DriftlineError

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s worker-{settings.worker_index} "
                        "%(name)s: %(message)s")
    try:
        event_loop.run(serve(settings, announce=ready.put), settings.event_loop)
    except (DriftlineError, OSError) as exc:  # the reason fits one line; a traceback would not help
        print(f"driftline serve: error: worker {settings.worker_index}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
