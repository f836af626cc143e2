"""How a worker tells a dead peer from a slow one: the kernel's answer on the peer's unix socket."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc

from driftline.server.peers import PEER_TIMEOUT_S, listening, wait_connected


def test_listening_tells_a_live_socket_from_a_dead_one(tmp_path: Path):
    path = str(tmp_path / "worker-1.sock")
    assert not listening(path)  # no socket yet: not started
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    assert listening(path)  # listening, though it never accepts: busy, not dead
    server.close()
    assert not listening(path)  # its file is left behind, but nobody listens: dead


def test_a_peer_that_dies_while_it_is_being_connected_to_is_given_up_on(tmp_path: Path):
    """A worker seen listening can die before the connection is up (its threads close its sockets a few ms after
    it is gone); gRPC alone would retry the connect for the whole PEER_TIMEOUT_S."""
    path = str(tmp_path / "worker-1.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    async def connect_then_die() -> bool:
        channel = grpc.aio.insecure_channel(f"unix:{path}")
        connecting = asyncio.ensure_future(wait_connected(channel, path))
        await asyncio.sleep(0.5)  # the connect reaches the socket, which never answers HTTP/2
        server.close()
        try:
            return await asyncio.wait_for(connecting, PEER_TIMEOUT_S / 2)  # a liveness bound, not a speed
        finally:
            await channel.close()

    assert asyncio.run(connect_then_die()) is False
