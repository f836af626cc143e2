"""driftline validate / schema: judge data with a version's schema, the same code the server runs.

``driftline schema NAME`` prints a version's schema; ``driftline schema accept NAME[:VERSION]`` publishes that
version again with the limits its schema inferred from the data declared, so that they refuse what breaks them
instead of flagging it.
"""

from __future__ import annotations

import argparse
import json

from driftline.cli.common import add_registry
from driftline.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    validate = sub.add_parser("validate", help="check a data file against a version's schema and profile",
                              description=__doc__)
    validate.add_argument("name", help="model name")
    validate.add_argument("--data", required=True, metavar="PATH", help="CSV or Parquet file")
    validate.add_argument("--version", help="version or alias (default: production, else the latest)")
    validate.add_argument("--json", action="store_true", help="print a JSON report")
    add_registry(validate)
    validate.set_defaults(run=run_validate)
    schema = sub.add_parser(
        "schema", help="print a version's schema, or accept its inferred limits", description=__doc__,
        usage="driftline schema NAME [--version V] [--json] [--registry ROOT]\n"
              "       driftline schema accept NAME[:VERSION] [--registry ROOT]")
    schema.add_argument("name", help="model name (or 'accept' followed by NAME[:VERSION])")
    schema.add_argument("accept", nargs="?", metavar="NAME[:VERSION]", help=argparse.SUPPRESS)
    schema.add_argument("--version", help="version or alias (default: production, else the latest)")
    schema.add_argument("--json", action="store_true", help="print schema.json as stored")
    add_registry(schema)
    schema.set_defaults(run=run_schema)


def _stored(args: argparse.Namespace):
    from driftline.registry import open_registry

    registry = open_registry(args.registry)
    return registry.open(args.name, registry.resolve(args.name, _default_ref(registry, args.name, args.version)))


def _default_ref(registry, name: str, ref: str | None) -> str | None:
    from driftline.registry.store import PRODUCTION

    return ref or (PRODUCTION if PRODUCTION in registry.aliases(name) else None)


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
    from driftline.registry.table import table_of
    from driftline.trainer.validation import check_file, check_table_file

    stored = _stored(args)
    schema, profile = _schema_and_profile(stored)
    table = table_of(stored.metadata.extra)
    if table is not None:  # a mixed table: its columns judged through the view the server validates
        check = check_table_file(args.data, schema, table, profile=profile)
    else:
        check = check_file(args.data, schema, profile=profile)
    if args.json:
        print(json.dumps({"model": stored.model, "version": stored.version, **check.to_dict()}, indent=2))
    else:
        print(f"{stored.model} version {stored.version}: " + check.format())
    return 1 if check.report.rejected_rows else 0


def run_schema(args: argparse.Namespace) -> int:
    if args.name == "accept" and args.accept:
        return run_accept(args)
    if args.accept:
        raise InvalidInput(f"unexpected argument {args.accept!r}; did you mean: driftline schema accept {args.name}?")
    stored = _stored(args)
    schema, _ = _schema_and_profile(stored)
    if args.json:
        print(schema.to_json())
        return 0
    print(f"{stored.model} version {stored.version}: schema of {schema.rows} training rows")
    print(f"  {'FEATURE':<22} {'TYPE':<12} {'MISSING':<8} {'HARD LIMITS':<34} TRAINING RANGE")
    for f in schema.features:
        limits = f"[{_bound(f.min)}, {_bound(f.max)}]" + (" whole" if f.integer else "")
        if f.categories is not None:
            limits = "{" + ", ".join(map(str, f.categories)) + "}"
        if f.limits:
            limits += " (inferred)" if not f.declared else " (declared)" if not f.inferred else \
                f" ({', '.join(f.inferred)} inferred)"
        missing = "allowed" if f.allow_missing else "refused"
        print(f"  {f.name:<22} {f.type:<12} {missing:<8} {limits:<34} [{_bound(f.train_min)}, {_bound(f.train_max)}]"
              + ("  +-inf allowed" if f.allow_infinite else ""))
    print("  policy: " + ", ".join(f"{k}={v}" for k, v in schema.policy.to_dict().items()))
    if schema.inferred:
        print("  inferred limits flag what breaks them; declare them with --schema when training or publishing, "
              f"or: driftline schema accept {stored.model}:{stored.version}")
    return 0


def run_accept(args: argparse.Namespace) -> int:
    from driftline.registry import open_registry
    from driftline.registry.accept import accept_inferred

    name, _, ref = args.accept.partition(":")
    registry = open_registry(args.registry)
    accepted = accept_inferred(registry, name, _default_ref(registry, name, ref or args.version))
    limits = "; ".join(f"{f}: {', '.join(x)}" for f, x in accepted.limits.items())
    print(f"published {name} version {accepted.version}: version {accepted.source_version} with its inferred limits "
          f"declared ({limits})")
    print(f"  serve it with: driftline promote {name} {accepted.version} --registry {args.registry}")
    return 0


def _bound(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
