"""driftline explain NAME: a prediction and each feature's contribution to it, largest first."""

from __future__ import annotations

import argparse
import json
import sys

from driftline.cli.common import add_server


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="why a prediction came out: feature attributions", description=__doc__)
    p.add_argument("name", help="model name")
    add_server(p)
    p.add_argument("--json", required=True, metavar="JSON", help='one row: {"living_area": 84, ...}')
    p.add_argument("--version", default="", help="a loaded version (default: the one serving)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the contributions as a bar chart")
    p.add_argument("--output-json", action="store_true", help="print a JSON object instead of text")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from driftline.attribution import ATTRIBUTION, ATTRIBUTION_BASE
    from driftline.client import Client, ServerError
    from driftline.errors import InvalidInput

    try:
        row = json.loads(args.json)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--json is not valid JSON: {exc}") from exc
    if not isinstance(row, dict):
        raise InvalidInput('--json takes one row as an object, e.g. {"living_area": 84, "district": "Wola"}')
    try:
        with Client(args.server, timeout=args.timeout) as client:
            info = client.model_info(args.name, args.version)
            if not info.explainable:
                offered = ", ".join(t.name for t in info.outputs)
                print(f"driftline explain: {args.name} offers no attributions (outputs: {offered})", file=sys.stderr)
                return 1
            result = client.infer_result(args.name, [row], version=args.version, explain=True)
    except ServerError as exc:
        print(f"driftline explain: {exc.status}: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    outputs = result.outputs
    contributions = sorted(zip(result.columns, outputs[ATTRIBUTION][0].tolist(), [row[c] for c in result.columns],
                               strict=True), key=lambda item: -abs(item[1]))
    base = float(outputs[ATTRIBUTION_BASE][0, 0])
    answer = {k: v[0].reshape(-1).tolist() for k, v in outputs.items() if k not in (ATTRIBUTION, ATTRIBUTION_BASE)}
    if args.output_json:
        print(json.dumps({"model": result.model, "version": result.version, "outputs": answer,
                          "base": base, "contributions": [{"feature": f, "value": x, "contribution": c}
                                                          for f, c, x in contributions]}, indent=2))
    else:
        print(f"{result.model} version {result.version}: "
              + "; ".join(f"{k} {', '.join(_num(x) for x in v)}" for k, v in answer.items()))
        print(f"  starts from {_num(base)} (the average over the training data), then:")
        for feature, contribution, value in contributions:
            print(f"  {_num(contribution, sign=True):>14}  {feature} = {_value(value)}")
        print(f"  = {_num(base + sum(c for _, c, _ in contributions))} (raw model output)")
    if args.plot:
        _plot(args.plot, result, contributions, base)
        print(f"plot written to {args.plot}")
    return 0


def _value(value: object, width: int = 60) -> str:
    """A cell as a reader wants it: numbers short, text quoted and cut."""
    if isinstance(value, str):
        return repr(value if len(value) <= width else value[: width - 3] + "...")
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _num(x: float, sign: bool = False) -> str:
    text = f"{x:+,.0f}" if sign else f"{x:,.0f}"
    if abs(x) < 1e4:
        text = f"{x:+.4g}" if sign else f"{x:.4g}"
    return text


def _plot(path: str, response, contributions, base: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{f} = {_value(x, 30)}" for f, _, x in contributions][::-1]
    values = [c for _, c, _ in contributions][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(values) + 1.5))
    ax.barh(labels, values, color=["#d9534f" if v > 0 else "#5b8fd9" for v in values])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_title(f"{response.model} v{response.version}: contributions from a base of {base:,.0f}",
                 fontsize=10)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
