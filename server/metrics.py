"""Prometheus metrics on ``--metrics-port`` (``/metrics``).

Two kinds of figure. Request-path counters and histograms are counted as requests and batches happen,
in plain integers per version (``VersionMetrics``), and handed to prometheus_client when Prometheus scrapes
and every quarter of a second. Everything that can be read from state the server keeps anyway (drift
statistics, validation and attribution counts, which version serves) is computed only when
Prometheus scrapes, by ``LiveCollector``, never per batch.

With ``--workers N`` the workers record in prometheus_client's multiprocess mode (``driftline serve``
points PROMETHEUS_MULTIPROC_DIR at a fresh folder) and worker 0 alone serves ``/metrics``: the
multiprocess collector adds up every worker's request-path series, and ``LiveCollector`` merges the
other workers' drift states, validation and attribution counts through the same peer fan-out as
``DriftReport``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from driftline.errors import DriftlineError
from driftline.kernels.drift import DriftState, merge_into
from driftline.proto import driftline_pb2 as dpb
from driftline.server.auth import bearer_matches
from driftline.server.status import code_of

log = logging.getLogger("driftline.server")
prometheus_client.disable_created_metrics()  # *_created series double the output and no dashboard uses them

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
VERSION = ("model", "version")
PEER_TIMEOUT_S = 5.0
UNKNOWN_MODEL = "_unknown"  # model label of requests for names this server does not serve (bounded cardinality)

REGISTRY = CollectorRegistry()
REQUESTS = Counter("driftline_requests", "Inference requests answered, by gRPC status code",
                   [*VERSION, "status"], registry=REGISTRY)
ROWS = Counter("driftline_inference_rows", "Rows answered successfully", VERSION, registry=REGISTRY)
REQUEST_SECONDS = Histogram("driftline_request_duration_seconds",
                            "Time in the server per inference request, decoding to encoding",
                            VERSION, buckets=LATENCY_BUCKETS, registry=REGISTRY)
QUEUE_SECONDS = Histogram("driftline_queue_duration_seconds", "Time a request waited in the batcher's queue",
                          VERSION, buckets=LATENCY_BUCKETS, registry=REGISTRY)
COMPUTE_SECONDS = Histogram("driftline_compute_duration_seconds", "Time of one onnxruntime call (one batch)",
                            VERSION, buckets=LATENCY_BUCKETS, registry=REGISTRY)
BATCH_ROWS = Histogram("driftline_batch_rows", "Rows per executed batch", VERSION, buckets=ROW_BUCKETS,
                       registry=REGISTRY)
BATCH_REQUESTS = Histogram("driftline_batch_requests", "Requests per executed batch", VERSION,
                           buckets=ROW_BUCKETS, registry=REGISTRY)
QUEUE_DEPTH = Gauge("driftline_queue_depth_requests", "Requests waiting in the batcher's queue", VERSION,
                    multiprocess_mode="livesum", registry=REGISTRY)
SPANS_DROPPED = Counter("driftline_trace_spans_dropped", "Spans dropped because the trace export queue was full",
                        registry=REGISTRY)
MODEL_EVENTS = Counter("driftline_model_events", "Model version loads, swaps and unloads (event), ok or failed",
                       ["model", "event", "result"], registry=REGISTRY)

VERSION_FALLBACKS = Counter("driftline_version_fallbacks",
                            "Versions skipped because their files failed their checksums, serving an older intact one",
                            VERSION, registry=REGISTRY)

DEVICE_FALLBACKS = Counter("driftline_device_fallbacks",
                           "Batches rerun on the CPU because the device ran out of memory, by the allocator that did",
                           [*VERSION, "reason"], registry=REGISTRY)

FLEET_WRITES = Counter("driftline_fleet_writes",
                       "This replica's drift states written to the registry for the fleet view (server/fleet.py)",
                       ["result"], registry=REGISTRY)

recording = False  # set by app.build: without a metrics endpoint nothing is recorded (NO_METRICS below)


def status_name(error: BaseException) -> str:
    if isinstance(error, DriftlineError):
        return code_of(error).name
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "INTERNAL"


class _Tally:
    """One histogram's observations since the last flush: a count per bucket and their sum (no lock: the event
    loop's thread is the only writer, and the flush runs there too)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def add(self, value: float, count: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += count  # a bucket counts values <= its bound
        self.total += value * count

    def flush_into(self, child: Any) -> None:
        """Add what was tallied to a prometheus_client histogram child, then start again.

        prometheus_client's histogram has no call that adds n observations to a bucket, so this writes its
        bucket values as ``observe`` does (one per bucket, non-cumulative, plus the sum);
        tests/server/test_metrics.py checks the result equals observing each value.
        """
        if not any(self.counts):
            return
        child._sum.inc(self.total)
        for bucket, n in zip(child._buckets, self.counts, strict=True):
            if n:
                bucket.inc(n)
        self.counts = [0] * len(self.counts)
        self.total = 0.0


class VersionMetrics:
    """One served version's request-path figures.

    Each request adds to plain integers and tallies (~0.2 us a figure); they reach prometheus_client (one lock
    and, with workers, one shared-memory write per value) when Prometheus scrapes this process and every
    ``FLUSH_S`` seconds (so the other workers' files are at most that far behind). Per request that used to be
    about 19 prometheus_client calls, ~5-14 us (benchmarks/RESULTS.md, "The hot path").
    """

    def __init__(self, model: str, version: int) -> None:
        self.labels = (model, str(version))
        self.ok = REQUESTS.labels(*self.labels, "OK")
        self.rows = ROWS.labels(*self.labels)
        self.request_seconds = REQUEST_SECONDS.labels(*self.labels)
        self.queue_seconds = QUEUE_SECONDS.labels(*self.labels)
        self.compute_seconds = COMPUTE_SECONDS.labels(*self.labels)
        self.batch_rows = BATCH_ROWS.labels(*self.labels)
        self.batch_requests = BATCH_REQUESTS.labels(*self.labels)
        self.queue_depth = QUEUE_DEPTH.labels(*self.labels)
        self._ok = self._rows = 0
        self._failed: dict[str, int] = {}
        self._depth: int | None = None
        self._request = _Tally(LATENCY_BUCKETS)
        self._queue = _Tally(LATENCY_BUCKETS)
        self._compute = _Tally(LATENCY_BUCKETS)
        self._batch_rows = _Tally(ROW_BUCKETS)
        self._batch_requests = _Tally(ROW_BUCKETS)
        _LIVE.add(self)

    def succeeded(self, rows: int, request_ns: int) -> None:
        self._ok += 1
        self._rows += rows
        self._request.add(request_ns / 1e9)

    def failed(self, error: BaseException, request_ns: int) -> None:
        status = status_name(error)
        self._failed[status] = self._failed.get(status, 0) + 1
        self._request.add(request_ns / 1e9)

    def refused(self, status: str, count: int, request_ns: int) -> None:
        """``count`` requests another queue refused (the compiled front end's, read in bulk), ``request_ns`` their
        summed time: counted as failures, timed at their mean."""
        self._failed[status] = self._failed.get(status, 0) + count
        self._request.add(request_ns / count / 1e9, count)

    def queued(self, depth: int) -> None:
        self._depth = depth

    def waited(self, queue_ns: int) -> None:
        self._queue.add(queue_ns / 1e9)

    def executed(self, rows: int, requests: int, compute_ns: int) -> None:
        self._compute.add(compute_ns / 1e9)
        self._batch_rows.add(rows)
        self._batch_requests.add(requests)

    def flush(self) -> None:
        """Hand what was counted since the last flush to prometheus_client (on the event loop's thread)."""
        if self._ok:
            self.ok.inc(self._ok)
            self._ok = 0
        if self._rows:
            self.rows.inc(self._rows)
            self._rows = 0
        if self._failed:
            failed, self._failed = self._failed, {}
            for status, n in failed.items():
                REQUESTS.labels(*self.labels, status).inc(n)
        if self._depth is not None:
            self.queue_depth.set(self._depth)
            self._depth = None
        self._request.flush_into(self.request_seconds)
        self._queue.flush_into(self.queue_seconds)
        self._compute.flush_into(self.compute_seconds)
        self._batch_rows.flush_into(self.batch_rows)
        self._batch_requests.flush_into(self.batch_requests)


_LIVE: weakref.WeakSet[VersionMetrics] = weakref.WeakSet()  # what flush_all reaches (a version's go with it)
FLUSH_S = 0.25


def flush_all() -> None:
    """Every version's figures into prometheus_client (on the event loop's thread, the figures' one writer)."""
    for version in list(_LIVE):
        version.flush()


async def flush_every(seconds: float = FLUSH_S) -> None:
    """Flush periodically, for the workers whose figures another process serves (multiprocess files)."""
    while recording:
        await asyncio.sleep(seconds)
        flush_all()


class _FlushFirst:
    """Registered before the request-path series: a scrape first brings them up to date, on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if self.loop is not None and self.loop.is_running():
            future = asyncio.run_coroutine_threadsafe(_flush_now(), self.loop)
            try:
                future.result(PEER_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a scrape shows the last flushed figures rather than none
                future.cancel()
                log.warning("metrics: could not bring request figures up to date: %s", exc)
        return iter(())


async def _flush_now() -> None:
    flush_all()


class _NoMetrics:
    """What a version records into when no metrics endpoint is served: nothing, at the cost of a call."""

    def succeeded(self, rows: int, request_ns: int) -> None: ...
    def failed(self, error: BaseException, request_ns: int) -> None: ...
    def refused(self, status: str, count: int, request_ns: int) -> None: ...
    def queued(self, depth: int) -> None: ...
    def waited(self, queue_ns: int) -> None: ...
    def executed(self, rows: int, requests: int, compute_ns: int) -> None: ...


NO_METRICS = _NoMetrics()


def for_version(model: str, version: int) -> VersionMetrics | _NoMetrics:
    return VersionMetrics(model, version) if recording else NO_METRICS


def refused(model: str, known: bool, error: BaseException) -> None:
    """A request that never reached a version (unknown model or version, model unavailable)."""
    if recording:
        REQUESTS.labels(model if known else UNKNOWN_MODEL, "", status_name(error)).inc()


def model_event(model: str, event: str, ok: bool = True) -> None:
    if recording:
        MODEL_EVENTS.labels(model, event, "ok" if ok else "failed").inc()


def version_fallback(model: str, damaged: int) -> None:
    if recording:
        VERSION_FALLBACKS.labels(model, str(damaged)).inc()


def device_fallback(model: str, version: int, reason: str) -> None:
    if recording:
        DEVICE_FALLBACKS.labels(model, str(version), reason).inc()


def fleet_written(ok: bool) -> None:
    if recording:
        FLEET_WRITES.labels("ok" if ok else "failed").inc()


def span_dropped() -> None:
    if recording:
        SPANS_DROPPED.inc()


# -- computed at scrape time ----------------------------------------------------------------------
class LiveCollector:
    """Figures read from the repository and the monitors when Prometheus scrapes (an HTTP thread)."""

    def __init__(self, repository: Any, peers: Any = None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.repository = repository
        self.peers = peers
        self.loop = loop

    def describe(self) -> list[Metric]:
        return []  # registering must not collect: that would call the peers from the event loop itself

    def collect(self) -> Iterator[Metric]:
        served = GaugeMetricFamily("driftline_model_served_version",
                                   "Version each model serves by default (0: none, the model is unavailable)",
                                   labels=["model"])
        info = GaugeMetricFamily("driftline_model_info", "Loaded versions and what they run on (always 1)",
                                 labels=[*VERSION, "execution_provider", "device_path", "code_version",
                                         "data_version"])
        families = _Families()
        for name in list(self.repository.names()):
            slot = self.repository.slot(name)
            default = slot.default
            served.add_metric([name], default.served.version if default is not None else 0)
            for endpoint in list(slot.loaded.values()):
                version = endpoint.served
                info.add_metric([name, str(version.version), version.providers[0] if version.providers else "",
                                 version.device_path, version.metadata.code_version, version.metadata.data_version], 1)
                self._version(families, name, endpoint)
        yield served
        yield info
        yield from _device_memory(getattr(self.repository, "device_memory", None))
        yield from families.all()

    def _version(self, families: _Families, name: str, endpoint: Any) -> None:
        labels = [name, str(endpoint.served.version)]
        validation = [_validation(endpoint.validator)]
        monitor = endpoint.monitor
        flags = [monitor.attribution.to_dict()] if monitor is not None else []
        extra = []
        if monitor is not None and self.peers:
            for other in self._peer_states(name, endpoint.served.version):
                extra.append((DriftState.from_dict(json.loads(other.window_state_json)),
                              DriftState.from_dict(json.loads(other.total_state_json))))
                validation.append(json.loads(other.validation_json or "{}"))
                flags.append(json.loads(other.attribution_flags_json or "{}"))
        if monitor is not None:
            families.drift(labels, monitor, monitor.report(extra))
            families.since_live(labels, monitor, [monitor.states()[1], *(total for _, total in extra)])
        if endpoint.validator is not None:
            families.validation(labels, validation)
        if flags:
            families.attribution(labels, flags)

    def _peer_states(self, name: str, version: int) -> list[Any]:
        """The other workers' states of this version, fetched on the event loop (peers' channels live there)."""
        call = self.peers.call("DriftStates", dpb.DriftRequest(name=name, version=str(version)), service="monitoring")
        future = asyncio.run_coroutine_threadsafe(call, self.loop)
        try:
            return future.result(PEER_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a scrape shows this worker's figures rather than none
            future.cancel()
            log.warning("metrics: other workers' drift states of %s version %d unavailable: %s", name, version, exc)
            return []


class _Families:
    """The scrape-time families, filled version by version."""

    def __init__(self) -> None:
        feature = [*VERSION, "feature", "source"]
        self.rows = GaugeMetricFamily("driftline_drift_window_rows", "Rows in the drift window", labels=VERSION)
        self.psi = GaugeMetricFamily("driftline_drift_psi", "Population stability index, window vs training",
                                     labels=feature)
        self.js = GaugeMetricFamily("driftline_drift_js_distance", "Jensen-Shannon distance, window vs training",
                                    labels=feature)
        self.ks = GaugeMetricFamily("driftline_drift_ks", "Kolmogorov-Smirnov statistic (binned), window vs training",
                                    labels=feature)
        self.mean_shift = GaugeMetricFamily("driftline_drift_mean_shift_stddevs",
                                            "Window mean minus training mean, in training standard deviations",
                                            labels=feature)
        self.p_adjusted = GaugeMetricFamily("driftline_drift_p_adjusted",
                                            "Holm-adjusted p-value of the column's drift test (KS or chi-square), "
                                            "window vs training", labels=feature)
        self.alarm = GaugeMetricFamily("driftline_drift_alarm", "1 when the column's drift crosses a threshold",
                                       labels=feature)
        # The statistics above are this replica's own (a ratio of its window): never sum or average them across
        # pods; the fleet's are `driftline drift NAME --registry`. These three add up across pods (since live,
        # resumed after a restart from the registry: server/fleet.py), so PromQL can take fleet-wide ratios.
        self.values = CounterMetricFamily("driftline_drift_values",
                                          "Finite values seen since the version went live, per column; "
                                          "sum across pods", labels=feature)
        self.values_sum = GaugeMetricFamily("driftline_drift_values_sum",
                                            "Sum of those values: sum(this) / sum(driftline_drift_values_total) "
                                            "across pods is the fleet's live mean", labels=feature)
        self.outside = CounterMetricFamily("driftline_drift_values_outside_training",
                                           "Values outside the training range (numeric) or of no training category "
                                           "(categorical) since the version went live; sum across pods",
                                           labels=feature)
        self.violations = CounterMetricFamily("driftline_validation_violations",
                                              "Values breaking a schema constraint (rejected or flagged)",
                                              labels=[*VERSION, "feature", "constraint"])
        self.rejected_requests = CounterMetricFamily("driftline_validation_rejected_requests",
                                                     "Requests refused by validation", labels=VERSION)
        self.rejected_rows = CounterMetricFamily("driftline_validation_rejected_rows",
                                                 "Rows breaking a rejecting constraint", labels=VERSION)
        self.flagged_rows = CounterMetricFamily("driftline_validation_flagged_rows",
                                                "Rows served but flagged (e.g. outside the training range)",
                                                labels=VERSION)
        self.sampled = CounterMetricFamily("driftline_attribution_sampled_rows",
                                           "Live rows explained by sampling, off the response path", labels=VERSION)
        self.driven = CounterMetricFamily("driftline_attribution_flagged_rows",
                                          "Sampled rows whose answer leans on a feature outside its training range",
                                          labels=VERSION)

    def all(self) -> list[Metric]:
        return [self.rows, self.psi, self.js, self.ks, self.mean_shift, self.p_adjusted, self.alarm, self.values,
                self.values_sum, self.outside, self.violations,
                self.rejected_requests, self.rejected_rows, self.flagged_rows, self.sampled, self.driven]

    def drift(self, labels: list[str], monitor: Any, report: Any) -> None:
        self.rows.add_metric(labels, report.current_rows)
        for column in report.current:
            key = [*labels, column.name, monitor.sources.get(column.name, "feature")]
            self.psi.add_metric(key, column.psi)
            self.js.add_metric(key, column.js)
            self.ks.add_metric(key, column.ks)
            self.mean_shift.add_metric(key, column.mean_shift)
            self.p_adjusted.add_metric(key, column.p_adjusted)
            self.alarm.add_metric(key, 1.0 if column.alarm else 0.0)

    def since_live(self, labels: list[str], monitor: Any, states: list[DriftState]) -> None:
        total = states[0].copy()
        for other in states[1:]:
            merge_into(total, other)
        layout = monitor.profile.layout
        for c, name in enumerate(monitor.profile.names):
            key = [*labels, name, monitor.sources.get(name, "feature")]
            n = int(total.n[c])
            self.values.add_metric(key, n)
            self.values_sum.add_metric(key, float(total.mean[c]) * n if n else 0.0)
            k = int(layout.n_edges[c])
            outside = total.counts[c, k] + (0 if layout.is_categorical[c] else total.counts[c, 0])
            self.outside.add_metric(key, int(outside))

    def validation(self, labels: list[str], parts: list[dict]) -> None:
        from driftline.server.validate import ValidationCounts

        merged = ValidationCounts.merged(parts)
        self.rejected_requests.add_metric(labels, merged["requests_rejected"])
        self.rejected_rows.add_metric(labels, merged["rows_rejected"])
        self.flagged_rows.add_metric(labels, merged["rows_flagged"])
        for feature, kinds in sorted(merged["counts"].items()):
            for kind, n in sorted(kinds.items()):
                self.violations.add_metric([*labels, feature, kind], n)

    def attribution(self, labels: list[str], parts: list[dict]) -> None:
        self.sampled.add_metric(labels, sum(p.get("sampled_rows", 0) for p in parts))
        self.driven.add_metric(labels, sum(p.get("flagged_rows", 0) for p in parts))


def _device_memory(device_memory: Any) -> Iterator[Metric]:
    """This process's device pool (absent while no version runs on the device path)."""
    memory = device_memory.started if device_memory is not None else None
    if memory is None:
        return
    yield GaugeMetricFamily("driftline_device_memory_used_bytes", "Device memory held by batches' arrays "
                            "(CuPy's pool; onnxruntime's arena is bounded alike)", value=memory.used_bytes())
    yield GaugeMetricFamily("driftline_device_memory_limit_bytes", "The bound on it (--device-memory-mib)",
                            value=memory.limit_bytes)


def _validation(validator: Any) -> dict:
    """A validator's counts as DriftStates carries them, copied safely while the event loop adds to them."""
    if validator is None:
        return {}
    counts = validator.counts
    nested: dict[str, dict[str, int]] = {}
    for (feature, kind), n in list(counts.counts.items()):  # list(): one copy under the GIL, no iteration race
        nested.setdefault(feature, {})[kind] = n
    return {"requests_rejected": counts.requests_rejected, "rows_rejected": counts.rows_rejected,
            "rows_flagged": counts.rows_flagged, "counts": nested}


# -- serving /metrics ---------------------------------------------------------------------------------
def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def serve(host: str, port: int, collector: LiveCollector, *, tls: ssl.SSLContext | None = None,
          token: str | None = None) -> Any:
    """Start the /metrics HTTP server (a daemon thread); returns it (``server_port``, ``shutdown()``).

    prometheus_client's own server, but serving /metrics only (see ``_metrics_only``); HTTPS with ``tls``
    (:func:`tls_context`), and only to scrapers sending ``Authorization: Bearer <token>`` when ``token`` is set.
    """
    registry = CollectorRegistry()
    registry.register(_FlushFirst(collector.loop))  # collected first: the series below are then current
    if multiprocess():
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry)  # every worker's request-path series, this one's included
    else:
        registry.register(REGISTRY)
        prometheus_client.ProcessCollector(registry=registry)
    registry.register(collector)
    # As prometheus_client.start_http_server does, so that an IPv6 --host works.
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family,
                                                                  "handle_error": _connection_failed})
    app = _metrics_only(make_wsgi_app(registry))
    server = make_server(address[0], port, _bearer_only(app, token) if token else app, server_class,
                         handler_class=_QuietHandler)
    if tls is not None:
        # The handshake runs in the connection's own thread (_QuietHandler.setup), not in the accept loop,
        # where one client that never finishes its handshake would keep every scrape waiting.
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, name="driftline-metrics", daemon=True).start()
    return server


METRICS_PATHS = frozenset({"/metrics", "/metrics/"})
CONNECTION_TIMEOUT_S = 30.0  # a scrape is one short request; a connection idle this long is dropped


def tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The gRPC port's TLS settings for /metrics: its certificate, and its client CA (then a scraper must
    present a certificate it signed, as a gRPC client must)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _bearer_only(app: Callable, token: str) -> Callable:
    """``--metrics-token``: everything on this port (the 404s included) asks for the token first."""

    def bearer_only(environ: dict, start_response: Callable) -> list[bytes]:
        if bearer_matches(environ.get("HTTP_AUTHORIZATION", ""), token):
            return app(environ, start_response)
        body = b"unauthorized: this server's metrics need 'Authorization: Bearer <metrics token>'\n"
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                            ("WWW-Authenticate", 'Bearer realm="driftline metrics"'),
                                            ("Content-Length", str(len(body)))])
        return [body]

    return bearer_only


def _connection_failed(server: Any, request: Any, client_address: Any) -> None:
    """A failed handshake or a dropped connection: the client's problem, not worth a traceback on stderr."""
    log.debug("metrics connection from %s failed", client_address, exc_info=True)


def _metrics_only(app: Callable) -> Callable:
    """prometheus_client answers every path with the metrics: an HTTP probe for anything else
    (``/v2/health/ready``, ``/v2/models/x/ready``) would read 200 as a yes. Only /metrics is served."""

    def metrics_only(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("PATH_INFO", "") in METRICS_PATHS:
            return app(environ, start_response)
        body = b"not found: this port serves /metrics only\n"
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body)))])
        return [body]

    return metrics_only


class _QuietHandler(WSGIRequestHandler):
    timeout = CONNECTION_TIMEOUT_S

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not logged: one line per scrape every few seconds says nothing."""
