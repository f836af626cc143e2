"""``driftline drift --plot``: training histogram against the live one, per column, alarmed first."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from driftline.kernels.drift import DriftState
from driftline.registry.profile import WORDS, Profile
from driftline.registry.table import CATEGORICAL, TEXT, table_of


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
    names = _category_names(info)
    for ax, column in zip(axes.flat, columns, strict=False):
        i = index[column["name"]]
        ref = reference.columns[i]
        ref_counts = np.asarray(ref.counts, dtype=float)
        live_counts = live.counts[i, : len(ref.counts)].astype(float)
        labels = _bin_labels(ref, names.get(column["name"], ()))
        if ref.kind == WORDS:  # hundreds of words: the most frequent ones, the rest, and unknown words
            ref_counts, live_counts, labels = _top_words(ref_counts, live_counts, names.get(column["name"], ()))
        ref_freq = ref_counts / max(ref_counts.sum(), 1)
        live_freq = live_counts / max(live_counts.sum(), 1)
        x = np.arange(len(labels))
        ax.bar(x - 0.2, ref_freq, width=0.4, label="training", color="#7a9cc6")
        ax.bar(x + 0.2, live_freq, width=0.4, label="live", color="#d9534f" if column["alarm"] else "#5cb85c")
        title = f"{column['name']}  PSI {column['psi'] or 0:.2f}  KS {column['ks'] or 0:.2f}"
        if column.get("p_adjusted") is not None:
            title += f"  p {column['p_adjusted']:.2g}"
        if column.get("note"):
            title += f"\n{column['note']}"  # not checked yet: not the same as "as in training"
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


def _category_names(info: Any) -> dict[str, tuple[str, ...]]:
    """A mixed table's category names and training words, by profile column."""
    table = table_of(json.loads(info.metadata_json or "{}").get("extra", {}))
    if table is None:
        return {}
    names = {c.name: c.categories for c in table.columns if c.role == CATEGORICAL}
    names.update({c.name + ".words": c.words for c in table.columns if c.role == TEXT})
    return names


def _top_words(ref: np.ndarray, live: np.ndarray, words: tuple[str, ...], shown: int = 12
               ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    vocabulary = len(words)
    def grouped(counts: np.ndarray) -> np.ndarray:
        return np.concatenate([counts[:shown], [counts[shown:vocabulary].sum(), counts[vocabulary:].sum()]])
    return grouped(ref), grouped(live), [*words[:shown], "other known", "unknown"]


def _bin_labels(column: Any, names: tuple[str, ...] = ()) -> list[str]:
    if column.kind != "numeric":
        return [names[i] if i < len(names) else str(i) for i in range(column.categories)] + ["other"]
    edges = list(column.edges)
    return ["<" + _short(edges[0])] + [_short(e) for e in edges[:-1]] + [">" + _short(column.max)]


def _short(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.2f}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.0f}k"
    return f"{value:.3g}"
