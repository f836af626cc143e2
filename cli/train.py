"""driftline train NAME: fit an estimator and publish it as the model's next version."""

from __future__ import annotations

import argparse
import json
import os

from driftline.cli.common import add_registry, key_values
from driftline.registry import open_registry
from driftline.registry.schema import load_overrides
from driftline.trainer import estimators, snapshot, synthetic
from driftline.trainer.fuses import ALLOWABLE
from driftline.trainer.model_tests import result_lines
from driftline.trainer.model_tests_file import load as load_tests
from driftline.trainer.train import TrainConfig, publish, train


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model and publish a new version", description=__doc__)
    p.add_argument("name", help="model name in the registry")
    add_registry(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="PATH", help="training data: a CSV or Parquet file, or Parquet partitions "
                        "by a glob or URL ('data/part-*.parquet', 's3://bucket/part-*.parquet') read in pieces")
    p.add_argument("--max-fit-rows", type=int, default=1_000_000, metavar="N",
                   help="with a --data pattern, fit on a seeded sample of at most N rows (default 1000000); the "
                        "baseline profile and data version still cover every row")
    source.add_argument("--synthetic", choices=sorted(synthetic.DATASETS), default="housing",
                        help="make data instead (default housing; listings adds a district and a Polish description)")
    p.add_argument("--target", metavar="COLUMN", help="target column (required with --data)")
    p.add_argument("--features", metavar="A,B,...", help="feature columns in input order (default: all but target)")
    p.add_argument("--rows", type=int, default=5000, help="rows of synthetic data (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed for synthetic data, the split and the estimator")
    p.add_argument("--shift", choices=sorted({s for shifts in synthetic.DATASETS.values() for s in shifts}),
                   help="make drifted synthetic data")
    p.add_argument("--estimator", choices=estimators.ESTIMATORS, default="gradient_boosting")
    p.add_argument("--task", choices=["auto", "regression", "classification"], default="auto")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction kept out for evaluation (default 0.2)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="estimator parameter override")
    p.add_argument("--schema", metavar="FILE.yaml",
                   help="tighten or loosen the inferred schema, e.g. 'bedrooms: {min: 0, integer: true}'")
    p.add_argument("--drop-invalid", action="store_true",
                   help="train without the rows that break hard limits (default: stop with a report)")
    p.add_argument("--fuse", action="append", default=[], metavar="KEY=VALUE",
                   help="move a fit fuse: underfit_margin (holdout r2/accuracy above a trivial baseline's; default "
                        "0.05 r2, 0.02 accuracy), overfit_gap (training minus holdout score; default 0.2 r2, 0.3 accuracy)")
    p.add_argument("--allow", action="append", default=[], choices=ALLOWABLE,
                   help="publish despite a blown fuse (underfit, overfit), a feature that leaks the target "
                        "(leakage) or failed model tests (tests); recorded in the version's lineage. Repeatable")
    p.add_argument("--tests", metavar="FILE.yaml",
                   help="model tests run on the exported ONNX model before publishing (minimum rows, invariance, "
                        "monotone, slice metrics); a failure refuses the publish. Stored in the version")
    p.add_argument("--snapshot-data", action=argparse.BooleanOptionalAction, default=None,
                   help="store the training table (after validation, before the split) as Parquet in the version, "
                        "once per distinct table, so `driftline reproduce` can rebuild it (default: on for a local "
                        "registry, off for an object store unless DRIFTLINE_SNAPSHOT_DATA=1)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = TrainConfig(
        model=args.name,
        estimator=args.estimator,
        data=args.data,
        synthetic=args.synthetic,
        rows=args.rows,
        shift=args.shift,
        target=args.target,
        features=tuple(args.features.split(",")) if args.features else None,
        task=args.task,
        seed=args.seed,
        holdout=args.holdout,
        params=key_values(args.param),
        schema_overrides=load_overrides(args.schema) if args.schema else None,
        drop_invalid=args.drop_invalid,
        max_fit_rows=args.max_fit_rows,
        fuses=key_values(args.fuse),
        allow=tuple(dict.fromkeys(args.allow)),
        tests=load_tests(args.tests) if args.tests else None,
    )
    trained = train(config)
    metadata, data_files = trained.metadata, {}
    if snapshot.wanted(args.snapshot_data, args.registry, os.environ.get(snapshot.ENV)):
        metadata, data_files = snapshot.take(trained)
    version = publish(open_registry(args.registry), args.name, trained.onnx_model, metadata, trained.profile, trained.schema,
                      tests=trained.config.tests, data_files=data_files)
    metrics = {k: round(v, 4) for k, v in trained.metadata.metrics.items() if k != "onnx_max_rel_deviation"}
    print(f"published {args.name} version {version} ({trained.task}, {args.estimator}) to {args.registry}")
    print(f"  holdout metrics: {json.dumps(metrics)}")
    deviation = trained.metadata.metrics.get("onnx_max_rel_deviation")
    if deviation is not None:  # rounded with the metrics it read 0.0; it is the measured figure, ~1e-7
        print(f"  ONNX vs scikit-learn, every row: max relative deviation {deviation:.2e}")
    print(f"  data version: {trained.metadata.data_version}  code version: {trained.metadata.code_version}")
    if data_files:
        kept = metadata.extra[snapshot.LINEAGE_KEY]
        print(f"  data snapshot: {kept['rows']:,} rows, {kept['bytes']:,} bytes Parquet, sha256 {kept['sha256'][:12]} "
              f"(stored once per distinct table; `driftline reproduce {args.name} {version}` rebuilds from it)")
    sample = trained.metadata.extra.get("fit_sample")
    if sample:
        print(f"  fit sample: {sample['rows']:,} of {sample['of']:,} rows (seed {sample['seed']}); baseline profile "
              f"over {sample['baseline_rows']:,} rows in {sample['partitions']} partitions")
    print("  " + trained.quality.format().replace("\n", "\n  "))
    fuse = trained.metadata.extra["fuses"]
    print(f"  fit fuses: holdout {fuse['metric']} {fuse['holdout']:.3f}, train {fuse['train']:.3f}, "
          f"trivial baseline {fuse['baseline']:.3f}"
          + (f"; blown but allowed: {', '.join(fuse['blown'])}" if fuse["blown"] else "; none blown"))
    if trained.metadata.extra["leakage"]["flagged"]:
        print("  leakage allowed: " + ", ".join(f["feature"] for f in trained.metadata.extra["leakage"]["flagged"]))
    for line in result_lines(trained.metadata.extra.get("model_tests")):
        print("  " + line)
    return 0
