"""The other worker processes of the same server, reached over private unix sockets.

With ``--workers N`` every process owns its own models, batchers and statistics. Calls that read
or change per-model state (statistics, loading, unloading) are answered by whichever worker the
client reached; that worker applies or collects the call across its peers, so the client sees one
server. A call forwarded to a peer carries a marker so the peer answers for itself only. A worker
that is dead or restarting is left out and named (``Answers.missing``), never a failure of the call.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from driftline.errors import Unavailable
from driftline.proto import driftline_pb2_grpc, grpc_service_pb2_grpc

PEER_MARKER = ("x-driftline-peer", "1")
PEER_TIMEOUT_S = 60.0
PEER_PROBE_S = 0.25  # while a peer connects, how often to ask whether it still listens
_MISSING = object()
_STUBS = {
    "inference": grpc_service_pb2_grpc.GRPCInferenceServiceStub,
    "monitoring": driftline_pb2_grpc.MonitoringStub,
    "admin": driftline_pb2_grpc.AdminStub,
}



def socket_path(directory: str, index: int) -> str:
    return str(Path(directory) / f"worker-{index}.sock")


def listening(path: str) -> bool:
    """Whether a worker listens on this unix socket now. The kernel answers at once (refused, or no such file,
    when its worker is dead or not started yet), however busy the worker is: a live worker is never taken for a
    dead one because its machine was slow, which would leave it out of a swap."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except BlockingIOError:
        return True  # a full accept queue: listening, only busy
    except OSError:  # refused, or no such file
        return False
    finally:
        probe.close()
    return True


async def wait_connected(channel: grpc.aio.Channel, path: str) -> bool:
    """Wait for ``channel`` to connect while its worker still listens: a worker that is only slow is waited for
    (up to PEER_TIMEOUT_S); one that died meanwhile (even just after it was seen listening, while its process was
    still closing its sockets) is given up on within PEER_PROBE_S, where gRPC would keep retrying the connect."""
    for _ in range(int(PEER_TIMEOUT_S / PEER_PROBE_S)):
        try:
            await asyncio.wait_for(channel.channel_ready(), PEER_PROBE_S)
            return True
        except TimeoutError:
            if not listening(path):
                return False
    return False


def is_peer_call(context: grpc.aio.ServicerContext) -> bool:
    return any((m.key, m.value) == PEER_MARKER for m in context.invocation_metadata() or ())


@dataclass
class Answers:
    """The live peers' answers, and the workers that could not answer (dead or restarting)."""

    answers: list[Any]
    missing: list[int]


class Peers:
    def __init__(self, directory: str | None, index: int, count: int, admin_token: str | None = None) -> None:
        # Peers pass the same admin checks as anyone: forwarded admin calls carry the token.
        self._metadata = (PEER_MARKER,) + ((("authorization", f"Bearer {admin_token}"),) if admin_token else ())
        self._indexes = [] if directory is None else [i for i in range(count) if i != index]
        self._paths = {i: socket_path(directory, i) for i in self._indexes} if directory else {}
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._connecting: dict[int, asyncio.Lock] = {}
        self._closing: set[asyncio.Future] = set()

    def __bool__(self) -> bool:
        return bool(self._indexes)

    async def call(self, method: str, request: Any, service: str = "inference") -> list[Any]:
        """``method`` of ``service`` on every peer; raises when one cannot answer (see :meth:`gather`)."""
        result = await self.gather(method, request, service)
        if result.missing:
            raise Unavailable(f"worker(s) {', '.join(map(str, result.missing))} of this server are not running")
        return result.answers

    async def gather(self, method: str, request: Any, service: str = "inference") -> Answers:
        """``method`` of ``service`` ("inference", "monitoring" or "admin") on every live peer, concurrently.

        A worker that is dead or still starting is reported missing rather than failing the call: it
        has nothing to contribute to statistics, and it reads the served-version record when it starts,
        so it cannot miss a change either. An error from a live worker is raised as it came.
        """
        replies = await asyncio.gather(*(self._ask(i, method, request, service) for i in self._indexes))
        return Answers([r for r in replies if r is not _MISSING],
                       [i for i, r in zip(self._indexes, replies, strict=True) if r is _MISSING])

    async def _ask(self, index: int, method: str, request: Any, service: str) -> Any:
        channel = self._channels.get(index)
        if channel is None or channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            # A channel to a worker that died sits in gRPC's reconnect backoff (up to minutes) and fails
            # fast meanwhile, even once the worker is back: ask with a fresh channel instead.
            channel = await self._connect(index, channel)
            if channel is None:
                return _MISSING
        try:
            return await getattr(_STUBS[service](channel), method)(request, metadata=self._metadata,
                                                                   timeout=PEER_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            # The worker died during the call (it had not answered: nothing of it took effect that its
            # restart will not redo from the record), or it answered UNAVAILABLE itself and is alive.
            if exc.code() == grpc.StatusCode.UNAVAILABLE and await self._connect(index, channel) is None:
                return _MISSING
            raise

    async def _connect(self, index: int, stale: grpc.aio.Channel | None) -> grpc.aio.Channel | None:
        """A fresh, connected channel to worker ``index``, or None when it does not accept connections."""
        async with self._connecting.setdefault(index, asyncio.Lock()):
            current = self._channels.get(index)
            if current is not None and current is not stale:
                return current  # another call reconnected meanwhile
            path = self._paths[index]
            if not listening(path):
                return None
            channel = grpc.aio.insecure_channel(f"unix:{path}")
            if not await wait_connected(channel, path):
                await channel.close()
                return None
            self._channels[index] = channel
            if stale is not None:
                # Calls still running on the old channel may finish; only then is it closed.
                closing = asyncio.ensure_future(stale.close(PEER_TIMEOUT_S))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            return channel

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels.values()))
