"""The one boundary where errors become gRPC status codes.

A status message travels in a trailer (``grpc-message``, percent-encoded), and a client refuses trailers over
its metadata limit (8 KiB soft, 16 KiB hard by default) with a transport error of its own that hides ours. So
every message is cut here to :data:`MAX_MESSAGE_WIRE_BYTES` as encoded, whatever raised it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from driftline.errors import (
    CorruptArtifact,
    DeadlineExpired,
    DriftlineError,
    Incompatible,
    InvalidInput,
    NotFound,
    PublishError,
    Unavailable,
    Unsupported,
)

log = logging.getLogger("driftline.server")
# Who a call is for, as the batcher shares itself between callers: set here, at the boundary, to the gRPC call's
# context, whose peer (one per connection) the batcher reads only for a request that queues (caller_key): most
# run at once and never need it. Requests without one (HTTP, direct callers) share one turn among themselves,
# first come first served, as before.
caller: contextvars.ContextVar[object] = contextvars.ContextVar("driftline_caller", default=None)


def caller_key() -> object:
    """The connection the current request came on (its gRPC peer), or None."""
    context = caller.get()
    return context.peer() if context is not None else None

_CODES: dict[type[DriftlineError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    CorruptArtifact: grpc.StatusCode.DATA_LOSS,
    PublishError: grpc.StatusCode.FAILED_PRECONDITION,
    DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unsupported: grpc.StatusCode.FAILED_PRECONDITION,
    Incompatible: grpc.StatusCode.FAILED_PRECONDITION,
}

INTERNAL_MESSAGE = "internal error in driftline; the server log has the details"
# Half the default soft metadata limit, so that the message fits beside the other trailers.
MAX_MESSAGE_WIRE_BYTES = 4096
_CUT = " ... (message cut: {:,} characters in all)"

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def code_of(error: DriftlineError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in _CODES:
            return _CODES[kind]
    return grpc.StatusCode.INTERNAL


def message_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status and client-facing message (bounded); unexpected errors are logged, not leaked."""
    if isinstance(error, DriftlineError):
        return code_of(error), bounded(str(error))
    if isinstance(error, DecodeError):  # bytes from a client that are not the method's message: the client's error
        return grpc.StatusCode.INVALID_ARGUMENT, bounded(f"the request is not a valid protobuf message: {error}")
    # The message names the error, so that the log's repeat filter (logs.py) tells different ones apart.
    log.error("unexpected error: %s: %s", type(error).__name__, bounded(str(error)), exc_info=error)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def bounded(message: str, limit: int = MAX_MESSAGE_WIRE_BYTES) -> str:
    """``message``, cut so that its percent-encoded UTF-8 (how gRPC sends it) takes at most ``limit`` bytes."""
    if len(message) * 12 <= limit:  # the worst case: a 4-byte character, each byte sent as %XX
        return message
    room = limit - len(_CUT) - 16
    size = 0
    for end, char in enumerate(message):
        size += 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode("utf-8", "surrogatepass"))
        if size > room:
            return message[:end] + _CUT.format(len(message))
    return message


def unary(handler: Handler) -> Handler:
    """Wrap a unary aio handler so that any error aborts the call with its status."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        caller.set(context)  # the connection takes its turns in the batcher (this call's context only)
        try:
            return await handler(self, request, context)
        except Exception as exc:  # noqa: BLE001 - this is the boundary
            code, message = message_of(exc)
        await context.abort(code, message)

    return wrapper  # type: ignore[return-value]


def stream(handler: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Wrap a streaming aio handler so that an error ending the stream ends it with its status (errors about one
    message are the handler's to answer in-band)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        caller.set(context)
        try:
            async for response in handler(self, request_iterator, context):
                yield response
            return
        except Exception as exc:  # noqa: BLE001 - this is the boundary
            code, message = message_of(exc)
        await context.abort(code, message)

    return wrapper
