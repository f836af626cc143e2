"""driftline swap / rollback: change the version a running server serves, with no failed request."""

from __future__ import annotations

import argparse
import sys

from driftline.cli.common import add_admin, add_server, admin_channel


def register(sub: argparse._SubParsersAction) -> None:
    swap = sub.add_parser("swap", help="serve another version, now", description=__doc__)
    swap.add_argument("name", help="model name")
    swap.add_argument("version", help="version number or registry alias (production, staging, ...)")
    swap.add_argument("--force", action="store_true", help="swap even if the input signature changes")
    rollback = sub.add_parser("rollback", help="serve the version served before the current one")
    rollback.add_argument("name", help="model name")
    for parser in (swap, rollback):
        add_server(parser)
        add_admin(parser)
        parser.add_argument("--timeout", type=float, default=300.0)
    swap.set_defaults(run=run_swap)
    rollback.set_defaults(run=run_rollback)


def run_swap(args: argparse.Namespace) -> int:
    from driftline.proto import driftline_pb2 as dpb

    return _call(args, "Swap", dpb.SwapRequest(name=args.name, version=args.version, force=args.force))


def run_rollback(args: argparse.Namespace) -> int:
    from driftline.proto import driftline_pb2 as dpb

    return _call(args, "Rollback", dpb.RollbackRequest(name=args.name))


def _call(args: argparse.Namespace, method: str, request: object) -> int:
    import grpc

    from driftline.proto import driftline_pb2_grpc

    try:
        with admin_channel(args) as (channel, metadata):
            response = getattr(driftline_pb2_grpc.AdminStub(channel), method)(
                request, metadata=metadata, timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"driftline {args.command}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    was = f"version {response.previous_version}" if response.previous_version else "nothing"
    print(f"{response.name}: serving version {response.version} (was {was}) on {response.workers} worker(s), "
          f"switched in {response.seconds:.2f} s")
    return 0
