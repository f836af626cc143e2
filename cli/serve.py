"""driftline serve: serve registry models over the Open Inference Protocol (gRPC)."""

from __future__ import annotations

import argparse
import asyncio
import os

from driftline.cli.common import add_registry
from driftline.server.app import serve
from driftline.server.settings import ServerSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve models over gRPC", description=__doc__)
    add_registry(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8001, help="port (default 8001; 0 picks a free one)")
    p.add_argument("--model", action="append", default=[], metavar="NAME[:VERSION]",
                   help="serve only these (repeatable); default: the latest version of every model")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CUDA when a GPU is visible, else CPU")
    p.add_argument("--intra-op-threads", type=int, default=1, help="threads inside one onnxruntime call")
    p.add_argument("--inference-threads", type=int, default=os.cpu_count() or 1,
                   help="onnxruntime calls running at once (default: one per core)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = ServerSettings(
        registry=args.registry,
        host=args.host,
        port=args.port,
        models=tuple(args.model),
        device=args.device,
        intra_op_threads=args.intra_op_threads,
        inference_threads=args.inference_threads,
    )
    asyncio.run(serve(settings))
    return 0
