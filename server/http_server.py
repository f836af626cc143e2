"""The HTTP port: a socket this module binds, served by uvicorn inside the server's own event loop.

The HTTP front end must run in the event loop that runs the gRPC server: batchers belong to one
loop, and requests from both doors share their batches. So uvicorn is not started with its own
``run()`` (which makes a loop and takes over SIGINT/SIGTERM); it serves a socket bound here, as a
task of the running loop, and stops when the server stops. With ``--workers N`` every worker binds
the same port with SO_REUSEPORT and the kernel spreads connections across them, as for gRPC; the
parent chooses that port first (:func:`reserve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import TypeVar

import uvicorn

from driftline.server import ports
from driftline.server.settings import ServerSettings

BACKLOG = 2048
T = TypeVar("T")
log = logging.getLogger("driftline.server")


def start(settings: ServerSettings, app: object) -> tuple[HttpServer | None, str]:
    """Serve ``app`` on the settings' HTTP port (if any); returns the server and what the start line says."""
    if settings.http_port is None:
        return None, ""
    sock = optional_port("HTTP", settings.host, settings.http_port, settings.http_optional,
                         lambda: listen(settings.host, settings.http_port, settings.reuse_port))
    if sock is None:
        return None, "; http off (port busy)"
    try:
        server = HttpServer(app, sock, settings)
    except BaseException:
        sock.close()
        raise
    server.start()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    # No " on HOST:PORT" here: scripts find the gRPC port with that pattern.
    return server, f"; http {server.scheme}://{host}:{server.port}"


def optional_port(what: str, host: str, port: int, optional: bool, open_port: Callable[[], T]) -> T | None:
    """``open_port()``, the listener of one of the extra ports (HTTP, metrics). When it is busy: an error, or,
    for the CLI's default port (``optional``), a warning and None: the server then runs without it."""
    try:
        return open_port()
    except OSError as exc:
        if not optional:
            raise ports.PortUnavailable(ports.refusal(what, host, port, exc)) from None
        log.warning("%s off: cannot listen on %s:%d (%s); pass --%s-port to choose another port",
                    what, host, port, exc, what.lower())
        return None


def listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening socket on host:port (0: a free port); raises OSError when the port is taken."""
    # IPPROTO_TCP said out loud: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that
    # say so, and with it on, a keep-alive connection's every answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def reserve(host: str, port: int) -> ports.Claim:
    """For workers: claim a concrete port (0 becomes one now) that each worker then binds with SO_REUSEPORT.

    The claim (``ports.py``) refuses a port anyone listens on, or another driftline server owns, so the
    workers never join another server's port by accident; it holds a bound socket that never listens.
    """
    return ports.claim("HTTP", host, port, share=True)


class HttpServer:
    """uvicorn (httptools, no lifespan, no access log) serving ``app`` on ``sock`` in the running loop."""

    def __init__(self, app: object, sock: socket.socket, settings: ServerSettings) -> None:
        tls = {}
        if settings.tls_cert:
            tls = {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
            if settings.tls_client_ca:
                tls.update(ssl_ca_certs=settings.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        config = uvicorn.Config(
            app, http="httptools", ws="none", lifespan="off", interface="asgi3", loop="none",
            access_log=False, log_config=None, log_level="warning", proxy_headers=False, server_header=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)), **tls,
        )
        config.load()  # a bad certificate fails here, at start, not later in the serving task
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.scheme = "https" if settings.tls_cert else "http"
        self._server = _InLoopServer(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self.sock]))

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to the grace period), close connections."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task


class _InLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the server's own serve() owns SIGINT and SIGTERM, for both front ends


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
