"""Per-version counters behind the ModelStatistics RPC (Triton's statistics extension)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass
class VersionStats:
    """Updated only on the event loop thread, so plain integers need no lock."""

    last_inference_ms: int = 0
    inference_count: int = 0  # rows answered
    execution_count: int = 0  # onnxruntime calls
    expired: int = 0  # requests dropped from the queue because their deadline passed
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=dict)  # rows per execution -> compute time

    def executed(self, rows: int, compute_ns: int) -> None:
        self.execution_count += 1
        self.compute_infer.add(compute_ns)
        self.batches.setdefault(rows, Duration()).add(compute_ns)

    def succeeded(self, rows: int, request_ns: int) -> None:
        self.inference_count += rows
        self.success.add(request_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def failed(self, request_ns: int) -> None:
        self.fail.add(request_ns)
