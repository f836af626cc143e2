"""Input validation on the request path: the version's schema, the same kernel the trainer ran.

Rows breaking a rejecting constraint (a declared limit, a missing or infinite value, by default) refuse
the whole request (INVALID_ARGUMENT naming the row, feature, value and limit) before it reaches the
queue, so the other requests of the batch it would have joined are served. Rows that are only flagged
(outside the training range, or breaking a limit inferred from the training data, by default) are served,
named in the response parameter ``driftline_flagged_rows`` and counted per feature and constraint kind.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.errors import InvalidInput, NotANumber
from driftline.kernels.validate import KINDS, NOT_A_NUMBER, ValidationResult
from driftline.registry.schema import Policy, Schema

FLAGGED_PARAMETER = "driftline_flagged_rows"
EXAMPLES_KEPT = 20


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
    def __init__(self, schema: Schema, policy: Policy | None = None) -> None:
        self.schema = schema if policy is None else schema.with_policy(policy)
        self.counts = ValidationCounts()

    def check(self, rows: np.ndarray) -> np.ndarray | None:
        """None when every row is clean, else the indices of flagged rows; raises when a row is refused."""
        result = self.schema.validate(rows)
        if result.ok:
            return None
        self._count(result)
        if result.any_rejected:
            rejected = np.flatnonzero(result.rejected_rows)
            first = result.first_violation(int(rejected[0]))
            self.counts.requests_rejected += 1
            self.counts.rows_rejected += len(rejected)
            more = f" ({len(rejected)} of {len(rows)} rows refused)" if len(rejected) > 1 else ""
            raise InvalidInput(f"{first.message()}{more}; nothing in this request was run")
        flagged = np.flatnonzero(result.flagged_rows)
        self.counts.rows_flagged += len(flagged)
        return flagged

    def refused_text(self, error: NotANumber) -> None:
        """Count a request refused while decoding, for text where a number belongs."""
        self.counts.requests_rejected += 1
        self.counts.rows_rejected += 1
        self.counts.counts[(error.feature, NOT_A_NUMBER)] += 1
        self.counts.examples.append(str(error))

    def _count(self, result: ValidationResult) -> None:
        counts = result.counts
        for f, k in zip(*np.nonzero(counts), strict=True):
            self.counts.counts[(self.schema.names[f], KINDS[k])] += int(counts[f, k])
        first = result.first_violation()
        if first is not None:
            self.counts.examples.append(first.message())
