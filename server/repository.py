"""Which loaded version answers for each model name.

Each model has a slot holding its loaded versions (each with its own batcher) and the one served
by default. A handler takes the endpoint it needs once, at the start of a request; loading
replaces the slot's reference in one assignment, so a request never sees half of a change and
finishes on the version it took.
"""

from __future__ import annotations

import logging

import numpy as np
from concurrent.futures import Executor
from dataclasses import dataclass, field

from driftline.errors import DriftlineError, InvalidInput, NotFound, Unavailable
from driftline.registry import Registry
from driftline.server import providers
from driftline.kernels.drift import update_state
from driftline.registry.profile import Profile
from driftline.server.batcher import Batcher
from driftline.server.model import ServedVersion, load_version
from driftline.server.monitor import MonitorThread, VersionMonitor
from driftline.server.settings import ServerSettings

log = logging.getLogger("driftline.server")

@dataclass(frozen=True)
class Endpoint:
    """A loaded version, the batcher in front of it and the monitor behind it."""

    served: ServedVersion
    batcher: Batcher
    monitor: VersionMonitor | None  # None when the version carries no training profile


@dataclass
class ModelSlot:
    name: str
    loaded: dict[int, Endpoint] = field(default_factory=dict)
    default: Endpoint | None = None
    reason: str = ""  # why the model is not serving, when it is not


class ModelRepository:
    def __init__(self, registry: Registry, settings: ServerSettings, executor: Executor,
                 monitors: MonitorThread | None = None) -> None:
        self.registry = registry
        self.settings = settings
        self.executor = executor
        self.monitors = monitors
        self.providers = providers.choose(settings.device)
        self._slots: dict[str, ModelSlot] = {}

    # -- reading ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._slots)

    def find(self, name: str) -> ModelSlot | None:
        return self._slots.get(name)

    def slot(self, name: str) -> ModelSlot:
        slot = self._slots.get(name)
        if slot is None:
            served = ", ".join(self.names()) or "none"
            raise NotFound(f"model {name!r} is not served here (served models: {served})")
        return slot

    def get(self, name: str, version: str = "") -> Endpoint:
        """The endpoint that answers a request for ``name`` (and ``version``, when not empty)."""
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

    def ready(self) -> bool:
        return bool(self._slots) and all(s.default is not None for s in self._slots.values())

    # -- changing -----------------------------------------------------------------------------
    def load(self, name: str, version: int | None = None) -> Endpoint:
        """Load ``version`` (latest when None) and make it the default."""
        return self.activate(self.load_detached(name, version))

    def load_detached(self, name: str, version: int | None = None) -> ServedVersion:
        """Open and verify a version without serving it yet (slow: run it off the event loop)."""
        stored = self.registry.open(name, version)
        served = load_version(stored, self.providers, self.settings.intra_op_threads)
        if served.profile is not None:
            warm_up(served.profile)
        return served

    def activate(self, served: ServedVersion) -> Endpoint:
        """Make a loaded version the default for its name; earlier versions stay loaded for explicit requests."""
        slot = self._slots.setdefault(served.name, ModelSlot(served.name))
        endpoint = slot.loaded.get(served.version)
        if endpoint is None or endpoint.served is not served:
            monitor = None
            if served.profile is not None and self.monitors is not None:
                monitor = VersionMonitor(served.profile, served.width, served.output_names,
                                         self.settings.drift_for(served.name))
            observers = [self.monitors.observer(monitor)] if monitor is not None else []
            batcher = Batcher(served, self.settings.batching_for(served.name), self.executor, observers)
            endpoint = Endpoint(served, batcher, monitor)
        slot.loaded = {**slot.loaded, served.version: endpoint}
        slot.default = endpoint
        slot.reason = ""
        return endpoint

    def unload(self, name: str) -> None:
        slot = self.slot(name)
        slot.default = None
        slot.loaded = {}
        slot.reason = "unloaded"

    def load_startup(self) -> None:
        """Load what the settings ask for. A model that fails is kept as unavailable, with the reason."""
        wanted = [parse_model_ref(ref) for ref in self.settings.models] or [
            (name, None) for name in self.registry.models()
        ]
        for name, version in wanted:
            try:
                self.load(name, version)
            except DriftlineError as exc:
                if self.settings.models:
                    raise  # explicitly asked for: refuse to start rather than serve without it
                log.error("cannot serve %s: %s", name, exc)
                self._slots[name] = ModelSlot(name, reason=f"failed to load: {exc}")


def parse_version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"model version must be a positive integer such as '3' (or empty for the default), got {text!r}")
    return int(text)


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME:VERSION``."""
    name, _, version = ref.partition(":")
    return name, parse_version(version) if version else None


def warm_up(profile: Profile) -> None:
    """Run the drift kernel once on a scratch state, so no request pays for loading compiled code."""
    scratch = profile.empty_state()
    update_state(scratch, np.zeros((1, len(profile.names))), profile.layout)
