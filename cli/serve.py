"""driftline serve: serve registry models over the Open Inference Protocol (gRPC)."""

from __future__ import annotations

import argparse
import asyncio
import os

from driftline.cli.common import add_registry
from driftline.server.app import serve
from driftline.errors import InvalidInput
from driftline.kernels.drift_stats import Thresholds
from driftline.server.batcher import BatchSettings
from driftline.server.monitor import DriftSettings
from driftline.server.settings import ServerSettings, load_model_config
from driftline.server.workers import run_workers


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve models over gRPC", description=__doc__)
    add_registry(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8001, help="port (default 8001; 0 picks a free one)")
    p.add_argument("--model", action="append", default=[], metavar="NAME[:VERSION]",
                   help="serve only these (repeatable); default: the latest version of every model")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CUDA when a GPU is visible, else CPU")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="server processes sharing the port (default: one per core)")
    p.add_argument("--intra-op-threads", type=int, default=1, help="threads inside one onnxruntime call")
    p.add_argument("--inference-threads", type=int, default=os.cpu_count() or 1,
                   help="threads running onnxruntime calls (default: one per core)")
    defaults = BatchSettings()
    p.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size,
                   help=f"rows per onnxruntime call (default {defaults.max_batch_size}; 1 turns batching off)")
    p.add_argument("--max-queue-delay-us", type=int, default=defaults.max_queue_delay_us,
                   help=f"longest wait for company while a batch runs (default {defaults.max_queue_delay_us})")
    p.add_argument("--max-queue-size", type=int, default=defaults.max_queue_size,
                   help=f"requests waiting per model before UNAVAILABLE 'queue full' (default {defaults.max_queue_size})")
    p.add_argument("--max-concurrent-batches", type=int, default=defaults.max_concurrent_batches,
                   help=f"onnxruntime calls in flight per model (default {defaults.max_concurrent_batches})")
    p.add_argument("--admin-token", default=os.environ.get("DRIFTLINE_ADMIN_TOKEN"),
                   help="bearer token for admin calls (swap, rollback, load, unload); default $DRIFTLINE_ADMIN_TOKEN. "
                        "Without it, admin calls are refused unless the server listens on loopback only")
    p.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate (and --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    p.add_argument("--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA (mTLS)")
    p.add_argument("--poll", type=float, metavar="SECONDS",
                   help="follow the registry's production alias: check every SECONDS and swap when it moves")
    p.add_argument("--no-drift", action="store_true", help="do not monitor drift (to measure what monitoring costs)")
    p.add_argument("--drift-window-rows", type=int, default=DriftSettings().window_rows,
                   help="drift is judged over about the last N rows (default %(default)s)")
    p.add_argument("--drift-window-seconds", type=float, help="...or over the last T seconds instead")
    p.add_argument("--attribution-sample", type=float, default=DriftSettings().attribution_sample,
                   help="fraction of live rows explained off the response path to watch what drives predictions "
                        "(default %(default)s; 0 turns it off)")
    p.add_argument("--drift-min-rows", type=int, default=Thresholds().min_rows,
                   help="rows a window needs before it may alarm (default %(default)s)")
    p.add_argument("--model-config", metavar="FILE.toml",
                   help="per-model batching and drift settings, one [model] table each (see README)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValueError as exc:  # a bad flag or config file: say so, like any other input error
        raise InvalidInput(str(exc)) from exc
    if settings.workers > 1:
        return run_workers(settings, settings.workers)
    asyncio.run(serve(settings))
    return 0


def settings_from(args: argparse.Namespace) -> ServerSettings:
    batching = BatchSettings(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        max_queue_size=args.max_queue_size,
        max_concurrent_batches=args.max_concurrent_batches,
    )
    drift = DriftSettings(window_rows=args.drift_window_rows, window_seconds=args.drift_window_seconds,
                          thresholds=Thresholds(min_rows=args.drift_min_rows),
                          attribution_sample=args.attribution_sample)
    per_model, per_model_drift, per_model_validation = (
        load_model_config(args.model_config, batching, drift) if args.model_config else ({}, {}, {}))
    return ServerSettings(
        registry=args.registry,
        host=args.host,
        port=args.port,
        models=tuple(args.model),
        device=args.device,
        intra_op_threads=args.intra_op_threads,
        inference_threads=args.inference_threads,
        workers=args.workers,
        admin_token=args.admin_token,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        poll_s=args.poll,
        monitor=not args.no_drift,
        batching=batching,
        model_batching=per_model,
        drift=drift,
        model_drift=per_model_drift,
        model_validation=per_model_validation,
    )
