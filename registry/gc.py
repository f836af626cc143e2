"""Removing old versions: ``driftline models gc NAME --keep N``.

Which versions go: the oldest published ones beyond the newest ``keep``, except a version an alias points
to (``production``, ``previous``...) and a version a server's served-version record (server/record.py)
says it serves. Records are read from the registry's ``.serving`` folder (the default state dir of a
server on a local registry), from this machine's default state dir for an object-store registry, and from
any ``state_dirs`` named; a server started with ``--state-dir`` somewhere else cannot be seen.

How a version goes, so that no reader ever sees half of one:

1. :func:`hide_version`: write a ``.gc`` mark into the version's folder, then remove its manifest. From
   then on readers do not list the version (a version is visible only with its manifest).
2. :func:`remove_files`: remove every other file, the mark last, then the folder.

A crash after step 1 leaves an invisible folder holding the mark; the next gc finds it (a numbered folder
with a mark and no manifest) and finishes step 2. A numbered folder without a manifest *and* without a mark
is left alone: on an object store it may be a publish still writing its files.

3. :func:`sweep_blobs`: remove every blob (registry/blobs.py) that no manifest of any model references and
   that was last written or reused more than ``grace_s`` ago (default ``blobs.GRACE_S``, an hour). The age
   keeps a blob that a publish running now has stored or reused but not yet referenced: publishes refresh
   the time of a blob they reuse. A blob still referenced by any version, of this model or another, stays.

A crash after step 2 leaves unreferenced blobs, which the next gc sweeps; a crash in step 3 leaves some of
them. Neither is visible to readers: every published version's blobs are referenced, so none was removed.

The plan and step 1 run under the model's alias lock (the lock ``promote`` takes), so an alias moved
while gc decides is seen.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from driftline.errors import CorruptArtifact, InvalidInput
from driftline.registry.blobs import BLOB_ROOT, GRACE_S, blobs_of
from driftline.registry.names import check_model_name, is_model_name, is_version_folder
from driftline.registry.store import MANIFEST_FILE, Registry

log = logging.getLogger("driftline.registry")

GC_MARK = ".gc"  # in a version folder: gc has started removing it; a folder with it and no manifest is garbage
RECORD_FORMAT = 1  # server/record.py's FORMAT


@dataclass(frozen=True)
class Decision:
    version: int
    remove: bool
    reasons: tuple[str, ...]  # why it goes, or every reason it stays


@dataclass
class Sweep:
    grace_s: float
    removed: dict[str, int] = field(default_factory=dict)  # blob key -> bytes: unreferenced, older than grace_s
    young: dict[str, int] = field(default_factory=dict)  # unreferenced but newer: a publish may be about to use them
    skipped: str = ""  # why nothing was swept (a manifest that cannot be read)


@dataclass
class Plan:
    model: str
    keep: int
    decisions: list[Decision] = field(default_factory=list)  # published versions, oldest first
    leftovers: list[int] = field(default_factory=list)  # hidden by an earlier gc that did not finish: removed
    unfinished: list[int] = field(default_factory=list)  # no manifest, no mark (a publish?): left alone
    records: list[str] = field(default_factory=list)  # the served-version records that were read
    sweep: Sweep | None = None  # what happened (or, dry run, would happen) to unreferenced blobs

    @property
    def removed(self) -> list[int]:
        return [d.version for d in self.decisions if d.remove]

    @property
    def kept(self) -> list[int]:
        return [d.version for d in self.decisions if not d.remove]


def state_dirs_for(registry: Registry, extra: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """Where served-version records of servers on this registry are: its default state dir, then ``extra``."""
    from driftline.server.record import default_state_dir

    return list(dict.fromkeys([default_state_dir(registry.location), *(Path(d) for d in extra)]))


def served_versions(registry: Registry, model: str, state_dirs: Iterable[str | os.PathLike[str]] = ()
                    ) -> tuple[dict[int, list[str]], list[str]]:
    """Versions of ``model`` that a served-version record says a server serves (or was started with):
    version -> the servers; and the record files read."""
    own = _normal(registry.location)
    default = state_dirs_for(registry)[0]
    served: dict[int, list[str]] = {}
    read: list[str] = []
    for folder in state_dirs_for(registry, state_dirs):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                document = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("served-version record %s cannot be read (%s); ignoring it", path, exc)
                continue
            if not isinstance(document, dict) or document.get("format") != RECORD_FORMAT:
                log.warning("served-version record %s has an unknown format; ignoring it", path)
                continue
            inside_registry = folder == default and "://" not in registry.location
            if not inside_registry and _normal(str(document.get("registry", ""))) != own:
                continue  # a shared state dir: this record is of a server on another registry
            read.append(str(path))
            server = str(document.get("server") or path.stem)
            for version in _versions_in(document, model):
                served.setdefault(version, []).append(server)
    return served, read


def _versions_in(document: dict, model: str) -> set[int]:
    found = set()
    entry = (document.get("models") or {}).get(model)
    if isinstance(entry, dict) and entry.get("version") is not None:
        try:
            found.add(int(entry["version"]))
        except (TypeError, ValueError):
            pass
    for spec in document.get("startup") or ():  # --model NAME:VERSION: what a restart without the record serves
        name, _, version = str(spec).partition(":")
        if name == model and version.isascii() and version.isdigit():
            found.add(int(version))
    return found


def _normal(location: str) -> str:
    location = location.removeprefix("file://")
    return location.rstrip("/") if "://" in location else os.path.abspath(location)


def plan(registry: Registry, model: str, keep: int, state_dirs: Iterable[str | os.PathLike[str]] = ()) -> Plan:
    """What gc would do now: no change to the registry."""
    check_model_name(model)
    if keep < 1:
        raise InvalidInput(f"--keep must be at least 1 (the newest version always stays); got {keep}")
    published = registry.versions(model)
    if not published:
        registry.latest(model)  # NotFound, naming the models there are
    result = Plan(model, keep)
    for number in sorted(int(n) for n in registry.storage.children(model) if is_version_folder(n)):
        if number in published:
            continue
        if registry.storage.exists(f"{model}/{number}/{GC_MARK}"):
            result.leftovers.append(number)
        else:
            result.unfinished.append(number)
    by_alias: dict[int, list[str]] = {}
    for alias, version in sorted(registry.aliases(model).items()):
        by_alias.setdefault(version, []).append(alias)
    served, result.records = served_versions(registry, model, state_dirs)
    newest = set(published[-keep:])
    for version in published:
        reasons = []
        if version in newest:
            reasons.append(f"one of the newest {keep}")
        if version in by_alias:
            reasons.append("alias " + ", ".join(by_alias[version]))
        if version in served:
            reasons.append("served by " + ", ".join(sorted(set(served[version]))))
        if reasons:
            result.decisions.append(Decision(version, False, tuple(reasons)))
        else:
            result.decisions.append(Decision(version, True, (f"older than the newest {keep}, no alias, not served",)))
    return result


def hide_version(registry: Registry, model: str, version: int) -> None:
    """Step 1: mark the folder as gc's, then remove the manifest; the version is invisible from here on."""
    prefix = f"{check_model_name(model)}/{version}"
    registry.storage.replace(f"{prefix}/{GC_MARK}", b"removing: a later `driftline models gc` finishes it\n")
    registry.storage.delete(f"{prefix}/{MANIFEST_FILE}")


def remove_files(registry: Registry, model: str, version: int) -> None:
    """Step 2, for a hidden version only: its files, the mark last (so a crash still leaves it findable),
    then the folder."""
    prefix = f"{check_model_name(model)}/{version}"
    if registry.storage.exists(f"{prefix}/{MANIFEST_FILE}"):
        raise InvalidInput(f"{model} version {version} still has its manifest: hide it first (hide_version)")
    for name in sorted(registry.storage.sizes(prefix)):
        if name != GC_MARK:
            registry.storage.delete(f"{prefix}/{name}")
    registry.storage.delete(f"{prefix}/{GC_MARK}")
    registry.storage.remove_folder(prefix)


def referenced_blobs(registry: Registry, leaving: Iterable[tuple[str, int]] = ()) -> set[str]:
    """Blob keys named by a manifest of any model (except the versions in ``leaving``, which gc removes).
    A manifest that cannot be read raises CorruptArtifact: what it references is unknown, so nothing may go."""
    gone = set(leaving)
    found: set[str] = set()
    for model in registry.storage.children(""):
        if not is_model_name(model):
            continue
        for folder in registry.storage.children(model):
            key = f"{model}/{folder}/{MANIFEST_FILE}"
            if not is_version_folder(folder) or (model, int(folder)) in gone or not registry.storage.exists(key):
                continue
            try:
                found.update(blobs_of(registry.storage.read(key)).values())
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                raise CorruptArtifact(f"{key} cannot be read ({exc}): fix or remove that version first") from exc
    return found


def sweep_blobs(registry: Registry, grace_s: float = GRACE_S, dry_run: bool = False,
                leaving: Iterable[tuple[str, int]] = ()) -> Sweep:
    """Step 3: remove blobs no manifest references that are older than ``grace_s`` (see the module docstring)."""
    result = Sweep(grace_s)
    stored = registry.storage.sizes(BLOB_ROOT)
    if not stored:
        return result
    try:
        keep = referenced_blobs(registry, leaving)
    except CorruptArtifact as exc:
        result.skipped = str(exc)
        return result
    now = time.time()
    for name, size in sorted(stored.items()):
        key = f"{BLOB_ROOT}/{name}"
        if key in keep:
            continue
        try:
            old = now - registry.storage.modified(key) >= grace_s
        except FileNotFoundError:
            continue  # another gc took it
        if not old:
            result.young[key] = size
            continue
        result.removed[key] = size
        if not dry_run:
            registry.storage.delete(key)
    return result


def collect(registry: Registry, model: str, keep: int, state_dirs: Iterable[str | os.PathLike[str]] = (),
            dry_run: bool = False, grace_s: float = GRACE_S) -> Plan:
    """Remove what :func:`plan` says goes, the leftovers of an earlier gc, then unreferenced old blobs;
    return the plan."""
    if grace_s < 0:
        raise InvalidInput(f"the blob grace period must be 0 seconds or more; got {grace_s}")
    if dry_run or not registry.versions(check_model_name(model)):
        result = plan(registry, model, keep, state_dirs)  # no versions: NotFound, before a lock file is made
        leaving = [(model, v) for v in [*result.leftovers, *result.removed]]
        result.sweep = sweep_blobs(registry, grace_s, dry_run=True, leaving=leaving)
        return result
    with registry.storage.alias_lock(check_model_name(model)):
        result = plan(registry, model, keep, state_dirs)
        for version in result.removed:
            hide_version(registry, model, version)
    for version in [*result.leftovers, *result.removed]:
        remove_files(registry, model, version)
    result.sweep = sweep_blobs(registry, grace_s)
    return result
