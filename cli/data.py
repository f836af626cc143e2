"""driftline data housing|listings: write synthetic housing data (optionally drifted) to CSV or Parquet."""

from __future__ import annotations

import argparse
from pathlib import Path

from driftline.errors import InvalidInput
from driftline.trainer import synthetic


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make synthetic data", description=__doc__)
    p.add_argument("dataset", choices=sorted(synthetic.DATASETS))
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    # argparse formats help with %: a literal one (as in "25% higher") must be doubled.
    every = {k: v for shifts in synthetic.DATASETS.values() for k, v in shifts.items()}
    p.add_argument("--shift", choices=sorted(every), help=", ".join(
        f"{k}: {v}" for k, v in sorted(every.items())).replace("%", "%%"))
    p.add_argument("--with-segment", action="store_true",
                   help=f"also write {synthetic.CLASS_TARGET} (0/1/2, cut from {synthetic.TARGET}), a classification "
                        f"target; it is a function of {synthetic.TARGET}, so training --target {synthetic.TARGET} "
                        "on such a file refuses it as leakage")
    p.add_argument("--out", required=True, metavar="FILE", help=".csv or .parquet")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        frame = synthetic.synthetic_frame(args.dataset, args.rows, seed=args.seed, shift=args.shift)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    if not args.with_segment:  # a column cut from the price would leak it into any model of the price
        frame = frame.drop(synthetic.CLASS_TARGET)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".parquet", ".pq"):
        frame.write_parquet(out)
    else:
        frame.write_csv(out)
    print(f"wrote {frame.height} rows to {out}")
    return 0
