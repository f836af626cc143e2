"""Which gRPC front end owns the public port (``--front-end``), and the compiled one's Python side.

``python``: the grpc.aio server serves the port, as always. ``compiled``: the C++ door built from
``server/compiled/`` serves it. It decodes a tabular version's ModelInfer requests (and ModelStreamInfer
messages, one by one, answered in order on their stream), checks them against the
version's signature, queues and batches them by rows and delay, and hands this module one batch at a time (one
GIL acquisition per batch); here the batch goes through the version's own batcher (``Batcher.run_formed``:
onnxruntime, statistics, metrics, drift monitoring) and the answers go back to C++, which encodes one response
per request. It answers the cheap reads (ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata)
from what ``publish`` last told it. Every other call, and every request the door does not take (other model kinds, parameters, errors
in the request), is forwarded byte for byte to the grpc.aio server listening on a private unix socket, so
the port answers the whole protocol and errors read the same through either door. ``auto`` (the default) is
``compiled`` where the extension is built and ``python`` elsewhere (README, "Serving").
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from driftline.datatypes import NUMPY_OF
from driftline.errors import DriftlineError, Unavailable, Unsupported
from driftline.server import front_end_messages, status, telemetry
from driftline.server.pipeline import RequestPath
from driftline.server.repository import ModelRepository
from driftline.server.service import model_metadata, server_metadata
from driftline.server.settings import ServerSettings

log = logging.getLogger("driftline.server")
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def why_not_compiled() -> str | None:
    """Why the compiled door cannot serve here (None: it can): only a missing extension stops it."""
    try:
        from driftline.server.compiled import _door  # noqa: F401
    except ImportError as exc:
        return (f"the compiled gRPC front end is not built ({exc}); build it with `make setup` on a machine with "
                "the gRPC C++ libraries (README, Serving)")
    return None


def choose(settings: ServerSettings) -> str:
    """``compiled`` or ``python``: what serves the gRPC port (raises when ``compiled`` was asked and cannot be)."""
    if settings.front_end == "python":
        return "python"
    reason = why_not_compiled()
    if settings.front_end == "compiled":
        if reason is not None:
            raise Unsupported(f"--front-end compiled: {reason}")
        return "compiled"
    return "compiled" if reason is None else "python"  # auto: the whole suite passes through either door


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


class SharedBudget:
    """``--max-queued-bytes`` as one budget for both doors: the Python door's queued requests (forwarded calls,
    streams, HTTP) are counted in the compiled door's own count of held bytes, against the same bound, as one
    QueuedBytes (server/batcher.py) counts them when the Python door serves alone."""

    def __init__(self, door) -> None:  # noqa: ANN001 - the extension's Door
        self.door, self.limit = door, door.max_queued_bytes

    def admit(self, size: int) -> None:
        held = self.door.admit(size)
        if held >= 0:
            raise Unavailable(front_end_messages.SERVER_BUSY.format(held=front_end_messages.mib(held),
                                                                    size=front_end_messages.mib(size),
                                                                    limit=front_end_messages.mib(self.limit)))

    def release(self, size: int) -> None:
        self.door.release(size)


class CompiledDoor:
    def __init__(self, settings: ServerSettings, repository: ModelRepository, private: Private,
                 loop: asyncio.AbstractEventLoop, path: RequestPath | None = None) -> None:
        from driftline.server.compiled import _door

        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.repository, self.loop, self.private = repository, loop, private
        # The same PEM files as the Python door's ssl_server_credentials (app._bind); a client CA means mutual TLS.
        pem = {name: Path(file).read_bytes() if file else b"" for name, file in
               (("tls_cert", settings.tls_cert), ("tls_key", settings.tls_key),
                ("tls_client_ca", settings.tls_client_ca))}
        self.tracing = telemetry.tracer is not None  # decided at start, as the Python door's interceptor is
        self.door = _door.Door(f"{host}:{settings.port}", private.address, settings.max_message_bytes,
                               settings.max_queued_bytes, settings.reuse_port, front_end_messages.table(),
                               self._on_batch, traceparents=self.tracing, **pem)
        self.port = self.door.port
        self.door.stream_window = settings.stream_window
        # The cheap reads are answered in C++ only while nothing traces them: a traced server's spans are the
        # Python door's (its interceptor makes one per call).
        self.reads_here = not self.tracing
        if self.reads_here:
            self.door.set_server_metadata(server_metadata().SerializeToString())
        if path is not None:
            path.queued = SharedBudget(self.door)
        self.tasks: set[asyncio.Task] = set()
        for name in repository.names():
            self.publish(name)
        repository.on_change.append(self.publish)
        self.ticker = loop.create_task(self._every_quarter_second())

    async def _every_quarter_second(self) -> None:
        """What the C++ queue counts reaches the version's figures every 0.25 s, as metrics are handed to
        Prometheus (asking Python per request would undo the point): the queue-depth gauge counts the requests
        waiting there too, and the requests it refused are failures in ModelStatistics and the metrics."""
        while True:
            await asyncio.sleep(0.25)
            for name, waiting in self.door.waiting().items():
                slot = self.repository.find(name)
                if slot is not None and slot.default is not None:
                    batcher = slot.default.batcher
                    batcher.metrics.queued(batcher.waiting + waiting)
            self._count_refused()

    def _count_refused(self) -> None:
        """Requests the C++ queue refused (full, server busy, deadline expired or cancelled in the queue), counted
        as the Python door counts its batcher's refusals: a failure of the version, by status."""
        for model, version, code, count, ns, expired in self.door.refused():
            try:
                endpoint = self.repository.get(model, version)
            except DriftlineError:
                continue  # unloaded meanwhile: its figures went with it
            stats = endpoint.served.stats
            stats.fail.add(ns, count)
            stats.expired += expired
            endpoint.batcher.metrics.refused(CODE_NAMES.get(code, "UNKNOWN"), count, ns)

    def publish(self, name: str) -> None:
        """Tell the door what the model's default version takes (or that it must forward the model's requests)."""
        slot = self.repository.find(name)
        endpoint = slot.default if slot is not None else None
        if self.reads_here:
            self._publish_reads(name, endpoint is not None)
        if endpoint is None or not takes(endpoint):
            self.door.drop_model(name)
            return
        served, batching = endpoint.served, endpoint.batcher.settings
        self.door.set_model(name, str(served.version), served.input.name, served.width,
                            [(o.name, o.datatype, NUMPY_OF[o.datatype].itemsize) for o in served.outputs],
                            (batching.max_batch_size, batching.max_queue_delay_us, batching.max_queue_size,
                             batching.max_concurrent_batches))

    def _publish_reads(self, name: str, serving: bool) -> None:
        """The reads the door answers itself for this model (ModelReady, ModelMetadata of its default version), and
        ServerReady, as the Python door would answer them now: they change only when on_change says so."""
        if serving:
            self.door.set_reads(name, str(self.repository.slot(name).default.served.version),
                                model_metadata(self.repository, name).SerializeToString())
        else:
            self.door.drop_reads(name)
        self.door.set_ready(self.repository.ready())

    def _on_batch(self, batch: int, model: str, version: str, rows: np.ndarray, counts: list[int],
                  waited_ns: list[int], traceparents: list[str] | None) -> None:
        # On the door's thread, holding the GIL once for the whole batch: the work itself is the event loop's,
        # where every per-version structure lives (batcher, statistics, monitors).
        handed = time.perf_counter_ns() if traceparents is not None else 0
        self.loop.call_soon_threadsafe(self._start, batch, model, version, rows, counts, waited_ns, traceparents,
                                       handed)

    def _start(self, *args: object) -> None:
        task = self.loop.create_task(self._run(*args))  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, batch: int, model: str, version: str, rows: np.ndarray, counts: list[int],
                   waited_ns: list[int], traceparents: list[str] | None, handed: int) -> None:
        try:
            endpoint = self.repository.get(model, version)
        except DriftlineError:
            self.door.reroute(batch)  # swapped or unloaded meanwhile: the Python door answers each request
            return
        if not takes(endpoint) or endpoint.served.width != rows.shape[1]:
            self.door.reroute(batch)
            return
        endpoint.in_flight.count += len(counts)  # a swap waits for these as for the Python door's requests
        try:
            await self._answer(batch, endpoint, rows, counts, waited_ns, traceparents, handed)
        finally:
            endpoint.in_flight.count -= len(counts)

    async def _answer(self, batch: int, endpoint, rows: np.ndarray, counts: list[int],  # noqa: ANN001 - an Endpoint
                      waited_ns: list[int], traceparents: list[str] | None, handed: int) -> None:
        served, started, trace = endpoint.served, time.perf_counter_ns(), None
        try:
            flagged = None
            if endpoint.validator is not None:
                accepted, flagged = endpoint.validator.check_batch(rows)
                if not accepted:  # a refused row: the Python door names it (and counts it), request by request
                    self.door.reroute(batch)
                    return
            if traceparents is not None:  # made once the batch is known to be answered here, not rerouted
                from driftline.server.front_end_trace import DoorTrace

                validated = (started, time.perf_counter_ns()) if endpoint.validator is not None else None
                trace = DoorTrace(served, traceparents, [handed - waited for waited in waited_ns], len(rows),
                                  validated)
            try:
                outputs = await endpoint.batcher.run_formed({served.input.name: rows}, len(rows), waited_ns,
                                                            trace and trace.batch)
            except Exception as exc:
                log.exception("%s version %d: batch of %d rows failed", served.name, served.version, len(rows))
                if trace is not None:
                    trace.ran(exc)
                raise
            if trace is not None:
                trace.ran()
            arrays = [np.ascontiguousarray(a.reshape(-1, 1) if a.ndim == 1 else a)
                      for a in outputs[:len(served.outputs)]]
            self.door.complete(batch, str(served.version), list(served.output_names),
                               [o.datatype for o in served.outputs], arrays,
                               [] if flagged is None else [int(i) for i in flagged])
        except Exception as exc:  # noqa: BLE001 - every request of the batch hears about it
            code, message = status.message_of(exc)
            took = time.perf_counter_ns() - started
            for waited in waited_ns:  # counted as the Python door counts a request its batch failed
                served.stats.failed(waited + took)
                endpoint.batcher.metrics.failed(exc, waited + took)
            self.door.fail(batch, code.value[0], message)
            if trace is not None:
                trace.end(code, message)
            return
        if trace is not None:
            trace.end()
        took = time.perf_counter_ns() - started
        for rows_of, waited in zip(counts, waited_ns, strict=True):
            served.stats.succeeded(rows_of, waited + took)
            endpoint.batcher.metrics.succeeded(rows_of, waited + took)

    async def stop(self, grace_s: float) -> None:
        """Stop taking calls; calls taken are answered within the grace (the batches still run meanwhile)."""
        await self.loop.run_in_executor(None, self.door.shutdown, grace_s)
        self.ticker.cancel()
        self._count_refused()  # the last ones, before the figures are flushed for the last time
        batched, forwarded = self.door.counts()
        # Stream messages count one by one, as calls do.
        log.info("compiled gRPC front end: %d calls batched in C++, %d forwarded to the Python door, %d reads "
                 "answered in C++", batched, forwarded, self.door.answered())
        if self.publish in self.repository.on_change:
            self.repository.on_change.remove(self.publish)
        self.private.remove()
