"""driftline drift NAME: how live traffic compares with the version's training baseline.

Asks a server (``--server``), which answers for itself (all its workers), or for the whole fleet with
``--fleet``; or, with ``--registry URL`` and no server, merges the drift states every live replica
wrote to the registry (server/fleet.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from driftline.cli.common import add_admin, add_server, admin_channel

STATISTICS = ("psi", "js", "ks", "wasserstein", "mean_shift")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drift", help="drift of live traffic against the training baseline", description=__doc__)
    p.add_argument("name", help="model name")
    add_server(p)
    add_admin(p)  # the token reads the training profile --plot draws; --tls-ca for a TLS server
    p.add_argument("--version", default="", help="a loaded version (default: the one serving); with --registry a "
                                                  "number or alias (default: the newest any live replica serves)")
    p.add_argument("--registry", metavar="URL", help="no server: merge every live replica's drift state written to "
                                                     "this registry (a folder or s3://...)")
    p.add_argument("--fleet", action="store_true", help="ask --server for the whole fleet's view (every live "
                                                        "replica's state in the registry, merged)")
    p.add_argument("--fleet-max-age", type=float, metavar="SECONDS",
                   help="with --registry: count a replica as live when its state is at most this old (default: "
                        "3 of the intervals it writes at)")
    p.add_argument("--since-live", action="store_true", help="everything since the version went live, not the window")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.add_argument("--plot", metavar="FILE.png", help="draw training vs live histograms, alarmed columns first")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.registry:
        response, states, info = from_registry(args)
    else:
        answered = from_server(args)
        if isinstance(answered, int):
            return answered
        response, states, info = answered
    section = response.since_live if args.since_live else response.current
    summary = as_json(response, section)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary, "since it went live" if args.since_live else response.window)
    if args.plot:
        from driftline.cli.drift_plot import plot

        plot(args.plot, summary, states, info, since_live=args.since_live)
        print(f"plot written to {args.plot}")
    return 0


def from_registry(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The fleet's report from the registry alone: no server, no model loaded."""
    import time

    from driftline.proto import driftline_pb2 as dpb
    from driftline.registry import open_registry
    from driftline.server import fleet

    registry = open_registry(args.registry)
    now = time.time()
    if args.version:
        version = registry.resolve(args.name, args.version)
    else:
        version = fleet.choose_version(registry.storage, args.name, now, args.fleet_max_age)
    merged = fleet.merged(registry, args.name, version, max_age=args.fleet_max_age, now=now)
    response = fleet.response_of(merged)
    if not args.plot:
        return response, None, None
    window, total = merged.states()
    states = dpb.DriftStatesResponse(window_state_json=json.dumps(window.to_dict()),
                                     total_state_json=json.dumps(total.to_dict()))
    stored = registry.open(args.name, version)
    info = dpb.VersionInfoResponse(name=args.name, version=str(version), metadata_json=stored.metadata.to_json(),
                                   profile_json=merged.monitor.profile.to_json())
    return response, states, info


def from_server(args: argparse.Namespace) -> tuple[Any, Any, Any] | int:
    import grpc

    from driftline.proto import driftline_pb2 as dpb
    from driftline.proto import driftline_pb2_grpc

    if args.plot and args.fleet:
        print("driftline drift: --plot with --fleet: use --registry to draw the fleet's states", file=sys.stderr)
        return 1
    try:
        with admin_channel(args) as (channel, metadata):
            stub = driftline_pb2_grpc.MonitoringStub(channel)
            request = dpb.DriftRequest(name=args.name, version=args.version)
            response = stub.DriftReport(dpb.DriftRequest(name=args.name, version=args.version, fleet=args.fleet),
                                        timeout=args.timeout)
            states = stub.DriftStates(request, timeout=args.timeout) if args.plot else None
            info = None
            if args.plot:  # the token goes with this call only: nothing else here needs it
                info = driftline_pb2_grpc.DriftlineStub(channel).VersionInfo(
                    dpb.VersionInfoRequest(name=args.name, version=response.version), timeout=args.timeout,
                    metadata=metadata)
    except grpc.RpcError as exc:
        print(f"driftline drift: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    if args.plot and not info.profile_json:
        print("driftline drift: --plot needs the training profile, which this server shows to admin callers only: "
              "pass --admin-token (or set $DRIFTLINE_ADMIN_TOKEN)", file=sys.stderr)
        return 1
    return response, states, info


def as_json(response: Any, section: Any) -> dict[str, Any]:
    def column(c: Any) -> dict[str, Any]:
        return {"name": c.name, "kind": c.kind, "rows": c.rows, **{s: _finite(getattr(c, s)) for s in STATISTICS},
                "p_value": _probability(c.p_value), "p_adjusted": _probability(c.p_adjusted), "note": c.note,
                "discrete": c.discrete, "alarm": c.alarm, "alarms": list(c.alarms)}

    return {
        "model": response.name,
        "version": response.version,
        "window": response.window,
        "rows": section.rows,
        "alarm": section.alarm,
        "features": [column(c) for c in section.features],
        "prediction": [column(c) for c in section.outputs],
        "thresholds": json.loads(response.thresholds_json or "{}"),
        "validation": json.loads(response.validation_json or "{}"),
        "attribution": {"features": [column(c) for c in section.attribution],
                        **json.loads(response.attribution_flags_json or "{}")},
        **({"fleet": json.loads(response.fleet_json)} if response.fleet_json else {}),
    }


def print_table(summary: dict[str, Any], window: str) -> None:
    state = "ALARM" if summary["alarm"] else "ok"
    print(f"{summary['model']} version {summary['version']}: {summary['rows']} rows, {window}: {state}")
    header = ("COLUMN", "ROWS", "PSI", "JS", "KS", "W1", "MEAN SHIFT", "P ADJ", "ALARM")
    rows = [header]
    for group in ("features", "prediction"):
        for c in summary[group]:
            rows.append((c["name"], str(c["rows"]), *(_fmt(c[s]) for s in STATISTICS), _fmt(c.get("p_adjusted")),
                         _verdict(c)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.rjust(w) if 0 < i < len(header) - 1 else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    attribution = summary.get("attribution") or {}
    shares = [c for c in attribution.get("features", []) if c["rows"]]
    if shares:
        moved = [c for c in shares if c["alarm"]]
        # a quiet share with too few sampled rows has not been checked: say so rather than "as in training"
        unchecked = next((c["note"] for c in shares if c.get("note")), "")
        verdict = unchecked or "as in training"
        print(f"attribution shares ({shares[0]['rows']} sampled rows): "
              + (", ".join(f"{c['name']} ({','.join(c['alarms'])})" for c in moved) if moved else verdict))
    if attribution.get("flagged_rows"):
        print(f"rows driven by values outside the training range: {attribution['flagged_rows']} of "
              f"{attribution['sampled_rows']} explained")
        for example in attribution["examples"][-3:]:
            print(f"  e.g. {example}")
    if summary.get("fleet"):
        _print_fleet(summary["fleet"])
    validation = summary.get("validation") or {}
    if validation.get("rows_rejected") or validation.get("rows_flagged"):
        print(f"validation since live: {validation['requests_rejected']} requests refused "
              f"({validation['rows_rejected']} rows), {validation['rows_flagged']} rows served but flagged")
        for feature, kinds in validation["counts"].items():
            print(f"  {feature}: " + ", ".join(f"{k} x{n}" for k, n in kinds.items()))
        for example in validation["examples"][-3:]:
            print(f"  e.g. {example}")


def _print_fleet(fleet: dict[str, Any]) -> None:
    print(f"fleet: {len(fleet['replicas'])} live replica(s) merged: {', '.join(fleet['replicas'])}")
    if fleet["stale"]:
        print(f"  left out as stale ({fleet['rule']}): "
              + ", ".join(f"{s['replica']} ({s['age_s']:.0f} s ago)" for s in fleet["stale"]))
    for line in fleet.get("unreadable", []):
        print(f"  unreadable: {line}")
    if fleet.get("settings_differ"):
        print("  window or thresholds differ on: " + ", ".join(fleet["settings_differ"]))


def _finite(value: float) -> float | None:
    return None if value != value or value in (float("inf"), float("-inf")) else round(value, 6)


def _probability(value: float) -> float | None:
    """Six significant digits: rounding to decimals would turn every strong result into 0."""
    return None if value != value else float(f"{value:.6g}")


def _verdict(column: dict[str, Any]) -> str:
    """The alarms, else why the column could not alarm (an empty cell would read as "no drift")."""
    if column["alarm"]:
        return ",".join(column["alarms"])
    return column.get("note") or ""


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1e5 else f"{value:.3e}"
