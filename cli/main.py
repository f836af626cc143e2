"""The ``driftline`` command: one subcommand per job, each in its own module."""

from __future__ import annotations

import argparse
import logging
import sys

import importlib

from driftline import __version__
from driftline.errors import DriftlineError

# Subcommand -> module. Only the module of the command being run is imported: the server must not
# carry the training stack (scikit-learn, polars, skl2onnx) it never uses.
COMMANDS = {
    "train": "driftline.cli.train",
    "publish": "driftline.cli.publish",
    "serve": "driftline.cli.serve",
    "models": "driftline.cli.models",
    "infer": "driftline.cli.infer",
    "data": "driftline.cli.data",
    "demo": "driftline.cli.demo",
    "drift": "driftline.cli.drift",
    "swap": "driftline.cli.swap",
    "rollback": "driftline.cli.swap",
    "promote": "driftline.cli.promote",
    "retrain": "driftline.cli.retrain",
    "validate": "driftline.cli.validate",
    "explain": "driftline.cli.explain",
    "schema": "driftline.cli.validate",
    "bench": "driftline.cli.bench",
}


def parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="driftline", description=__doc__)
    root.add_argument("--version", action="version", version=f"driftline {__version__}")
    root.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in dict.fromkeys(COMMANDS[name] for name in commands or COMMANDS):
        importlib.import_module(module).register(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    named = next((a for a in argv if not a.startswith("-")), None)
    args = parser([named] if named in COMMANDS else None).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args) or 0)
    except DriftlineError as exc:
        print(f"driftline {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
