"""driftline models list: what the registry holds."""

from __future__ import annotations

import argparse

from driftline.cli.common import add_registry
from driftline.errors import DriftlineError
from driftline.registry import open_registry

PRIMARY_METRIC = {"regression": "r2", "classification": "accuracy"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="inspect the registry", description=__doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="a table of models and their latest versions")
    add_registry(listing)
    listing.set_defaults(run=run_list)
    show = actions.add_parser("show", help="a model's versions with their lineage and aliases")
    show.add_argument("name")
    add_registry(show)
    show.set_defaults(run=run_show)
    diff = actions.add_parser("diff", help="compare two versions: lineage, metrics, training profiles")
    diff.add_argument("name")
    diff.add_argument("a", help="version or alias")
    diff.add_argument("b", help="version or alias")
    add_registry(diff)
    diff.set_defaults(run=run_diff)


def run_list(args: argparse.Namespace) -> int:
    registry = open_registry(args.registry)
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
        print(f"no models in {registry.location}")
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_show(args: argparse.Namespace) -> int:
    registry = open_registry(args.registry)
    versions = registry.versions(args.name)
    if not versions:
        registry.latest(args.name)  # raises NotFound with the models that exist
    by_version: dict[int, list[str]] = {}
    for alias, version in sorted(registry.aliases(args.name).items()):
        by_version.setdefault(version, []).append(alias)
    print(f"{args.name}: {len(versions)} version(s) in {registry.location}")
    for version in reversed(versions):
        try:
            meta = registry.open(args.name, version).metadata
        except DriftlineError as exc:
            print(f"\nversion {version}: unreadable: {exc}")
            continue
        tags = f"  [{', '.join(by_version[version])}]" if version in by_version else ""
        print(f"\nversion {version}{tags}")
        print(f"  created      {meta.created_at} by {meta.source}")
        print(f"  estimator    {meta.estimator} ({meta.task}), target {meta.target or '-'}")
        print(f"  parameters   {_compact(meta.parameters)}")
        print(f"  metrics      {_compact({k: round(v, 4) for k, v in meta.metrics.items()})}")
        print(f"  data         {meta.data_version} ({meta.data_rows} rows) {meta.extra.get('data', '')}")
        print(f"  code         {meta.code_version}")
        print(f"  features     {', '.join(meta.feature_names)}")
    return 0


def run_diff(args: argparse.Namespace) -> int:
    from driftline.registry.profile import Profile
    from driftline.registry.store import PROFILE_FILE

    registry = open_registry(args.registry)
    a, b = (registry.open(args.name, registry.resolve(args.name, ref)) for ref in (args.a, args.b))
    print(f"{args.name}: version {a.version} -> version {b.version}")
    fields = ("estimator", "task", "target", "data_version", "data_rows", "code_version", "created_at", "source")
    for field in fields:
        before, after = getattr(a.metadata, field), getattr(b.metadata, field)
        print(f"  {field:<13} {before}" + ("" if before == after else f"  ->  {after}"))
    for title, before, after in (("parameters", a.metadata.parameters, b.metadata.parameters),
                                 ("metrics", a.metadata.metrics, b.metadata.metrics)):
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        print(f"  {title}: " + ("unchanged" if not changed else ""))
        for key in sorted(changed):
            print(f"    {key:<24} {_num(before.get(key))}  ->  {_num(after.get(key))}")
    if a.metadata.feature_names != b.metadata.feature_names:
        print(f"  features: {list(a.metadata.feature_names)}  ->  {list(b.metadata.feature_names)}")
    if PROFILE_FILE in a.checksums and PROFILE_FILE in b.checksums:
        pa, pb = (Profile.from_json(v.read(PROFILE_FILE)) for v in (a, b))
        print("  training profiles (mean, std; shift in A's standard deviations):")
        for name in [n for n in pa.names if n in pb.names]:
            ca, cb = pa.column(name), pb.column(name)
            sd = ca.variance ** 0.5 if ca.variance > 0 else 1.0
            shift = (cb.mean - ca.mean) / sd
            flag = "  <-" if abs(shift) > 0.5 else ""
            print(f"    {name:<22} {ca.mean:>14,.2f} ±{ca.variance ** 0.5:<12,.2f} -> {cb.mean:>14,.2f} "
                  f"±{cb.variance ** 0.5:<12,.2f} ({shift:+.2f} sd){flag}")
    return 0


def _compact(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _span(versions: list[int]) -> str:
    return f"{versions[0]}..{versions[-1]} ({len(versions)})" if len(versions) > 1 else str(versions[0])
