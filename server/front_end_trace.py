"""Spans for the calls the compiled gRPC front end batches, as the Python door makes them (server/telemetry.py).

The Python door opens a SERVER span per call in its interceptor, continuing the caller's ``traceparent``. A call
the compiled door batches never meets that interceptor: the door keeps each request's ``traceparent`` (only
while tracing is on) and hands them over with the batch, and this module makes, per request, the same SERVER
span (same name, ``rpc.*`` and ``driftline.model*`` attributes, status code; started when the door took the
request), its ``driftline.queue`` span, and the batch's ``driftline.batch``/``driftline.inference`` spans
(:class:`~driftline.server.telemetry.BatchTrace`, linked to every request it served). Validation runs once per
batch here: each sampled request's ``driftline.validate`` span is that one check (same start and end), and the
batch's span starts with it, so a request's queue span ends where its batch's validation begins.

Imported only while tracing is on: with tracing off the door keeps no traceparent and nothing here runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc
from opentelemetry import propagate
from opentelemetry import trace as api
from opentelemetry.trace import SpanKind

from driftline.server import telemetry
from driftline.server.model import ServedVersion
from driftline.server.telemetry import BatchTrace, end_server_span, epoch_ns, model_attributes, rpc_attributes

METHOD = "inference.GRPCInferenceService/ModelInfer"  # what the Python door's interceptor names the span
ATTRIBUTES = rpc_attributes(METHOD)


class DoorTrace:
    """One batch's spans: a SERVER span per request, and the batch's own when a request in it is sampled."""

    def __init__(self, served: ServedVersion, traceparents: Sequence[str], enqueued_ns: Sequence[int], rows: int,
                 validated_ns: tuple[int, int] | None) -> None:
        """``enqueued_ns``: when the door took each request, and ``validated_ns`` the batch's validation (start,
        end), as perf_counter_ns() readings; the batch's spans start when validation did (or now)."""
        tracer = telemetry.tracer
        self.spans = []
        for traceparent, enqueued in zip(traceparents, enqueued_ns, strict=True):
            span = tracer.start_span(METHOD, context=propagate.extract({"traceparent": traceparent} if traceparent
                                                                         else {}),
                                     kind=SpanKind.SERVER, attributes=ATTRIBUTES, start_time=epoch_ns(enqueued))
            if span.is_recording():
                span.set_attributes(model_attributes(served.name, served.version))
            self.spans.append(span)
        members = list(zip(self.spans, enqueued_ns, strict=True))
        self.batch: BatchTrace | None = None
        if BatchTrace.wanted(members):
            provider = served.providers[0] if served.providers else ""
            started = validated_ns[0] if validated_ns is not None else time.perf_counter_ns()
            self.batch = BatchTrace(served.name, served.version, provider, members, rows, started)
            if validated_ns is not None:
                for span in self.spans:
                    if span.is_recording():
                        check = tracer.start_span("driftline.validate", context=api.set_span_in_context(span),
                                                  start_time=epoch_ns(validated_ns[0]))
                        check.end(end_time=epoch_ns(validated_ns[1]))

    def ran(self, error: BaseException | None = None) -> None:
        """The batch's onnxruntime call is over (its span ends, with the error if any)."""
        if self.batch is not None:
            self.batch.end(error)
            self.batch = None

    def end(self, code: grpc.StatusCode = grpc.StatusCode.OK, message: str = "") -> None:
        """Every request's span ends with the status its caller got."""
        self.ran()
        for span in self.spans:
            end_server_span(span, code, message)
        self.spans = []
