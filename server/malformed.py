"""A request that is not a valid protobuf message answers INVALID_ARGUMENT, not UNKNOWN.

gRPC parses a unary call's message before any handler runs, and a parse error there reaches the client as
UNKNOWN (with a traceback in the log): the client cannot tell its own malformed bytes from a server fault.
Services are registered through :class:`TolerantServer`, which wraps each method's parser so a message that
does not parse becomes a :class:`Malformed` value, and the method itself so that value is refused with
INVALID_ARGUMENT before the servicer sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError


@dataclass(frozen=True)
class Malformed:
    reason: str


def _parse(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, ValueError, TypeError) as exc:
            return Malformed(str(exc)[:200] or type(exc).__name__)

    return parse


def _refusing(method: Callable[..., Any]) -> Callable[..., Any]:
    async def refuse_or_run(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"the request is not a valid protobuf message for this method ({request.reason})")
        return await method(request, context)

    return refuse_or_run


def tolerant(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with a parser that never raises; unary methods refuse what did not parse."""
    handler = handler._replace(request_deserializer=_parse(handler.request_deserializer))
    if handler.unary_unary is not None:
        handler = handler._replace(unary_unary=_refusing(handler.unary_unary))
    return handler


class _TolerantGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        return tolerant(handler) if handler is not None else None


class TolerantServer:
    """What generated ``add_*Servicer_to_server`` functions register on, passing tolerant handlers to ``server``."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_TolerantGeneric(h) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self._server.add_registered_method_handlers(service, {n: tolerant(h) for n, h in handlers.items()})
