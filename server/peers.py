"""The other worker processes of the same server, reached over private unix sockets.

With ``--workers N`` every process owns its own models, batchers and statistics. Calls that read
or change per-model state (statistics, loading, unloading) are answered by whichever worker the
client reached; that worker applies or collects the call across its peers, so the client sees one
server. A call forwarded to a peer carries a marker so the peer answers for itself only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import grpc

from driftline.proto import driftline_pb2_grpc, grpc_service_pb2_grpc

PEER_MARKER = ("x-driftline-peer", "1")
PEER_TIMEOUT_S = 60.0
_STUBS = {
    "inference": grpc_service_pb2_grpc.GRPCInferenceServiceStub,
    "monitoring": driftline_pb2_grpc.MonitoringStub,
    "admin": driftline_pb2_grpc.AdminStub,
}



def socket_path(directory: str, index: int) -> str:
    return str(Path(directory) / f"worker-{index}.sock")


def is_peer_call(context: grpc.aio.ServicerContext) -> bool:
    return any((m.key, m.value) == PEER_MARKER for m in context.invocation_metadata() or ())


class Peers:
    def __init__(self, directory: str | None, index: int, count: int, admin_token: str | None = None) -> None:
        # Peers pass the same admin checks as anyone: forwarded admin calls carry the token.
        self._metadata = (PEER_MARKER,) + ((("authorization", f"Bearer {admin_token}"),) if admin_token else ())
        self._addresses = [] if directory is None else [
            f"unix:{socket_path(directory, i)}" for i in range(count) if i != index
        ]
        self._channels: list[grpc.aio.Channel] = []

    def __bool__(self) -> bool:
        return bool(self._addresses)

    async def call(self, method: str, request: Any, service: str = "inference") -> list[Any]:
        """``method`` of ``service`` ("inference", "monitoring" or "admin") on every peer, concurrently."""
        if not self._channels:
            self._channels = [grpc.aio.insecure_channel(a) for a in self._addresses]
        stub_class = _STUBS[service]
        calls: list[Awaitable[Any]] = [
            getattr(stub_class(channel), method)(request, metadata=self._metadata, timeout=PEER_TIMEOUT_S)
            for channel in self._channels
        ]
        return list(await asyncio.gather(*calls))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))


