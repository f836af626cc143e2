"""driftline data housing: write synthetic housing data (optionally drifted) to CSV or Parquet."""

from __future__ import annotations

import argparse
from pathlib import Path

from driftline.trainer import synthetic


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make synthetic data", description=__doc__)
    p.add_argument("dataset", choices=["housing"])
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    # argparse formats help with %: a literal one (as in "25% higher") must be doubled.
    p.add_argument("--shift", choices=sorted(synthetic.SHIFTS), help=", ".join(
        f"{k}: {v}" for k, v in sorted(synthetic.SHIFTS.items())).replace("%", "%%"))
    p.add_argument("--out", required=True, metavar="FILE", help=".csv or .parquet")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    frame = synthetic.housing(args.rows, seed=args.seed, shift=args.shift)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".parquet", ".pq"):
        frame.write_parquet(out)
    else:
        frame.write_csv(out)
    print(f"wrote {frame.height} rows to {out}")
    return 0
