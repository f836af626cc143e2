"""Server configuration: one typed value, built by the CLI, passed to the parts that need it."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from driftline.server.batcher import BatchSettings


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
    workers: int = 1  # server processes sharing the port (see workers.py)
    worker_index: int = 0  # set by the parent for each worker
    reuse_port: bool = False  # several processes listen on one port
    peer_dir: str | None = None  # where workers' private sockets live
    batching: BatchSettings = field(default_factory=BatchSettings)  # every model's, unless overridden
    model_batching: dict[str, BatchSettings] = field(default_factory=dict)  # per model name

    def batching_for(self, model: str) -> BatchSettings:
        return self.model_batching.get(model, self.batching)

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.intra_op_threads < 0 or self.inference_threads < 1:
            raise ValueError("intra_op_threads must be >= 0 and inference_threads >= 1")


def load_model_config(path: str | Path, defaults: BatchSettings) -> dict[str, BatchSettings]:
    """Per-model batching from a TOML file, one table per model name::

        [housing]
        max_batch_size = 128
        max_queue_delay_us = 200
        max_queue_size = 2048
    """
    try:
        raw: dict[str, Any] = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read model config {path}: {exc}") from exc
    known = {f.name for f in fields(BatchSettings)}
    per_model = {}
    for model, table in raw.items():
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{model}] must be a table of settings")
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"{path}: [{model}] has unknown settings {sorted(unknown)}; known: {sorted(known)}")
        per_model[model] = replace(defaults, **table)
    return per_model
