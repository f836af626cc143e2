"""``driftline drift --plot``: training histogram against the live one, per column, alarmed first."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from driftline.kernels.drift import DriftState
from driftline.registry.profile import Profile


def plot(path: str, summary: dict[str, Any], states: Any, info: Any, *, since_live: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    live = DriftState.from_dict(json.loads(states.total_state_json if since_live else states.window_state_json))
    reference = _reference(info)
    columns = summary["features"] + summary["prediction"]
    columns.sort(key=lambda c: (not c["alarm"], -(c["psi"] or 0)))
    cols = 3
    rows = -(-len(columns) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 2.8 * rows), squeeze=False)
    index = {name: i for i, name in enumerate(reference.names)}
    for ax, column in zip(axes.flat, columns, strict=False):
        i = index[column["name"]]
        ref = reference.columns[i]
        ref_freq = np.asarray(ref.counts, dtype=float) / max(sum(ref.counts), 1)
        live_counts = live.counts[i, : len(ref.counts)].astype(float)
        live_freq = live_counts / max(live_counts.sum(), 1)
        labels = _bin_labels(ref)
        x = np.arange(len(labels))
        ax.bar(x - 0.2, ref_freq, width=0.4, label="training", color="#7a9cc6")
        ax.bar(x + 0.2, live_freq, width=0.4, label="live", color="#d9534f" if column["alarm"] else "#5cb85c")
        title = f"{column['name']}  PSI {column['psi'] or 0:.2f}  KS {column['ks'] or 0:.2f}"
        ax.set_title(("ALARM  " if column["alarm"] else "") + title, fontsize=9,
                     color="#b00" if column["alarm"] else "black")
        step = max(1, len(labels) // 6)
        ax.set_xticks(x[::step], labels[::step], fontsize=7, rotation=30)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{summary['model']} version {summary['version']}: {summary['rows']} live rows vs training "
                 f"({'since live' if since_live else summary['window']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reference(info: Any) -> Profile:
    return Profile.from_json(info.profile_json)


def _bin_labels(column: Any) -> list[str]:
    if column.kind == "categorical":
        return [str(i) for i in range(column.categories)] + ["other"]
    edges = list(column.edges)
    return ["<" + _short(edges[0])] + [_short(e) for e in edges[:-1]] + [">" + _short(column.max)]


def _short(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.2f}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.0f}k"
    return f"{value:.3g}"
