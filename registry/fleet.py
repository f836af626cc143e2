"""Fleet-wide drift in the registry: every serving replica's mergeable state, one JSON file each.

Layout (hidden from the registry's listing, which skips names starting with '.')::

    <model>/.fleet/<version>/<replica>.json

A replica (one ``driftline serve`` process; a pod on Kubernetes) rewrites its own file every
``--fleet-interval`` seconds and when it stops, with one whole-file write (``Storage.replace``: a
reader sees the old or the new document, never half). It holds the replica's drift window as
sub-window states, its since-live state, its validation and attribution counts, all mergeable
(server/fleet.py writes and merges them).

The age-out rule
----------------
A file says when it was written (``written_at``, the writer's clock, Unix seconds) and after how
long it counts as stale (``stale_after_s``: three of its writer's intervals, so one or two missed
writes do not drop a replica). A reader leaves out of the merge every file with
``now - written_at > stale_after_s`` (or ``> max_age`` when the reader names one, e.g.
``driftline drift --fleet-max-age``) and names it in the report as stale, with its age. A
replica that stopped cleanly wrote a last state and is left out the same way once that ages.
Writers remove other replicas' files of the same version that have been stale for more than
``FORGET_AFTER_S`` (a day): a replica gone that long will not resume. Clocks are compared
across machines, so they should be NTP-synchronised (as Kubernetes nodes are); a skew is
absorbed up to the three intervals.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from driftline.errors import CorruptArtifact, InvalidInput
from driftline.registry.names import check_model_name, is_version_folder

log = logging.getLogger("driftline.registry")

FLEET = ".fleet"
FORMAT = 1
STALE_INTERVALS = 3  # a file not rewritten for this many of its writer's intervals is stale
FORGET_AFTER_S = 24 * 3600.0  # ...and removed by another writer once stale this much longer
_REPLICA = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")


def check_replica_id(replica: str) -> str:
    """A replica id becomes a file name: letters, digits, '.', '_', '-' (a Kubernetes pod name fits)."""
    if not _REPLICA.fullmatch(replica):
        raise InvalidInput(f"replica id {replica!r} is not allowed: use letters, digits, '.', '_' or '-' "
                           "(at most 253), starting with a letter or digit (the pod name on Kubernetes)")
    return replica


def folder(model: str, version: int) -> str:
    return f"{check_model_name(model)}/{FLEET}/{int(version)}"


def key(model: str, version: int, replica: str) -> str:
    return f"{folder(model, version)}/{check_replica_id(replica)}.json"


def write(storage: Any, document: dict[str, Any]) -> None:
    """One replica's document, as one atomic write of its file (raises OSError as the storage does)."""
    body = json.dumps(document, allow_nan=False, separators=(",", ":")).encode()
    storage.replace(key(document["model"], document["version"], document["replica"]), body)


def read(storage: Any, model: str, version: int, replica: str) -> dict[str, Any] | None:
    """One replica's last document, or None when it never wrote one."""
    path = key(model, version, replica)
    if not storage.exists(path):
        return None
    return _parse(storage.read(path), path)


def _parse(data: bytes, path: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise CorruptArtifact(f"fleet state {path} is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CorruptArtifact(f"fleet state {path} has format {document.get('format') if isinstance(document, dict) else None!r}; "
                              f"this reader knows {FORMAT}")
    for name in ("replica", "written_at", "stale_after_s"):
        if name not in document:
            raise CorruptArtifact(f"fleet state {path} has no {name!r}")
    return document


@dataclass(frozen=True)
class Stale:
    replica: str
    age_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"replica": self.replica, "age_s": round(self.age_s, 1)}


@dataclass
class FleetRead:
    """The documents of one version: the live ones merged, the stale and unreadable ones named."""

    live: list[dict[str, Any]] = field(default_factory=list)
    stale: list[Stale] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # "replica: why"

    @property
    def replicas(self) -> list[str]:
        return [d["replica"] for d in self.live]


def is_stale(document: dict[str, Any], now: float, max_age: float | None = None) -> bool:
    """The age-out rule (module docstring): not rewritten within its own stale_after_s, or ``max_age``."""
    limit = float(document["stale_after_s"]) if max_age is None else max_age
    return now - float(document["written_at"]) > limit


def read_version(storage: Any, model: str, version: int, now: float, max_age: float | None = None,
                 skip: Iterable[str] = ()) -> FleetRead:
    """Every replica's document of ``model`` ``version``, sorted by replica id, split by the age-out rule.
    ``skip``: replica ids left out altogether (a server puts its own live state in their place)."""
    result, skipped = FleetRead(), set(skip)
    base = folder(model, version)
    for name in sorted(storage.files(base)):
        replica = name.removesuffix(".json")
        if not name.endswith(".json") or name.startswith(".") or replica in skipped:
            continue  # a writer's temporary file, or not ours
        path = f"{base}/{name}"
        try:
            document = _parse(storage.read(path), path)
        except FileNotFoundError:
            continue  # removed as we listed
        except (OSError, CorruptArtifact) as exc:
            result.unreadable.append(f"{replica}: {exc}")
            continue
        if is_stale(document, now, max_age):
            result.stale.append(Stale(replica, now - float(document["written_at"])))
        else:
            result.live.append(document)
    return result


def versions(storage: Any, model: str) -> list[int]:
    """Versions of ``model`` any replica wrote a state for (live or stale), oldest first."""
    return sorted(int(n) for n in storage.children(f"{check_model_name(model)}/{FLEET}") if is_version_folder(n))


def forget(storage: Any, model: str, version: int, now: float, keep: Iterable[str] = ()) -> list[str]:
    """Remove the files of replicas stale for more than FORGET_AFTER_S beyond their own rule; returns them."""
    removed, kept = [], set(keep)
    base = folder(model, version)
    for name in storage.files(base):
        replica = name.removesuffix(".json")
        if not name.endswith(".json") or name.startswith(".") or replica in kept:
            continue
        path = f"{base}/{name}"
        try:
            document = _parse(storage.read(path), path)
        except (OSError, CorruptArtifact):
            continue  # not ours to judge: a reader names it as unreadable
        if is_stale(document, now, float(document["stale_after_s"]) + FORGET_AFTER_S):
            storage.delete(path)
            removed.append(replica)
            log.info("fleet: removed %s's state of %s version %d (not rewritten for %.0f s)", replica, model, version,
                     now - float(document["written_at"]))
    return removed
