"""The Prometheus endpoint of a real server: counts match what was sent, drift alarms show, the served
version moves with a swap, and with several workers the figures of all of them add up."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families

from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.trainer import synthetic
from helpers import RunningServer, driftline, running_server, wait_until

METRICS_LINE = re.compile(r"; metrics http://127\.0\.0\.1:(\d+)/metrics")
REQUESTS, ROWS_EACH = 20, 100
WAIT_S = 60


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics") / "registry"
    for name, seed in (("housing", "1"), ("swapme", "1"), ("swapme", "2")):
        driftline("train", name, "--registry", str(root), "--rows", "3000", "--seed", seed,
                  "--param", "n_estimators=20")
    return root


@pytest.fixture(scope="module")
def server(registry: Path):
    with running_server(registry, "--metrics-port", "0", "--model", "housing", "--model", "swapme:1",
                        "--attribution-sample", "1.0", "--attribution-max-rows-per-s", "0", "--drift-window-rows", "100000",
                        "--log-format", "json"
                        ) as running:
        yield running


def metrics_url(server: RunningServer) -> str:
    match = next(m for line in list(server.log) if (m := METRICS_LINE.search(line)))
    return f"http://127.0.0.1:{match.group(1)}/metrics"


def scrape(server: RunningServer) -> dict[tuple[str, frozenset], float]:
    """Every sample: (name, labels) -> value."""
    with urllib.request.urlopen(metrics_url(server), timeout=30) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape_until(server: RunningServer, ready) -> dict:
    """Figures fed off the response path (drift, attributions) catch up within moments."""
    deadline = time.monotonic() + WAIT_S
    while True:
        samples = scrape(server)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def shifted_rows(n: int, seed: int = 5) -> np.ndarray:
    frame = synthetic.housing(n, seed=seed, shift="big_garages")
    return frame.select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)


def send(address: str, model: str, rows: np.ndarray, chunks: int, clients: int = 1) -> None:
    """``chunks`` requests spread over ``clients`` channels (connections)."""
    opened = [triton.InferenceServerClient(url=address) for _ in range(clients)]
    for i, chunk in enumerate(np.array_split(rows, chunks)):
        tensor = triton.InferInput("input", list(chunk.shape), "FP32")
        tensor.set_data_from_numpy(chunk)
        opened[i % clients].infer(model, [tensor])
    for client in opened:
        client.close()


def test_counts_match_the_requests_sent_and_a_drift_alarm_shows(server):
    send(server.address, "housing", shifted_rows(REQUESTS * ROWS_EACH), REQUESTS)
    client = triton.InferenceServerClient(url=server.address)
    wrong = triton.InferInput("not_the_input", [1, 11], "FP32")
    wrong.set_data_from_numpy(shifted_rows(1))
    for model in ("housing", "no_such_model"):
        with pytest.raises(triton.InferenceServerException):
            client.infer(model, [wrong])
    client.close()

    total = REQUESTS * ROWS_EACH
    samples = scrape_until(server, lambda s: value(s, "driftline_drift_window_rows", model="housing", version="1")
                           == total and value(s, "driftline_attribution_sampled_rows_total", model="housing",
                                              version="1") == total)
    v1 = {"model": "housing", "version": "1"}
    assert value(samples, "driftline_requests_total", **v1, status="OK") == REQUESTS
    assert value(samples, "driftline_requests_total", **v1, status="INVALID_ARGUMENT") == 1
    assert value(samples, "driftline_requests_total", model="_unknown", version="", status="NOT_FOUND") == 1
    assert value(samples, "driftline_inference_rows_total", **v1) == total
    assert value(samples, "driftline_request_duration_seconds_count", **v1) == REQUESTS + 1
    assert value(samples, "driftline_queue_duration_seconds_count", **v1) == REQUESTS
    assert value(samples, "driftline_batch_rows_sum", **v1) == total
    assert value(samples, "driftline_batch_requests_sum", **v1) == REQUESTS
    assert value(samples, "driftline_compute_duration_seconds_count", **v1) == value(
        samples, "driftline_batch_rows_count", **v1) >= 1
    assert value(samples, "driftline_request_duration_seconds_bucket", **v1, le="+Inf") == REQUESTS + 1
    assert value(samples, "driftline_queue_depth_requests", **v1) == 0

    garages = {**v1, "feature": "garage_area", "source": "feature"}
    assert value(samples, "driftline_drift_alarm", **garages) == 1
    assert value(samples, "driftline_drift_psi", **garages) > 0.2
    assert value(samples, "driftline_drift_ks", **garages) > 0.1
    assert value(samples, "driftline_drift_mean_shift_stddevs", **garages) > 0.5
    assert value(samples, "driftline_drift_js_distance", **garages) > 0.2
    assert value(samples, "driftline_drift_alarm", **v1, feature="year_built", source="feature") == 0
    assert value(samples, "driftline_drift_alarm", **v1, feature="prediction", source="prediction") is not None

    # Garages no training house had: flagged by validation (served) and by the sampled attributions.
    assert value(samples, "driftline_validation_violations_total", **v1, feature="garage_area",
                 constraint="above_training_range") > 0
    assert value(samples, "driftline_validation_flagged_rows_total", **v1) > 0
    assert value(samples, "driftline_validation_rejected_requests_total", **v1) == 0
    assert value(samples, "driftline_attribution_flagged_rows_total", **v1) > 0

    assert value(samples, "driftline_model_served_version", model="housing") == 1
    assert value(samples, "driftline_model_events_total", model="housing", event="load", result="ok") == 1
    info = [labels for (name, labels), _ in samples.items() if name == "driftline_model_info"]
    assert {("model", "housing"), ("version", "1"), ("execution_provider", "CPUExecutionProvider")} <= set(info[0])


def test_a_swap_moves_the_served_version(server):
    before = scrape(server)
    assert value(before, "driftline_model_served_version", model="swapme") == 1
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    with grpc.insecure_channel(server.address) as channel:
        admin = driftline_pb2_grpc.AdminStub(channel)
        admin.Swap(dpb.SwapRequest(name="swapme", version="2"),
                   metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")])
        with pytest.raises(grpc.RpcError):
            admin.Swap(dpb.SwapRequest(name="swapme", version="9"))
    send(server.address, "swapme", shifted_rows(10), 2)
    after = scrape(server)
    assert value(after, "driftline_model_served_version", model="swapme") == 2
    assert value(after, "driftline_model_events_total", model="swapme", event="swap", result="ok") == 1
    assert value(after, "driftline_model_events_total", model="swapme", event="swap", result="failed") == 1
    assert value(after, "driftline_requests_total", model="swapme", version="2", status="OK") == 2
    assert value(after, "driftline_drift_window_rows", model="swapme", version="1") is None  # retired
    # Tracing is off here, yet the JSON log line of the swap names the caller's trace.
    def swapped_lines() -> list[dict]:  # the server's stdout reaches server.log through a pipe and a thread
        logged = [json.loads(line) for line in list(server.log) if line.startswith("{")]
        return [line for line in logged if line["message"].startswith("swapme: now serving version 2")]

    wait_until(swapped_lines, "the swap's log line", 60)
    [swapped] = swapped_lines()
    assert (swapped["trace_id"], swapped["parent_span_id"]) == (trace_id, parent_id)


def test_workers_add_up(registry: Path):
    """Worker 0 serves /metrics for all: request counters through multiprocess files, drift through peers."""
    with running_server(registry, "--workers", "2", "--metrics-port", "0", "--model", "housing",
                        "--drift-window-rows", "100000") as server:
        assert re.search(r"\[2 workers\]", "".join(server.log))
        # Several connections, so the kernel may hand requests to both workers; the sums hold either way.
        send(server.address, "housing", shifted_rows(REQUESTS * ROWS_EACH, seed=6), REQUESTS, clients=8)
        total = REQUESTS * ROWS_EACH
        # The other worker's request figures reach the shared files within a quarter of a second (metrics.FLUSH_S).
        # A scrape may fall between two series of one hand-over: wait for every series asserted below.
        v1 = {"model": "housing", "version": "1"}
        samples = scrape_until(server, lambda s: value(s, "driftline_drift_window_rows", **v1) == total
                               and value(s, "driftline_requests_total", **v1, status="OK") == REQUESTS
                               and value(s, "driftline_inference_rows_total", **v1) == total
                               and value(s, "driftline_batch_rows_sum", **v1) == total)
        assert value(samples, "driftline_requests_total", **v1, status="OK") == REQUESTS
        assert value(samples, "driftline_inference_rows_total", **v1) == total
        assert value(samples, "driftline_batch_rows_sum", **v1) == total
        assert value(samples, "driftline_drift_window_rows", **v1) == total
        assert value(samples, "driftline_drift_alarm", **v1, feature="garage_area", source="feature") == 1
        assert value(samples, "driftline_model_events_total", model="housing", event="load", result="ok") == 1
        assert value(samples, "driftline_model_served_version", model="housing") == 1


def test_tallied_figures_reach_prometheus_as_if_each_value_were_observed():
    """Requests are tallied in plain integers and handed over in bulk; the histogram must read the same as one
    that observed every value (this also guards the prometheus_client internals the bulk hand-over writes)."""
    from prometheus_client import CollectorRegistry, Histogram

    from driftline.server.metrics import LATENCY_BUCKETS, _Tally

    registry = CollectorRegistry()
    bulk = Histogram("bulk", "tallied", buckets=LATENCY_BUCKETS, registry=registry)
    each = Histogram("each", "observed", buckets=LATENCY_BUCKETS, registry=registry)
    values = [0.0, 0.0001, 0.00011, 0.003, 0.0025, 7.5, 10.0, 11.0, 1e-7, 0.25] * 3
    tally = _Tally(LATENCY_BUCKETS)
    for v in values[:17]:
        tally.add(v)
    tally.flush_into(bulk)
    for v in values[17:]:  # a second flush adds to the first
        tally.add(v)
    tally.flush_into(bulk)
    tally.flush_into(bulk)  # nothing tallied since: no change
    for v in values:
        each.observe(v)

    def samples(name: str) -> list[tuple[str, dict, float]]:
        [family] = [f for f in registry.collect() if f.name == name]
        return [(s.name.removeprefix(name), s.labels, s.value) for s in family.samples if not s.name.endswith("_created")]

    bulk_samples, each_samples = samples("bulk"), samples("each")
    assert [s for s in bulk_samples if s[0] != "_sum"] == [s for s in each_samples if s[0] != "_sum"]
    assert [s[2] for s in bulk_samples if s[0] == "_sum"] == pytest.approx([s[2] for s in each_samples
                                                                           if s[0] == "_sum"])
