"""Input validation on the request path: the version's schema, the same kernel the trainer ran.

Rows breaking a rejecting constraint (a declared limit, a missing or infinite value, by default) refuse
the whole request (INVALID_ARGUMENT naming the row, feature, value and limit) before it reaches the
queue, so the other requests of the batch it would have joined are served. Rows that are only flagged
(outside the training range, or breaking a limit inferred from the training data, by default) are served,
named in the response parameter ``driftline_flagged_rows`` and counted per feature and constraint kind.

The refused caller's own error names its value (it is theirs). The examples kept for ``DriftReport``,
which any caller may read, say the row, the column and the reason, not the value: a personal datum typed
into the wrong cell must not reach everyone who reads the drift report. ``--show-rejected-values``
(``show_rejected_values``) keeps the values, for an operator who trusts every reader.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.errors import InvalidInput, NotANumber
from driftline.kernels.validate import (
    ABOVE_MAX,
    ABOVE_TRAINING_RANGE,
    BELOW_MIN,
    BELOW_TRAINING_RANGE,
    INFINITE,
    KINDS,
    MISSING,
    NOT_A_NUMBER,
    NOT_INTEGER,
    UNKNOWN_CATEGORY,
    ValidationResult,
    Violation,
)
from driftline.registry.schema import Policy, Schema
from driftline.registry.table import CATEGORICAL, TEXT
from driftline.registry.table_view import CHARS, LANGUAGE, OOV, TableEncoder, TableView

FLAGGED_PARAMETER = "driftline_flagged_rows"
EXAMPLES_KEPT = 20
EXAMPLE_CHARS = 300  # a shown value is the sender's: a megabyte of it must not sit in every report
# Process-wide, set once from ServerSettings.show_rejected_values before any version loads (as
# metrics.recording is); a validator reads it when it is made.
show_rejected_values = False
WITHHELD = "(value withheld)"
REASONS = {
    MISSING: "a missing value, which it does not allow",
    BELOW_MIN: "a value below the minimum",
    ABOVE_MAX: "a value above the maximum",
    NOT_INTEGER: "a value that is not a whole number",
    UNKNOWN_CATEGORY: "a value that is not a known category",
    BELOW_TRAINING_RANGE: "a value below the training range",
    ABOVE_TRAINING_RANGE: "a value above the training range",
    NOT_A_NUMBER: "text where a number belongs",
    INFINITE: "a value that is not finite, which it does not allow",
}
_ROW = re.compile(r"row (\d+), ")


@dataclass
class ValidationCounts:
    """Counters of one version (event-loop thread only); mergeable across workers as plain dicts."""

    requests_rejected: int = 0
    rows_rejected: int = 0
    rows_flagged: int = 0
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (feature, constraint) -> values
    examples: deque[str] = field(default_factory=lambda: deque(maxlen=EXAMPLES_KEPT))

    def to_dict(self) -> dict[str, Any]:
        nested: dict[str, dict[str, int]] = {}
        for (feature, kind), n in sorted(self.counts.items()):
            nested.setdefault(feature, {})[kind] = n
        return {"requests_rejected": self.requests_rejected, "rows_rejected": self.rows_rejected,
                "rows_flagged": self.rows_flagged, "counts": nested, "examples": list(self.examples)}

    @staticmethod
    def merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
        total: dict[str, Any] = {"requests_rejected": 0, "rows_rejected": 0, "rows_flagged": 0, "counts": {},
                                 "examples": []}
        for part in parts:
            for key in ("requests_rejected", "rows_rejected", "rows_flagged"):
                total[key] += part.get(key, 0)
            for feature, kinds in part.get("counts", {}).items():
                for kind, n in kinds.items():
                    slot = total["counts"].setdefault(feature, {})
                    slot[kind] = slot.get(kind, 0) + n
            total["examples"] = (total["examples"] + part.get("examples", []))[-EXAMPLES_KEPT:]
        return total


class RequestValidator:
    def __init__(self, schema: Schema, policy: Policy | None = None, encoder: TableEncoder | None = None,
                 show_values: bool | None = None) -> None:
        self.schema = schema if policy is None else schema.with_policy(policy)
        self.counts = ValidationCounts()
        self.encoder = encoder  # a mixed table's: its columns are checked through their view
        self.show_values = show_rejected_values if show_values is None else show_values

    def check(self, rows: np.ndarray) -> np.ndarray | None:
        """None when every row is clean, else the indices of flagged rows; raises when a row is refused."""
        return self._judge(self.schema.validate(rows), len(rows), Violation.message)

    def check_batch(self, rows: np.ndarray) -> tuple[bool, np.ndarray | None]:
        """:meth:`check` of a batch the compiled door formed from several requests: ``(False, None)``, counting
        nothing, when a row would be refused (each request is then checked, and counted, on its own by the Python
        door, so a refusal is counted once); else ``(True, check's answer)``, counted as :meth:`check` counts."""
        result = self.schema.validate(rows)
        if result.any_rejected:
            return False, None
        return True, self._judge(result, len(rows), Violation.message)

    def check_table(self, columns: dict[str, np.ndarray]) -> tuple[np.ndarray | None, TableView]:
        """:meth:`check` of a mixed table's columns; also returns their view, which monitoring reads."""
        view = self.encoder.view(columns)
        return self._judge(self.schema.validate(view.matrix), view.rows,
                           lambda v: describe_table_violation(v, columns, self.encoder)), view

    def _judge(self, result: ValidationResult, rows: int, message) -> np.ndarray | None:  # noqa: ANN001
        if result.ok:
            return None
        self._count(result, message)
        if result.any_rejected:
            rejected = np.flatnonzero(result.rejected_rows)
            first = result.first_violation(int(rejected[0]))
            self.counts.requests_rejected += 1
            self.counts.rows_rejected += len(rejected)
            more = f" ({len(rejected)} of {rows} rows refused)" if len(rejected) > 1 else ""
            raise InvalidInput(f"{message(first)}{more}; nothing in this request was run")
        flagged = np.flatnonzero(result.flagged_rows)
        self.counts.rows_flagged += len(flagged)
        return flagged

    def refused_text(self, error: NotANumber) -> None:
        """Count a request refused while decoding, for text where a number belongs."""
        self.counts.requests_rejected += 1
        self.counts.rows_rejected += 1
        self.counts.counts[(error.feature, NOT_A_NUMBER)] += 1
        self.counts.examples.append(_bounded(str(error)) if self.show_values else withheld_text(error))

    def _count(self, result: ValidationResult, message=Violation.message) -> None:  # noqa: ANN001
        counts = result.counts
        for f, k in zip(*np.nonzero(counts), strict=True):
            self.counts.counts[(self.schema.names[f], KINDS[k])] += int(counts[f, k])
        first = result.first_violation()
        if first is not None:
            self.counts.examples.append(_bounded(message(first)) if self.show_values
                                        else withheld(first, self.encoder))


def withheld(v: Violation, encoder: TableEncoder | None = None) -> str:
    """A violation as anyone may read it: the row, the column and the reason, not the value sent."""
    noun, name = "feature", v.feature
    if encoder is not None:
        noun = "column"
        base = next((v.feature[: -len(d)] for d in (CHARS, OOV, LANGUAGE) if v.feature.endswith(d)), v.feature)
        if base not in encoder.spec.names:
            noun = "feature"
    reason = REASONS.get(v.constraint, f"a value failing {v.constraint}")
    inferred = " (a limit inferred from the training data)" if v.inferred else ""
    hidden = "" if v.constraint == MISSING else f" {WITHHELD}"  # nothing was sent: nothing to withhold
    return f"row {v.row}, {noun} {name!r}: {reason}{inferred}{hidden}"


def withheld_text(error: NotANumber) -> str:
    """:func:`withheld` for text refused while decoding (the error knows its feature; its row is in its words)."""
    row = _ROW.match(str(error))
    where = f"row {row.group(1)}, " if row else ""
    return f"{where}feature {error.feature!r}: {REASONS[NOT_A_NUMBER]} {WITHHELD}"


def _bounded(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 3] + "..."


def describe_table_violation(v: Violation, columns: dict[str, np.ndarray], encoder: TableEncoder) -> str:
    """A violation in a mixed table's words: the column, the value that was sent, the limit."""
    spec = encoder.spec
    base, suffix = v.feature, ""
    for derived in (CHARS, OOV, LANGUAGE):
        if v.feature.endswith(derived):
            base, suffix = v.feature[: -len(derived)], derived
    if base not in spec.names:
        return v.message()
    column = spec.column(base)
    where = f"row {v.row}, column {base!r}"
    inferred = " (a limit inferred from the training data)" if v.inferred else ""
    if column.role == CATEGORICAL and v.constraint == UNKNOWN_CATEGORY:
        sent = str(np.asarray(columns[base]).reshape(-1)[v.row])
        known = ", ".join(column.categories[:12]) + (", ..." if len(column.categories) > 12 else "")
        return f"{where}: {sent!r} is not a known category (known: {known}){inferred}"
    if column.role == TEXT and v.constraint in (BELOW_MIN, ABOVE_MAX):
        side = "below the minimum" if v.constraint == BELOW_MIN else "above the maximum"
        if suffix == "":
            return f"{where}: {v.value:,.0f} words, {side} {v.limit:,.0f}{inferred}"
        if suffix == CHARS:
            return f"{where}: {v.value:,.0f} characters, {side} {v.limit:,.0f}{inferred}"
        if suffix == LANGUAGE:
            common = ", ".join(column.words[:8])
            return (f"{where}: {v.value:.0%} of its words are among the training text's most common words ({common}, "
                    f"...), {side} {v.limit:.0%}: is it in the expected language?{inferred}")
        if suffix == OOV:
            return f"{where}: {v.value:.0%} of its words never occurred in training, {side} {v.limit:.0%}{inferred}"
    return v.message().replace(f"feature {v.feature!r}", f"column {v.feature!r}")
