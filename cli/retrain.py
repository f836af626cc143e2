"""driftline retrain NAME --data PATH: repeat the production recipe on new data; publish only if no worse.

Run it by hand, from cron (`0 3 * * * driftline retrain housing --data /data/latest.parquet --promote`),
from a Kubernetes CronJob running the same command, or let it loop with --every / --on-drift.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from driftline.cli.common import add_registry, add_server

log = logging.getLogger("driftline.retrain")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="retrain on new data; publish only if no worse", description=__doc__)
    p.add_argument("name", help="model name")
    p.add_argument("--data", required=True, metavar="PATH", help="new training data (CSV or Parquet)")
    add_registry(p)
    p.add_argument("--base", help="version or alias to repeat and beat (default: production, else the latest)")
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="how much worse the primary metric (r2 or accuracy) may be (default 0.02)")
    p.add_argument("--tests", metavar="FILE.yaml",
                   help="model tests the candidate must pass (default: the tests stored in the version it replaces)")
    p.add_argument("--allow", action="append", default=[], metavar="CHECK",
                   help="publish despite a failed gate: underfit, overfit, leakage or tests (as train --allow)")
    p.add_argument("--promote", action="store_true", help="move production to the new version when published")
    p.add_argument("--snapshot-data", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the new training table in the version, as train does (default: on for a local "
                        "registry, off for an object store unless DRIFTLINE_SNAPSHOT_DATA=1)")
    p.add_argument("--every", metavar="DURATION", help="repeat on a schedule: 30m, 6h, 1d")
    p.add_argument("--on-drift", action="store_true", help="only retrain while the server's drift alarm is up")
    add_server(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    every = parse_duration(args.every) if args.every else None
    while True:
        status = once(args)
        if every is None:
            return status
        time.sleep(every)


def once(args: argparse.Namespace) -> int:
    from driftline.registry import open_registry
    from driftline.trainer.retrain import retrain

    if args.on_drift and not drift_alarm(args.server, args.name):
        print(f"{args.name}: no drift alarm on {args.server}; not retraining")
        return 0
    from driftline.trainer.fuses import FuseBlown  # model tests refuse with it too (TestsFailed)
    from driftline.trainer.model_tests import result_lines
    from driftline.trainer.model_tests_file import load as load_tests

    from driftline.trainer import snapshot

    registry = open_registry(args.registry)
    try:
        tests = load_tests(args.tests) if args.tests else None
        outcome, candidate = retrain(registry, args.name, args.data, args.tolerance, args.base, tests=tests,
                                     allow=tuple(dict.fromkeys(args.allow)),
                                     snapshot_data=snapshot.wanted(args.snapshot_data, args.registry,
                                                                   os.environ.get(snapshot.ENV)))
    except FuseBlown as exc:  # the candidate failed its own fit fuses: a refusal like a worse metric
        print(f"{args.name}: refused: {exc}")
        return 3
    print(f"{args.name}: {outcome.reason}")
    for line in result_lines(candidate.metadata.extra.get("model_tests") if candidate else None):
        print(f"{args.name}: {line}")
    if outcome.published is None:
        return 3
    if args.promote:
        registry.promote(args.name, outcome.published)
        print(f"{args.name}: production -> version {outcome.published}")
    return 0


def drift_alarm(server: str, name: str) -> bool:
    import grpc

    from driftline.proto import driftline_pb2 as dpb
    from driftline.proto import driftline_pb2_grpc

    with grpc.insecure_channel(server) as channel:
        report = driftline_pb2_grpc.MonitoringStub(channel).DriftReport(dpb.DriftRequest(name=name), timeout=30)
    return report.current.alarm


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use e.g. 90s, 30m, 6h, 1d") from None
