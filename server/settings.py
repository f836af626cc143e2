"""Server configuration: one typed value, built by the CLI, passed to the parts that need it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerSettings:
    registry: str
    host: str = "127.0.0.1"
    port: int = 8001  # 0 picks a free port; the chosen one is printed on start
    models: tuple[str, ...] = field(default_factory=tuple)  # "NAME" or "NAME:VERSION"; empty: every model, latest
    device: str = "auto"  # "auto" (CUDA when a GPU is visible), "cpu" or "cuda"
    intra_op_threads: int = 1  # per onnxruntime call: small tabular batches gain nothing from more
    inference_threads: int = field(default_factory=lambda: os.cpu_count() or 1)  # concurrent onnxruntime calls
    max_message_bytes: int = 64 * 1024 * 1024
    shutdown_grace_s: float = 5.0

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.intra_op_threads < 0 or self.inference_threads < 1:
            raise ValueError("intra_op_threads must be >= 0 and inference_threads >= 1")
