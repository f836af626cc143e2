"""driftline models list: what the registry holds."""

from __future__ import annotations

import argparse

from driftline.cli.common import add_registry
from driftline.errors import DriftlineError
from driftline.registry import Registry

PRIMARY_METRIC = {"regression": "r2", "classification": "accuracy"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="inspect the registry", description=__doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="a table of models and their latest versions")
    add_registry(listing)
    listing.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    rows = [("MODEL", "VERSIONS", "LATEST", "ESTIMATOR", "METRIC", "DATA VERSION", "CREATED")]
    for name in registry.models():
        versions = registry.versions(name)
        try:
            meta = registry.open(name, versions[-1]).metadata
        except DriftlineError as exc:
            rows.append((name, _span(versions), str(versions[-1]), f"unreadable: {exc}", "", "", ""))
            continue
        key = PRIMARY_METRIC.get(meta.task)
        metric = f"{key}={meta.metrics[key]:.4f}" if key and key in meta.metrics else "-"
        rows.append((name, _span(versions), str(versions[-1]), meta.estimator, metric,
                     meta.data_version.removeprefix("sha256:")[:12], meta.created_at))
    if len(rows) == 1:
        print(f"no models in {registry.root}")
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _span(versions: list[int]) -> str:
    return f"{versions[0]}..{versions[-1]} ({len(versions)})" if len(versions) > 1 else str(versions[0])
