"""The one boundary where errors become gRPC status codes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

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

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def code_of(error: DriftlineError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in _CODES:
            return _CODES[kind]
    return grpc.StatusCode.INTERNAL


def message_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """Status and client-facing message; unexpected errors are logged, not leaked."""
    if isinstance(error, DriftlineError):
        return code_of(error), str(error)
    log.exception("unexpected error", exc_info=error)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def unary(handler: Handler) -> Handler:
    """Wrap a unary aio handler so that any error aborts the call with its status."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except Exception as exc:  # noqa: BLE001 - this is the boundary
            code, message = message_of(exc)
        await context.abort(code, message)

    return wrapper  # type: ignore[return-value]
