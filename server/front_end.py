"""Which gRPC front end owns the public port (``--front-end``), and the compiled one's Python side.

``python``: the grpc.aio server serves the port, as always. ``compiled``: the C++ door built from
``server/compiled/`` serves it. It decodes a tabular version's ModelInfer requests, checks them against the
version's signature, queues and batches them by rows and delay, and hands this module one batch at a time (one
GIL acquisition per batch); here the batch goes through the version's own batcher (``Batcher.run_formed``:
onnxruntime, statistics, metrics, drift monitoring) and the answers go back to C++, which encodes one response
per request. Every other call, and every request the door does not take (other model kinds, parameters, errors
in the request), is forwarded byte for byte to the grpc.aio server listening on a private unix socket, so
the port answers the whole protocol and errors read the same through either door. ``auto`` (the default) is
``python`` for now (``AUTO_PICKS_COMPILED`` says why; README, "Serving").
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftline.datatypes import NUMPY_OF
from driftline.errors import DriftlineError, Unsupported
from driftline.server import front_end_messages, status
from driftline.server.repository import ModelRepository
from driftline.server.settings import ServerSettings

log = logging.getLogger("driftline.server")
# What ``auto`` picks when the extension is built. Python for now, though the door passes the protocol tests run
# through it (Makefile DOOR_TESTS): the calls it batches get no trace span and are not in ModelStatistics when
# its queue refuses them, streams are forwarded (slower than the Python door's own), TLS is not served;
# documented behaviour a default must keep.
AUTO_PICKS_COMPILED = False


def why_not_compiled(settings: ServerSettings) -> str | None:
    """Why the compiled door cannot serve with these settings (None: it can)."""
    try:
        from driftline.server.compiled import _door  # noqa: F401
    except ImportError as exc:
        return (f"the compiled gRPC front end is not built ({exc}); build it with `make setup` on a machine with "
                "the gRPC C++ libraries (README, Serving)")
    if settings.tls_cert:
        return "the compiled gRPC front end serves plaintext only so far; serve TLS with --front-end python"
    return None


def choose(settings: ServerSettings) -> str:
    """``compiled`` or ``python``: what serves the gRPC port (raises when ``compiled`` was asked and cannot be)."""
    if settings.front_end == "python":
        return "python"
    reason = why_not_compiled(settings)
    if settings.front_end == "compiled":
        if reason is not None:
            raise Unsupported(f"--front-end compiled: {reason}")
        return "compiled"
    return "compiled" if AUTO_PICKS_COMPILED and reason is None else "python"


def takes(endpoint) -> bool:  # noqa: ANN001 - a repository Endpoint
    """Whether the door may decode this version's requests itself: a tabular version, one FP32 input,
    numeric outputs (anything else is forwarded, and answered by the Python door)."""
    served = endpoint.served
    return (served.tabular and served.table is None and served.batching and served.input.datatype == "FP32"
            and all(o.datatype in NUMPY_OF for o in served.outputs))


@dataclass
class Private:
    """The grpc.aio server's private socket, behind the door."""

    folder: Path

    @classmethod
    def make(cls) -> Private:
        return cls(Path(tempfile.mkdtemp(prefix="driftline-door-")))

    @property
    def address(self) -> str:
        return f"unix:{self.folder / 'python.sock'}"

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class CompiledDoor:
    def __init__(self, settings: ServerSettings, repository: ModelRepository, private: Private,
                 loop: asyncio.AbstractEventLoop) -> None:
        from driftline.server.compiled import _door

        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.repository, self.loop, self.private = repository, loop, private
        self.door = _door.Door(f"{host}:{settings.port}", private.address, settings.max_message_bytes,
                               settings.max_queued_bytes, settings.reuse_port, front_end_messages.table(),
                               self._on_batch)
        self.port = self.door.port
        self.tasks: set[asyncio.Task] = set()
        for name in repository.names():
            self.publish(name)
        repository.on_change.append(self.publish)
        self.depth = loop.create_task(self._report_depth())

    async def _report_depth(self) -> None:
        """The queue-depth gauge of each default version counts the requests waiting in the C++ queue too (read
        every 0.25 s, as metrics are handed to Prometheus: asking Python per request would undo the point)."""
        while True:
            await asyncio.sleep(0.25)
            for name, waiting in self.door.waiting().items():
                slot = self.repository.find(name)
                if slot is not None and slot.default is not None:
                    batcher = slot.default.batcher
                    batcher.metrics.queued(batcher.waiting + waiting)

    def publish(self, name: str) -> None:
        """Tell the door what the model's default version takes (or that it must forward the model's requests)."""
        slot = self.repository.find(name)
        endpoint = slot.default if slot is not None else None
        if endpoint is None or not takes(endpoint):
            self.door.drop_model(name)
            return
        served, batching = endpoint.served, endpoint.batcher.settings
        self.door.set_model(name, str(served.version), served.input.name, served.width,
                            [(o.name, o.datatype, NUMPY_OF[o.datatype].itemsize) for o in served.outputs],
                            (batching.max_batch_size, batching.max_queue_delay_us, batching.max_queue_size,
                             batching.max_concurrent_batches))

    def _on_batch(self, batch: int, model: str, version: str, rows: np.ndarray, counts: list[int],
                  waited_ns: list[int]) -> None:
        # On the door's thread, holding the GIL once for the whole batch: the work itself is the event loop's,
        # where every per-version structure lives (batcher, statistics, monitors).
        self.loop.call_soon_threadsafe(self._start, batch, model, version, rows, counts, waited_ns)

    def _start(self, *args: object) -> None:
        task = self.loop.create_task(self._run(*args))  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, batch: int, model: str, version: str, rows: np.ndarray, counts: list[int],
                   waited_ns: list[int]) -> None:
        started = time.perf_counter_ns()
        try:
            endpoint = self.repository.get(model, version)
        except DriftlineError:
            self.door.reroute(batch)  # swapped or unloaded meanwhile: the Python door answers each request
            return
        served = endpoint.served
        if not takes(endpoint) or served.width != rows.shape[1]:
            self.door.reroute(batch)
            return
        endpoint.in_flight.count += len(counts)  # a swap waits for these as for the Python door's requests
        try:
            flagged = None
            if endpoint.validator is not None:
                try:
                    flagged = endpoint.validator.check(rows)
                except DriftlineError:  # a refused row: the Python door names it, request by request
                    self.door.reroute(batch)
                    return
            inputs = {served.input.name: rows}
            outputs = await endpoint.batcher.run_formed(inputs, len(rows), waited_ns)
            arrays = [np.ascontiguousarray(a.reshape(-1, 1) if a.ndim == 1 else a)
                      for a in outputs[:len(served.outputs)]]
            self.door.complete(batch, str(served.version), list(served.output_names),
                               [o.datatype for o in served.outputs], arrays,
                               [] if flagged is None else [int(i) for i in flagged])
        except Exception as exc:  # noqa: BLE001 - every request of the batch hears about it
            code, message = status.message_of(exc)
            for _ in counts:
                served.stats.failed(0)
            self.door.fail(batch, code.value[0], message)
            return
        finally:
            endpoint.in_flight.count -= len(counts)
        took = time.perf_counter_ns() - started
        for rows_of, waited in zip(counts, waited_ns, strict=True):
            served.stats.succeeded(rows_of, waited + took)
            endpoint.batcher.metrics.succeeded(rows_of, waited + took)

    async def stop(self, grace_s: float) -> None:
        """Stop taking calls; calls taken are answered within the grace (the batches still run meanwhile)."""
        await self.loop.run_in_executor(None, self.door.shutdown, grace_s)
        self.depth.cancel()
        batched, forwarded = self.door.counts()
        log.info("compiled gRPC front end: %d calls batched in C++, %d forwarded to the Python door", batched,
                 forwarded)
        if self.publish in self.repository.on_change:
            self.repository.on_change.remove(self.publish)
        self.private.remove()
