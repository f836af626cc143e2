"""What a registry stores and what that costs a month: ``driftline models du``.

Sizes come from the registry's own storage (a local folder or an fsspec object store). Two figures:
*logical* bytes, every version's files counted whole (what the versions would take stored apart), and
*stored* bytes, each distinct file once (registry/blobs.py): version folders' own files plus every blob, which
is what a disk holds and a bucket bills for. Their difference is what content addressing saves. Every numbered folder counts, published or not: a folder without a manifest is
invisible to readers (a crashed publish, or a version ``gc`` hid and has not finished removing) but its
bytes are still stored and paid for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from driftline.registry.blobs import BLOB_ROOT, blob_key, blobs_of
from driftline.registry.names import check_model_name, is_model_name, is_version_folder
from driftline.registry.store import MANIFEST_FILE, Registry, sha256_hex

# S3 Standard's list price for the first 50 TB in us-east-1, USD per GB-month; AWS's "GB" is 2**30 bytes.
DEFAULT_PRICE_PER_GB_MONTH = 0.023
DEFAULT_PRICE_SOURCE = "S3 Standard list price"
GB = 2**30


@dataclass(frozen=True)
class VersionUsage:
    version: int
    bytes: int  # logical: every file of the version counted whole, as if nothing were shared
    files: int
    published: bool  # False: no manifest, readers do not see it (a crashed publish, or half removed by gc)
    stored: int = 0  # what it adds to the storage: its own files, and the blobs no version counted before holds


@dataclass(frozen=True)
class ModelUsage:
    model: str
    versions: tuple[VersionUsage, ...]  # oldest first

    @property
    def bytes(self) -> int:
        return sum(v.bytes for v in self.versions)

    @property
    def stored(self) -> int:
        return sum(v.stored for v in self.versions)


@dataclass
class _Blobs:
    """The blob store's files and which of them a version counted so far has paid for."""

    sizes: dict[str, int]  # blob key -> bytes
    counted: set[str] = field(default_factory=set)

    @property
    def unreferenced(self) -> dict[str, int]:
        return {k: v for k, v in self.sizes.items() if k not in self.counted}


def _blobs(registry: Registry) -> _Blobs:
    return _Blobs({f"{BLOB_ROOT}/{k}": v for k, v in registry.storage.sizes(BLOB_ROOT).items()})


def version_usage(registry: Registry, model: str, version: int, blobs: _Blobs | None = None) -> VersionUsage:
    """A shared blob is counted at the first version (oldest, models in name order) that holds it."""
    blobs = blobs if blobs is not None else _blobs(registry)
    storage = registry.storage
    prefix = f"{model}/{version}"
    sizes = storage.sizes(prefix)
    published = MANIFEST_FILE in sizes
    listed: dict[str, str] = {}
    if published:
        try:
            listed = blobs_of(json.loads(storage.read(f"{prefix}/{MANIFEST_FILE}")))
        except (OSError, ValueError, TypeError, AttributeError):
            listed = {}  # an unreadable manifest: its folder's files are all the version is known to hold
    held = set(listed.values())
    stored = 0
    for name, size in sizes.items():
        key = listed.get(name)
        if key is None and not published and storage.folder_holds_blobs:
            key = blob_key(sha256_hex(storage.read(f"{prefix}/{name}")))  # a hidden folder's links outlive its manifest
        if key is not None and storage.same_file(f"{prefix}/{name}", key):
            held.add(key)  # the blob's own bytes under a second name: counted once, with the blob
        else:
            stored += size  # a real copy in the folder (its own file, or a filesystem without hard links)
    for key in sorted(held):
        if key in blobs.sizes and key not in blobs.counted:
            blobs.counted.add(key)
            stored += blobs.sizes[key]
    logical = sum(size for name, size in sizes.items() if name not in listed)
    logical += sum(blobs.sizes.get(key, sizes.get(name, 0)) for name, key in listed.items())
    return VersionUsage(version, logical, len(set(sizes) | set(listed)), published, stored)


def model_usage(registry: Registry, model: str, blobs: _Blobs | None = None) -> ModelUsage:
    blobs = blobs if blobs is not None else _blobs(registry)
    numbered = sorted(int(n) for n in registry.storage.children(check_model_name(model)) if is_version_folder(n))
    return ModelUsage(model, tuple(version_usage(registry, model, v, blobs) for v in numbered))


@dataclass(frozen=True)
class Usage:
    models: list[ModelUsage]
    unreferenced: dict[str, int]  # blobs no version holds (a crashed publish; left for gc's grace period)

    @property
    def bytes(self) -> int:
        return sum(m.bytes for m in self.models)

    @property
    def stored(self) -> int:
        return sum(m.stored for m in self.models) + sum(self.unreferenced.values())


def registry_usage(registry: Registry, model: str | None = None) -> Usage:
    """Every model's numbered folders and their bytes, logical and stored (one model's, when named: NotFound if
    it has none; its stored bytes then count every blob it holds, shared with other models or not)."""
    blobs = _blobs(registry)
    if model is not None:
        found = model_usage(registry, model, blobs)
        if not found.versions:
            registry.latest(model)  # raises NotFound, naming the models there are
        return Usage([found], {})
    names = sorted(n for n in registry.storage.children("") if is_model_name(n))
    models = [u for u in (model_usage(registry, n, blobs) for n in names) if u.versions]
    return Usage(models, blobs.unreferenced)


def monthly_cost(size: int, price_per_gb_month: float) -> float:
    return size / GB * price_per_gb_month


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
