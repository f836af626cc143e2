"""driftline demo: the whole product on embedded defaults, in one command.

Trains a price model on synthetic listings (numbers, a district, a Polish description) behind fit fuses and
model tests, serves it over gRPC and HTTP one input per column, sends ordinary and drifted listings, shows
the drift report (the server's and the fleet's, merged from the registry), refuses invalid ones, explains
predictions, watches listings arrive in English from a new district (the language check), retrains and
hot-swaps to the new version while traffic flows, serves an ONNX model brought from elsewhere, sends
batch-1 calls through the compiled gRPC front end where it is built, then reproduces a version from its
data snapshot and shows what the registry costs to keep.
"""

from __future__ import annotations

import argparse
import functools
import json
import threading
from collections import Counter
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from driftline.cli import drift, explain, reproduce
from driftline.client import Client, ServerError
from driftline.cli.common import parse_command
from driftline.cli.models import run_du, run_show
from driftline.cli.models_show import show_version
from driftline.registry.usage import DEFAULT_PRICE_PER_GB_MONTH
from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc
from driftline.registry import Registry
from driftline.trainer import snapshot, synthetic
from driftline.trainer.model_tests import result_lines
from driftline.trainer.model_tests_file import parse as parse_tests
from driftline.trainer.publish import import_onnx
from driftline.trainer.train import TrainConfig, publish, train

READY = re.compile(r" on (\S+):(\d+) ")
HTTP = re.compile(r"; http http://\S+:(\d+)")
# What no house can be, whatever the training data showed (driftline train --schema FILE does the same). Declared
# limits refuse what breaks them; the limits inferred from the data (e.g. whole years) only flag it.
LIMITS = {"bedrooms": {"min": 0, "integer": True}, "garage_area": {"min": 0}, "living_area": {"min": 10}}
# What the price model must do whatever its r2 says (driftline train --tests FILE does the same; README "Model tests").
TESTS = """
price rises with living area:
  kind: monotone
  column: living_area
  tolerance: 1%
  max_failing: 2%
price falls with distance to the center:
  kind: monotone
  column: distance_to_center
  direction: decreasing
  tolerance: 1%
  max_failing: 2%
an old house in Wawer is not a villa:
  kind: minimum
  rows:
    - {living_area: 70, year_built: 1965, condition: 2, district: Wawer}
  expect: {min: 200000, max: 900000}
the facts price a house, not the prose:
  kind: invariance
  column: description
  values: [""]
  tolerance: 15%
every district:
  kind: slice
  column: district
  metric: mape
  margin: 0.05
  min_rows: 30
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, serve, send traffic, swap versions: the tour", description=__doc__)
    p.add_argument("--workdir", default=".demo", help="where the demo registry lives (recreated)")
    p.add_argument("--rows", type=int, default=4000)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    root = workdir / "registry"
    shutil.rmtree(root, ignore_errors=True)
    registry = Registry(root)

    step("1. Train a gradient-boosting price model on synthetic listings (numbers, a district, a Polish "
         "description), test it and publish it")
    tests = parse_tests(TESTS, "the demo's tests.yaml")
    first = train(TrainConfig(model="housing", estimator="gradient_boosting", synthetic="listings", rows=args.rows,
                              seed=1, schema_overrides=LIMITS, tests=tests))
    v1, kept = publish_with_snapshot(registry, first)
    print(f"published housing version {v1}: holdout r2={first.metadata.metrics['r2']:.3f}, "
          f"mae={first.metadata.metrics['mae']:,.0f} PLN, data {first.metadata.data_version[:19]}...")
    fuse = first.metadata.extra["fuses"]
    print(f"  fit fuses held: holdout {fuse['metric']} {fuse['holdout']:.3f} vs {fuse['baseline']:.3f} for a trivial "
          f"model, train {fuse['train']:.3f}; no feature leaks the price")
    roles = ", ".join(f"{c['name']} ({c['role']})" for c in first.metadata.extra["table"]["columns"][-3:])
    print(f"  one input per column, as skl2onnx pipelines and MLServer's pandas codec have it: ..., {roles}")
    for line in result_lines(first.metadata.extra["model_tests"]):
        print("  " + line)
    print(f"  in the version: tests.yaml, MODEL_CARD.md with its plots, and the training data ({kept['rows']:,} rows, "
          f"{kept['bytes']:,} bytes of Parquet, stored by content) in {root / 'housing' / str(v1)}")

    step("2. Serve it over the Open Inference Protocol (gRPC and HTTP/REST)")
    with server(root) as (address, http), grpc.insecure_channel(address) as channel, Client(address) as client:
        info = driftline_pb2_grpc.DriftlineStub(channel).VersionInfo(dpb.VersionInfoRequest(name="housing"))
        print(f"gRPC at {address} ({door_name()}), HTTP at {http}; housing version {info.version} runs on "
              f"{', '.join(info.execution_providers)} (device path: {info.device_path})")
        doors(channel, http)

        step("3. Price five ordinary listings, then send 1,000 more: drift against the training baseline stays quiet")
        send(client, synthetic.listings(5, seed=11))
        traffic(client, synthetic.listings(1000, seed=12))
        show_drift(channel, address, rows=1005)

        step("4. Data validation: the same schema the trainer inferred judges every request")
        judge(client, "bedrooms", -2.0)  # declared min 0: refused
        judge(client, "year_built", 1995.5)  # inferred "whole": served, flagged
        judge(client, "district", "Garwolin")  # not a training district; the set was inferred: served, flagged

        step("5. Houses with garages far larger than any in training: drift alarms, attributions flag them")
        send(client, synthetic.listings(5, seed=11, shift="big_garages"))
        traffic(client, synthetic.listings(1000, seed=13, shift="big_garages"))
        show_drift(channel, address, rows=2010, plot=workdir / "drift.png")
        fleet_drift(root)
        print("\n  why was this one priced so? (exact TreeSHAP, computed in the same request)")
        explain_row(address, synthetic.listings(1, seed=16, shift="big_garages"))

        step("6. Listings arrive in English, from a town outside Warsaw: the language check and the new district")
        traffic(client, synthetic.listings(3000, seed=18, shift="english_new_district"))
        language_report(client)
        print("\n  and what the district does to a price (per column: the one-hot features summed back)")
        explain_row(address, by_district(client, synthetic.listings(200, seed=19)))

        step("7. Retrain on data that has big garages, then hot-swap to it under live traffic")
        second = train(TrainConfig(model="housing", estimator="hist_gradient_boosting", synthetic="listings",
                                   rows=args.rows, seed=2, shift="big_garages", schema_overrides=LIMITS))
        v2, _ = publish_with_snapshot(registry, second)
        print(f"published housing version {v2} (hist_gradient_boosting, trained with big garages)")
        swap_under_traffic(client, v2)

        step("8. Any ONNX model: two INT32 inputs, published without training data, loaded as Triton loads")
        any_onnx(registry, workdir, channel, http)

        step("9. The compiled gRPC front end (the default where built): C++ decodes, checks and batches calls and "
             "stream messages; Python runs once per batch")
        compiled_door(registry, root, channel, address)

        step("10. A time machine for data: rebuild version 1 from its snapshot and recorded recipe")
        reproduce.run(parse_command(reproduce, "reproduce", ["housing", str(v1), "--registry", str(root), "--publish"]))

        step("11. The registry: versions with their lineage and test results, and what they cost to keep")
        run_show(argparse.Namespace(registry=str(root), name="housing", version=None))
        print()
        show_version(registry, "housing", str(v1))
        run_du(argparse.Namespace(registry=str(root), name=None, price_per_gb_month=DEFAULT_PRICE_PER_GB_MONTH,
                                  json=False))
    print("\nto deploy: Dockerfile (CPU; --build-arg DEVICE=cuda), deploy/kserve/ (a KServe ClusterServingRuntime and "
          "InferenceServices), deploy/k8s/ (Deployment, Service, HPA, PDB, ServiceMonitor, a retrain CronJob)")
    print("done: the demo registry is in", root)
    return 0


def publish_with_snapshot(registry: Registry, trained) -> tuple[int, dict]:
    """Publish with the trained model's tests and its training data kept by content (as `driftline train` does
    for a local registry), so the version can be rebuilt; the version and what its snapshot holds."""
    metadata, data_files = snapshot.take(trained)
    version = publish(registry, "housing", trained.onnx_model, metadata, trained.profile, trained.schema,
                      tests=trained.config.tests, data_files=data_files)
    return version, metadata.extra[snapshot.LINEAGE_KEY]


def door_name() -> str:
    """Which door `--front-end auto` put on the gRPC port."""
    from driftline.server.front_end import why_not_compiled

    return "the Python gRPC door" if why_not_compiled() else "the compiled gRPC door"


def compiled_door(registry: Registry, root: Path, channel: grpc.Channel, address: str) -> None:
    """A numbers-only price model through both doors: the same answers, unary and streamed."""
    from driftline.server.front_end import why_not_compiled

    reason = why_not_compiled()
    if reason is not None:
        print(f"  not here: {reason}")
        return
    houses = train(TrainConfig(model="houses", estimator="gradient_boosting", synthetic="housing", rows=2000, seed=3))
    publish(registry, "houses", houses.onnx_model, houses.metadata, houses.profile, houses.schema)
    inference = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    inference.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="houses"))
    rows = synthetic.housing(200, seed=4).select(list(synthetic.FEATURES))
    with server(root, "--front-end", "python", "--model", "houses", "--workers", "1", "--replica-id", "demo-python",
                "--no-metrics") as (python_address, _), Client(python_address) as python, Client(address) as compiled:
        answers = [None] * rows.height

        def call(start: int) -> None:  # batch-1 calls from 8 callers at once: company for the C++ batcher
            for i in range(start, rows.height, 8):
                answers[i] = compiled.infer("houses", rows[i:i + 1])["prediction"][0]

        callers = [threading.Thread(target=call, args=(start,)) for start in range(8)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join()
        expected = python.infer("houses", rows)["prediction"].to_numpy()
        difference = float(np.max(np.abs(np.asarray(answers) - expected)))
        print(f"  {rows.height} batch-1 calls from 8 callers through the compiled door: the Python door's answers "
              f"(largest difference {difference:g})")
        matrix = rows.to_numpy().astype(np.float32)
        streamed = [stream_through(target, matrix[:20]) for target in (channel, python_address)]
        same = "the same answers" if streamed[0] == streamed[1] else "DIFFERENT answers"
        errors = [e for e in streamed[0] if e.startswith("error")]
        print(f"  one stream of 20 messages (two of the wrong width) through each door: {same}, in order; "
              f"{len(errors)} in-band errors, e.g. {errors[0][:90]}...")


def stream_through(target: grpc.Channel | str, matrix: np.ndarray) -> list[str]:
    """One ModelStreamInfer of single rows (messages 5 and 12 one feature short): each answer or in-band error."""
    def messages() -> Iterator[pb.ModelInferRequest]:
        for i, row in enumerate(matrix):
            values = row[:-1] if i in (5, 12) else row
            tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, len(values)])
            yield pb.ModelInferRequest(model_name="houses", id=str(i), inputs=[tensor],
                                       raw_input_contents=[values.tobytes()])

    channel = grpc.insecure_channel(target) if isinstance(target, str) else target
    try:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return [f"error: {r.error_message}" if r.error_message else
                f"{r.infer_response.id}: {np.frombuffer(r.infer_response.raw_output_contents[0], np.float32)[0]:.6g}"
                for r in stub.ModelStreamInfer(messages(), timeout=60)]
    finally:
        if isinstance(target, str):
            channel.close()


def fleet_drift(root: Path) -> None:
    """The same report with no server asked: merged from the drift states every replica writes to the registry."""
    print("\n  the fleet's view: every replica writes its mergeable drift state to the registry; merged, no server asked")
    wait_until = time.monotonic() + 10
    while not list((root / "housing" / ".fleet").glob("*/*.json")) and time.monotonic() < wait_until:
        time.sleep(0.1)
    time.sleep(1.2)  # one more write, so the state holds every row counted above
    drift.run(parse_command(drift, "drift", ["housing", "--registry", str(root)]))


def traffic(client: Client, frame, chunk: int = 50) -> None:
    rows = frame.select(list(synthetic.LISTING_FEATURES))
    for start in range(0, rows.height, chunk):
        client.infer("housing", rows[start:start + chunk])
    print(f"  sent {rows.height} listings in requests of {chunk}")


def show_drift(channel: grpc.Channel, address: str, rows: int, plot: Path | None = None) -> None:
    wait_for(channel, rows)
    argv = ["housing", "--server", address] + (["--plot", str(plot)] if plot else [])
    drift.run(parse_command(drift, "drift", argv))


def wait_for(channel: grpc.Channel, rows: int) -> None:
    """Drift updates run off the response path: wait until every row sent has been counted."""
    monitoring = driftline_pb2_grpc.MonitoringStub(channel)
    deadline = time.monotonic() + 10
    while monitoring.DriftReport(dpb.DriftRequest(name="housing")).current.rows < rows:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)


def language_report(client: Client) -> None:
    """The text and category columns of the drift report, as driftline.client reads it."""
    time.sleep(0.2)  # the monitor applies batches a few milliseconds after their answers
    report = client.drift("housing")
    for column in report.columns:
        if column.name in ("district", "description", "description.language", "description.words"):
            verdict = f"ALARM ({', '.join(column.alarms)})" if column.alarm else "quiet"
            print(f"  {column.name:<22} {verdict:<32} {column.note}")


def by_district(client: Client, frame):
    """The ordinary listing whose price its district moves most."""
    answered = client.infer("housing", frame.select(list(synthetic.LISTING_FEATURES)), explain=True)
    return frame[int(answered["attribution[district]"].abs().arg_max())]


def explain_row(address: str, frame) -> None:
    row = frame.select(list(synthetic.LISTING_FEATURES)).to_dicts()[0]
    explain.run(parse_command(explain, "explain", ["housing", "--server", address, "--json", json.dumps(row)]))


def judge(client: Client, column: str, value: object) -> None:
    """Send one listing with ``column`` set to ``value``; say whether it was refused, flagged or served."""
    row = synthetic.listings(1, seed=14).select(list(synthetic.LISTING_FEATURES)).to_dicts()[0]
    row[column] = value
    try:
        answered = client.infer_result("housing", [row])
    except ServerError as exc:
        print(f"  {column}={value!r}: {exc.status}: {exc.message}")
        return
    print(f"  {column}={value!r}: served" + (", flagged (driftline_flagged_rows): it breaks a limit inferred from "
                                            "the training data, not a declared one" if answered.flagged.any() else ""))


def swap_under_traffic(client: Client, version: int) -> None:
    """Callers keep sending while the server swaps versions; count failures and who answered."""
    rows = synthetic.listings(4, seed=17).select(list(synthetic.LISTING_FEATURES))
    stop, answered, failed = threading.Event(), Counter(), []

    def caller() -> None:
        while not stop.is_set():
            try:
                answered[client.infer_result("housing", rows).version] += 1
            except ServerError as exc:
                failed.append(exc.status)

    callers = [threading.Thread(target=caller) for _ in range(8)]
    for thread in callers:
        thread.start()
    time.sleep(0.5)
    with grpc.insecure_channel(client.url) as channel:
        swapped = driftline_pb2_grpc.AdminStub(channel).Swap(dpb.SwapRequest(name="housing", version=str(version)))
    time.sleep(0.5)
    stop.set()
    for thread in callers:
        thread.join()
    print(f"  swap to version {swapped.version} took {swapped.seconds * 1000:.0f} ms; "
          f"{sum(answered.values())} requests answered during the run "
          + ", ".join(f"{n} by version {v}" for v, n in sorted(answered.items()))
          + f"; failed: {len(failed)}")


def step(title: str) -> None:
    print(f"\n== {title}")


def send(client: Client, frame) -> None:
    answered = client.infer("housing", frame.select(list(synthetic.LISTING_FEATURES)))
    for row, predicted, version in zip(frame.iter_rows(named=True), answered["prediction"], answered["version"],
                                       strict=True):
        print(f"  {row['living_area']:5.0f} m2 in {row['district']:<12} garage {row['garage_area']:5.1f} m2: predicted "
              f"{predicted:>12,.0f} PLN (synthetic price {row[synthetic.TARGET]:>12,.0f}) by version {version}")


def doors(channel: grpc.Channel, http: str) -> None:
    """What probes and stock clients see: gRPC health checking, and one house priced over HTTP/JSON."""
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="housing")).status
    named = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(f"  grpc.health.v1.Health/Check(service='housing'): {named}")
    with urllib.request.urlopen(f"{http}/v2/health/ready", timeout=10) as answer:
        print(f"  GET {http}/v2/health/ready: {answer.status}")
    row = synthetic.listings(1, seed=10).select(list(synthetic.LISTING_FEATURES)).to_dicts()[0]
    body = {"inputs": [{"name": name, "datatype": "BYTES" if isinstance(value, str) else "FP32", "shape": [1, 1],
                        "data": [value]} for name, value in row.items()]}
    answer = post_json(f"{http}/v2/models/housing/infer", body)
    print(f"  POST {http}/v2/models/housing/infer (JSON, one input per column): prediction "
          f"{answer['outputs'][0]['data'][0]:,.0f} PLN by version {answer['model_version']}")


def any_onnx(registry: Registry, workdir: Path, channel: grpc.Channel, http: str) -> None:
    path = workdir / "add_sub.onnx"
    path.write_bytes(add_sub_model().SerializeToString())
    version = import_onnx(registry, "add_sub", path, None)
    print(f"published add_sub version {version} (no reference data: served and counted, no drift baseline)")
    inference = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    inference.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="add_sub"))
    config = inference.ModelConfig(pb.ModelConfigRequest(name="add_sub")).config
    print(f"  loaded with RepositoryModelLoad; its ModelConfig: max_batch_size {config.max_batch_size}, inputs "
          + ", ".join(f"{i.name} {list(i.dims)}" for i in config.input))
    a, b = np.arange(4, dtype=np.int32).reshape(1, 4), np.full((1, 4), 10, dtype=np.int32)
    request = pb.ModelInferRequest(model_name="add_sub")
    for name, value in (("INPUT0", a), ("INPUT1", b)):
        request.inputs.add(name=name, datatype="INT32", shape=value.shape)
        request.raw_input_contents.append(value.tobytes())
    response = inference.ModelInfer(request)
    answer = {o.name: np.frombuffer(raw, dtype=np.int32).reshape(o.shape)
              for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)}
    print(f"  gRPC: {a.tolist()} + {b.tolist()} = {answer['OUTPUT0'].tolist()}, "
          f"difference {answer['OUTPUT1'].tolist()}")
    body = {"inputs": [{"name": n, "datatype": "INT32", "shape": [1, 4], "data": v.ravel().tolist()}
                       for n, v in (("INPUT0", a), ("INPUT1", b))],
            "outputs": [{"name": "OUTPUT0"}]}
    print(f"  HTTP: {post_json(f'{http}/v2/models/add_sub/infer', body)['outputs'][0]['data']}")
    try:
        wrong = pb.ModelInferRequest(model_name="add_sub")
        wrong.CopyFrom(request)
        wrong.inputs[1].datatype = "FP32"
        inference.ModelInfer(wrong)
    except grpc.RpcError as exc:
        print(f"  a float sent for an INT32 input: {exc.code().name}: {exc.details()}")


def add_sub_model() -> onnx.ModelProto:
    """Triton's "simple" example model, built in place: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    tensor = functools.partial(onnx.helper.make_tensor_value_info, elem_type=onnx.TensorProto.INT32, shape=["batch", 4])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         onnx.helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
        "add_sub", [tensor("INPUT0"), tensor("INPUT1")], [tensor("OUTPUT0"), tensor("OUTPUT1")])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


@contextmanager
def server(root: Path, *extra: str) -> Iterator[tuple[str, str]]:
    process = subprocess.Popen(
        # The demo's operator is its reader: it asks to see the values behind flags, which by default are withheld
        # from drift reports (anyone who can reach the port may read those).
        [sys.executable, "-m", "driftline", "serve", "--registry", str(root), "--port", "0", "--http-port", "0",
         "--show-rejected-values", "--replica-id", "demo", "--fleet-interval", "1", *extra],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        for line in process.stdout:
            match = READY.search(line)
            if match:
                http = HTTP.search(line)
                yield f"127.0.0.1:{match.group(2)}", f"http://127.0.0.1:{http.group(1)}"
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start in 120 s")
        else:
            raise RuntimeError("the server exited before listening")
    finally:
        process.terminate()
        process.wait(timeout=30)
