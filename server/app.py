"""Build the server from its parts, in one place, and run it until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from concurrent.futures import Executor

import grpc
from grpc_health.v1 import health_pb2_grpc

from driftline.errors import InvalidInput
from driftline.proto import driftline_pb2_grpc, grpc_service_pb2_grpc
from driftline.registry import open_registry
from driftline.server.auth import AdminGuard
from driftline.server.health import Health
from driftline.server.http_api import HttpApi
from driftline.server.peers import Peers, socket_path
from driftline.server.pipeline import RequestPath
from driftline.server.poll import follow_production
from driftline.server.repository import ModelRepository
from driftline.server import fleet, front_end, http_server, logs, metrics, ports, record, reflection, run, telemetry, validate
from driftline.server.malformed import TolerantServer
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
    peer_server: grpc.aio.Server | None = None  # the worker's private socket, for its peers only
    door: front_end.CompiledDoor | None = None  # --front-end compiled: the C++ door owns the port, `server` is behind it


def build(settings: ServerSettings) -> Built:
    """Load the models, wire the services and bind the port (not started yet)."""
    pool = run.executor(settings.inference_threads)
    monitors = MonitorThread() if settings.monitor else None
    metrics.recording = settings.metrics_port is not None  # before any version's batcher is made
    validate.show_rejected_values = settings.show_rejected_values  # likewise, before any validator or monitor
    repository = ModelRepository(open_registry(settings.registry), settings, pool, monitors)
    if settings.port:  # a port the OS chooses has no past to resume; serve() records it once bound
        repository.record = record.for_server(settings, settings.port)
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
    # Peers reach a worker through a server of its own, started before the public port opens (serve()):
    # a worker catches up with a swap made while it was starting before any client can reach it.
    peer_server = None
    if settings.peer_dir is not None:
        peer_server = grpc.aio.server(interceptors=[guard], options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes)])
        peer_server.add_insecure_port(f"unix:{socket_path(settings.peer_dir, settings.worker_index)}")
    shared = [server, *([peer_server] if peer_server is not None else [])]
    peers = Peers(settings.peer_dir, settings.worker_index, settings.workers, settings.admin_token)
    path = RequestPath(repository)  # the one request path; each front end parses into it
    inference = InferenceService(repository, peers, path)
    # Our services parse their messages tolerantly: malformed bytes are INVALID_ARGUMENT (server/malformed.py).
    shared = [TolerantServer(target) for target in shared]
    for target in shared:
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(inference, target)
    driftline_service, monitoring = DriftlineService(repository), MonitoringService(repository, peers)
    driftline_pb2_grpc.add_DriftlineServicer_to_server(driftline_service, shared[0])
    for target in shared:
        driftline_pb2_grpc.add_MonitoringServicer_to_server(monitoring, target)
    admin = AdminService(repository, peers, settings.workers)
    for target in shared:
        driftline_pb2_grpc.add_AdminServicer_to_server(admin, target)
    health = Health(repository, asyncio.get_running_loop())
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    if settings.reflection:
        reflection.enable(server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    _check_tls_files(settings)  # else a bad file reads as "port in use": both gRPC libraries only fail to bind
    door = None
    try:
        if front_end.choose(settings) == "compiled":
            door = _open_door(settings, server, repository, path)
            port = door.port
        else:
            port = _bind(server, settings, host)
    except RuntimeError:  # grpcio's word for a port it could not bind (older releases returned 0 instead)
        port = 0
    if port == 0:
        raise ports.PortUnavailable(f"cannot serve gRPC on {settings.host}:{settings.port}: the port is in use, "
                                    "or not an address of this machine")
    # the second front end, same path; driftline's own reads (version, drift) too
    http = HttpApi(inference, path, guard, settings.max_message_bytes, driftline_service, monitoring)
    return Built(server, port, repository, pool, admin, peers, health, http, peer_server, door)


def _check_tls_files(settings: ServerSettings) -> None:
    """The PEM files load as a certificate with its key (and a CA), or start fails saying which and why."""
    if not settings.tls_cert:
        return
    try:
        metrics.tls_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot serve TLS with --tls-cert {settings.tls_cert} --tls-key {settings.tls_key}"
                           + (f" --tls-client-ca {settings.tls_client_ca}" if settings.tls_client_ca else "")
                           + f": {exc}; give PEM files of a certificate, its private key and a CA") from exc


def _bind(server: grpc.aio.Server, settings: ServerSettings, host: str) -> int:
    """The grpc.aio server on the public port (the Python door); 0 when it could not be bound."""
    if settings.tls_cert:
        credentials = grpc.ssl_server_credentials(
            [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())],
            root_certificates=Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None,
            require_client_auth=settings.tls_client_ca is not None,
        )
        return server.add_secure_port(f"{host}:{settings.port}", credentials)
    return server.add_insecure_port(f"{host}:{settings.port}")


def _open_door(settings: ServerSettings, server: grpc.aio.Server, repository: ModelRepository,
               path: RequestPath) -> front_end.CompiledDoor:
    """The compiled door on the public port, the grpc.aio server behind it on a private socket."""
    private = front_end.Private.make()
    try:
        server.add_insecure_port(private.address)
        return front_end.CompiledDoor(settings, repository, private, asyncio.get_running_loop(), path)
    except BaseException:
        private.remove()
        raise


async def serve(settings: ServerSettings, announce: Callable[[str], None] = print_flush) -> None:
    worker = settings.worker_index if settings.workers > 1 else None
    logs.configure(settings.log_format, worker)
    telemetry.setup(worker_index=worker, on_drop=metrics.span_dropped)
    # From the very start: a SIGTERM while the models load still ends in a graceful stop, exit code 0.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    alone = settings.workers == 1  # with workers, the parent claimed the ports and prepared the record
    claim = None
    if alone and settings.port:
        # Before loading anything: a port that is not ours fails at once, with one line.
        claim = ports.claim("gRPC", settings.host, settings.port)
        record.for_server(settings, settings.port).prepare(fresh=False)
    built = build(settings)
    server, port, repository, pool = built.server, built.port, built.repository, built.pool
    if alone and not settings.port:
        claim = ports.lock_only("gRPC", settings.host, port)
        repository.record = record.for_server(settings, port)
        repository.record.prepare(fresh=True)  # a server of the past on this random port is not this one
    # Everything loaded so far lives as long as the process: keep it out of the garbage collector's
    # full passes, which otherwise stall a request for ~100 ms now and then.
    gc.collect()
    gc.freeze()
    if built.peer_server is not None:
        await built.peer_server.start()
        await repository.catch_up()
    writer = await fleet.start_writer(settings, repository)  # before the port opens: a restart resumes first
    metrics_server, metrics_note = _serve_metrics(settings, built)
    http, http_note = http_server.start(settings, built.http)
    await built.health.sync()  # before the port opens: the servicer starts out saying SERVING
    await server.start()
    summary = []
    for name in repository.names():
        slot = repository.slot(name)
        note = f" ({slot.note})" if slot.note else ""
        summary.append(f"{name}:{slot.default.served.version}{note}" if slot.default else f"{name}(unavailable)")
    providers = ", ".join(repository.providers)
    # Tests and scripts read this line to learn the port (which may have been chosen by the OS).
    announce(f"driftline serving {' '.join(summary) or 'no models'} on {settings.host}:{port} ({providers})"
             f"{http_note}{metrics_note}{'; compiled gRPC front end' if built.door is not None else ''}")
    # Request figures are counted in plain integers and handed to prometheus_client in bulk (metrics.py).
    flusher = asyncio.ensure_future(metrics.flush_every())
    poller = None
    if settings.poll_s and settings.worker_index == 0:
        poller = asyncio.ensure_future(follow_production(repository, built.admin, settings.poll_s))
    await stop.wait()
    if poller is not None:
        poller.cancel()
    log.info("shutting down: finishing in-flight requests (up to %.0f s)", settings.shutdown_grace_s)
    await built.health.shutdown()  # probes and watchers hear NOT_SERVING while in-flight requests finish
    # The compiled door first: calls it took may still need the server behind it.
    await (built.door.stop(settings.shutdown_grace_s) if built.door is not None else asyncio.sleep(0))
    await asyncio.gather(server.stop(settings.shutdown_grace_s), *([http.stop()] if http is not None else []),
                         *([built.peer_server.stop(settings.shutdown_grace_s)] if built.peer_server else []))
    pool.shutdown(wait=True, cancel_futures=True)
    flusher.cancel()
    metrics.flush_all()  # the last requests' figures, before the files or the endpoint go
    if repository.monitors is not None:
        repository.monitors.close()
    await fleet.stop_writer(writer)  # after the monitor applied the last batches: the final state is written
    if metrics_server is not None:
        metrics_server.shutdown()
    telemetry.shutdown()  # exports the spans still buffered
    if alone and not settings.port and repository.record is not None:
        repository.record.remove()  # no later server can ask for this random port's past
    if claim is not None:
        claim.close()


def _serve_metrics(settings: ServerSettings, built: Built) -> tuple[object | None, str]:
    """Worker 0 serves /metrics; returns its HTTP server and what the start line says about it."""
    if settings.metrics_port is None:
        return None, ""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    # The gRPC port's TLS, client certificates included: drift statistics must not travel in the clear beside it.
    # Made here, not in the port opener: a bad certificate must stop the start, not read as "port busy".
    tls = None
    if settings.tls_cert:
        tls = metrics.tls_context(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    scheme = "https" if tls else "http"
    if settings.worker_index != 0:  # the parent chose a concrete port for worker 0 to serve
        return None, f"; metrics {scheme}://{host}:{settings.metrics_port}/metrics"
    collector = metrics.LiveCollector(built.repository, built.peers, asyncio.get_running_loop())
    http = http_server.optional_port("metrics", settings.host, settings.metrics_port, settings.metrics_optional,
                                     lambda: metrics.serve(settings.host, settings.metrics_port, collector, tls=tls,
                                                           token=settings.metrics_token))
    if http is None:
        return None, "; metrics off (port busy)"
    # No " on HOST:PORT" here: scripts find the gRPC port with that pattern.
    return http, f"; metrics {scheme}://{host}:{http.server_port}/metrics"
