"""What a registry stores and what that costs a month: ``driftline models du``.

Sizes come from the registry's own storage (a local folder or an fsspec object store), so they are the
bytes a bucket bills for. Every numbered folder counts, published or not: a folder without a manifest is
invisible to readers (a crashed publish, or a version ``gc`` hid and has not finished removing) but its
bytes are still stored and paid for.
"""

from __future__ import annotations

from dataclasses import dataclass

from driftline.registry.names import check_model_name, is_model_name, is_version_folder
from driftline.registry.store import MANIFEST_FILE, Registry

# S3 Standard's list price for the first 50 TB in us-east-1, USD per GB-month; AWS's "GB" is 2**30 bytes.
DEFAULT_PRICE_PER_GB_MONTH = 0.023
DEFAULT_PRICE_SOURCE = "S3 Standard list price"
GB = 2**30


@dataclass(frozen=True)
class VersionUsage:
    version: int
    bytes: int
    files: int
    published: bool  # False: no manifest, readers do not see it (a crashed publish, or half removed by gc)


@dataclass(frozen=True)
class ModelUsage:
    model: str
    versions: tuple[VersionUsage, ...]  # oldest first

    @property
    def bytes(self) -> int:
        return sum(v.bytes for v in self.versions)


def version_usage(registry: Registry, model: str, version: int) -> VersionUsage:
    sizes = registry.storage.sizes(f"{model}/{version}")
    return VersionUsage(version, sum(sizes.values()), len(sizes), MANIFEST_FILE in sizes)


def model_usage(registry: Registry, model: str) -> ModelUsage:
    numbered = sorted(int(n) for n in registry.storage.children(check_model_name(model)) if is_version_folder(n))
    return ModelUsage(model, tuple(version_usage(registry, model, v) for v in numbered))


def usage(registry: Registry, model: str | None = None) -> list[ModelUsage]:
    """Every model's numbered folders and their bytes (one model's, when named: NotFound if it has none)."""
    if model is not None:
        found = model_usage(registry, model)
        if not found.versions:
            registry.latest(model)  # raises NotFound, naming the models there are
        return [found]
    names = sorted(n for n in registry.storage.children("") if is_model_name(n))
    return [u for u in (model_usage(registry, n) for n in names) if u.versions]


def monthly_cost(size: int, price_per_gb_month: float) -> float:
    return size / GB * price_per_gb_month


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
