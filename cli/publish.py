"""driftline publish NAME --onnx FILE [--reference DATA]: import a model trained elsewhere.

The reference data gives the version what training gives a trained one: a schema inferred from it (limits
inferred from data flag; those declared with --schema refuse), a training profile for drift, and node cover
for exact attributions of tree ensembles.
"""

from __future__ import annotations

import argparse

from driftline.cli.common import add_registry
from driftline.registry import open_registry
from driftline.registry.schema import load_overrides
from driftline.trainer.publish import import_onnx


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="publish an ONNX model trained elsewhere", description=__doc__)
    p.add_argument("name", help="model name in the registry")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX model: any inputs and outputs")
    p.add_argument("--reference", metavar="DATA",
                   help="data it was trained on, for its baseline: a table (CSV/Parquet; columns = features in "
                        "input order) for a model with one 2-D float input, or named tensors (.npz, one array per "
                        "input, rows first) for any model; without it the model is served with no baseline")
    p.add_argument("--target", metavar="COLUMN", help="target column in the reference data, left out of the features")
    p.add_argument("--schema", metavar="FILE.yaml",
                   help="declare limits on top of the inferred schema, e.g. 'bedrooms: {min: 0, integer: true}'")
    p.add_argument("--drop-invalid", action="store_true",
                   help="leave out the reference rows that break a refusing limit (default: stop with a report)")
    add_registry(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    version = import_onnx(open_registry(args.registry), args.name, args.onnx, args.reference, target=args.target,
                          schema_overrides=load_overrides(args.schema) if args.schema else None,
                          drop_invalid=args.drop_invalid)
    print(f"published {args.name} version {version} to {args.registry}")
    return 0
