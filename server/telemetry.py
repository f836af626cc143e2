"""Traces: OpenTelemetry spans for each RPC, queue wait, executed batch, inference and drift update.

Configured the standard way, from the environment: ``OTEL_TRACES_EXPORTER`` ("otlp", "console",
or "none", the default here: traces are opt-in), ``OTEL_EXPORTER_OTLP_ENDPOINT``/``_INSECURE``,
``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER`` and ``_ARG``, ``OTEL_BSP_*``; the SDK reads them.

Off means off: ``tracer`` stays None and the request path tests that one global before doing any
tracing work, so no span, context or link object is made per request. The SDK is imported only
when tracing is on.

Span layout (names are what a trace viewer shows)::

    inference.GRPCInferenceService/ModelInfer   SERVER, continues the caller's W3C traceparent
      driftline.infer                           per ModelStreamInfer message (a unary call is its own)
      driftline.validate                        when the version has a schema
      driftline.queue                           enqueued -> its batch started; links to the batch
      driftline.attribution                     when the request asked for attributions
    driftline.batch                             one per onnxruntime call; child of the first sampled
      driftline.inference                       request it served, linked to every request it served
      driftline.drift_update                    on the monitor thread, after the callers have answers
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from driftline import __version__

tracer: Any = None  # an opentelemetry Tracer while tracing is on; None (the fast path) otherwise
_api: Any = None  # the opentelemetry.trace module, once tracing is on (not imported otherwise)
_provider: Any = None
NOSPAN = contextlib.nullcontext()
# With tracing off but JSON logs on, the caller's traceparent still names the request in the logs.
caller_trace: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("caller_trace", default=None)


def exporters_named() -> list[str]:
    names = os.environ.get("OTEL_TRACES_EXPORTER", "none").lower().split(",")
    return [n.strip() for n in names if n.strip() not in ("", "none")]


def setup(service: str = "driftline", worker_index: int | None = None,
          on_drop: Callable[[], None] | None = None) -> bool:
    """Start tracing when the environment asks for it; True when on. Idempotent per process.

    ``on_drop`` is called for each span dropped because the export queue is full.
    """
    global tracer, _api, _provider
    if tracer is not None:
        return True
    names = exporters_named()
    if not names or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({} if worker_index is None else {"driftline.worker": worker_index})
    if resource.attributes.get("service.name", "").startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER(_ARG)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    _api, _provider = trace, provider
    logging.getLogger("opentelemetry.sdk._shared_internal").addFilter(_DropWarnings(on_drop))
    tracer = provider.get_tracer("driftline", __version__)
    return True


def check_environment() -> None:
    """Refuse, before anything starts, an exporter or protocol this server cannot honour."""
    for name in exporters_named():
        if name not in ("otlp", "console"):
            raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none")
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                  os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))
        if name == "otlp" and protocol != "grpc":
            raise ValueError(f"OTLP protocol {protocol!r} is not supported: driftline exports OTLP over gRPC (grpc)")


class _DropWarnings(logging.Filter):
    """The SDK logs one warning per span it drops when the export queue is full: under the load that
    fills it, a flood that costs more than the spans. One line a minute, with the count, and a callback."""

    def __init__(self, on_drop: Callable[[], None] | None, every_s: float = 60.0) -> None:
        super().__init__()
        self.on_drop, self.every_s = on_drop, every_s
        self.dropped, self.last = 0, -every_s

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Queue full"):
            return True
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop()
        now = time.monotonic()
        if now - self.last < self.every_s:
            return False
        record.msg, record.args = ("trace export cannot keep up: %d spans dropped since the last warning "
                                   "(lower OTEL_TRACES_SAMPLER_ARG)", (self.dropped,))
        self.dropped, self.last = 0, now
        return True


def _exporter(name: str) -> Any:
    check_environment()
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers, TLS and timeout from OTEL_EXPORTER_OTLP_*
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported: use otlp, console or none")


def shutdown() -> None:
    """Export what is still buffered (at exit), then turn tracing off."""
    global tracer, _api, _provider
    if _provider is not None:
        _provider.shutdown()
    tracer = _api = _provider = None


# -- spans on the request path (callers check ``tracer is not None`` first, or use span()) ----------
def span(name: str, attributes: dict[str, Any] | None = None) -> contextlib.AbstractContextManager[Any]:
    """A child of the current span, or NOSPAN when tracing is off or this request is not sampled."""
    if tracer is None:
        return NOSPAN
    if not _api.get_current_span().is_recording():
        return NOSPAN  # an unsampled request's children would be dropped anyway: make none
    return tracer.start_as_current_span(name, attributes=attributes)


def current_span() -> Any:
    """The span a request is in (the SERVER span, or a stream message's span), to link its batch to."""
    return _api.get_current_span()


def describe_request(model: str, version: int) -> None:
    current = _api.get_current_span()
    if current.is_recording():
        current.set_attributes(model_attributes(model, version))


def model_attributes(model: str, version: int) -> dict[str, Any]:
    """What a call's SERVER span says of the version that answered it."""
    return {"driftline.model": model, "driftline.model_version": version}


def rpc_attributes(name: str) -> dict[str, str]:
    """A SERVER span's ``rpc.*`` attributes for the method ``name`` ("package.Service/Method")."""
    return {"rpc.system": "grpc", "rpc.service": name.rpartition("/")[0], "rpc.method": name.rpartition("/")[2]}


def end_server_span(span: Any, code: grpc.StatusCode, details: str) -> None:
    """End a call's SERVER span with the status its caller got (either door's)."""
    from opentelemetry.trace import Status, StatusCode

    if span.is_recording():
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details}"))
    span.end()


@contextlib.contextmanager
def stream_message() -> Iterator[None]:
    """One ModelStreamInfer message: its own span, so that batches can link to it."""
    if not _api.get_current_span().is_recording():
        yield
        return
    with tracer.start_as_current_span("driftline.infer"):
        yield


def epoch_ns(perf_ns: int) -> int:
    """A perf_counter_ns() reading as the wall-clock nanoseconds that spans carry."""
    return time.time_ns() - (time.perf_counter_ns() - perf_ns)


class BatchTrace:
    """The spans of one executed batch, made only when at least one request in it is sampled."""

    def __init__(self, model: str, version: int, provider: str, members: Sequence[tuple[Any, int]], rows: int,
                 started_ns: int) -> None:
        trace = _api
        sampled = [(span, enqueued) for span, enqueued in members if span is not None and span.is_recording()]
        self.attributes = {"driftline.model": model, "driftline.model_version": version}
        start = epoch_ns(started_ns)
        # The batch joins the trace of the first sampled request it served (so that trace shows where
        # its time went); every request it served, sampled or not, is a link.
        parent = trace.set_span_in_context(sampled[0][0])
        links = [trace.Link(span.get_span_context()) for span, _ in members if span is not None]
        self.span = tracer.start_span("driftline.batch", context=parent, links=links, start_time=start,
                                      attributes={**self.attributes, "driftline.batch.rows": rows,
                                                  "driftline.batch.requests": len(members)})
        batch_link = [trace.Link(self.span.get_span_context())]
        for span, enqueued in sampled:
            queued = tracer.start_span("driftline.queue", context=trace.set_span_in_context(span),
                                       links=batch_link, start_time=epoch_ns(enqueued), attributes=self.attributes)
            queued.end(end_time=start)
        self.provider = provider

    @staticmethod
    def wanted(members: Sequence[tuple[Any, int]]) -> bool:
        return any(span is not None and span.is_recording() for span, _ in members)

    @contextlib.contextmanager
    def inference(self, rows: int) -> Iterator[None]:
        with _api.use_span(self.span, end_on_exit=False):
            with tracer.start_as_current_span("driftline.inference", attributes={
                    **self.attributes, "driftline.rows": rows, "driftline.execution_provider": self.provider}):
                yield

    def end(self, error: BaseException | None = None) -> None:
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self.span.end()

    @property
    def context(self) -> Any:
        return self.span.get_span_context()


@contextlib.contextmanager
def drift_update(parent: Any, rows: int) -> Iterator[None]:
    """The monitor thread's update of one batch, under that batch's span (``parent``: its SpanContext)."""
    if tracer is None or parent is None:
        yield
        return
    context = _api.set_span_in_context(_api.NonRecordingSpan(parent))
    with tracer.start_as_current_span("driftline.drift_update", context=context, attributes={"driftline.rows": rows}):
        yield


# -- the server span of every RPC -------------------------------------------------------------------
class ServerSpans(grpc.aio.ServerInterceptor):
    """Wraps every handler in a SERVER span that continues the caller's ``traceparent``.

    Installed only when tracing is on, or when JSON logs are on (then it only remembers the caller's
    trace ids for the log lines, making no span); without it a call pays nothing. The wrapped handler
    is made once per method and reused: it reads the metadata from each call's context.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}  # method -> (its handler, that handler wrapped)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        cached = self._wrapped.get(details.method)
        if cached is None or cached[0] is not handler:  # a later interceptor may answer with its own handler
            cached = (handler, _wrap(handler, details.method))
            self._wrapped[details.method] = cached
        return cached[1]


def _wrap(handler: Any, method: str | bytes) -> Any:
    method = method.decode() if isinstance(method, bytes) else method
    enter = _server_span(method) if tracer is not None else _caller_ids
    if handler.unary_unary is not None:
        behavior = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with enter(context):
                return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
    if handler.stream_stream is not None:
        streaming = handler.stream_stream

        async def stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            with enter(context):
                async for response in streaming(requests, context):
                    yield response

        return grpc.stream_stream_rpc_method_handler(stream, handler.request_deserializer,
                                                     handler.response_serializer)
    return handler  # this server has no other kinds of method


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}


def _server_span(method: str) -> Any:
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    name = method.lstrip("/")
    attributes = rpc_attributes(name)

    @contextlib.contextmanager
    def enter(context: grpc.aio.ServicerContext) -> Iterator[None]:
        span = tracer.start_span(name, context=propagate.extract(_metadata(context)), kind=SpanKind.SERVER,
                                 attributes=attributes)
        code = grpc.StatusCode.OK
        try:
            with _api.use_span(span, record_exception=False, set_status_on_exception=False):
                yield
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN  # status.unary turned the error into an abort
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            end_server_span(span, code, context.details() or "")

    return enter


@contextlib.contextmanager
def _caller_ids(context: grpc.aio.ServicerContext) -> Iterator[None]:
    token = caller_trace.set(parse_traceparent(_metadata(context).get("traceparent", "")))
    try:
        yield
    finally:
        caller_trace.reset(token)


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """(trace id, parent span id) of a W3C ``traceparent`` header, or None when it is not one."""
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or set(parts[1]) == {"0"}:
        return None
    return parts[1], parts[2]


def log_ids() -> dict[str, str]:
    """trace_id and span_id of the request the calling code is serving (empty outside a request)."""
    if tracer is not None:
        context = _api.get_current_span().get_span_context()
        if context.is_valid:
            return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}
        return {}
    ids = caller_trace.get()
    return {"trace_id": ids[0], "parent_span_id": ids[1]} if ids else {}


# -- clients (driftline infer) ---------------------------------------------------------------------
@contextlib.contextmanager
def client_span(name: str, force: bool = False) -> Iterator[list[tuple[str, str]]]:
    """gRPC metadata carrying a ``traceparent`` for the calls made inside.

    With OTEL_TRACES_EXPORTER set, a CLIENT span is exported and the server's spans join its trace;
    with ``force`` only, a sampled traceparent with fresh ids is sent (nothing exported here), so the
    server's spans still share one trace id that the caller knows. Otherwise no metadata at all.
    """
    if setup("driftline-client"):
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        try:
            with tracer.start_as_current_span(name, kind=SpanKind.CLIENT):
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                yield list(carrier.items())
        finally:
            shutdown()  # a short-lived command: export before it exits
        return
    if force:
        yield [("traceparent", f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01")]
        return
    yield []
