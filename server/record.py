"""The served-version record: what this server was last told to serve, per model, on disk.

A worker that restarts, and a server that restarts, read it, so that every process of one server
serves the same versions and a swap outlives a restart. One file per server (machine, host and
port), because several servers may share a registry and each is told different things::

    <state dir>/<machine>_<host>_<port>.json
    {"format": 1, "server": "127.0.0.1:8001", "registry": "/srv/registry", "startup": ["housing:2"],
     "updated": "2026-01-01T00:00:00+00:00",
     "models": {"housing": {"version": 1, "history": [2, 1]}, "iris": {"version": null, "history": [3]}}}

``version`` null: unloaded. ``startup`` is the ``--model`` list the server was started with: a
server started with a different one starts from its flags (the record is replaced), the same one
resumes from the record. The state dir is ``--state-dir``, by default ``<registry>/.serving`` for a
registry on a local disk (not a model name, so the registry ignores it) and
``$XDG_STATE_HOME/driftline/serving`` for one in an object store.

Writes replace the file atomically (a temporary file, fsync, ``os.replace``) under an flock, so that
two workers recording swaps of two models at once both land and a reader never sees half a file.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driftline.server.settings import ServerSettings

log = logging.getLogger("driftline.server")
FORMAT = 1
HISTORY_KEPT = 8


@dataclass(frozen=True)
class Recorded:
    version: int | None  # None: unloaded
    history: tuple[int, ...] = field(default_factory=tuple)


def default_state_dir(registry: str) -> Path:
    if "://" not in registry or registry.startswith("file://"):
        return Path(registry.removeprefix("file://")) / ".serving"
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "driftline" / "serving"


def record_path(state_dir: str | None, registry: str, host: str, port: int) -> Path:
    folder = Path(state_dir) if state_dir else default_state_dir(registry)
    return folder / f"{socket.gethostname()}_{host.replace(':', '-')}_{port}.json"


def for_server(settings: ServerSettings, port: int) -> ServingRecord:
    """The record of the server these settings describe, listening on ``port`` (a concrete one)."""
    return ServingRecord(record_path(settings.state_dir, settings.registry, settings.host, port), settings.registry,
                         settings.models, f"{settings.host}:{port}")


class ServingRecord:
    def __init__(self, path: Path, registry: str, startup: tuple[str, ...], server: str) -> None:
        self.path = path
        self._registry = _normal(registry)
        self._startup = list(startup)
        self._server = server
        self.writable = True

    def read(self) -> dict[str, Recorded]:
        document = self._document()
        models = {}
        for name, entry in document.get("models", {}).items():
            try:
                version = entry["version"]
                models[name] = Recorded(None if version is None else int(version),
                                        tuple(int(v) for v in entry.get("history", ())))
            except (KeyError, TypeError, ValueError):
                log.warning("served-version record %s: ignoring a malformed entry for %s", self.path, name)
        return models

    def prepare(self, fresh: bool) -> None:
        """At a server's start: keep the record if it was written for this same start, else drop it."""
        document = self._document()
        if not document:
            return
        same = document.get("registry") == self._registry and document.get("startup") == self._startup
        if fresh or not same:
            if not fresh:
                log.warning("served-version record %s was written for another start (registry %s, --model %s); "
                            "starting from the flags", self.path, document.get("registry"), document.get("startup"))
            self.path.unlink(missing_ok=True)
        else:
            log.info("resuming what this server last served, from %s", self.path)

    def set(self, model: str, version: int | None, history: list[int]) -> None:
        """Record that ``model`` serves ``version`` (None: unloaded) from now on."""
        if not self.writable:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked():
                document = self._document() or {}
                models = document.get("models", {})
                models[model] = {"version": version, "history": history[-HISTORY_KEPT:]}
                document.update(format=FORMAT, server=self._server, registry=self._registry, startup=self._startup,
                                updated=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                                models=models)
                temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                with open(temporary, "w") as file:
                    json.dump(document, file, indent=2, sort_keys=True)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, self.path)
        except OSError as exc:
            # A read-only registry must not stop swaps; it only means restarts do not remember them.
            self.writable = False
            log.error("cannot write the served-version record %s (%s): restarted workers and servers will "
                      "serve what they start with, not what was swapped in; pass --state-dir", self.path, exc)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _document(self) -> dict:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("served-version record %s cannot be read (%s); ignoring it", self.path, exc)
            return {}
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            log.error("served-version record %s has an unknown format; ignoring it", self.path)
            return {}
        return document

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path.with_name(f".{self.path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _normal(registry: str) -> str:
    return registry if "://" in registry else os.path.abspath(registry)
