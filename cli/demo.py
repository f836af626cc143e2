"""driftline demo: the whole product on embedded defaults, in one command.

Trains a housing model on synthetic data, serves it over gRPC and HTTP, sends ordinary and drifted
houses, shows the drift report, refuses invalid houses, explains a prediction, retrains and hot-swaps
to the new version while traffic flows, then serves an ONNX model brought from elsewhere.
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

from driftline.cli import drift, explain, infer
from driftline.cli.common import parse_command
from driftline.cli.models import run_show
from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc
from driftline.registry import Registry
from driftline.trainer import synthetic
from driftline.trainer.publish import import_onnx
from driftline.trainer.train import TrainConfig, publish, train

READY = re.compile(r" on (\S+):(\d+) ")
HTTP = re.compile(r"; http http://\S+:(\d+)")
# What no house can be, whatever the training data showed (driftline train --schema FILE does the same). Declared
# limits refuse what breaks them; the limits inferred from the data (e.g. whole years) only flag it.
LIMITS = {"bedrooms": {"min": 0, "integer": True}, "garage_area": {"min": 0}, "living_area": {"min": 10}}


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

    step("1. Train a gradient-boosting price model on synthetic housing data and publish it")
    first = train(TrainConfig(model="housing", estimator="gradient_boosting", rows=args.rows, seed=1,
                              schema_overrides=LIMITS))
    v1 = publish(registry, "housing", first.onnx_model, first.metadata, first.profile, first.schema)
    print(f"published housing version {v1}: holdout r2={first.metadata.metrics['r2']:.3f}, "
          f"mae={first.metadata.metrics['mae']:,.0f} PLN, data {first.metadata.data_version[:19]}...")

    step("2. Serve it over the Open Inference Protocol (gRPC and HTTP/REST)")
    with server(root) as (address, http), grpc.insecure_channel(address) as channel:
        info = driftline_pb2_grpc.DriftlineStub(channel).VersionInfo(dpb.VersionInfoRequest(name="housing"))
        print(f"gRPC at {address}, HTTP at {http}; housing version {info.version} runs on "
              f"{', '.join(info.execution_providers)}")
        doors(channel, http)

        step("3. Price five ordinary houses, then send 1,000 more: drift against the training baseline stays quiet")
        send(channel, synthetic.housing(5, seed=11))
        traffic(channel, synthetic.housing(1000, seed=12))
        show_drift(channel, address, rows=1005)

        step("4. Data validation: the same schema the trainer inferred judges every request")
        judge(channel, synthetic.housing(1, seed=14), "bedrooms", -2.0)  # declared min 0: refused
        judge(channel, synthetic.housing(1, seed=15), "year_built", 1995.5)  # inferred "whole": served, flagged

        step("5. Houses with garages far larger than any in training: drift alarms, attributions flag them")
        send(channel, synthetic.housing(5, seed=11, shift="big_garages"))
        traffic(channel, synthetic.housing(1000, seed=13, shift="big_garages"))
        show_drift(channel, address, rows=2010, plot=workdir / "drift.png")
        print("\n  why was this one priced so? (exact TreeSHAP, computed in the same request)")
        house = synthetic.housing(1, seed=16, shift="big_garages").select(list(synthetic.FEATURES)).to_dicts()[0]
        explain.run(parse_command(explain, "explain", ["housing", "--server", address, "--json", json.dumps(house)]))

        step("6. Retrain on data that has big garages, then hot-swap to it under live traffic")
        second = train(TrainConfig(model="housing", estimator="hist_gradient_boosting", rows=args.rows, seed=2,
                                   shift="big_garages", schema_overrides=LIMITS))
        v2 = publish(registry, "housing", second.onnx_model, second.metadata, second.profile, second.schema)
        print(f"published housing version {v2} (hist_gradient_boosting, trained with big garages)")
        swap_under_traffic(channel, v2)

        step("7. Any ONNX model: two INT32 inputs, published without training data, loaded as Triton loads")
        any_onnx(registry, workdir, channel, http)

        step("8. The registry: versions with their lineage")
        run_show(argparse.Namespace(registry=str(root), name="housing"))
    print("\ndone: the demo registry is in", root)
    return 0


def traffic(channel: grpc.Channel, frame, chunk: int = 50) -> None:
    features = infer.feature_names(channel, "housing")
    rows = frame.select(features).to_numpy().astype("float32")
    for start in range(0, len(rows), chunk):
        infer.infer(channel, "housing", "", rows[start:start + chunk])
    print(f"  sent {len(rows)} houses in requests of {chunk}")


def show_drift(channel: grpc.Channel, address: str, rows: int, plot: Path | None = None) -> None:
    # Drift updates run off the response path: wait until every row sent has been counted.
    monitoring = driftline_pb2_grpc.MonitoringStub(channel)
    deadline = time.monotonic() + 10
    while monitoring.DriftReport(dpb.DriftRequest(name="housing")).current.rows < rows:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    argv = ["housing", "--server", address] + (["--plot", str(plot)] if plot else [])
    drift.run(parse_command(drift, "drift", argv))


def judge(channel: grpc.Channel, frame, feature: str, value: float) -> None:
    """Send one house with ``feature`` set to ``value``; say whether it was refused, flagged or served."""
    features = infer.feature_names(channel, "housing")
    row = frame.select(features).to_numpy().astype("float32")
    row[0, features.index(feature)] = value
    try:
        response = infer.infer(channel, "housing", "", row)
    except grpc.RpcError as exc:
        print(f"  {feature}={value:g}: {exc.code().name}: {exc.details()}")
        return
    flagged = response.parameters["driftline_flagged_rows"].string_param if \
        "driftline_flagged_rows" in response.parameters else ""
    print(f"  {feature}={value:g}: served" + (f", flagged (driftline_flagged_rows={flagged!r}): it breaks a limit "
                                             "inferred from the training data, not a declared one" if flagged else ""))


def swap_under_traffic(channel: grpc.Channel, version: int) -> None:
    """Callers keep sending while the server swaps versions; count failures and who answered."""
    features = infer.feature_names(channel, "housing")
    rows = synthetic.housing(4, seed=17).select(features).to_numpy().astype("float32")
    stop, answered, failed = threading.Event(), Counter(), []

    def caller() -> None:
        while not stop.is_set():
            try:
                answered[infer.infer(channel, "housing", "", rows).model_version] += 1
            except grpc.RpcError as exc:
                failed.append(exc.code().name)

    callers = [threading.Thread(target=caller) for _ in range(8)]
    for thread in callers:
        thread.start()
    time.sleep(0.5)
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


def send(channel: grpc.Channel, frame) -> None:
    features = infer.feature_names(channel, "housing")
    rows = frame.select(features).to_numpy().astype("float32")
    response = infer.infer(channel, "housing", "", rows)
    prices = infer.outputs_of(response)["prediction"].reshape(-1)
    for garage, area, actual, predicted in zip(frame["garage_area"], frame["living_area"], frame[synthetic.TARGET],
                                               prices, strict=True):
        print(f"  {area:5.0f} m2, garage {garage:5.1f} m2: predicted {predicted:>12,.0f} PLN "
              f"(synthetic price {actual:>12,.0f}) by version {response.model_version}")


def doors(channel: grpc.Channel, http: str) -> None:
    """What probes and stock clients see: gRPC health checking, and one house priced over HTTP/JSON."""
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="housing")).status
    named = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    print(f"  grpc.health.v1.Health/Check(service='housing'): {named}")
    with urllib.request.urlopen(f"{http}/v2/health/ready", timeout=10) as answer:
        print(f"  GET {http}/v2/health/ready: {answer.status}")
    features = infer.feature_names(channel, "housing")
    row = synthetic.housing(1, seed=10).select(features).to_numpy().astype("float32")
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(row.shape), "data": row.ravel().tolist()}]}
    answer = post_json(f"{http}/v2/models/housing/infer", body)
    print(f"  POST {http}/v2/models/housing/infer (JSON): prediction "
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
    answer = infer.outputs_of(inference.ModelInfer(request))
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
def server(root: Path) -> Iterator[tuple[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "driftline", "serve", "--registry", str(root), "--port", "0", "--http-port", "0"],
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
