"""Build the server from its parts, in one place, and run it until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from concurrent.futures import Executor

import grpc
from grpc_health.v1 import health_pb2_grpc

from driftline.proto import driftline_pb2_grpc, grpc_service_pb2_grpc
from driftline.registry import open_registry
from driftline.server.auth import AdminGuard
from driftline.server.health import Health
from driftline.server.http_api import HttpApi
from driftline.server.peers import Peers, socket_path
from driftline.server.pipeline import RequestPath
from driftline.server.poll import follow_production
from driftline.server.repository import ModelRepository
from driftline.server import http_server, logs, metrics, reflection, run, telemetry
from driftline.server.monitor import MonitorThread
from driftline.server.service import AdminService, DriftlineService, InferenceService, MonitoringService
from driftline.server.settings import ServerSettings

log = logging.getLogger("driftline.server")


def print_flush(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True)
class Built:
    server: grpc.aio.Server
    port: int
    repository: ModelRepository
    pool: Executor
    admin: AdminService
    peers: Peers
    health: Health
    http: HttpApi  # the HTTP front end, served by serve() when settings.http_port says so


def build(settings: ServerSettings) -> Built:
    """Load the models, wire the services and bind the port (not started yet)."""
    pool = run.executor(settings.inference_threads)
    monitors = MonitorThread() if settings.monitor else None
    metrics.recording = settings.metrics_port is not None  # before any version's batcher is made
    repository = ModelRepository(open_registry(settings.registry), settings, pool, monitors)
    repository.load_startup()
    if settings.worker_index == 0:  # every worker loads the same; count once per server
        for name in repository.names():
            metrics.model_event(name, "load", ok=repository.slot(name).default is not None)
    # The span interceptor is there only when something reads it: otherwise a call pays nothing for it.
    traced = telemetry.tracer is not None or settings.log_format == "json"
    guard = AdminGuard(settings.admin_token, settings.host)  # gRPC's interceptor; HTTP asks it too
    server = grpc.aio.server(
        interceptors=[*([telemetry.ServerSpans()] if traced else []), guard],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # Workers share a port on purpose; otherwise two servers must never share one by accident.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
        ]
    )
    peers = Peers(settings.peer_dir, settings.worker_index, settings.workers, settings.admin_token)
    path = RequestPath(repository)  # the one request path; each front end parses into it
    inference = InferenceService(repository, peers, path)
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(inference, server)
    driftline_service, monitoring = DriftlineService(repository), MonitoringService(repository, peers)
    driftline_pb2_grpc.add_DriftlineServicer_to_server(driftline_service, server)
    driftline_pb2_grpc.add_MonitoringServicer_to_server(monitoring, server)
    admin = AdminService(repository, peers, settings.workers)
    driftline_pb2_grpc.add_AdminServicer_to_server(admin, server)
    health = Health(repository, asyncio.get_running_loop())
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    if settings.reflection:
        reflection.enable(server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    try:
        if settings.tls_cert:
            credentials = grpc.ssl_server_credentials(
                [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())],
                root_certificates=Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None,
                require_client_auth=settings.tls_client_ca is not None,
            )
            port = server.add_secure_port(f"{host}:{settings.port}", credentials)
        else:
            port = server.add_insecure_port(f"{host}:{settings.port}")
    except RuntimeError:  # grpcio's word for a port it could not bind (older releases returned 0 instead)
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port} (in use, or not an address of this machine)")
    if settings.peer_dir is not None:
        server.add_insecure_port(f"unix:{socket_path(settings.peer_dir, settings.worker_index)}")
    # the second front end, same path; driftline's own reads (version, drift) too
    http = HttpApi(inference, path, guard, settings.max_message_bytes, driftline_service, monitoring)
    return Built(server, port, repository, pool, admin, peers, health, http)


async def serve(settings: ServerSettings, announce: Callable[[str], None] = print_flush) -> None:
    worker = settings.worker_index if settings.workers > 1 else None
    logs.configure(settings.log_format, worker)
    telemetry.setup(worker_index=worker, on_drop=metrics.span_dropped)
    built = build(settings)
    server, port, repository, pool = built.server, built.port, built.repository, built.pool
    # Everything loaded so far lives as long as the process: keep it out of the garbage collector's
    # full passes, which otherwise stall a request for ~100 ms now and then.
    gc.collect()
    gc.freeze()
    metrics_server, metrics_note = _serve_metrics(settings, built)
    http, http_note = http_server.start(settings, built.http)
    await built.health.sync()  # before the port opens: the servicer starts out saying SERVING
    await server.start()
    summary = []
    for name in repository.names():
        slot = repository.slot(name)
        summary.append(f"{name}:{slot.default.served.version}" if slot.default else f"{name}(unavailable)")
    providers = ", ".join(repository.providers)
    # Tests and scripts read this line to learn the port (which may have been chosen by the OS).
    announce(f"driftline serving {' '.join(summary) or 'no models'} on {settings.host}:{port} ({providers})"
             f"{http_note}{metrics_note}")
    poller = None
    if settings.poll_s and settings.worker_index == 0:
        poller = asyncio.ensure_future(follow_production(repository, built.admin, settings.poll_s))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if poller is not None:
        poller.cancel()
    log.info("shutting down: finishing in-flight requests (up to %.0f s)", settings.shutdown_grace_s)
    await built.health.shutdown()  # probes and watchers hear NOT_SERVING while in-flight requests finish
    await asyncio.gather(server.stop(settings.shutdown_grace_s), *([http.stop()] if http is not None else []))
    pool.shutdown(wait=True, cancel_futures=True)
    if repository.monitors is not None:
        repository.monitors.close()
    if metrics_server is not None:
        metrics_server.shutdown()
    telemetry.shutdown()  # exports the spans still buffered


def _serve_metrics(settings: ServerSettings, built: Built) -> tuple[object | None, str]:
    """Worker 0 serves /metrics; returns its HTTP server and what the start line says about it."""
    if settings.metrics_port is None:
        return None, ""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if settings.worker_index != 0:  # the parent chose a concrete port for worker 0 to serve
        return None, f"; metrics http://{host}:{settings.metrics_port}/metrics"
    collector = metrics.LiveCollector(built.repository, built.peers, asyncio.get_running_loop())
    http = http_server.optional_port("metrics", settings.host, settings.metrics_port, settings.metrics_optional,
                                     lambda: metrics.serve(settings.host, settings.metrics_port, collector))
    if http is None:
        return None, "; metrics off (port busy)"
    # No " on HOST:PORT" here: scripts find the gRPC port with that pattern.
    return http, f"; metrics http://{host}:{http.server_port}/metrics"
