"""driftline promote NAME VERSION: move the `production` alias (servers started with --poll follow it)."""

from __future__ import annotations

import argparse

from driftline.cli.common import add_registry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("promote", help="point the production (or another) alias at a version", description=__doc__)
    p.add_argument("name", help="model name")
    p.add_argument("version", help="version number, or another alias")
    p.add_argument("--alias", default="production", help="alias to move (default production; e.g. staging)")
    add_registry(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from driftline.registry import open_registry

    registry = open_registry(args.registry)
    version = registry.resolve(args.name, args.version)
    aliases = registry.set_alias(args.name, args.alias, version)
    print(f"{args.name}: {args.alias} -> version {version}  (aliases: "
          + ", ".join(f"{k}={v}" for k, v in sorted(aliases.items())) + ")")
    return 0
