"""driftline publish NAME --onnx FILE --reference DATA: import a model trained elsewhere."""

from __future__ import annotations

import argparse

from driftline.cli.common import add_registry
from driftline.registry import open_registry
from driftline.trainer.publish import import_onnx


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="publish an ONNX model trained elsewhere", description=__doc__)
    p.add_argument("name", help="model name in the registry")
    p.add_argument("--onnx", required=True, metavar="FILE", help="ONNX model with one 2-D float input")
    p.add_argument("--reference", required=True, metavar="DATA",
                   help="the data it was trained on (CSV/Parquet), columns = features in input order")
    p.add_argument("--target", metavar="COLUMN", help="target column in the reference data, left out of the features")
    add_registry(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    version = import_onnx(open_registry(args.registry), args.name, args.onnx, args.reference, target=args.target)
    print(f"published {args.name} version {version} to {args.registry}")
    return 0
