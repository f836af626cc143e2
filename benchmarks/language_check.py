"""How often the language check (and the other drift alarms of a mixed table) fire on fresh data of the training
distribution, and how often they catch English listings.

Trains the synthetic listings model once, then feeds windows of listings through the server's own monitor code
(registry/table_view.py, server/monitor.py, server/language.py) without a server: null windows are fresh Polish
listings of new seeds; the others mix in a share of English ones. Prints, per window size, the share of windows
that alarmed on the word table (the language check) and on any column.

    .venv/bin/python benchmarks/language_check.py --windows 100
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from driftline.registry.table import table_of
from driftline.registry.table_view import TableEncoder
from driftline.server.monitor import DriftSettings, VersionMonitor
from driftline.trainer import synthetic
from driftline.trainer.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=100, help="windows per case")
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 300, 1000], help="window sizes (listings)")
    args = parser.parse_args()
    trained = train(TrainConfig(model="listings", synthetic="listings", rows=4000, seed=1,
                                params={"n_estimators": 60}))
    table = table_of(trained.metadata.extra)
    encoder = TableEncoder(table)
    outputs = [o.name for o in trained.metadata.outputs]

    def window(seed: int, rows: int, english: float) -> tuple[bool, set[str]]:
        polish = synthetic.listings(rows, seed=seed)
        if english:
            other = synthetic.listings(rows, seed=seed, shift="english_listings")
            pick = np.random.default_rng(seed).random(rows) < english
            polish = polish.with_columns(pl.Series("description", np.where(
                pick, other["description"].to_numpy(), polish["description"].to_numpy())))
        monitor = VersionMonitor(trained.profile, len(encoder.columns), outputs,
                                 DriftSettings(window_rows=10 * rows, attribution_sample=0), features=table.names,
                                 encoder=encoder)
        cells = {c.name: (np.array(polish[c.name].to_list(), dtype=object) if c.datatype == "BYTES"
                          else polish[c.name].cast(pl.Float64).to_numpy()) for c in table.columns}
        # The model's answers are not what this measures: the training median stands in for them.
        answers = {name: np.full((rows, 1), trained.profile.column(name).quantiles[3], dtype=np.float32)
                   for name in outputs}
        monitor.update_table(encoder.view(cells), {**answers, table.encoded_output: np.zeros((rows, 1))}, cells)
        report = monitor.report().current
        words = next(c for c in report if c.name.endswith(".words"))
        return words.alarm, {c.name for c in report if c.alarm and c.name not in outputs}

    print(f"{'rows':>6} {'english':>8} {'language alarms':>16} {'any input alarm':>16}  columns that alarmed")
    for rows in args.rows:
        for english in (0.0, 0.25, 0.5, 1.0):
            language, columns, seen = 0, 0, set()
            for seed in range(1000, 1000 + args.windows):
                alarmed, names = window(seed, rows, english)
                language += alarmed
                columns += bool(names)
                seen |= names
            print(f"{rows:>6} {english:>8.0%} {language:>9} of {args.windows:<4} {columns:>9} of {args.windows:<4}  "
                  + ", ".join(sorted(seen)))


if __name__ == "__main__":
    main()
