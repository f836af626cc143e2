"""The ``driftline`` command: one subcommand per job, each in its own module.

Exit codes, the same for every command: 0 done; 1 the server refused or failed a call (or a check the
command runs found problems: ``validate``, ``bench``); 2 bad input (arguments, files, a model name or
version, a registry that cannot be read or written; one line on stderr says what); 3 ``retrain`` kept the
old model; 130 interrupted (Ctrl-C); 141 stdout was closed early (``driftline models list | head -1``),
as for any command killed by SIGPIPE, and quietly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from driftline import __version__
from driftline.errors import DriftlineError
from driftline.registry.names import check_model_name

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
    "reproduce": "driftline.cli.reproduce",
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
        if isinstance(getattr(args, "name", None), str):
            check_model_name(args.name)  # every command's NAME is a model name: refuse it before any work
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit, where Python prints a traceback
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except (DriftlineError, OSError) as exc:  # OSError: a file missing or unreadable; its message names it
        return _error(args.command, f"error: {exc}", 2)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _refused_by_server(exc):
            raise
        code_of = getattr(exc, "code", None)  # a grpc.Call's repr spans lines; its code and details do not
        return _error(args.command, f"{code_of().name}: {exc.details()}" if callable(code_of) else str(exc), 1)


def _error(command: str, message: str, code: int) -> int:
    print(f"driftline {command}: {message}", file=sys.stderr)
    return code


def _stdout_closed() -> int:
    # Whatever is still buffered has nowhere to go; pointing stdout at /dev/null lets the interpreter's
    # final flush succeed instead of printing "Exception ignored ... BrokenPipeError".
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE: what a shell reports for `yes | head`


def _refused_by_server(exc: Exception) -> bool:
    """A call the server answered with an error. The classes are looked up only if their modules were
    imported: when they were not, nothing could have raised them, and importing them costs seconds."""
    client, grpc = sys.modules.get("driftline.client"), sys.modules.get("grpc")
    return (client is not None and isinstance(exc, client.ServerError)) or (
        grpc is not None and isinstance(exc, grpc.RpcError))
