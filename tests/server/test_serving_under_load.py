"""The real server under concurrent callers: batching, deadlines, streaming order and workers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from driftline.trainer import synthetic
from helpers import driftline, running_server

WIDTH = 11


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("load") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "800", "--param", "n_estimators=20")
    return root


def houses(n: int, seed: int) -> np.ndarray:
    return synthetic.housing(n, seed=seed).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)


def infer(client: triton.InferenceServerClient, x: np.ndarray, **kwargs) -> np.ndarray:
    request = triton.InferInput("input", list(x.shape), "FP32")
    request.set_data_from_numpy(x)
    return client.infer("housing", [request], **kwargs).as_numpy("prediction")


def test_concurrent_callers_get_their_own_rows(registry):
    """Mixed row counts from 16 threads, each checked against the same rows sent alone and unbatched."""
    inputs = [houses(1 + seed % 5, seed) for seed in range(160)]
    with running_server(registry, "--max-batch-size", "1") as unbatched:
        client = triton.InferenceServerClient(url=unbatched.address)
        expected = [infer(client, x) for x in inputs]
        client.close()
    with running_server(registry, "--max-batch-size", "64", "--max-queue-delay-us", "2000") as server:
        client = triton.InferenceServerClient(url=server.address)
        bad = np.ones((1, WIDTH - 1), dtype=np.float32)

        def call(i: int):
            if i % 23 == 0:  # malformed requests mixed in fail alone
                with pytest.raises(InferenceServerException, match="10 features per row"):
                    infer(client, bad)
            return infer(client, inputs[i])

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(call, range(len(inputs))))
        for got, want in zip(results, expected, strict=True):
            np.testing.assert_array_equal(got, want)
        stats = client.get_inference_statistics("housing").model_stats[0]
        assert stats.inference_count == sum(len(x) for x in inputs)
        assert stats.inference_stats.fail.count == len(range(0, len(inputs), 23))
        client.close()


def test_expired_deadline_gets_deadline_exceeded_and_others_are_served(registry):
    with running_server(registry) as server, grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="housing")
        request.inputs.add(name="input", datatype="FP32", shape=[1, WIDTH])
        request.raw_input_contents.append(houses(1, 0).tobytes())
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=1e-6)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert stub.ModelInfer(request, timeout=30).model_version == "1"


def test_streaming_answers_in_order_with_errors_in_band(registry):
    with running_server(registry) as server, grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        messages = []
        for i in range(300):
            request = pb.ModelInferRequest(model_name="housing" if i % 50 != 7 else "missing", id=f"m{i}")
            request.inputs.add(name="input", datatype="FP32", shape=[1, WIDTH])
            request.raw_input_contents.append(houses(1, i).tobytes())
            messages.append(request)
        responses = list(stub.ModelStreamInfer(iter(messages), timeout=120))
        assert len(responses) == len(messages)
        for i, response in enumerate(responses):
            if i % 50 == 7:
                assert "not served here" in response.error_message
            else:
                assert response.error_message == "" and response.infer_response.id == f"m{i}"


def test_model_config_describes_batching(registry):
    with running_server(registry, "--max-batch-size", "32", "--max-queue-delay-us", "300") as server:
        client = triton.InferenceServerClient(url=server.address)
        config = client.get_model_config("housing").config
        assert config.max_batch_size == 32 and config.platform == "onnxruntime_onnx"
        assert [(i.name, list(i.dims)) for i in config.input] == [("input", [WIDTH])]
        assert [(o.name, list(o.dims)) for o in config.output] == [("prediction", [1])]
        assert config.dynamic_batching.max_queue_delay_microseconds == 300
        client.close()


def test_two_workers_serve_and_report_as_one(registry):
    with running_server(registry, "--workers", "2") as server:
        assert any("[2 workers]" in line for line in server.log)
        expected = None
        lock = threading.Lock()
        answers = []

        def one_connection(seed: int):
            # A separate channel per call: the kernel spreads connections, not requests, across workers.
            client = triton.InferenceServerClient(url=server.address)
            try:
                with lock:
                    answers.append(infer(client, houses(2, 1)))
            finally:
                client.close()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one_connection, range(24)))
        expected = answers[0]
        assert all(np.array_equal(a, expected) for a in answers)
        client = triton.InferenceServerClient(url=server.address)
        stats = client.get_inference_statistics("housing").model_stats[0]
        assert stats.inference_count == 48  # both workers' counts, merged
        client.close()
