"""Fleet-wide drift: this replica's state into the registry, every live replica's state merged back out.

Behind a load balancer each replica sees part of the traffic. Every ``--fleet-interval`` seconds
(default 10; 0: off) and when it stops, a replica writes, for each version it serves, its drift
window (as its sub-window states), its since-live state, its validation and attribution counts to
``<model>/.fleet/<version>/<replica>.json`` in the registry (registry/fleet.py: layout and the
age-out rule). The writes run on a thread of their own, never on the request path; a failed write
is logged and counted (``driftline_fleet_writes{result="failed"}``) and serving goes on.

The replica id is ``--replica-id``, by default the host name (the pod name on Kubernetes). With
``--workers N`` every worker writes its own file, ``<id>-w<index>``: workers share nothing, so no
worker has to collect the others on a timer, and a worker the parent restarts resumes its own part.

A restarted replica (same id) takes back what it last wrote before it writes again: its window
sub-windows (their ages carried over, so a time window still ends where it did) and its since-live
state. States merge exactly, so rows served before the old state is read are kept too.

Merging (``driftline drift NAME --registry R``, or ``DriftReport`` with ``fleet``): the live
replicas' since-live states add up to what one server fed every row would hold, and so do their
validation and attribution counts; the merged *window* is the union of every replica's own window
(each "last N rows" of its own traffic), so it holds up to N rows per replica. A server answering
with ``fleet`` puts its own state in live and reads everyone else's (its other workers included) as
last written, at most one interval old.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from driftline.errors import CorruptArtifact, NotFound, Unsupported
from driftline.kernels.drift import DriftState, merge, merge_into
from driftline.kernels.drift_stats import Thresholds
from driftline.registry import fleet as stored
from driftline.registry.profile import Profile
from driftline.registry.store import PROFILE_FILE
from driftline.registry.table import table_of
from driftline.registry.table_view import TableEncoder
from driftline.server import metrics
from driftline.server.monitor import AttributionFlags, DriftSettings, MonitorThread, VersionMonitor
from driftline.server.validate import ValidationCounts

log = logging.getLogger("driftline.server")

DEFAULT_INTERVAL_S = 10.0  # --fleet-interval's default (server/settings.py)
FORGET_EVERY_S = 3600.0  # how often a writer looks for long-stale replicas to remove
CALL_TIMEOUT_S = 10.0  # a monitor thread that far behind: this write is skipped, the next one tries again


def replica_of(replica_id: str | None, worker_index: int, workers: int) -> str:
    """This process's replica id (module docstring)."""
    base = replica_id or socket.gethostname().split(".")[0] or "replica"
    return stored.check_replica_id(f"{base}-w{worker_index}" if workers > 1 else base)


# -- one replica's document ------------------------------------------------------------------------
def snapshot(monitor: VersionMonitor) -> dict[str, Any]:
    """The monitor's part of a document. Call it on the monitor thread (MonitorThread.call): the new-category
    and attribution counts are written there without a lock."""
    ring, total = monitor.slots()
    s = monitor.settings
    return {
        "drift": {"window_rows": s.window_rows, "window_seconds": s.window_seconds, "slots": s.slots,
                  "thresholds": dataclasses.asdict(s.thresholds)},
        "columns": {"n_features": monitor.n_features, "output_order": list(monitor.output_order),
                    "features": list(monitor.features)},
        "window": [{"age_s": age, "state": state.to_dict()} for age, state in ring],
        "since_live": total.to_dict(),
        "skipped_rows": monitor.skipped_rows,
        # Counts per value, so merged replicas name a new category exactly when one server would (NewCategories).
        "new_categories": {column: dict(table) for column, table in monitor.new_categories.seen.items()},
        "attribution": monitor.attribution.to_dict(),
    }


def validation_of(validator: Any) -> dict[str, Any]:
    """A validator's counts, copied from another thread while the event loop adds to them."""
    if validator is None:
        return {}
    counts = validator.counts
    nested: dict[str, dict[str, int]] = {}
    for (feature, kind), n in list(counts.counts.items()):  # list(): one copy under the GIL
        nested.setdefault(feature, {})[kind] = n
    return {"requests_rejected": counts.requests_rejected, "rows_rejected": counts.rows_rejected,
            "rows_flagged": counts.rows_flagged, "counts": nested, "examples": list(counts.examples)}


def ring_of(document: dict[str, Any], now: float) -> list[tuple[float, DriftState]]:
    """A document's window sub-windows, their ages counted up to ``now`` (wall clock)."""
    since = max(0.0, now - float(document["written_at"]))
    return [(float(s["age_s"]) + since, DriftState.from_dict(s["state"])) for s in document["window"]]


def window_of(document: dict[str, Any], now: float) -> DriftState:
    """A document's window as one state: its sub-windows merged, those a time window has moved past left out."""
    seconds = document["drift"].get("window_seconds")
    ring = ring_of(document, now)
    kept = [state for age, state in ring if seconds is None or age <= float(seconds)]
    window = DriftState.from_dict(document["since_live"]).copy()
    for field in ("counts", "missing", "n", "mean", "m2"):
        getattr(window, field)[...] = 0
    window.min[...], window.max[...] = float("inf"), float("-inf")
    for state in kept:
        merge_into(window, state)
    return window


# -- writing ------------------------------------------------------------------------------------------
def writer_for(settings: Any, repository: Any, loop: asyncio.AbstractEventLoop) -> FleetWriter | None:
    """This process's writer, or None when fleet writes are off (interval 0) or nothing is monitored."""
    if not settings.fleet_interval_s or repository.monitors is None:
        return None
    replica = replica_of(settings.replica_id, settings.worker_index, settings.workers)
    return FleetWriter(repository, repository.registry.storage, replica, settings.fleet_interval_s,
                       repository.monitors, loop)


async def start_writer(settings: Any, repository: Any) -> FleetWriter | None:
    """This process's writer, started after a first write (which takes back what a previous run wrote)."""
    loop = asyncio.get_running_loop()
    writer = writer_for(settings, repository, loop)
    if writer is not None:
        await loop.run_in_executor(None, writer.tick)
        writer.start()
    return writer


async def stop_writer(writer: FleetWriter | None) -> None:
    if writer is not None:
        await asyncio.get_running_loop().run_in_executor(None, writer.close)


class FleetWriter:
    """Writes this process's documents every ``interval_s`` on a thread of its own (module docstring)."""

    def __init__(self, repository: Any, storage: Any, replica: str, interval_s: float, monitors: MonitorThread,
                 loop: asyncio.AbstractEventLoop, clock: Callable[[], float] = time.time) -> None:
        self.repository = repository
        self.storage = storage
        self.replica = replica
        self.interval_s = interval_s
        self.monitors = monitors
        self.loop = loop
        self.clock = clock
        self.run = uuid.uuid4().hex  # this process's run: tells a restart from another server using the same id
        self._written: dict[tuple[str, int], float] = {}  # when this run last wrote each version's state
        self._marks: dict[tuple[str, int], tuple[int, int, int]] = {}  # ...and its rows then (see _one)
        self._forgotten_at = float("-inf")
        self._warned: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one tick at a time (the thread's, the first and the final one)
        self._thread = threading.Thread(target=self._loop, name="driftline-fleet", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop, then write the final states (after the monitor thread applied every batch)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.tick()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        """Take back earlier states not yet taken back, then write every served version's state."""
        with self._lock:
            now = self.clock()
            for name in list(self.repository.names()):
                slot = self.repository.slot(name)
                serving = list(slot.loaded.items())
                # A version swapped out keeps its final state readable; swapped back in, the new monitor owns it.
                retired = [(v, e) for v, e in list(slot.retired.items()) if v not in slot.loaded]
                for (version, endpoint), was_retired in [*((p, False) for p in serving), *((p, True) for p in retired)]:
                    if endpoint.monitor is None:
                        continue
                    try:
                        self._one(name, endpoint, now, retired=was_retired)
                    except Exception as exc:  # noqa: BLE001 - the fleet view must never take serving down
                        self._failed(name, version, exc)
            if now - self._forgotten_at >= FORGET_EVERY_S:
                self._forgotten_at = now
                self._forget()

    def _one(self, name: str, endpoint: Any, now: float, retired: bool) -> None:
        version, monitor = endpoint.served.version, endpoint.monitor
        if not monitor.resumed and not self._resume(name, version, monitor, endpoint.validator):
            return
        part = self.monitors.call(lambda: snapshot(monitor), CALL_TIMEOUT_S)
        validation = validation_of(endpoint.validator)
        mark = (DriftState.from_dict(part["since_live"]).rows, validation.get("requests_rejected", 0),
                validation.get("rows_flagged", 0))
        if retired and self._marks.get((name, version)) == mark:
            return  # a swapped-out version changes no more: written once after its last rows, then left to age
        self._check_shared_id(name, version)
        document = {"format": stored.FORMAT, "model": name, "version": version, "replica": self.replica,
                    "run": self.run, "written_at": self.clock(), "interval_s": self.interval_s,
                    "stale_after_s": stored.STALE_INTERVALS * self.interval_s, **part, "validation": validation}
        stored.write(self.storage, document)
        self._marks[(name, version)] = mark
        self._written[(name, version)] = document["written_at"]
        metrics.fleet_written(True)

    def _resume(self, name: str, version: int, monitor: VersionMonitor, validator: Any) -> bool:
        """Take back this replica's last document of the version; False when it cannot be read now (then
        nothing is written either: a write would replace what is not yet taken back)."""
        try:
            document = stored.read(self.storage, name, version, self.replica)
        except OSError as exc:
            self._failed(name, version, exc)
            return False
        except CorruptArtifact as exc:
            log.warning("fleet: %s; starting %s version %d's state afresh", exc, name, version)
            document = None
        if document is not None and document.get("run") == self.run:
            document = None  # our own, from this run (a monitor of a version swapped back in): nothing to add
        loop = self.loop

        def adopt() -> None:
            if monitor.resumed:
                return  # a call that timed out earlier ran after all
            if document is not None:
                try:
                    resume(monitor, document, self.clock())
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("fleet: cannot resume %s version %d from %s's last state (%s); starting afresh",
                                name, version, self.replica, exc)
                else:
                    if validator is not None and document.get("validation"):
                        loop.call_soon_threadsafe(add_validation, validator, document["validation"])
                    log.info("fleet: %s version %d resumed %s's window (%d rows) and since-live state (%d rows)",
                             name, version, self.replica, monitor.states()[0].rows, monitor.states()[1].rows)
            monitor.resumed = True

        self.monitors.call(adopt, CALL_TIMEOUT_S)
        return monitor.resumed

    def _check_shared_id(self, name: str, version: int) -> None:
        """Two running servers with one replica id would overwrite each other's state: say so, once."""
        last = self._written.get((name, version))
        if last is None or name in self._warned:
            return
        try:
            document = stored.read(self.storage, name, version, self.replica)
        except (OSError, CorruptArtifact):
            return
        if document is not None and document.get("run") != self.run and float(document["written_at"]) > last:
            self._warned.add(name)
            log.error("fleet: another server also writes as replica %r (%s version %d): their drift states "
                      "overwrite each other; give every server its own --replica-id", self.replica, name, version)

    def _forget(self) -> None:
        now = self.clock()
        for name in list(self.repository.names()):
            try:
                for version in stored.versions(self.storage, name):
                    stored.forget(self.storage, name, version, now, keep=[self.replica])
            except Exception as exc:  # noqa: BLE001 - tidying up is optional
                log.debug("fleet: could not remove stale states of %s: %s", name, exc)

    def _failed(self, name: str, version: int, exc: BaseException) -> None:
        metrics.fleet_written(False)
        key = f"{name}:{version}"
        if key not in self._warned:  # every interval would flood the log: once, then at debug level
            self._warned.add(key)
            log.warning("fleet: cannot write %s version %d's drift state to %s (%s: %s); serving goes on, "
                        "the fleet view lacks this replica until a write succeeds", name, version,
                        self.repository.registry.location, type(exc).__name__, exc)
        else:
            log.debug("fleet: write of %s version %d failed again: %s", name, version, exc)


def resume(monitor: VersionMonitor, document: dict[str, Any], now: float) -> None:
    """Merge a document's monitor state into ``monitor`` (on the monitor thread)."""
    monitor.resume(ring_of(document, now), DriftState.from_dict(document["since_live"]))
    monitor.skipped_rows += int(document.get("skipped_rows", 0))
    _add_categories(monitor, [document])
    flags = document.get("attribution") or {}
    monitor.attribution.sampled_rows += int(flags.get("sampled_rows", 0))
    monitor.attribution.flagged_rows += int(flags.get("flagged_rows", 0))
    for example in flags.get("examples", []):
        monitor.attribution.examples.append(example)


def add_validation(validator: Any, saved: dict[str, Any]) -> None:
    """Add a document's validation counts to a validator's (on the event loop, their one writer)."""
    counts: ValidationCounts = validator.counts
    counts.requests_rejected += int(saved.get("requests_rejected", 0))
    counts.rows_rejected += int(saved.get("rows_rejected", 0))
    counts.rows_flagged += int(saved.get("rows_flagged", 0))
    for feature, kinds in saved.get("counts", {}).items():
        for kind, n in kinds.items():
            counts.counts[(feature, kind)] += int(n)
    examples = list(saved.get("examples", [])) + list(counts.examples)
    counts.examples.clear()
    counts.examples.extend(examples)


def _add_categories(monitor: VersionMonitor, documents: list[dict[str, Any]]) -> None:
    seen = monitor.new_categories.seen
    for document in documents:
        for column, table in (document.get("new_categories") or {}).items():
            into = seen.setdefault(column, {})
            for value, n in table.items():
                into[value] = into.get(value, 0) + int(n)


# -- reading and merging ------------------------------------------------------------------------------
def choose_version(storage: Any, name: str, now: float, max_age: float | None = None) -> int:
    """The newest version any live replica serves (what ``driftline drift --registry`` reports by default)."""
    stale: list[str] = []
    for version in reversed(stored.versions(storage, name)):
        found = stored.read_version(storage, name, version, now, max_age)
        if found.live:
            return version
        stale += [f"{s.replica} (version {version}, {s.age_s:.0f} s ago)" for s in found.stale]
    raise NotFound(f"no live replica has written a drift state of {name!r} to the registry (stale: "
                   f"{', '.join(stale) or 'none'}): is a server serving it with --fleet-interval above 0 and write "
                   f"access to the registry? A state is left out once not rewritten for {stored.STALE_INTERVALS} of "
                   "its writer's intervals; --fleet-max-age SECONDS reads older ones")


@dataclasses.dataclass
class Merged:
    """The live replicas' documents of one version, and what a report of them needs."""

    name: str
    version: int
    documents: list[dict[str, Any]]
    found: stored.FleetRead
    monitor: VersionMonitor  # reports only: the version's profile, the newest replica's settings
    parts: list[tuple[DriftState, DriftState]]  # (window, since live) per document
    max_age: float | None = None

    def states(self) -> tuple[DriftState, DriftState]:
        """The merged (window, since live): the union of the windows, the sum of everything since live."""
        window, total = self.parts[0]
        for other_window, other_total in self.parts[1:]:
            window, total = merge(window, other_window), merge(total, other_total)
        return window, total


def merged(registry: Any, name: str, version: int, own: dict[str, Any] | None = None,
           max_age: float | None = None, now: float | None = None) -> Merged:
    """Every live replica's document of ``name`` ``version``; ``own`` is the asking server's live document,
    put in place of the file its replica id wrote."""
    now = time.time() if now is None else now
    found = stored.read_version(registry.storage, name, version, now, max_age,
                                skip=[own["replica"]] if own is not None else ())
    documents = ([own] if own is not None else []) + found.live
    if not documents:
        stale = ", ".join(f"{s.replica} ({s.age_s:.0f} s ago)" for s in found.stale) or "none"
        raise NotFound(f"no live replica of {name} version {version} in {registry.location} (stale: {stale}); "
                       "--fleet-max-age SECONDS reads older states")
    newest = max(documents, key=lambda d: float(d["written_at"]))
    monitor = report_monitor(registry, name, version, newest)
    _add_categories(monitor, documents)
    monitor.skipped_rows = sum(int(d.get("skipped_rows", 0)) for d in documents)
    parts = [(window_of(d, now), DriftState.from_dict(d["since_live"])) for d in documents]
    return Merged(name, version, documents, found, monitor, parts, max_age)


def fleet_response(registry: Any, name: str, version: int, own: dict[str, Any] | None = None,
                   max_age: float | None = None, now: float | None = None) -> Any:
    """The merged DriftReportResponse of every live replica (see :func:`merged`)."""
    return response_of(merged(registry, name, version, own, max_age, now))


def response_of(fleet: Merged) -> Any:
    from driftline.proto import driftline_pb2 as dpb
    from driftline.server.service import _section

    documents, monitor = fleet.documents, fleet.monitor
    report = monitor.report(fleet.parts)
    newest = max(documents, key=lambda d: float(d["written_at"]))
    differ = sorted(d["replica"] for d in documents if d["drift"] != newest["drift"])
    window = (f"{report.window}, on each of {len(documents)} replicas (the union of their windows)"
              if len(documents) > 1 else report.window)
    summary = {"replicas": [d["replica"] for d in documents], "stale": [s.to_dict() for s in fleet.found.stale],
               "unreadable": fleet.found.unreadable,
               "rule": (f"a state not rewritten for {stored.STALE_INTERVALS} of its writer's intervals is stale"
                        if fleet.max_age is None else f"a state not rewritten for {fleet.max_age:g} s is stale")}
    if differ:
        summary["settings_differ"] = differ  # reported with the newest replica's thresholds and window
    return dpb.DriftReportResponse(
        name=fleet.name, version=str(fleet.version), window=window,
        current=_section(report.current_rows, report.current, monitor),
        since_live=_section(report.since_live_rows, report.since_live, monitor),
        thresholds_json=json.dumps(dataclasses.asdict(monitor.settings.thresholds)),
        validation_json=json.dumps(ValidationCounts.merged([d.get("validation") or {} for d in documents])),
        attribution_flags_json=json.dumps(AttributionFlags.merged([d.get("attribution") or {} for d in documents])),
        fleet_json=json.dumps(summary),
    )


def report_monitor(registry: Any, name: str, version: int, document: dict[str, Any]) -> VersionMonitor:
    """A monitor that only reports: the version's training profile and what the replica's monitor was built
    with, so its statistics are those the server computes (no model is loaded)."""
    stored_version = registry.open(name, version)
    if PROFILE_FILE not in stored_version.checksums:
        raise Unsupported(f"{name} version {version} has no training profile to compare with")
    profile = Profile.from_json(stored_version.read(PROFILE_FILE))
    table = table_of(stored_version.metadata.extra)
    drift, columns = document["drift"], document["columns"]
    settings = DriftSettings(window_rows=drift["window_rows"], window_seconds=drift["window_seconds"],
                             slots=int(drift["slots"]), thresholds=Thresholds(**drift["thresholds"]))
    return VersionMonitor(profile, int(columns["n_features"]), columns["output_order"], settings,
                          features=columns["features"], encoder=TableEncoder(table) if table is not None else None)


async def answer(repository: Any, name: str, endpoint: Any) -> Any:
    """DriftReport with ``fleet``: this process's live state and every other live replica's, merged (the
    registry reads run off the event loop)."""
    settings = repository.settings
    replica = replica_of(settings.replica_id, settings.worker_index, settings.workers)
    interval = settings.fleet_interval_s or DEFAULT_INTERVAL_S

    def build() -> Any:
        own = own_document(replica, name, endpoint, repository.monitors, interval)
        return fleet_response(repository.registry, name, endpoint.served.version, own)

    return await asyncio.get_running_loop().run_in_executor(None, build)


def own_document(writer_replica: str, name: str, endpoint: Any, monitors: MonitorThread,
                 interval_s: float) -> dict[str, Any]:
    """The asking server's live document (DriftReport with ``fleet``), as it would write it now."""
    part = monitors.call(lambda: snapshot(endpoint.monitor), CALL_TIMEOUT_S)
    now = time.time()
    return {"format": stored.FORMAT, "model": name, "version": endpoint.served.version, "replica": writer_replica,
            "written_at": now, "interval_s": interval_s, "stale_after_s": stored.STALE_INTERVALS * interval_s,
            **part, "validation": validation_of(endpoint.validator)}
