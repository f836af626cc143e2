"""driftline models list/show/diff: what the registry holds; du and gc: what it costs, and trimming it."""

from __future__ import annotations

import argparse
import json

from driftline.cli.common import add_registry
from driftline.errors import DriftlineError
from driftline.registry import VersionMetadata, open_registry
from driftline.registry.usage import DEFAULT_PRICE_PER_GB_MONTH, DEFAULT_PRICE_SOURCE

PRIMARY_METRIC = {"regression": "r2", "classification": "accuracy"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="inspect the registry", description=__doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="a table of models and their latest versions")
    add_registry(listing)
    listing.set_defaults(run=run_list)
    show = actions.add_parser("show", help="a model's versions with their lineage and aliases")
    show.add_argument("name")
    show.add_argument("version", nargs="?",
                      help="one version or alias: its lineage in full, with fuses, leakage, model tests, slice "
                           "metrics and overrides (default: every version, briefly)")
    add_registry(show)
    show.set_defaults(run=run_show)
    diff = actions.add_parser("diff", help="compare two versions: lineage, metrics, training profiles")
    diff.add_argument("name")
    diff.add_argument("a", help="version or alias")
    diff.add_argument("b", help="version or alias")
    add_registry(diff)
    diff.set_defaults(run=run_diff)
    du = actions.add_parser(
        "du", help="bytes per version, per model and in all, and what they cost a month",
        description="Bytes stored per version, per model and in all, read from the registry's storage (a local "
                    "folder or an object store), and the monthly cost at --price-per-gb-month USD per GB-month "
                    f"(1 GB = 2^30 bytes; default {DEFAULT_PRICE_PER_GB_MONTH}, the {DEFAULT_PRICE_SOURCE}). "
                    "Folders without a manifest (a crashed publish, a version gc has not finished removing) are "
                    "invisible to readers but still stored: they are counted and marked 'hidden'.")
    du.add_argument("name", nargs="?", help="one model (default: every model)")
    du.add_argument("--price-per-gb-month", type=float, default=DEFAULT_PRICE_PER_GB_MONTH, metavar="USD",
                    help=f"storage price in USD per GB-month (default: {DEFAULT_PRICE_PER_GB_MONTH}, "
                         f"the {DEFAULT_PRICE_SOURCE})")
    du.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_registry(du)
    du.set_defaults(run=run_du)
    gc = actions.add_parser(
        "gc", help="remove a model's oldest versions beyond the newest N (never aliased or served ones)",
        description="Remove the oldest versions of NAME beyond the newest --keep, except a version an alias points "
                    "to (production, previous...) and a version a server serves according to its served-version "
                    "record in the registry's .serving folder (and, for an object-store registry, this machine's "
                    "default state dir). A server started with --state-dir elsewhere cannot be seen: name that "
                    "folder with --state-dir here, or promote the version it serves. Versions in a server's "
                    "rollback history are not kept unless aliased or served. Each version's manifest goes first "
                    "(readers stop seeing it), then its files, then the stored files (blobs) no version of any model "
                    "references any more and older than --blob-grace; a folder or blob left by an interrupted gc "
                    "is finished by the next one.")
    gc.add_argument("name")
    gc.add_argument("--keep", type=int, required=True, metavar="N", help="how many of the newest versions stay (>= 1)")
    gc.add_argument("--dry-run", action="store_true", help="remove nothing; list what would go and why the rest stays")
    gc.add_argument("--state-dir", action="append", default=[], metavar="DIR",
                    help="also read served-version records here (a server's --state-dir); may be repeated")
    gc.add_argument("--blob-grace", type=float, default=None, metavar="SECONDS",
                    help="sweep blobs no version references only once this old (default 3600): a publish running "
                         "now may have stored one it has not yet referenced; 0 only when nothing publishes")
    add_registry(gc)
    gc.set_defaults(run=run_gc)


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
        metric = f"{key}={meta.metrics[key]:.6f}" if key and key in meta.metrics else "-"
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
    if getattr(args, "version", None) is not None:
        from driftline.cli.models_show import show_version

        return show_version(registry, args.name, args.version)
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
        for line in lineage_lines(meta):
            print("  " + line)
    return 0


def lineage_lines(meta: VersionMetadata) -> list[str]:
    """A version's lineage as `models show` prints it, one line each (also `models show NAME VERSION`)."""
    retrained = meta.extra.get("retrained_from")
    return [
        f"created      {meta.created_at} by {meta.source}"
        + (f", retrained from version {retrained}" if retrained is not None else ""),
        f"estimator    {meta.estimator} ({meta.task}), target {meta.target or '-'}",
        f"parameters   {_compact(meta.parameters)}",
        # The export check's deviation is ~1e-7: rounded with the metrics it would read 0.0.
        "metrics      " + _compact({k: f"{v:.2e}" if k == "onnx_max_rel_deviation" else round(v, 4)
                                    for k, v in meta.metrics.items()}),
        f"data         {meta.data_version} ({meta.data_rows} rows) {meta.extra.get('data', '')}",
        f"code         {meta.code_version}",
        f"features     {', '.join(meta.feature_names)}",
    ]


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


def run_du(args: argparse.Namespace) -> int:
    from driftline.errors import InvalidInput
    from driftline.registry.usage import human, monthly_cost, registry_usage

    price = args.price_per_gb_month
    if not price >= 0:  # also refuses nan
        raise InvalidInput(f"--price-per-gb-month must be a price in USD, 0 or more; got {price}")
    registry = open_registry(args.registry)
    found = registry_usage(registry, args.name)
    models, total, stored = found.models, found.bytes, found.stored
    loose = sum(found.unreferenced.values())
    if args.json:
        print(json.dumps({
            "registry": registry.location, "price_per_gb_month": price, "bytes_per_gb": 2**30,
            "models": [{"model": m.model, "bytes": m.bytes, "stored_bytes": m.stored,
                        "monthly_usd": monthly_cost(m.stored, price),
                        "versions": [{"version": v.version, "bytes": v.bytes, "stored_bytes": v.stored,
                                      "files": v.files, "published": v.published,
                                      "monthly_usd": monthly_cost(v.stored, price)}
                                     for v in m.versions]} for m in models],
            "unreferenced_blobs": {"count": len(found.unreferenced), "bytes": loose},
            "total_bytes": total, "total_stored_bytes": stored, "saved_bytes": total - stored + loose,
            "total_monthly_usd": monthly_cost(stored, price),
        }, indent=2))
        return 0
    note = f"the {DEFAULT_PRICE_SOURCE}" if price == DEFAULT_PRICE_PER_GB_MONTH else "--price-per-gb-month"
    print(f"{registry.location}: at {price:g} USD per GB-month ({note}; 1 GB = 2^30 bytes)")
    saved = total - (stored - loose)
    print(f"BYTES: every version's files counted whole; STORED: each distinct file once (what the storage holds "
          f"and bills); content addressing saves {human(saved)}"
          + (f" ({saved / total:.0%})" if total else ""))
    rows = [("MODEL", "VERSION", "FILES", "BYTES", "STORED", "SIZE", "USD/MONTH")]
    for m in models:
        for v in m.versions:
            rows.append((m.model, str(v.version) + ("" if v.published else " (hidden)"), str(v.files), str(v.bytes),
                         str(v.stored), human(v.stored), f"{monthly_cost(v.stored, price):.6f}"))
        rows.append((m.model, "all", str(sum(v.files for v in m.versions)), str(m.bytes), str(m.stored),
                     human(m.stored), f"{monthly_cost(m.stored, price):.6f}"))
    if found.unreferenced:
        rows.append(("(blobs no version references: gc sweeps them)", "", str(len(found.unreferenced)), "",
                     str(loose), human(loose), f"{monthly_cost(loose, price):.6f}"))
    rows.append(("TOTAL", "", str(sum(v.files for m in models for v in m.versions)), str(total), str(stored),
                 human(stored), f"{monthly_cost(stored, price):.6f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(w) if i >= 2 else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    return 0


def run_gc(args: argparse.Namespace) -> int:
    from driftline.registry.gc import collect

    registry = open_registry(args.registry)
    from driftline.registry.blobs import GRACE_S
    from driftline.registry.usage import human

    grace = GRACE_S if args.blob_grace is None else args.blob_grace
    result = collect(registry, args.name, args.keep, args.state_dir, dry_run=args.dry_run, grace_s=grace)
    verb = "would remove" if args.dry_run else "removed"
    for decision in result.decisions:
        what = verb if decision.remove else "keep"
        print(f"{what:<12} {args.name} version {decision.version}: {'; '.join(decision.reasons)}")
    for version in result.leftovers:
        print(f"{verb:<12} {args.name} version {version}: left hidden by an interrupted gc (no manifest)")
    for version in result.unfinished:
        print(f"{'leave':<12} {args.name} folder {version}: no manifest and not gc's (a publish that crashed or is "
              "still writing); remove it by hand once sure")
    records = ", ".join(result.records) or "none found"
    print(f"served-version records read: {records}")
    sweep = result.sweep
    if sweep is not None and sweep.skipped:
        print(f"blobs: none swept: {sweep.skipped}")
    elif sweep is not None:
        print(f"blobs: {verb} {len(sweep.removed)} no version references ({human(sum(sweep.removed.values()))})"
              + (f"; kept {len(sweep.young)} unreferenced for now ({human(sum(sweep.young.values()))}, younger "
                 f"than --blob-grace {sweep.grace_s:g} s: a publish may be about to reference them)"
                 if sweep.young else ""))
    gone = len(result.removed) + len(result.leftovers)
    print(f"{args.name}: {verb} {gone} version folder(s), kept {len(result.kept)}"
          + (" (dry run: nothing was removed)" if args.dry_run else ""))
    return 0


def _compact(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _span(versions: list[int]) -> str:
    return f"{versions[0]}..{versions[-1]} ({len(versions)})" if len(versions) > 1 else str(versions[0])
