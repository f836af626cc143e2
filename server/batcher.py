"""The dynamic batcher: one per served version, between decoding and onnxruntime.

A request that arrives while nothing waits or runs, for a model predicted to answer it well under the cost of
a hop to a thread, is run at once in its own handler (``run_now``). Others wait in a bounded queue; a batch
leaves when it holds ``max_batch_size`` rows, when the oldest request has waited ``max_queue_delay_us``, or at
once when nothing is executing. The rows of every request in the batch are concatenated, run in one
onnxruntime call (on the loop when short, ``INLINE_BELOW_NS``, else on an executor thread), and the outputs
are split back by row offsets. Batching counts rows, not requests.

Each caller (a gRPC connection: its unary calls and streams alike; see ``status.caller_key``) has a queue of
its own, and callers share the batcher by rows, as fair queuing shares a link by bytes: a request's
tag is where its caller's rows would end if every caller with requests waiting were served at the
same rate (``max(now, the caller's last tag) + rows``), and the smallest tag goes next. A client that
queues a thousand 20,000-row requests delays another's one-row request by at most the batch already
running, not by the thousand; a lone caller is served first come, first served, as before.

Everything here runs on the event loop thread except the onnxruntime call itself, so the queue
needs no lock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.errors import DeadlineExpired, Unavailable
from driftline.server import metrics, telemetry
from driftline.registry.columns import tensor_view
from driftline.registry.table_view import TableView
from driftline.server.front_end_messages import DEADLINE_IN_QUEUE, QUEUE_FULL, SERVER_BUSY, mib
from driftline.server.model import ServedVersion
from driftline.server.run import run_batch
from driftline.server.status import caller_key

log = logging.getLogger("driftline.server")
# A batch predicted to take less than this runs on the event loop: handing it to a thread and back costs
# ~130 us of CPU here, more than a small tree model's call on 64 rows; on a busy machine no core is free to
# run the call beside the loop anyway, so the hop buys only that cost. A 300 us stall of the loop is within the
# batching delay a request may wait anyway (measured in benchmarks/RESULTS.md, "The hot path").
INLINE_BELOW_NS = 300_000


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int = 256  # rows per onnxruntime call; 1 turns batching off
    max_queue_delay_us: int = 500  # longest a request waits for company while a batch is executing
    max_queue_size: int = 1024  # requests waiting; beyond it requests are refused with UNAVAILABLE
    max_concurrent_batches: int = 2  # onnxruntime calls in flight for this version

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {self.max_queue_size}")
        if self.max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be >= 1, got {self.max_concurrent_batches}")


class QueuedBytes:
    """The input bytes of requests queued or executing and not yet answered, across every model of one server
    process, against a bound (``--max-queued-bytes``).

    A request count alone does not bound memory: 1,024 queued requests may hold a few kilobytes or, at 64 MiB
    a message, most of the machine. Over the bound a request is refused at once; a lone request (nothing else
    held) always gets in, its size being bounded by the message size limit already.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_queued_bytes must be >= 1, got {limit}")
        self.limit = limit
        self.held = 0

    def admit(self, size: int) -> None:
        if self.held and self.held + size > self.limit:
            raise Unavailable(SERVER_BUSY.format(held=mib(self.held), size=mib(size), limit=mib(self.limit)))
        self.held += size

    def release(self, size: int) -> None:
        self.held -= size


def input_bytes(inputs: dict[str, np.ndarray]) -> int:
    """What a request's decoded inputs hold in memory (text cells by their length: nbytes counts pointers)."""
    size = 0
    for array in inputs.values():
        size += array.nbytes
        if array.dtype == object:
            size += sum(len(cell) for cell in array.flat)
    return size


@dataclass(eq=False)
class Pending:
    inputs: dict[str, np.ndarray]
    rows: int  # the first dimension every input shares (1 for a model that does not batch)
    future: asyncio.Future[list[np.ndarray]]
    enqueued_ns: int
    deadline: float | None  # time.monotonic() seconds; None: no deadline
    span: Any = None  # the request's span, to link its batch to (tracing on only)
    view: TableView | None = None  # a mixed table's rows as validated, handed on to monitoring
    tag: float = 0.0  # its place in the fair order between callers (the module's docstring)


@dataclass
class Batch:
    """What one onnxruntime call did, handed to observers (monitoring) after the callers are answered."""

    version: ServedVersion
    rows: np.ndarray | None  # what the monitor reads as features: a tabular model's rows, else per-row input summaries;
    # None for a mixed table, whose monitor reads ``views`` (or computes them from ``inputs``)
    outputs: dict[str, np.ndarray]
    requests: int
    trace: Any = None  # the batch span's SpanContext (tracing on, a sampled request in the batch), for the drift update
    inputs: dict[str, np.ndarray] | None = None  # a mixed table's columns, for the values its flags name
    views: list[TableView] | None = None  # each request's validated view of a mixed table (None: not validated)
    device: Any = None  # a tabular batch's arrays on the device (server/device_batch.DeviceArrays), for its monitor

    @property
    def row_count(self) -> int:
        return len(self.rows) if self.rows is not None else len(next(iter(self.outputs.values())))


BatchObserver = Callable[[Batch], None]


@dataclass(eq=False)
class Batcher:
    served: ServedVersion
    settings: BatchSettings
    executor: Executor
    observers: Sequence[BatchObserver] = ()
    _queues: dict[object, deque[Pending]] = field(default_factory=dict)  # per caller, oldest first
    _turns: list[tuple[float, int, object]] = field(default_factory=list)  # heap: (first request's tag, -, caller)
    _virtual: float = 0.0  # the tag of the request taken last: "now" in the fair order
    _order: Any = field(default_factory=itertools.count)  # ties between equal tags go to the earlier
    _waiting: int = 0
    _queued_rows: int = 0
    _running: int = 0
    _timer: asyncio.TimerHandle | None = None
    _dispatch_scheduled: bool = False
    _ns_per_row: float = 0.0  # running estimate of onnxruntime time per row (0: not measured yet)
    metrics: Any = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = metrics.for_version(self.served.name, self.served.version)

    @property
    def waiting(self) -> int:
        """Requests in this batcher's queue."""
        return self._waiting

    @property
    def busy(self) -> bool:
        return self._waiting > 0 or self._running > 0

    def submit(self, inputs: dict[str, np.ndarray], deadline: float | None, rows: int | None = None,
               view: TableView | None = None) -> asyncio.Future[list[np.ndarray]]:
        """Queue one request's inputs (by name; ``rows`` is their shared first dimension, taken from them when
        None); the future resolves to every output of the model, in output order, for this request."""
        if rows is None:
            rows = len(next(iter(inputs.values()))) if self.served.batching else 1
        if self._waiting >= self.settings.max_queue_size:
            raise Unavailable(QUEUE_FULL.format(model=self.served.name, version=self.served.version,
                                                waiting=self._waiting))
        loop = asyncio.get_running_loop()
        pending = Pending(inputs, rows, loop.create_future(), time.perf_counter_ns(), deadline,
                          telemetry.current_span() if telemetry.tracer is not None else None, view)
        key = caller_key()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            pending.tag = self._virtual + rows
            heapq.heappush(self._turns, (pending.tag, next(self._order), key))
        else:
            pending.tag = max(self._virtual, queue[-1].tag) + rows
        queue.append(pending)
        self._waiting += 1
        self._queued_rows += rows
        self.metrics.queued(self._waiting)
        if not self._dispatch_scheduled:
            # Dispatch at the end of this event-loop turn, so that every request decoded in the same turn
            # can share the batch: dispatching inside submit ran almost every request alone.
            self._dispatch_scheduled = True
            loop.call_soon(self._dispatch_soon)
        return pending.future

    def run_now(self, inputs: dict[str, np.ndarray], deadline: float | None, rows: int,
                view: TableView | None = None) -> list[np.ndarray] | None:
        """A lone request's outputs, computed at once on the event loop, or None when it must queue.

        When nothing waits or runs and the model answers these rows in well under the cost of a hop, queueing
        buys nothing (no company comes within the call) and costs the most of all per-request work here: a
        future, a task for the batch and two more turns of the event loop (measured in benchmarks/RESULTS.md,
        "The hot path"). Everything else a batch does (statistics, metrics, monitoring) happens as for a batch
        of one. A traced request takes the queue, which gives its batch a span.
        """
        if self._waiting or self._running or telemetry.tracer is not None:
            return None
        predicted_ns = self._ns_per_row * rows
        if not 0 < predicted_ns < INLINE_BELOW_NS:
            return None
        if deadline is not None and time.monotonic() >= deadline:
            self.served.stats.expired += 1
            raise DeadlineExpired("deadline expired before the request could run; nothing was run")
        served = self.served
        started = time.perf_counter_ns()
        cpu = time.thread_time_ns()
        outputs = run_batch(served, inputs, rows)
        self._learn(time.thread_time_ns() - cpu, rows)
        compute_ns = time.perf_counter_ns() - started
        served.stats.queue.add(0)
        self.metrics.waited(0)
        served.stats.executed(rows, compute_ns)
        self.metrics.executed(rows, 1, compute_ns)
        self._observe(1, [view], inputs, outputs, None)
        return outputs

    async def run_formed(self, inputs: dict[str, np.ndarray], rows: int, waited_ns: Sequence[int],
                         trace: telemetry.BatchTrace | None = None) -> list[np.ndarray]:
        """A batch formed by another queue (the compiled front end's, server/front_end.py), of ``len(waited_ns)``
        requests: run, timed, counted and observed as one of this batcher's own (``trace``: its spans, which the
        caller made and ends)."""
        served = self.served
        for waited in waited_ns:
            served.stats.queue.add(waited)
            self.metrics.waited(waited)
        started = time.perf_counter_ns()
        self._running += 1  # this version's own queue waits for it as for its own batches
        try:
            outputs = await self._run(inputs, rows, trace)
        finally:
            self._running -= 1
            self._dispatch()
        compute_ns = time.perf_counter_ns() - started
        served.stats.executed(rows, compute_ns)
        self.metrics.executed(rows, len(waited_ns), compute_ns)
        self._observe(len(waited_ns), [None] * len(waited_ns), inputs, outputs,
                      trace.context if trace is not None else None)
        return outputs

    def _dispatch_soon(self) -> None:
        self._dispatch_scheduled = False
        self._dispatch()

    # -- forming batches ------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Start every batch that may start now; otherwise arm a timer for the oldest request."""
        while self._queues and self._running < self.settings.max_concurrent_batches:
            full = self._queued_rows >= self.settings.max_batch_size
            idle = self._running == 0
            waited_us = (time.perf_counter_ns() - self._oldest_ns()) / 1000
            if not (full or idle or waited_us >= self.settings.max_queue_delay_us):
                self._arm_timer(self.settings.max_queue_delay_us - waited_us)
                return
            self._start(self._take())

    def _oldest_ns(self) -> int:
        """When the longest-waiting request was queued: each caller's first is its oldest (one per connection)."""
        if len(self._queues) == 1:
            return next(iter(self._queues.values()))[0].enqueued_ns
        return min(queue[0].enqueued_ns for queue in self._queues.values())

    def _arm_timer(self, delay_us: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(max(delay_us, 0) / 1e6, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _take(self) -> list[Pending]:
        """Up to max_batch_size rows of live requests, smallest tag first (oldest first within a caller);
        expired and cancelled ones leave here without costing compute."""
        taken: list[Pending] = []
        rows = 0
        now = time.monotonic()
        queues, turns = self._queues, self._turns
        while turns:
            key = turns[0][2]
            queue = queues[key]
            head = queue[0]
            # A model without a dynamic first dimension takes one request per call. A request that does not fit
            # keeps the smallest tag, so it starts the next batch: delayed by one batch at most, never starved.
            if taken and (rows + head.rows > self.settings.max_batch_size or not self.served.batching):
                break
            queue.popleft()
            self._virtual = head.tag
            if queue:
                heapq.heapreplace(turns, (queue[0].tag, next(self._order), key))
            else:
                heapq.heappop(turns)
                del queues[key]
            self._waiting -= 1
            self._queued_rows -= head.rows
            if head.future.done():  # the caller went away (cancelled)
                continue
            if head.deadline is not None and now >= head.deadline:
                self.served.stats.expired += 1
                head.future.set_exception(
                    DeadlineExpired(DEADLINE_IN_QUEUE.format(waited_ms=f"{_waited_ms(head):.1f}"))
                )
                continue
            taken.append(head)
            rows += head.rows
        self.metrics.queued(self._waiting)
        return taken

    # -- executing ------------------------------------------------------------------------------
    def _start(self, members: list[Pending]) -> None:
        if not members:
            return
        self._running += 1
        task = asyncio.get_running_loop().create_task(self._execute(members))
        task.add_done_callback(self._finished)

    def _finished(self, _task: asyncio.Task[None]) -> None:
        self._running -= 1
        self._dispatch()

    async def _execute(self, members: list[Pending]) -> None:
        served = self.served
        started = time.perf_counter_ns()
        for member in members:
            served.stats.queue.add(started - member.enqueued_ns)
            self.metrics.waited(started - member.enqueued_ns)
        inputs = members[0].inputs if len(members) == 1 else {
            name: np.concatenate([m.inputs[name] for m in members]) for name in members[0].inputs}
        rows = sum(m.rows for m in members)
        trace = self._trace(members, rows, started) if telemetry.tracer is not None else None
        try:
            outputs = await self._run(inputs, rows, trace)
        except Exception as exc:  # noqa: BLE001 - every member must hear about it
            log.exception("%s version %d: batch of %d rows failed", served.name, served.version, rows)
            if trace is not None:
                trace.end(exc)
            for member in members:
                if not member.future.done():
                    member.future.set_exception(exc)
            return
        compute_ns = time.perf_counter_ns() - started
        served.stats.executed(rows, compute_ns)
        self.metrics.executed(rows, len(members), compute_ns)
        if trace is not None:
            trace.end()
        offset = 0
        for member in members:
            end = offset + member.rows
            if not member.future.done():
                member.future.set_result(outputs if len(members) == 1 else [out[offset:end] for out in outputs])
            offset = end
        self._observe(len(members), [m.view for m in members], inputs, outputs,
                      trace.context if trace is not None else None)

    def _observe(self, requests: int, views: list[TableView | None], inputs: dict[str, np.ndarray],
                 outputs: list[np.ndarray], trace: Any) -> None:
        """Hand an executed batch to the observers (monitoring), after its callers are answered."""
        if self.observers:
            batch = self._batch(requests, views, inputs, outputs, trace)
            for observe in self.observers:
                observe(batch)

    def _batch(self, requests: int, views: list[TableView | None], inputs: dict[str, np.ndarray],
               outputs: list[np.ndarray], trace: Any) -> Batch:
        """What monitoring reads of an executed batch (``views``: each request's, for a mixed table)."""
        served = self.served
        by_name = dict(zip(served.run_names, outputs, strict=True))
        if served.tabular:
            return Batch(served, inputs[served.input.name], by_name, requests, trace,
                         device=getattr(outputs, "device", None))  # device path: RanOutputs carry them
        if served.table is not None:
            return Batch(served, None, by_name, requests, trace, inputs,
                         None if any(v is None for v in views) else views)
        features, by_name = tensor_view(inputs, by_name, served.batching)
        return Batch(served, features, by_name, requests, trace)

    def _trace(self, members: list[Pending], rows: int, started_ns: int) -> telemetry.BatchTrace | None:
        """The batch's spans, when a request it serves is sampled (tracing on only)."""
        spans = [(m.span, m.enqueued_ns) for m in members]
        if not telemetry.BatchTrace.wanted(spans):
            return None
        served = self.served
        provider = served.providers[0] if served.providers else ""
        return telemetry.BatchTrace(served.name, served.version, provider, spans, rows, started_ns)

    async def _run(self, inputs: dict[str, np.ndarray], rows: int, trace: telemetry.BatchTrace | None
                   ) -> list[np.ndarray]:
        if trace is None:
            return await self._call(inputs, rows)
        with trace.inference(rows):
            return await self._call(inputs, rows)

    async def _call(self, inputs: dict[str, np.ndarray], rows: int) -> list[np.ndarray]:
        """One onnxruntime call: on the event loop when it is cheaper than the hop to a thread and back."""
        predicted_ns = self._ns_per_row * rows
        if 0 < predicted_ns < INLINE_BELOW_NS:
            started = time.thread_time_ns()
            outputs = run_batch(self.served, inputs, rows)
            self._learn(time.thread_time_ns() - started, rows)
            return outputs
        outputs, took_ns = await asyncio.get_running_loop().run_in_executor(
            self.executor, _timed_run, self.served, inputs, rows)
        self._learn(took_ns, rows)
        return outputs

    def _learn(self, took_ns: int, rows: int) -> None:
        per_row = took_ns / max(rows, 1)
        self._ns_per_row = per_row if self._ns_per_row == 0 else 0.8 * self._ns_per_row + 0.2 * per_row


def _timed_run(served: ServedVersion, inputs: dict[str, np.ndarray], rows: int) -> tuple[list[np.ndarray], int]:
    # The thread's CPU time, not the wall clock: on a busy machine a pool thread waits for the GIL and for a core,
    # and counting that waiting as the model's cost kept every later small batch off the loop, paying the hop.
    started = time.thread_time_ns()
    outputs = run_batch(served, inputs, rows)
    return outputs, time.thread_time_ns() - started


def _waited_ms(pending: Pending) -> float:
    return (time.perf_counter_ns() - pending.enqueued_ns) / 1e6
