"""A real OTLP/gRPC trace endpoint on loopback for the tracing tests: it keeps every span it is sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Spans as plain dicts (name, trace, id, parent, kind, service, attributes, status, links)."""

    endpoint = ""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource in request.resource_spans:
                service = attributes(resource.resource.attributes).get("service.name")
                for scope in resource.scope_spans:
                    self.spans.extend(span_dict(s, service) for s in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of(self, service: str) -> list[dict]:
        with self.lock:
            return [s for s in self.spans if s["service"] == service]

    def wait_for(self, found: Callable[[list[dict]], object], wait_s: float = 60) -> object:
        """found(spans) once it is truthy: spans arrive in the exporter's batches, off the response path."""
        deadline = time.monotonic() + wait_s
        while True:
            with self.lock:
                result = found(list(self.spans))
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.05)


def attributes(pairs) -> dict:  # noqa: ANN001 - OTLP KeyValue messages
    values = {}
    for kv in pairs:
        kind = kv.value.WhichOneof("value")
        values[kv.key] = getattr(kv.value, kind) if kind else None
    return values


def span_dict(span, service: str | None) -> dict:  # noqa: ANN001 - an OTLP Span message
    return {"name": span.name, "trace": span.trace_id.hex(), "id": span.span_id.hex(),
            "parent": span.parent_span_id.hex(), "kind": span.kind, "service": service,
            "attributes": attributes(span.attributes), "status": span.status.code,
            "links": [(link.trace_id.hex(), link.span_id.hex()) for link in span.links]}


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A receiver listening on a free loopback port (``.endpoint``) until the block ends."""
    collector = Receiver()
    server = grpc.server(ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    collector.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield collector
    finally:
        server.stop(0)
