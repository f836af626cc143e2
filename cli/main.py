"""The ``driftline`` command: one subcommand per job, each in its own module."""

from __future__ import annotations

import argparse
import logging
import sys

from driftline import __version__
from driftline.cli import data, demo, infer, models, publish, serve, train
from driftline.errors import DriftlineError

COMMANDS = (train, publish, serve, models, infer, data, demo)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="driftline", description=__doc__)
    root.add_argument("--version", action="version", version=f"driftline {__version__}")
    root.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
