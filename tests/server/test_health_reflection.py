"""What stock tools see: grpc.health.v1 per model through swap, unload, load and shutdown; server
reflection as grpcurl reads it; and HTTP probes of the metrics port."""

from __future__ import annotations

import queue
import re
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as triton
import tritonclient.http as triton_http
from google.protobuf import descriptor_pool
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from helpers import RunningServer, driftline, running_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
WAIT_S = 60  # a deadline for what must come, not a measure of how fast it comes
METRICS_LINE = re.compile(r"; metrics http://127\.0\.0\.1:(\d+)/metrics")
SERVICES = {"inference.GRPCInferenceService", "driftline.v1.Driftline", "driftline.v1.Monitoring",
            "driftline.v1.Admin", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """housing 1 and 2 (swappable), other, and broken (its artifact is damaged; ``repair`` undoes it)."""
    root = tmp_path_factory.mktemp("health") / "registry"
    for name, seed in (("housing", "1"), ("housing", "2"), ("other", "1"), ("broken", "1")):
        driftline("train", name, "--registry", str(root), "--rows", "400", "--seed", seed, "--estimator", "linear")
    return root


def damaged_copy(models: Path, into: Path) -> tuple[Path, bytes]:
    """A copy of the registry whose ``broken`` cannot load, and the bytes that repair it."""
    registry = into / "registry"
    shutil.copytree(models, registry)
    artifact = registry / "broken" / "1" / "model.onnx"
    good = artifact.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0xFF
    artifact.write_bytes(bytes(damaged))
    return artifact, good


def check(channel: grpc.Channel, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=WAIT_S).status


class Watcher:
    """A Watch stream read on a thread, so the test can act and then wait for what the stream says."""

    def __init__(self, channel: grpc.Channel, service: str) -> None:
        self.call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))
        self.seen: queue.Queue[int] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.seen.put(response.status)
        except grpc.RpcError:
            pass  # cancelled by close(), or the server went away

    def next(self) -> int:
        return self.seen.get(timeout=WAIT_S)

    def close(self) -> None:
        self.call.cancel()


def test_check_answers_for_the_server_each_model_and_unknown_names(models: Path, tmp_path: Path):
    artifact, good = damaged_copy(models, tmp_path)
    with running_server(tmp_path / "registry") as server, grpc.insecure_channel(server.address) as channel:
        assert check(channel, "housing") == SERVING and check(channel, "other") == SERVING
        assert check(channel, "broken") == NOT_SERVING  # failed to load at start
        assert check(channel, "") == NOT_SERVING  # as ServerReady: not every model serves
        with pytest.raises(grpc.RpcError) as unknown:
            check(channel, "no_such_model")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        watcher = Watcher(channel, "no_such_model")
        assert watcher.next() == SERVICE_UNKNOWN
        watcher.close()

        artifact.write_bytes(good)
        client = triton.InferenceServerClient(url=server.address)
        client.load_model("broken")
        client.close()
        assert check(channel, "broken") == SERVING and check(channel, "") == SERVING


def test_watch_follows_swap_unload_load_and_shutdown(models: Path):
    with running_server(models, "--model", "housing:1", "--model", "other") as server, \
            grpc.insecure_channel(server.address) as channel:
        housing, whole, early = Watcher(channel, "housing"), Watcher(channel, ""), Watcher(channel, "housing")
        assert housing.next() == SERVING and whole.next() == SERVING and early.next() == SERVING
        early.close()  # one watcher leaving must not leave the others of the same name unwoken

        swapped = driftline_pb2_grpc.AdminStub(channel).Swap(dpb.SwapRequest(name="housing", version="2"),
                                                            timeout=WAIT_S)
        assert swapped.version == "2" and check(channel, "housing") == SERVING
        client = triton.InferenceServerClient(url=server.address)
        client.unload_model("housing")
        # The next thing each stream says is the unload: the swap never showed NOT_SERVING in between.
        assert housing.next() == NOT_SERVING and whole.next() == NOT_SERVING
        assert check(channel, "other") == SERVING
        client.load_model("housing")
        client.close()
        assert housing.next() == SERVING and whole.next() == SERVING

        server.process.terminate()  # SIGTERM: a graceful shutdown tells watchers before the port closes
        assert housing.next() == NOT_SERVING and whole.next() == NOT_SERVING
        housing.close()
        whole.close()
    assert server.process.returncode == 0, "".join(server.log)


def test_every_worker_follows_unload_and_load(models: Path):
    with running_server(models, "--model", "housing:1", "--model", "other", "--workers", "2") as server:
        client = triton.InferenceServerClient(url=server.address)
        for action, expected in ((client.unload_model, NOT_SERVING), (client.load_model, SERVING)):
            action("housing")
            for _ in range(12):  # new connections land on both workers
                with grpc.insecure_channel(server.address) as channel:
                    assert (check(channel, "housing"), check(channel, "")) == (expected, expected)
        client.close()


@pytest.fixture(scope="module")
def server(models: Path):
    with running_server(models, "--metrics-port", "0") as running:
        yield running


def test_reflection_lists_the_services_and_resolves_their_types(server: RunningServer):
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) == SERVICES
        pool = descriptor_pool.DescriptorPool(database)
        infer = pool.FindServiceByName("inference.GRPCInferenceService").methods_by_name["ModelInfer"]
        assert infer.input_type.full_name == "inference.ModelInferRequest"
        assert {"model_name", "inputs", "raw_input_contents"} <= set(infer.input_type.fields_by_name)
        config = pool.FindServiceByName("inference.GRPCInferenceService").methods_by_name["ModelConfig"]
        assert "max_batch_size" in config.output_type.fields_by_name["config"].message_type.fields_by_name
        for name in SERVICES:  # every listed service can be described, its imports included
            assert pool.FindServiceByName(name).methods

        # grpcurl's "describe SERVICE.METHOD" and nested types ask for the file by the inner name.
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        for symbol, file in (("inference.GRPCInferenceService.ModelInfer", "grpc_service.proto"),
                             ("inference.ModelInferRequest.InferInputTensor", "grpc_service.proto"),
                             ("grpc.health.v1.Health.Watch", "grpc_health/v1/health.proto"),
                             ("inference.GRPCInferenceService.NoSuchMethod", None)):
            request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
            answer = next(stub.ServerReflectionInfo(iter([request]), timeout=WAIT_S))
            if file is None:
                assert answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
            else:
                names = [parsed_name(p) for p in answer.file_descriptor_response.file_descriptor_proto]
                assert names[0] == file, names


def parsed_name(serialized: bytes) -> str:
    return FileDescriptorProto.FromString(serialized).name


def test_no_reflection_turns_it_off_and_health_stays(models: Path):
    with running_server(models, "--model", "housing:1", "--no-reflection") as server, \
            grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as off:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert off.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert check(channel, "housing") == SERVING


def test_metrics_port_serves_metrics_only(server: RunningServer):
    port = next(int(m.group(1)) for line in list(server.log) if (m := METRICS_LINE.search(line)))
    for path in ("/metrics", "/metrics/"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT_S) as answer:
            assert answer.status == 200 and "driftline_model_served_version" in answer.read().decode()
    for path in ("/", "/v2/health/ready", "/v2/models/housing/ready", "/metricsx"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT_S)
        assert refused.value.code == 404, path
    # A stock HTTP client pointed at the metrics port hears "no", not a false "ready".
    client = triton_http.InferenceServerClient(url=f"127.0.0.1:{port}")
    assert not client.is_model_ready("no_such_model")
    assert not client.is_server_ready()
    client.close()
