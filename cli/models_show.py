"""``driftline models show NAME VERSION``: one version's whole record, the gates it passed and what was overridden."""

from __future__ import annotations

from typing import Any

from driftline.registry import Registry
from driftline.registry.store import MANIFEST_FILE


def show_version(registry: Registry, name: str, ref: str) -> int:
    from driftline.cli.models import lineage_lines
    from driftline.trainer.model_card import CARD_FILE, overrides
    from driftline.trainer.model_tests import result_lines

    version = registry.resolve(name, ref)
    stored = registry.open(name, version)
    meta = stored.metadata
    tags = sorted(alias for alias, v in registry.aliases(name).items() if v == version)
    print(f"{name} version {version}" + (f"  [{', '.join(tags)}]" if tags else "") + f"  ({stored.location})")
    for line in lineage_lines(meta):
        print("  " + line)
    print(f"  files        {', '.join(sorted(stored.checksums))} (sha256 of each in {MANIFEST_FILE})")
    for line in _fuses(meta.extra.get("fuses")) + _leakage(meta.extra.get("leakage")):
        print("  " + line)
    tests = meta.extra.get("model_tests")
    for line in result_lines(tests) or ["model tests  none (trained without --tests)"]:
        print("  " + line)
    for line in _slices(tests):
        print("  " + line)
    print("  overrides    " + ("; ".join(overrides(meta.extra)) or "none"))
    if CARD_FILE in stored.checksums:  # an object store keeps it by content, not in the version's folder
        where = f"{stored.location}/{CARD_FILE}" if getattr(registry.storage, "folder_holds_blobs", True) else CARD_FILE
        print(f"  model card   {where}")
    return 0


def _fuses(fuses: dict[str, Any] | None) -> list[str]:
    if not fuses:
        return ["fit fuses    not recorded (a version from before the fuses, or imported)"]
    state = ("blown: " + ", ".join(fuses["blown"])) if fuses["blown"] else "none blown"
    return [f"fit fuses    {state}: holdout {fuses['metric']} {fuses['holdout']:.4f}, training rows "
            f"{fuses['train']:.4f} (gap {fuses['gap']:.4f}, at most {fuses['overfit_gap']:g}), trivial baseline "
            f"{fuses['baseline']:.4f} ({fuses['baseline_strategy']}; needs +{fuses['underfit_margin']:g})"]


def _leakage(leakage: dict[str, Any] | None) -> list[str]:
    if leakage is None:
        return []
    if not leakage["flagged"]:
        return ["leakage      none flagged"]
    return ["leakage      flagged: " + "; ".join(f"{f['feature']} ({f['metric']} {f['score']:.3f})"
                                                  for f in leakage["flagged"])]


def _slices(tests: dict[str, Any] | None) -> list[str]:
    lines = []
    for case in (tests or {}).get("cases", []):
        if case["kind"] != "slice":
            continue
        if not lines:
            lines.append("slice metrics")
        lines.append(f"  {case['name']}: {case['metric']} per {case['column']}, overall {case['overall']:.4g}, "
                     f"each slice {'>=' if case['higher_is_better'] else '<='} {case['bound']:.4g}")
        width = max(len(str(s["slice"])) for s in case["slices"])
        for s in case["slices"]:
            verdict = "too few rows" if s["passed"] is None else ("ok" if s["passed"] else "WORSE")
            value = "-" if s["value"] is None else f"{s['value']:.4g}"
            lines.append(f"    {str(s['slice']):<{width}}  {s['rows']:>6} rows  {value:>10}  {verdict}")
    return lines
