"""Build the server from its parts, in one place, and run it until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc

from driftline.proto import driftline_pb2_grpc, grpc_service_pb2_grpc
from driftline.registry import Registry
from driftline.server.repository import ModelRepository
from driftline.server.run import Runner
from driftline.server.service import DriftlineService, InferenceService
from driftline.server.settings import ServerSettings

log = logging.getLogger("driftline.server")


def build(settings: ServerSettings) -> tuple[grpc.aio.Server, int, ModelRepository, Runner]:
    """Load the models, wire the services and bind the port (not started yet)."""
    repository = ModelRepository(Registry(settings.registry), settings)
    repository.load_startup()
    runner = Runner(settings.inference_threads)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            # Two servers must never share a port by accident.
            ("grpc.so_reuseport", 0),
        ]
    )
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(repository, runner), server)
    driftline_pb2_grpc.add_DriftlineServicer_to_server(DriftlineService(repository), server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = server.add_insecure_port(f"{host}:{settings.port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.host}:{settings.port} (in use, or not an address of this machine)")
    return server, port, repository, runner


async def serve(settings: ServerSettings) -> None:
    server, port, repository, runner = build(settings)
    await server.start()
    summary = []
    for name in repository.names():
        slot = repository.slot(name)
        summary.append(f"{name}:{slot.default.version}" if slot.default else f"{name}(unavailable)")
    providers = ", ".join(repository.providers)
    # Tests and scripts read this line to learn the port (which may have been chosen by the OS).
    print(f"driftline serving {' '.join(summary) or 'no models'} on {settings.host}:{port} ({providers})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: finishing in-flight requests (up to %.0f s)", settings.shutdown_grace_s)
    await server.stop(settings.shutdown_grace_s)
    runner.close()
