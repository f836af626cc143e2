"""Arguments several commands share."""

from __future__ import annotations

import argparse

from driftline.registry import default_root


def add_registry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry", default=default_root(), metavar="ROOT",
        help="registry folder (default: $DRIFTLINE_REGISTRY or ./driftline-registry)",
    )


def add_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default="127.0.0.1:8001", metavar="HOST:PORT", help="driftline server address")


def key_values(pairs: list[str]) -> dict[str, object]:
    """``--param max_depth=4`` pairs, with numbers and booleans parsed."""
    parsed: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {pair!r}")
        parsed[key] = _scalar(raw)
    return parsed


def _scalar(raw: str) -> object:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw
