"""driftline validate / schema: judge data with a version's schema, the same code the server runs."""

from __future__ import annotations

import argparse
import json

from driftline.cli.common import add_registry


def register(sub: argparse._SubParsersAction) -> None:
    validate = sub.add_parser("validate", help="check a data file against a version's schema and profile",
                              description=__doc__)
    validate.add_argument("name", help="model name")
    validate.add_argument("--data", required=True, metavar="PATH", help="CSV or Parquet file")
    validate.add_argument("--version", help="version or alias (default: production, else the latest)")
    validate.add_argument("--json", action="store_true", help="print a JSON report")
    add_registry(validate)
    validate.set_defaults(run=run_validate)
    schema = sub.add_parser("schema", help="print a version's schema")
    schema.add_argument("name", help="model name")
    schema.add_argument("--version", help="version or alias (default: production, else the latest)")
    schema.add_argument("--json", action="store_true", help="print schema.json as stored")
    add_registry(schema)
    schema.set_defaults(run=run_schema)


def _stored(args: argparse.Namespace):
    from driftline.registry import open_registry
    from driftline.registry.store import PRODUCTION

    registry = open_registry(args.registry)
    ref = args.version or (PRODUCTION if PRODUCTION in registry.aliases(args.name) else None)
    return registry.open(args.name, registry.resolve(args.name, ref))


def _schema_and_profile(stored):
    from driftline.errors import Unsupported
    from driftline.registry.profile import Profile
    from driftline.registry.schema import SCHEMA_FILE, Schema
    from driftline.registry.store import PROFILE_FILE

    if SCHEMA_FILE not in stored.checksums:
        raise Unsupported(f"{stored.model} version {stored.version} has no schema; publish it again to get one")
    profile = Profile.from_json(stored.read(PROFILE_FILE)) if PROFILE_FILE in stored.checksums else None
    return Schema.from_json(stored.read(SCHEMA_FILE)), profile


def run_validate(args: argparse.Namespace) -> int:
    from driftline.trainer.validation import check_file

    stored = _stored(args)
    schema, profile = _schema_and_profile(stored)
    check = check_file(args.data, schema, profile=profile)
    if args.json:
        print(json.dumps({"model": stored.model, "version": stored.version, **check.to_dict()}, indent=2))
    else:
        print(f"{stored.model} version {stored.version}: " + check.format())
    return 1 if check.report.rejected_rows else 0


def run_schema(args: argparse.Namespace) -> int:
    stored = _stored(args)
    schema, _ = _schema_and_profile(stored)
    if args.json:
        print(schema.to_json())
        return 0
    print(f"{stored.model} version {stored.version}: schema of {schema.rows} training rows")
    print(f"  {'FEATURE':<22} {'TYPE':<12} {'MISSING':<8} {'HARD LIMITS':<22} TRAINING RANGE")
    for f in schema.features:
        limits = f"[{_bound(f.min)}, {_bound(f.max)}]" + (" whole" if f.integer else "")
        if f.categories is not None:
            limits = "{" + ", ".join(map(str, f.categories)) + "}"
        print(f"  {f.name:<22} {f.type:<12} {'allowed' if f.allow_missing else 'refused':<8} {limits:<22} "
              f"[{_bound(f.train_min)}, {_bound(f.train_max)}]")
    print("  policy: " + ", ".join(f"{k}={v}" for k, v in schema.policy.to_dict().items()))
    return 0


def _bound(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
