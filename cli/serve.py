"""driftline serve: serve registry models over the Open Inference Protocol (gRPC and HTTP/REST)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from driftline.cli import serve_kserve
from driftline.cli.common import add_registry
from driftline.server import event_loop, front_end, http_server, logs, ports, telemetry
from driftline.server.app import serve
from driftline.errors import InvalidInput
from driftline.kernels.drift_stats import Thresholds
from driftline.server.batcher import BatchSettings
from driftline.server.monitor import DriftSettings
from driftline.server.settings import FRONT_ENDS, ServerSettings, load_model_config
from driftline.server.workers import run_workers

METRICS_PORT = 8002  # Triton's metrics port, beside the gRPC 8001
HTTP_PORT = 8000  # Triton's HTTP/REST port


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve models over gRPC and HTTP/REST", description=__doc__)
    add_registry(p)
    p.add_argument("--create-registry", action="store_true",
                   help="create the registry folder when it does not exist (default: refuse, as a typo would "
                        "otherwise serve nothing); models published there later can be loaded or polled")
    # Containers configure by environment (DRIFTLINE_*); a flag given wins over its variable.
    p.add_argument("--host", default=os.environ.get("DRIFTLINE_HOST", "127.0.0.1"),
                   help="address to listen on (default $DRIFTLINE_HOST or 127.0.0.1)")
    p.add_argument("--port", "--grpc-port", "--grpc_port", type=int,
                   default=os.environ.get("DRIFTLINE_GRPC_PORT", "8001"),
                   help="gRPC port (default $DRIFTLINE_GRPC_PORT or 8001; 0 picks a free one)")
    p.add_argument("--model", "--model-name", "--model_name", action="append", default=[], metavar="NAME[:VERSION]",
                   help="serve only these (repeatable); default: the latest version of every model. "
                        "With --model-dir: the name to serve that folder's model under")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CUDA when a GPU is visible, else CPU")
    p.add_argument("--device-path", choices=["auto", "off"], default="auto",
                   help="auto: a version on the CUDA provider keeps its batches on the GPU (IO binding, monitoring "
                        "kernels on the device); off: host copies, as on the CPU")
    p.add_argument("--device-memory-mib", type=int, default=None, metavar="MIB",
                   help="bound on the device path's GPU memory (CuPy's pool and onnxruntime's arena, each); "
                        "a batch that meets it runs on the CPU (default: a quarter of the GPU)")
    p.add_argument("--workers", type=int, default=os.environ.get("DRIFTLINE_WORKERS", os.cpu_count() or 1),
                   help="server processes sharing the port (default $DRIFTLINE_WORKERS or one per core)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="where the server records what it serves, so that restarted workers and servers resume it "
                        "(default: REGISTRY/.serving for a local registry, else ~/.local/state/driftline/serving)")
    p.add_argument("--shutdown-grace", type=float, default=ServerSettings.shutdown_grace_s, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, how long calls already accepted may take to finish before they are "
                        "cancelled (default %(default)s)")
    p.add_argument("--intra-op-threads", type=int, default=1, help="threads inside one onnxruntime call")
    p.add_argument("--inference-threads", type=int, default=os.cpu_count() or 1,
                   help="threads running onnxruntime calls (default: one per core)")
    defaults = BatchSettings()
    p.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size,
                   help=f"rows per onnxruntime call (default {defaults.max_batch_size}; 1 turns batching off)")
    p.add_argument("--max-queue-delay-us", type=int, default=defaults.max_queue_delay_us,
                   help=f"longest wait for company while a batch runs (default {defaults.max_queue_delay_us})")
    p.add_argument("--max-queue-size", type=int, default=defaults.max_queue_size,
                   help=f"requests waiting per model before UNAVAILABLE 'queue full' "
                        f"(default {defaults.max_queue_size})")
    p.add_argument("--max-concurrent-batches", type=int, default=defaults.max_concurrent_batches,
                   help=f"onnxruntime calls in flight per model (default {defaults.max_concurrent_batches})")
    # Hostile-world bounds (issue 13): what one message, one stream and all queued requests may hold.
    server_defaults = ServerSettings(registry="")
    p.add_argument("--max-message-bytes", type=byte_size, default=server_defaults.max_message_bytes, metavar="BYTES",
                   help="largest gRPC message or HTTP body accepted (default 64MiB; units KiB, MiB, GiB)")
    p.add_argument("--stream-window", type=int, default=server_defaults.stream_window, metavar="N",
                   help="messages of one ModelStreamInfer in flight; the server reads no more until one is answered "
                        f"(default {server_defaults.stream_window})")
    p.add_argument("--max-queued-bytes", type=byte_size, default=server_defaults.max_queued_bytes, metavar="BYTES",
                   help="input bytes all queued requests may hold (per process); beyond it requests get UNAVAILABLE "
                        "at once (default 256MiB; units KiB, MiB, GiB)")
    p.add_argument("--admin-token", default=os.environ.get("DRIFTLINE_ADMIN_TOKEN"),
                   help="bearer token for admin calls (swap, rollback, load, unload); default $DRIFTLINE_ADMIN_TOKEN. "
                        "Without it, admin calls are refused unless the server listens on loopback only")
    p.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate (and --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mTLS)")
    p.add_argument("--show-rejected-values", action="store_true",
                   help="keep the values of refused and flagged cells in the drift report's examples, which every "
                        "caller can read (default: row, column and reason only, the value withheld)")
    p.add_argument("--poll", type=float, metavar="SECONDS",
                   help="follow the registry's production alias: check every SECONDS and swap when it moves")
    p.add_argument("--fleet-interval", type=float, metavar="SECONDS",
                   default=float(os.environ.get("DRIFTLINE_FLEET_INTERVAL", ServerSettings.fleet_interval_s)),
                   help="write this replica's drift state to the registry every SECONDS, and on stop, for "
                        "`driftline drift NAME --registry` to merge the fleet's (default $DRIFTLINE_FLEET_INTERVAL "
                        "or %(default)g; 0: off)")
    p.add_argument("--replica-id", default=os.environ.get("DRIFTLINE_REPLICA_ID"), metavar="ID",
                   help="this server's name in the fleet's drift states (default $DRIFTLINE_REPLICA_ID or the host "
                        "name, which is the pod name on Kubernetes); give each server on one machine its own")
    p.add_argument("--no-drift", action="store_true", help="do not monitor drift (to measure what monitoring costs)")
    p.add_argument("--drift-window-rows", type=int, default=DriftSettings().window_rows,
                   help="drift is judged over about the last N rows (default %(default)s)")
    p.add_argument("--drift-window-seconds", type=float, help="...or over the last T seconds instead")
    p.add_argument("--attribution-sample", type=float, default=DriftSettings().attribution_sample,
                   help="fraction of live rows explained off the response path to watch what drives predictions "
                        "(default %(default)s; 0 turns it off)")
    p.add_argument("--attribution-max-rows-per-s", type=float, default=DriftSettings().attribution_max_rows_per_s,
                   help="...and at most this many rows a second, per version and worker, so that the sampling's "
                        "cost does not grow with traffic (default %(default)s; 0: no bound)")
    p.add_argument("--drift-min-rows", type=int, default=Thresholds().min_rows,
                   help="rows a window needs before it may alarm (default %(default)s)")
    p.add_argument("--model-config", metavar="FILE.toml",
                   help="per-model batching and drift settings, one [model] table each (see README)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", default=os.environ.get("DRIFTLINE_METRICS_PORT"),
                   help=f"Prometheus /metrics on --host:PORT (default {METRICS_PORT}, skipped with a warning when "
                        "busy; 0 picks a free port, printed on start)")
    p.add_argument("--no-metrics", action="store_true", help="serve no metrics and record none")
    p.add_argument("--metrics-token", default=os.environ.get("DRIFTLINE_METRICS_TOKEN"), metavar="TOKEN",
                   help="/metrics answers only 'Authorization: Bearer TOKEN' (default $DRIFTLINE_METRICS_TOKEN; "
                        "unset: open). Metrics use HTTPS whenever --tls-cert is given")
    p.add_argument("--http-port", "--http_port", type=int, metavar="PORT", default=os.environ.get("DRIFTLINE_HTTP_PORT"),
                   help=f"the protocol's HTTP/REST binding on --host:PORT (default {HTTP_PORT}, skipped with a "
                        "warning when busy; 0 picks a free port, printed on start)")
    p.add_argument("--no-http", action="store_true", help="serve gRPC only")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="json: one object per line, with trace_id/span_id on lines that belong to a request. "
                        "Traces: set OTEL_TRACES_EXPORTER=otlp and OTEL_EXPORTER_OTLP_ENDPOINT (see README)")
    p.add_argument("--event-loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                   help="the event loop every server process runs on (default auto: uvloop when installed, which "
                        "costs less CPU per request; asyncio: the standard library's)")
    p.add_argument("--front-end", choices=FRONT_ENDS, default="auto",
                   help="what serves the gRPC port: python (grpc.aio), compiled (the C++ door, built by `make setup` "
                        "where the gRPC C++ libraries are installed: batches in C++ and hands Python one call per "
                        "batch) or auto (default: compiled where it is built, else python; README, Serving)")
    p.add_argument("--no-reflection", action="store_true",
                   help="do not offer gRPC server reflection (which grpcurl, grpcui and Postman read)")
    serve_kserve.add_arguments(p)
    p.set_defaults(run=run)


def byte_size(text: str) -> int:
    """A size flag: bytes, or a number with KiB/MiB/GiB (K/M/G and KB/MB/GB are read as the same powers of 2)."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
    number = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = number[-1:] if number[-1:] in "KMG" else ""
    try:
        value = float(number[: len(number) - len(unit)]) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write bytes, or e.g. 256MiB") from None
    if not 1 <= value < 2**63:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r}: a size must be at least 1 byte")
    return int(value)


def run(args: argparse.Namespace) -> int:
    args = serve_kserve.resolve(args)  # --model-dir (KServe's /mnt/models) as a registry and a model
    try:
        settings = settings_from(args)
        telemetry.check_environment()
    except ValueError as exc:  # a bad flag or config file: say so, like any other input error
        raise InvalidInput(str(exc)) from exc
    check_registry_folder(args.registry, create=args.create_registry)
    front_end.choose(settings)  # --front-end compiled where it cannot serve: say why before loading anything
    logs.configure(settings.log_format)
    try:
        if settings.workers > 1:
            with _http_port_for_workers(settings) as settings:
                return _run_workers(settings)
        event_loop.run(serve(settings), settings.event_loop)
    except OSError as exc:  # a port in use or not ours: the message says which; a traceback would not help
        print(f"driftline serve: error: {exc}", file=sys.stderr)
        return 2
    return 0


def check_registry_folder(location: str, create: bool) -> None:
    """A local registry must exist before serving: a mistyped path would otherwise serve nothing, silently."""
    if "://" in location and not location.startswith("file://"):
        return  # an object store: a prefix exists once something is written under it
    folder = Path(location.removeprefix("file://"))
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    if not folder.exists():
        raise InvalidInput(f"registry {folder} does not exist; check --registry (or $DRIFTLINE_REGISTRY), "
                           "or pass --create-registry to serve it empty and load models published there later")
    if not folder.is_dir():
        raise InvalidInput(f"registry {folder} is not a folder; --registry names the folder that holds the models")


def _run_workers(settings: ServerSettings) -> int:
    """Workers record metrics in prometheus_client's multiprocess mode, in a folder of their own."""
    if settings.metrics_port is None:
        return run_workers(settings, settings.workers)
    port = _metrics_port(settings)
    settings = dataclasses.replace(settings, metrics_port=port)
    if port is None:
        return run_workers(settings, settings.workers)
    folder = tempfile.mkdtemp(prefix="driftline-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # read by each worker's prometheus_client at import
    try:
        return run_workers(settings, settings.workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _http_port_for_workers(settings: ServerSettings) -> Iterator[ServerSettings]:
    """Workers share one HTTP port (SO_REUSEPORT): it is chosen and held here, so each binds the same one."""
    if settings.http_port is None:
        yield settings
        return
    try:
        held = http_server.reserve(settings.host, settings.http_port)
    except OSError as exc:
        if not settings.http_optional:
            raise InvalidInput(str(exc)) from exc  # it names the port and why
        print(f"driftline serve: HTTP off: {exc}; "
              "pass --http-port to choose another port", file=sys.stderr, flush=True)
        yield dataclasses.replace(settings, http_port=None)
        return
    try:
        yield dataclasses.replace(settings, http_port=held.port)
    finally:
        held.close()


def _metrics_port(settings: ServerSettings) -> int | None:
    """A concrete port for worker 0 to serve, so that every worker's start line names the same one."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.metrics_port))
        except OSError as exc:
            if not settings.metrics_optional:
                raise InvalidInput(ports.refusal("metrics", settings.host, settings.metrics_port, exc)) from None
            print(f"driftline serve: metrics off: {settings.host}:{settings.metrics_port} is busy ({exc}); "
                  "pass --metrics-port to choose another port", file=sys.stderr, flush=True)
            return None
        return probe.getsockname()[1]


def settings_from(args: argparse.Namespace) -> ServerSettings:
    batching = BatchSettings(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        max_queue_size=args.max_queue_size,
        max_concurrent_batches=args.max_concurrent_batches,
    )
    drift = DriftSettings(window_rows=args.drift_window_rows, window_seconds=args.drift_window_seconds,
                          thresholds=Thresholds(min_rows=args.drift_min_rows),
                          attribution_sample=args.attribution_sample,
                          attribution_max_rows_per_s=args.attribution_max_rows_per_s)
    per_model, per_model_drift, per_model_validation = (
        load_model_config(args.model_config, batching, drift) if args.model_config else ({}, {}, {}))
    return ServerSettings(
        registry=args.registry,
        host=args.host,
        port=args.port,
        models=tuple(args.model),
        device=args.device,
        device_path=args.device_path,
        device_memory_mib=args.device_memory_mib,
        intra_op_threads=args.intra_op_threads,
        inference_threads=args.inference_threads,
        max_message_bytes=args.max_message_bytes,
        stream_window=args.stream_window,
        max_queued_bytes=args.max_queued_bytes,
        workers=args.workers,
        state_dir=args.state_dir,
        shutdown_grace_s=args.shutdown_grace,
        admin_token=args.admin_token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        show_rejected_values=args.show_rejected_values,
        metrics_token=args.metrics_token,
        poll_s=args.poll,
        fleet_interval_s=args.fleet_interval,
        replica_id=args.replica_id,
        monitor=not args.no_drift,
        batching=batching,
        model_batching=per_model,
        drift=drift,
        model_drift=per_model_drift,
        model_validation=per_model_validation,
        metrics_port=None if args.no_metrics else (METRICS_PORT if args.metrics_port is None else args.metrics_port),
        metrics_optional=args.metrics_port is None,
        http_port=None if args.no_http else (HTTP_PORT if args.http_port is None else args.http_port),
        http_optional=args.http_port is None,
        log_format=args.log_format,
        reflection=not args.no_reflection,
        event_loop=args.event_loop,
        front_end=args.front_end,
    )
