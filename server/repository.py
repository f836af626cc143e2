"""Which loaded version answers for each model name.

Each model has a slot holding its loaded versions (each with its own batcher) and the one served
by default. A handler takes the endpoint it needs once, at the start of a request; loading
replaces the slot's reference in one assignment, so a request never sees half of a change and
finishes on the version it took.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import numpy as np
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from driftline.errors import CorruptArtifact, DriftlineError, Incompatible, InvalidInput, NotFound, Unavailable
from driftline.registry import Registry, names
from driftline.server import metrics, providers
from driftline.kernels.drift import update_state
from driftline.registry.columns import SUMMARY_COLUMNS, monitored_rows
from driftline.registry.store import PRODUCTION
from driftline.datatypes import NUMPY_OF
from driftline.server.batcher import Batcher, BatchSettings
from driftline.server.device_memory import LazyDeviceMemory
from driftline.server.model import ServedVersion, load_version
from driftline.server.run import run_batch
from driftline.server.monitor import MonitorThread, VersionMonitor
from driftline.server.validate import RequestValidator
from driftline.server.record import Recorded, ServingRecord
from driftline.server.settings import ServerSettings

log = logging.getLogger("driftline.server")

@dataclass
class InFlight:
    """Requests that took an endpoint and have not answered yet; a swap waits for the old one's to end."""

    count: int = 0


@dataclass(frozen=True)
class Endpoint:
    """A loaded version, the batcher in front of it and the monitor behind it."""

    served: ServedVersion
    batcher: Batcher
    monitor: VersionMonitor | None  # None when the version carries no training profile
    validator: RequestValidator | None  # None when the version carries no schema
    in_flight: InFlight = field(default_factory=InFlight, compare=False)


@dataclass
class ModelSlot:
    name: str
    loaded: dict[int, Endpoint] = field(default_factory=dict)
    default: Endpoint | None = None
    reason: str = ""  # why the model is not serving, when it is not
    history: list[int] = field(default_factory=list)  # versions served, oldest first (for rollback)
    retired: dict[int, Endpoint] = field(default_factory=dict)  # versions swapped out, for their final reports
    note: str = ""  # what the start line says besides the version (a fallback from a damaged newest one)


RETIRED_KEPT = 8  # final drift reports kept per model after their versions were swapped out
DRAIN_TIMEOUT_S = 60.0


class ModelRepository:
    def __init__(self, registry: Registry, settings: ServerSettings, executor: Executor,
                 monitors: MonitorThread | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.executor = executor
        self.monitors = monitors
        self.providers = providers.choose(settings.device)
        # The GPU pool of versions on the device path; made (CuPy imported) by the first version that takes it.
        self.device_memory = (LazyDeviceMemory(settings.device_memory_mib)
                              if settings.device_path != "off" and providers.CUDA in self.providers else None)
        self._slots: dict[str, ModelSlot] = {}
        self._batching: dict[str, BatchSettings] = {}  # set by a load request's config; outlives swaps
        self._fallbacks: dict[str, str] = {}  # model -> why its last "latest" load was not the newest version
        # Called with a model's name after whether (or what) it serves changed: the health service follows these.
        self.on_change: list[Callable[[str], None]] = []
        self.record: ServingRecord | None = None  # what this server was last told to serve (record.py)

    # -- reading ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._slots)

    def find(self, name: str) -> ModelSlot | None:
        return self._slots.get(name)

    def slot(self, name: str) -> ModelSlot:
        slot = self._slots.get(name)
        if slot is None:
            served = ", ".join(self.names()) or "none"
            # Triton's wording first: its clients and examples look for it.
            raise NotFound(f"Request for unknown model: {name!r} is not served here (served models: {served})")
        return slot

    def get(self, name: str, version: str = "") -> Endpoint:
        """The endpoint that answers a request for ``name`` (and ``version``, when not empty)."""
        slot = self._slots.get(name)
        if slot is None:  # a served name is valid by construction: only others need the rules
            names.check_model_name(name)  # '../x' is a malformed request (INVALID_ARGUMENT), not an unknown model
            slot = self.slot(name)
        if not version:
            if slot.default is None:
                raise Unavailable(f"model {name!r} is not available: {slot.reason or 'no version is loaded'}")
            return slot.default
        number = parse_version(version)
        endpoint = slot.loaded.get(number)
        if endpoint is None:
            have = ", ".join(map(str, sorted(slot.loaded))) or "none"
            raise NotFound(
                f"model {name!r} version {number} is not loaded (loaded versions: {have}); "
                "load it with RepositoryModelLoad or leave model_version empty"
            )
        return endpoint

    def endpoint_for_report(self, name: str, version: str = "") -> Endpoint:
        """A serving endpoint, or one swapped out (its session released) whose final reports stay readable."""
        names.check_model_name(name)
        slot = self.slot(name)
        if version and parse_version(version) in slot.retired and parse_version(version) not in slot.loaded:
            return slot.retired[parse_version(version)]
        return self.get(name, version)

    def ready(self) -> bool:
        return bool(self._slots) and all(s.default is not None for s in self._slots.values())

    # -- changing -----------------------------------------------------------------------------
    def load(self, name: str, version: int | str | None = None) -> None:
        """Load ``version`` (latest when None) and make it the default, at start-up (nothing is serving yet)."""
        self.activate(self.load_detached(name, version))

    def load_detached(self, name: str, version: int | str | None = None, count_fallback: bool = True
                      ) -> ServedVersion:
        """Open, verify and warm up a version without serving it yet (slow: run it off the event loop).

        ``"latest"`` is the newest *intact* version: a newest version whose files fail their checksums is
        skipped, loudly (see :meth:`_newest_intact`). None (a load or swap that names no version) is the
        newest or an error, so that the operator who asked hears of the damage; so is a number or alias.
        """
        if version == "latest":
            return self._newest_intact(name, count_fallback)
        return self._load_number(name, self.registry.resolve(name, version))

    def _load_number(self, name: str, number: int) -> ServedVersion:
        served = load_version(self.registry.open(name, number), self.providers, self.settings.intra_op_threads,
                              self.device_memory)
        warm_up(served)
        return served

    def _newest_intact(self, name: str, count: bool) -> ServedVersion:
        newest = self.registry.latest(name)
        damaged: list[CorruptArtifact] = []
        for number in reversed(self.registry.versions(name)):
            try:
                served = self._load_number(name, number)
            except CorruptArtifact as exc:
                # A damaged file must not take the model down while an older, intact version exists.
                log.error("%s version %d is damaged and will not be served: %s", name, number, exc)
                damaged.append(exc)
                if count:
                    metrics.version_fallback(name, number)
                continue
            if damaged:
                log.error("%s: FALLBACK: serving version %d, the newest intact one, instead of version %d (damaged)",
                          name, number, newest)
            self._fallbacks[name] = f"newest intact; version {newest} is damaged" if damaged else ""
            return served
        raise damaged[0]

    def check_compatible(self, served: ServedVersion) -> None:
        """Refuse a version whose input differs from the serving one's: callers' requests would break."""
        slot = self.find(served.name)
        current = slot.default.served if slot and slot.default else None
        if current is None:
            return
        before = (current.metadata.feature_names, _signature(current))
        after = (served.metadata.feature_names, _signature(served))
        if before != after:
            raise Incompatible(
                f"{served.name} version {served.version} takes {after[1]} with features "
                f"{list(after[0])}, but version {current.version} takes {before[1]} with "
                f"{list(before[0])}; clients would break. Force the swap if that is intended"
            )

    def activate(self, served: ServedVersion) -> list[Endpoint]:
        """Serve ``served`` from now on; returns the endpoints it replaced, which may still be finishing."""
        slot = self._slots.setdefault(served.name, ModelSlot(served.name))
        monitor = None
        if served.profile is not None and self.monitors is not None:
            if served.encoder is not None:
                features = len(served.encoder.columns)
            elif served.tabular:
                features = served.width
            else:
                features = len(served.metadata.extra.get(SUMMARY_COLUMNS, ()))
            monitor = VersionMonitor(served.profile, features, served.output_names,
                                     self.settings.drift_for(served.name), explainer=served.explainer,
                                     features=served.column_names, encoder=served.encoder)
        observers = [self.monitors.observer(monitor)] if monitor is not None else []
        batching = self._batching.get(served.name) or self.settings.batching_for(served.name)
        batcher = Batcher(served, batching, self.executor, observers)
        validator = None
        if served.schema is not None:
            validator = RequestValidator(served.schema, self.settings.validation_for(served.name, served.schema),
                                         served.encoder)
        endpoint = Endpoint(served, batcher, monitor, validator)
        replaced = list(slot.loaded.values())
        # One assignment each: a request either took the old endpoint already or will take the new one.
        slot.loaded = {served.version: endpoint}
        slot.default = endpoint
        slot.reason = ""
        slot.note = self._fallbacks.pop(served.name, "")
        slot.history.append(served.version)
        self._retire(slot, replaced)
        self._changed(slot.name)
        return replaced

    async def swap(self, name: str, version: int | str | None, force: bool = False,
                   batching: BatchSettings | None = None, must_batch: bool = False) -> tuple[int | None, int]:
        """Load ``version`` beside the serving one, switch, and return once the old one has finished.

        ``batching`` replaces the model's batching settings from then on (a load request's config);
        ``must_batch``: it asked for batching, which a model without a dynamic first dimension cannot do.
        """
        loop = asyncio.get_running_loop()
        served = await loop.run_in_executor(None, self.load_detached, name, version)
        if must_batch and not served.batching:
            raise InvalidInput(f"config field 'max_batch_size' asks for batching, but {name} version {served.version} "
                               "has no dynamic first dimension to batch along (Triton: max_batch_size 0)")
        if not force:
            self.check_compatible(served)
        if batching is not None:
            self._batching[name] = batching
        slot = self.find(name)
        previous = slot.default.served.version if slot and slot.default else None
        replaced = self.activate(served)
        await drain(replaced)
        log.info("%s: now serving version %d (was %s)", name, served.version, previous)
        return previous, served.version

    def rollback_target(self, name: str) -> int:
        history = self.slot(name).history
        current = history[-1] if history else None
        earlier = [v for v in reversed(history) if v != current]
        if not earlier:
            raise NotFound(f"model {name!r} has served no other version to roll back to")
        return earlier[0]

    def unload(self, name: str) -> list[Endpoint]:
        slot = self.slot(name)
        replaced = list(slot.loaded.values())
        slot.default = None
        slot.loaded = {}
        slot.reason = "unloaded"
        self._retire(slot, replaced)
        self._changed(slot.name)
        return replaced

    def _changed(self, name: str) -> None:
        for listener in self.on_change:
            listener(name)

    def _retire(self, slot: ModelSlot, endpoints: list[Endpoint]) -> None:
        for old in endpoints:
            # Keep only what the reports need: the monitor and counters, not the session or batcher.
            slot.retired[old.served.version] = Endpoint(_released(old.served), None, old.monitor, old.validator)
        while len(slot.retired) > RETIRED_KEPT:
            slot.retired.pop(next(iter(slot.retired)))

    def load_startup(self) -> None:
        """Load what the settings ask for, or what the served-version record says this server serves since.

        A model that fails is kept as unavailable, with the reason; one named by ``--model`` stops the start.
        """
        recorded = self.record.read() if self.record is not None else {}
        asked = dict(parse_model_ref(ref) for ref in self.settings.models) or dict.fromkeys(self.registry.models())
        count = self.settings.worker_index == 0  # every worker loads the same; count fallbacks once per server
        for name in [*asked, *(n for n in recorded if n not in asked)]:
            if name in recorded and self._resume(name, recorded[name]):
                continue
            version = asked.get(name)
            try:
                if version is None and PRODUCTION in self.registry.aliases(name):
                    version = self.registry.aliases(name)[PRODUCTION]
                # Nobody is there to hear of a damaged newest version at start: serve the newest intact one.
                self.activate(self.load_detached(name, "latest" if version is None else version, count_fallback=count))
            except DriftlineError as exc:
                if self.settings.models and name in asked:
                    raise  # explicitly asked for: refuse to start rather than serve without it
                log.error("cannot serve %s: %s", name, exc)
                self._slots[name] = ModelSlot(name, reason=f"failed to load: {exc}")
                self._changed(name)

    def _resume(self, name: str, recorded: Recorded) -> bool:
        """Serve ``name`` as the record says; False when that version cannot be loaded (the flags decide then)."""
        if recorded.version is None:
            self._slots[name] = ModelSlot(name, reason="unloaded", history=list(recorded.history))
            self._changed(name)
            return True
        try:
            self.activate(self._load_number(name, recorded.version))
        except DriftlineError as exc:
            log.error("%s: cannot serve version %d, which this server last served (%s); starting it as the flags say",
                      name, recorded.version, exc)
            return False
        if recorded.history and recorded.history[-1] == recorded.version:
            self.slot(name).history = list(recorded.history)  # so that rollback still knows where to go
        return True

    def remember(self, name: str) -> None:
        """Record what ``name`` serves now as what this server serves: restarted workers and servers resume it."""
        if self.record is None:
            return
        slot = self.find(name)
        self.record.set(name, slot.default.served.version if slot and slot.default else None,
                        slot.history if slot else [])

    async def catch_up(self) -> None:
        """Serve what the record says where this worker differs: a swap landed while it was starting.

        Runs after the worker's peer socket listens and before its public port does: a swap recorded
        earlier is applied here, one recorded later reaches it through its peer socket.
        """
        if self.record is None:
            return
        for name, recorded in self.record.read().items():
            slot = self.find(name)
            serving = slot.default.served.version if slot is not None and slot.default is not None else None
            if recorded.version == serving:
                continue
            log.info("%s: serving version %s as this server was told while this worker started (had %s)",
                     name, recorded.version, serving)
            try:
                if recorded.version is None:
                    await drain(self.unload(name))
                else:
                    await self.swap(name, recorded.version, force=True)
            except DriftlineError as exc:
                log.error("%s: cannot serve version %s as recorded: %s", name, recorded.version, exc)


def parse_version(text: str) -> int:
    return names.parse_version(text)  # the registry's rule: a request can only name what a folder can be


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME:VERSION``."""
    name, _, version = ref.partition(":")
    return names.check_model_name(name), parse_version(version) if version else None


def warm_up(served: ServedVersion) -> None:
    """Run the model and the drift kernel on a few typical rows before any request does.

    onnxruntime allocates on its first runs and numba loads compiled code on its first call; the
    first requests to a freshly swapped version should not pay for either.
    """
    if not served.tabular:
        try:
            outputs = run_batch(served, _typical_inputs(served), 1)
            if served.encoder is not None:  # numba's word kernels, and TreeSHAP, load on first use
                served.encoder.view(_typical_inputs(served))
                if served.explainer is not None:
                    served.explainer.explain(outputs[-1])
        except Exception as exc:  # noqa: BLE001 - a model may refuse made-up values; real requests will tell
            log.warning("%s version %d: warm-up run on made-up inputs failed (%s); serving it cold",
                        served.name, served.version, exc)
        return
    profile = served.profile
    if profile is None:
        rows = np.zeros((1, served.width), dtype=served.input_dtype)
    else:
        features = profile.columns[: served.width]
        rows = np.array([[c.quantiles[i] if c.quantiles else c.mean for c in features]
                         for i in range(len(profile.quantile_levels))], dtype=served.input_dtype)
        rows = np.nan_to_num(rows)
    outputs = run_batch(served, {served.input.name: rows}, len(rows))
    if served.explainer is not None:
        served.explainer.explain(rows[:1])  # one row and a block of rows take different kernels: load both
        served.explainer.explain(rows[:2], n_threads=1)
    if profile is not None:
        columns = monitored_rows(rows, dict(zip(served.output_names, outputs, strict=True)), served.output_names)
        padded = np.full((len(rows), len(profile.names)), np.nan)  # attribution shares: missing here
        padded[:, : columns.shape[1]] = columns
        update_state(profile.empty_state(), padded, profile.layout)


def _typical_inputs(served: ServedVersion) -> dict[str, np.ndarray]:
    """One row of zeros (empty strings for text) per input: enough for onnxruntime's first-run allocations."""
    inputs = {}
    for spec in served.inputs:
        shape = tuple(1 if d == -1 else d for d in spec.shape)
        if spec.datatype == "BYTES":
            inputs[spec.name] = np.full(shape, "0", dtype=object)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=NUMPY_OF[spec.datatype])
    return inputs


def _signature(served: ServedVersion) -> str:
    return ", ".join(f"input {i.name!r} {i.datatype} {list(i.shape)}" for i in served.inputs)


def _released(served: ServedVersion) -> ServedVersion:
    return dataclasses.replace(served, session=None)


async def drain(endpoints: list[Endpoint], timeout: float = DRAIN_TIMEOUT_S) -> None:
    """Wait until replaced endpoints have answered every request they took."""
    deadline = time.monotonic() + timeout
    while any(e.in_flight.count or e.batcher.busy for e in endpoints):
        if time.monotonic() > deadline:
            log.warning("swap: old version still busy after %.0f s; releasing it anyway", timeout)
            return
        await asyncio.sleep(0.001)
