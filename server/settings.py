"""Server configuration: one typed value, built by the CLI, passed to the parts that need it."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from driftline.registry.schema import Policy, Schema
from driftline.server.batcher import BatchSettings
from driftline.kernels.drift_stats import Thresholds
from driftline.server.monitor import DriftSettings


@dataclass(frozen=True)
class ServerSettings:
    registry: str
    host: str = "127.0.0.1"
    port: int = 8001  # 0 picks a free port; the chosen one is printed on start
    models: tuple[str, ...] = field(default_factory=tuple)  # "NAME" or "NAME:VERSION"; empty: every model, latest
    device: str = "auto"  # "auto" (CUDA when a GPU is visible), "cpu" or "cuda"
    # A version on the CUDA provider keeps its batches on the GPU (server/device_batch.py) unless "off".
    device_path: str = "auto"
    device_memory_mib: int | None = None  # the bound on the device path's pools; None: a quarter of the GPU
    intra_op_threads: int = 1  # per onnxruntime call: small tabular batches gain nothing from more
    inference_threads: int = field(default_factory=lambda: os.cpu_count() or 1)  # concurrent onnxruntime calls
    # Hostile-world bounds (issue 13): one message, one stream, every queue (README "Serving").
    max_message_bytes: int = 64 * 1024 * 1024  # one gRPC message or HTTP body; larger ones are refused by size
    stream_window: int = 16  # messages of one ModelStreamInfer between read and answered; then the reader waits
    max_queued_bytes: int = 256 * 1024 * 1024  # input bytes held by queued/executing requests, per process
    shutdown_grace_s: float = 5.0
    workers: int = 1  # server processes sharing the port (see workers.py)
    worker_index: int = 0  # set by the parent for each worker
    reuse_port: bool = False  # several processes listen on one port
    peer_dir: str | None = None  # where workers' private sockets live
    # The served-version record's folder (record.py); None: <registry>/.serving for a local registry.
    state_dir: str | None = None
    # A worker that keeps dying is restarted after 0.2 s, doubling to 10 s; this many deaths within the
    # window and the server stops (exit 1) rather than limp on with fewer workers.
    worker_restart_limit: int = 5
    worker_restart_window_s: float = 60.0
    batching: BatchSettings = field(default_factory=BatchSettings)  # every model's, unless overridden
    model_batching: dict[str, BatchSettings] = field(default_factory=dict)  # per model name
    admin_token: str | None = None  # required for admin calls; without it they are loopback-only
    tls_cert: str | None = None  # PEM files: serve TLS when both cert and key are given
    tls_key: str | None = None
    tls_client_ca: str | None = None  # ask clients for certificates signed by this CA (mutual TLS)
    # Values a client sent, in what other clients may read (drift report examples): withheld unless the operator
    # asks, since any caller of DriftReport would see them.
    show_rejected_values: bool = False
    metrics_token: str | None = None  # /metrics asks for "Authorization: Bearer <token>" when set
    poll_s: float | None = None  # follow the registry's production alias, checking every N seconds
    # Fleet-wide drift (server/fleet.py): write this replica's drift state to the registry every N seconds (0: off)
    fleet_interval_s: float = 10.0
    replica_id: str | None = None  # its name there; None: the host name (the pod name on Kubernetes)
    monitor: bool = True  # drift monitoring on executed batches (off only to measure what it costs)
    drift: DriftSettings = field(default_factory=DriftSettings)
    model_drift: dict[str, DriftSettings] = field(default_factory=dict)  # per model name
    model_validation: dict[str, dict[str, str]] = field(default_factory=dict)  # per model: constraint -> action
    metrics_port: int | None = None  # Prometheus /metrics on host:PORT (worker 0); 0 picks a free one; None: off
    metrics_optional: bool = False  # the CLI's default port: when it is busy, warn and serve without metrics
    http_port: int | None = None  # the protocol's HTTP/REST binding on host:PORT; 0 picks a free one; None: off
    http_optional: bool = False  # the CLI's default port: when it is busy, warn and serve gRPC only
    log_format: str = "text"  # "json": one object per line, with the request's trace id
    reflection: bool = True  # gRPC server reflection (grpcurl, grpcui, Postman)
    event_loop: str = "auto"  # "auto" (uvloop when installed), "uvloop" or "asyncio": event_loop.resolve checks it
    front_end: str = "auto"  # the gRPC port's: "python", "compiled" (server/compiled/) or "auto" (front_end.choose)

    def batching_for(self, model: str) -> BatchSettings:
        return self.model_batching.get(model, self.batching)

    def drift_for(self, model: str) -> DriftSettings:
        return self.model_drift.get(model, self.drift)

    def validation_for(self, model: str, schema: Schema) -> Policy:
        """The version's own policy, with this server's overrides for the model (constraint -> reject/flag/off)."""
        return schema.policy.with_overrides(self.model_validation.get(model))

    def __post_init__(self) -> None:
        _check_device(self)
        for label, port in (("port", self.port), ("metrics port", self.metrics_port), ("HTTP port", self.http_port)):
            if port is not None and not 0 <= port <= 65535:
                raise ValueError(f"{label} must be 0-65535, got {port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("mutual TLS (a client CA) needs the server's own certificate and key")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        _check_fleet_settings(self)
        if self.shutdown_grace_s < 0:
            raise ValueError(f"shutdown grace must be >= 0 seconds, got {self.shutdown_grace_s}")
        if self.worker_restart_limit < 1 or self.worker_restart_window_s <= 0:
            raise ValueError("worker restart limit must be >= 1 and its window > 0 seconds")
        _check_front_end(self.front_end)
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log format must be text or json, not {self.log_format!r}")
        if self.max_message_bytes < 1 or self.stream_window < 1 or self.max_queued_bytes < 1:
            raise ValueError("max_message_bytes, stream_window and max_queued_bytes must be >= 1")
        if self.intra_op_threads < 0 or self.inference_threads < 1:
            raise ValueError("intra_op_threads must be >= 0 and inference_threads >= 1")


def _check_device(settings: ServerSettings) -> None:
    if settings.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {settings.device!r}")
    if settings.device_path not in ("auto", "off"):
        raise ValueError(f"device path must be auto or off, not {settings.device_path!r}")
    if settings.device_memory_mib is not None and settings.device_memory_mib < 1:
        raise ValueError(f"device memory must be at least 1 MiB, got {settings.device_memory_mib}")


FRONT_ENDS = ("auto", "compiled", "python")  # what serves the gRPC port (server/front_end.py)


def _check_front_end(front_end: str) -> None:
    if front_end not in FRONT_ENDS:
        raise ValueError(f"front end must be auto, compiled or python, not {front_end!r}")


def _check_fleet_settings(settings: ServerSettings) -> None:
    if settings.fleet_interval_s < 0:
        raise ValueError(f"fleet interval must be >= 0 seconds (0: off), got {settings.fleet_interval_s}")
    if settings.replica_id is not None:
        from driftline.registry.fleet import check_replica_id

        check_replica_id(settings.replica_id)  # InvalidInput, in words


def load_model_config(path: str | Path, batching: BatchSettings, drift: DriftSettings
                      ) -> tuple[dict[str, BatchSettings], dict[str, DriftSettings], dict[str, dict[str, str]]]:
    """Per-model settings from a TOML file, one table per model name::

        [housing]
        max_batch_size = 128
        max_queue_delay_us = 200

        [housing.drift]
        window_rows = 5000
        psi = 0.25        # thresholds: psi, js, ks, mean_shift (absent: the defaults)
        min_rows = 300

        [housing.validation]
        above_training_range = "reject"   # constraint = "reject" | "flag" | "off"
    """
    try:
        raw: dict[str, Any] = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read model config {path}: {exc}") from exc
    batch_keys = {f.name for f in fields(BatchSettings)}
    drift_keys = {f.name for f in fields(DriftSettings)} - {"thresholds"}
    threshold_keys = {f.name for f in fields(Thresholds)}
    per_batching, per_drift, per_validation = {}, {}, {}
    for model, table in raw.items():
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{model}] must be a table of settings")
        table = dict(table)
        drift_table = dict(table.pop("drift", {}))
        validation_table = dict(table.pop("validation", {}))
        if validation_table:
            Policy().with_overrides(validation_table)  # refuses unknown constraints or actions now
            per_validation[model] = validation_table
        _check_keys(path, f"[{model}]", table, batch_keys)
        _check_keys(path, f"[{model}.drift]", drift_table, drift_keys | threshold_keys)
        per_batching[model] = replace(batching, **table)
        if drift_table:
            limits = {k: drift_table.pop(k) for k in list(drift_table) if k in threshold_keys}
            per_drift[model] = replace(drift, thresholds=replace(drift.thresholds, **limits), **drift_table)
    return per_batching, per_drift, per_validation


def _check_keys(path: str | Path, where: str, table: dict[str, Any], known: set[str]) -> None:
    unknown = set(table) - known
    if unknown:
        raise ValueError(f"{path}: {where} has unknown settings {sorted(unknown)}; known: {sorted(known)}")
