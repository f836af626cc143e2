"""Arguments several commands share."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from driftline.errors import InvalidInput
from driftline.registry import default_root
from driftline.registry.names import parse_version


def add_registry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry", default=default_root(), metavar="ROOT",
        help="registry folder (default: $DRIFTLINE_REGISTRY or ./driftline-registry)",
    )


def add_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default="127.0.0.1:8001", metavar="HOST:PORT", help="driftline server address")


def add_admin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin-token", default=os.environ.get("DRIFTLINE_ADMIN_TOKEN"),
                        help="bearer token for admin calls (default: $DRIFTLINE_ADMIN_TOKEN)")
    parser.add_argument("--tls-ca", metavar="PEM", help="CA certificate to trust the server's TLS certificate")
    parser.add_argument("--tls-cert", metavar="PEM", help="client certificate, when the server asks for one (mTLS)")
    parser.add_argument("--tls-key", metavar="PEM", help="the client certificate's key")


@contextlib.contextmanager
def admin_channel(args: argparse.Namespace) -> Iterator[tuple[Any, list[tuple[str, str]]]]:
    """A channel to ``args.server`` (TLS when --tls-ca is given) and the metadata carrying the token."""
    import grpc

    if args.tls_ca:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(args.tls_ca).read_bytes(),
            private_key=Path(args.tls_key).read_bytes() if args.tls_key else None,
            certificate_chain=Path(args.tls_cert).read_bytes() if args.tls_cert else None,
        )
        channel = grpc.secure_channel(args.server, credentials)
    else:
        channel = grpc.insecure_channel(args.server)
    metadata = [("authorization", f"Bearer {args.admin_token}")] if args.admin_token else []
    with channel:
        yield channel, metadata


def parse_command(module: Any, name: str, argv: list[str]) -> argparse.Namespace:
    """Arguments for one subcommand, parsed outside the main CLI (the demo drives commands this way)."""
    root = argparse.ArgumentParser(prog="driftline")
    module.register(root.add_subparsers())
    return root.parse_args([name, *argv])


def version_text(text: str) -> str:
    """An argparse type: a version number, or "" for the server's default; refused here, before any call."""
    if text:
        try:
            parse_version(text)
        except InvalidInput as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


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
