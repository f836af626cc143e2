"""One owner per port: a server's ports are its own, never shared with another server by accident.

Workers share their server's ports through SO_REUSEPORT, and the kernel lets any process of the
same user join such a port: a second server started on it would silently take half the
connections. So before anything binds, the server claims each port: an exclusive ``flock`` on a
lock file named after host and port (released by the kernel when the owner dies, however it dies),
then a bind *without* SO_REUSEPORT, which fails while anyone at all listens there. The lock closes
the race the bind check alone leaves (two servers checking at the same instant).

Every refusal is a :class:`PortUnavailable` (an OSError) with one line that says which port and why;
``driftline serve`` prints it and exits 2.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import tempfile
from pathlib import Path


class PortUnavailable(OSError):
    """A port this server cannot have; the message is the whole explanation."""


def lock_dir() -> Path:
    # Per user: the kernel refuses SO_REUSEPORT across users anyway, and a shared folder would need
    # world-writable permissions.
    return Path(tempfile.gettempdir()) / f"driftline-ports-{os.getuid()}"


class Claim:
    """A claimed port: the held lock and, for workers, a bound socket that never listens."""

    def __init__(self, port: int, lock_fd: int | None, held: socket.socket | None) -> None:
        self.port = port
        self._lock_fd = lock_fd
        self._held = held

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def claim(what: str, host: str, port: int, share: bool = False) -> Claim:
    """Claim ``host:port`` for ``what`` ("gRPC", "HTTP", ...); 0 becomes a concrete free port.

    ``share``: keep a socket bound with SO_REUSEPORT (never listening) so that this server's
    workers, and only they, can bind the port while it lives, even when all of them restart.
    """
    lock_fd = _lock(what, host, port) if port else None
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no listener
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise PortUnavailable(refusal(what, host, port, exc)) from None
            port = probe.getsockname()[1]
        if lock_fd is None:
            lock_fd = _lock(what, host, port)
        held = None
        if share:
            held = socket.socket(_family(host), socket.SOCK_STREAM)
            try:
                held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                held.bind((host, port))
            except OSError as exc:
                held.close()
                raise PortUnavailable(refusal(what, host, port, exc)) from None
        return Claim(port, lock_fd, held)
    except BaseException:
        if lock_fd is not None:
            os.close(lock_fd)
        raise


def lock_only(what: str, host: str, port: int) -> Claim:
    """Claim a port something else has already bound (a port 0 that gRPC chose itself)."""
    return Claim(port, _lock(what, host, port), None)


def _lock(what: str, host: str, port: int) -> int:
    folder = lock_dir()
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{host}_{port}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise PortUnavailable(f"cannot serve {what} on {host}:{port}: another driftline server "
                              f"(pid {owner}) serves it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def refusal(what: str, host: str, port: int, exc: OSError) -> str:
    reason = {errno.EADDRINUSE: "the port is in use",
              errno.EADDRNOTAVAIL: "not an address of this machine",
              errno.EACCES: "permission denied (ports below 1024 need privileges)"}.get(exc.errno, exc.strerror)
    return f"cannot serve {what} on {host}:{port}: {reason or exc}"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
