"""A one-page model card, written into every trained version beside the model (so the manifest checksums it).

``MODEL_CARD.md`` says what a person deciding whether to serve a version needs on one page: the lineage (data
hash, code version, parameters), the holdout metrics, the fit fuses and the leakage check, the model tests and
slice metrics (trainer/model_tests.py), and every override. Two small PNG plots sit beside it when their data
exists: ``card_features.png`` (the training baseline of each feature and of the prediction, from the version's
profile) and ``card_slices.png`` (the metric per slice, with the overall value and the bound a slice must meet).
Everything comes from the metadata and profile being published: the card cannot disagree with the lineage.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from driftline.registry.metadata import TRAINED_BY_DRIFTLINE
from driftline.registry.profile import CATEGORICAL, NUMERIC, Profile
from driftline.registry.table import TEXT, table_of

CARD_FILE = "MODEL_CARD.md"
FEATURES_PLOT = "card_features.png"
SLICES_PLOT = "card_slices.png"
MAX_PLOTTED = 15  # features in the baseline plot; a wide table shows its first ones and says so
CARDED = TRAINED_BY_DRIFTLINE  # versions with a card: those whose lineage driftline made
DPI = 60  # small on purpose: a card plot is a glance, a few tens of KB


def card_files(name: str, metadata: Any, profile: Profile | None) -> dict[str, bytes]:
    """The card and its plots, by file name in the version."""
    files: dict[str, bytes] = {}
    features = _features_plot(metadata, profile)
    if features is not None:
        files[FEATURES_PLOT] = features
    slices = _slices_plot(metadata)
    if slices is not None:
        files[SLICES_PLOT] = slices
    files[CARD_FILE] = card_text(name, metadata, plots=tuple(files)).encode()
    return files


def card_text(name: str, meta: Any, plots: tuple[str, ...] = ()) -> str:
    extra = meta.extra
    lines = [f"# Model card: {name}", ""]
    origin = f", retrained from version {extra['retrained_from']}" if "retrained_from" in extra else ""
    lines += [f"A {meta.task} model ({meta.estimator}) predicting `{meta.target}` from {len(meta.features)} "
              f"feature(s), created {meta.created_at} by `{meta.source}`{origin}. Every file of this version, this "
              "card included, is listed with its sha256 in `manifest.json`.", ""]
    lines += ["## Lineage", "", "| | |", "|---|---|",
              f"| data | `{meta.data_version}`, {meta.data_rows} rows, {_cell(extra.get('data', '-'))} |",
              f"| code | `{meta.code_version}` |",
              f"| parameters | {_cell(_pairs(meta.parameters))} |",
              f"| holdout | {extra.get('holdout_rows', '-')} rows ({extra.get('holdout_fraction', '-')} of the data), "
              f"seed {extra.get('seed', '-')} |",
              f"| features | {_cell(', '.join(f'{f.name} ({f.dtype})' for f in meta.features))} |", ""]
    lines += ["## Holdout metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_num(v)} |" for k, v in sorted(meta.metrics.items())] + [""]
    lines += _fuses(extra.get("fuses")) + _leakage(extra.get("leakage")) + _tests(extra.get("model_tests"), plots)
    lines += ["## Overrides", ""] + [f"- {o}" for o in overrides(extra) or ["none: every gate passed on its own."]]
    lines.append("")
    if FEATURES_PLOT in plots:
        lines += ["## Training baseline", "", "What the training rows looked like (the profile drift is measured "
                  "against), per feature and for the prediction:", "", f"![baseline distributions]({FEATURES_PLOT})",
                  ""]
    return "\n".join(lines)


def overrides(extra: dict[str, Any]) -> list[str]:
    """Every gate that failed and was published anyway, in words."""
    out = []
    fuses = extra.get("fuses") or {}
    for fuse in fuses.get("overridden", []):
        if fuse in fuses.get("blown", []):
            out.append(f"fit fuse {fuse} blown, published with --allow {fuse}")
    leakage = extra.get("leakage") or {}
    if leakage.get("overridden") and leakage.get("flagged"):
        out.append("target leakage in " + ", ".join(f["feature"] for f in leakage["flagged"])
                   + ", published with --allow leakage")
    tests = extra.get("model_tests") or {}
    if tests.get("overridden"):
        out.append(f"model test(s) {', '.join(tests['failed'])} failed, published with --allow tests")
    return out


def _fuses(fuses: dict[str, Any] | None) -> list[str]:
    if not fuses:
        return []
    state = ", ".join(f"{b} BLOWN" for b in fuses["blown"]) or "none blown"
    return ["## Fit fuses", "",
            f"{state}. Holdout {fuses['metric']} {_num(fuses['holdout'])}, training rows {_num(fuses['train'])} "
            f"(gap {_num(fuses['gap'])}, at most {_num(fuses['overfit_gap'])}); a trivial model "
            f"({fuses['baseline_strategy']}) scores {_num(fuses['baseline'])} (the model needs "
            f"+{_num(fuses['underfit_margin'])}).", ""]


def _leakage(leakage: dict[str, Any] | None) -> list[str]:
    if leakage is None:
        return []
    if not leakage["flagged"]:
        return ["## Leakage", "", "No feature is a near-deterministic function of the target.", ""]
    flagged = "; ".join(f"{f['feature']} ({f['direction']}, {f['metric']} {_num(f['score'])})"
                        for f in leakage["flagged"])
    return ["## Leakage", "", f"Flagged: {flagged}.", ""]


def _tests(tests: dict[str, Any] | None, plots: tuple[str, ...]) -> list[str]:
    if not tests:
        return ["## Model tests", "", "No tests.yaml was given for this version.", ""]
    lines = ["## Model tests", "", f"From `{tests['origin']}` (stored in this version as `{tests['file']}`): "
             f"{tests['passed']} of {len(tests['cases'])} passed.", "",
             "| test | kind | result | numbers |", "|---|---|---|---|"]
    for case in tests["cases"]:
        result = "passed" if case["passed"] else ("FAILED" if case["gate"] else "failed (gate: false)")
        lines.append(f"| {_cell(case['name'])} | {case['kind']} | {result} | {_cell(case['summary'])} |")
    lines.append("")
    slices = [c for c in tests["cases"] if c["kind"] == "slice"]
    if slices:
        lines += ["## Slice metrics", ""]
        for case in slices:
            lines += [f"{case['name']}: {case['metric']} per {case['column']} (overall {_num(case['overall'])}, "
                      f"bound {_num(case['bound'])}):", "", "| slice | rows | value | |", "|---|---|---|---|"]
            for s in case["slices"]:
                verdict = "too few rows" if s["passed"] is None else ("ok" if s["passed"] else "WORSE")
                value = "-" if s["value"] is None else _num(s["value"])
                lines.append(f"| {_cell(s['slice'])} | {s['rows']} | {value} | {verdict} |")
            lines.append("")
        if SLICES_PLOT in plots:
            lines += [f"![metric per slice]({SLICES_PLOT})", ""]
    return lines


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1000 or not np.isfinite(value) else f"{value:,.0f}"


# --- plots ------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and the same bytes on a server as on a laptop
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    _pyplot().close(fig)
    return buffer.getvalue()


def _features_plot(meta: Any, profile: Profile | None) -> bytes | None:
    if profile is None:
        return None
    table = table_of(meta.extra)
    categories = {c.name: c.categories for c in table.columns} if table is not None else {}
    text = {c.name for c in table.columns if c.role == TEXT} if table is not None else set()
    names = [n for n in [*meta.feature_names, "prediction", "label"] if n in profile.names]
    if not names:
        return None
    shown = names[:MAX_PLOTTED] + [n for n in ("prediction", "label") if n in names[MAX_PLOTTED:]]
    plt = _pyplot()
    cols = 4
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.7 * rows), squeeze=False)
    for ax, name in zip(axes.flat, shown, strict=False):
        column = profile.column(name)
        counts = np.asarray(column.counts, dtype=float)
        if column.kind == NUMERIC and len(column.edges) >= 2:
            inner, edges = counts[1:-1], np.asarray(column.edges, dtype=float)
            if len(edges) == len(inner) + 1 and np.all(np.diff(edges) > 0) and not column.discrete:
                ax.stairs(inner / max(inner.sum(), 1) / np.diff(edges), edges, fill=True, color="#7a9cc6")
            else:  # a flag or a count: one bar per value
                ax.bar(np.arange(len(inner)), inner / max(inner.sum(), 1), color="#7a9cc6")
                ax.set_xticks(np.arange(len(inner)), [f"{e:.3g}" for e in column.edges[: len(inner)]], fontsize=6)
        elif column.kind == CATEGORICAL:
            labels = list(categories.get(name, ()))[: len(counts) - 1] or [str(i) for i in range(len(counts) - 1)]
            top = counts[: len(labels)]
            ax.bar(np.arange(len(top)), top / max(counts.sum(), 1), color="#7a9cc6")
            ax.set_xticks(np.arange(len(top)), [str(label)[:10] for label in labels], fontsize=6,
                          rotation=45, ha="right")
        title = f"{name} (words per row)" if name in text else name
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    if len(names) > len(shown):
        fig.suptitle(f"first {len(shown) - 1} of {len(names) - 1} features and the prediction", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _slices_plot(meta: Any) -> bytes | None:
    tests = meta.extra.get("model_tests") or {}
    cases = [c for c in tests.get("cases", []) if c["kind"] == "slice" and any(
        s["value"] is not None for s in c["slices"])]
    if not cases:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(cases), 1, figsize=(6.5, 1.9 * len(cases)), squeeze=False)
    for ax, case in zip(axes.flat, cases, strict=True):
        judged = [s for s in case["slices"] if s["value"] is not None]
        x = np.arange(len(judged))
        colours = ["#5cb85c" if s["passed"] else "#d9534f" for s in judged]
        ax.bar(x, [s["value"] for s in judged], color=colours)
        ax.axhline(case["overall"], color="black", linewidth=1, label="overall")
        ax.axhline(case["bound"], color="#d9534f", linewidth=1, linestyle="--", label="bound")
        ax.set_xticks(x, [f"{str(s['slice'])[:14]}\n{s['rows']} rows" for s in judged], fontsize=6)
        ax.set_title(f"{case['name']}: {case['metric']} per {case['column']}", fontsize=8)
        ax.tick_params(axis="y", labelsize=6)
        ax.legend(fontsize=6, loc="lower right" if case["higher_is_better"] else "upper right")
    fig.tight_layout()
    return _png(fig)
