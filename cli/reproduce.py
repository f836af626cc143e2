"""driftline reproduce NAME VERSION: retrain a version from its data snapshot and recorded recipe, and check
that the rebuilt ONNX model answers its holdout rows as the stored one does.

Exit codes: 0 they agree (to float tolerance); 1 they do not; 2 the version has no data snapshot (train it
with --snapshot-data), or it cannot be read or rebuilt.
"""

from __future__ import annotations

import argparse
import math

from driftline.cli.common import add_registry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="rebuild a version from its data snapshot; check it predicts the same",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help="model name")
    p.add_argument("version", help="version number or alias")
    add_registry(p)
    p.add_argument("--publish", action="store_true",
                   help="publish the rebuilt model as a new version (default: nothing is published)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from driftline.registry import open_registry
    from driftline.trainer.reproduce import ATOL, RTOL, reproduce

    registry = open_registry(args.registry)
    version = registry.resolve(args.name, args.version)
    result = reproduce(registry, args.name, version, publish_it=args.publish)
    kept = result.trained.metadata.extra.get("data_snapshot") or {}
    print(f"{args.name} version {version}: retrained from its data snapshot ({result.trained.metadata.data_rows:,} "
          f"rows) with its recorded recipe ({result.trained.metadata.estimator}, seed "
          f"{result.trained.metadata.extra.get('seed')}); compared on its {result.rows:,} holdout rows")
    for output in result.outputs:
        if math.isnan(output.max_abs):
            print(f"  {output.name:<14} {output.rows_differing} of {result.rows} rows differ")
        else:
            print(f"  {output.name:<14} max abs deviation {output.max_abs:.3g}, max rel {output.max_rel:.3g}; "
                  f"{output.rows_differing} rows outside tolerance")
    print(f"  ONNX graph and weights: {'identical' if result.same_onnx else 'differ'}")
    if not result.data_version_ok:
        print("  warning: the snapshot does not hash to the data version recorded with it")
    if result.code_changed:
        print(f"  warning: code version differs: recorded {result.recorded_code}, now {result.current_code}")
    verdict = "agree" if result.agree else "DISAGREE"
    print(f"{args.name} version {version}: stored and rebuilt models {verdict} (rtol {RTOL:g}, atol {ATOL:g})")
    if result.published is not None:
        print(f"published the rebuilt model as {args.name} version {result.published}"
              + (f" (data snapshot sha256 {kept.get('sha256', '')[:12]}, stored once)" if kept else ""))
    return 0 if result.agree else 1
