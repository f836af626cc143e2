"""Who may change what serves: admin calls need the bearer token once the server leaves loopback.

Admin calls are those that change the served versions: Triton's RepositoryModelLoad/Unload and
driftline's Admin service. On a loopback-only server they are open unless a token is configured;
beyond loopback they need ``authorization: Bearer <token>`` and are refused outright when no token
was configured. A refused call changes nothing: it never reaches its handler.

The same rule decides who reads what a stranger should not: a version's training profile
(``VersionInfo``) goes to callers who would be allowed an admin call (:meth:`AdminGuard.admits`).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

ADMIN_METHODS = frozenset({
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
    "/driftline.v1.Admin/Swap",
    "/driftline.v1.Admin/Rollback",
})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


class AdminGuard(grpc.aio.ServerInterceptor):
    def __init__(self, token: str | None, host: str) -> None:
        self._token = token
        self._open = token is None and is_loopback(host)
        self._host = host

    def admits(self, authorization: str) -> bool:
        """Whether a caller presenting this ``authorization`` header is an admin caller."""
        return self.refusal(authorization) is None

    def refusal(self, authorization: str) -> tuple[grpc.StatusCode, str] | None:
        """Why an admin call with this ``authorization`` header is refused, or None: the same check for
        every front end (the HTTP one calls it for load and unload)."""
        return None if self._open else self._refusal({"authorization": authorization})

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if self._open or details.method not in ADMIN_METHODS:
            return await continuation(details)
        refusal = self._refusal(dict(details.invocation_metadata or ()))
        if refusal is None:
            return await continuation(details)
        code, message = refusal

        async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(refuse)

    def _refusal(self, metadata: dict[str, str]) -> tuple[grpc.StatusCode, str] | None:
        if self._token is None:
            return (grpc.StatusCode.PERMISSION_DENIED,
                    f"admin calls are disabled: this server listens on {self._host}, beyond loopback; "
                    "start it with --admin-token (or $DRIFTLINE_ADMIN_TOKEN) to allow them")
        header = metadata.get("authorization", "")
        if not header.startswith("Bearer "):
            return grpc.StatusCode.UNAUTHENTICATED, "admin call without a token: send 'authorization: Bearer <token>'"
        if not bearer_matches(header, self._token):
            return grpc.StatusCode.PERMISSION_DENIED, "admin token refused"
        return None


def bearer_matches(header: str, token: str) -> bool:
    """``header`` is ``Bearer <token>``; compared in constant time, so the answer's timing does not tell a
    guesser how much of a guess was right."""
    if not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").encode(), token.encode())
