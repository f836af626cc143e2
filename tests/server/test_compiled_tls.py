"""TLS on the compiled gRPC front end: the same PEM files, the same refusals as the Python door.

Both doors serve the same registry with ``--tls-cert``/``--tls-key`` (and ``--tls-client-ca`` for mutual TLS);
every check runs against both. A TLS client gets its answers (a tabular ModelInfer batched in C++, and calls the
door forwards to the Python door behind it on its plaintext unix socket); a plaintext client is refused; with
mutual TLS a client without a certificate is refused and one with a certificate the CA signed is served.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc
from driftline.trainer import synthetic
from helpers import door_counts, driftline, running_server
from pki import make_pki

pytest.importorskip("driftline.server.compiled._door",
                    reason="the compiled gRPC front end is not built (make setup, with libgrpc++-dev installed)")

ROWS = synthetic.housing(8, seed=3).select(list(synthetic.FEATURES)).to_numpy().astype(np.float32)
QUIET = ("--no-http", "--no-metrics")
DOORS = ("python", "compiled")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compiled-tls") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "400", "--param", "n_estimators=5")
    return root


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def infer() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="housing", id="tls-1")
    request.inputs.add(name="input", datatype="FP32", shape=list(ROWS.shape))
    request.raw_input_contents.append(ROWS.tobytes())
    return request


def ask(channel: grpc.Channel) -> tuple[pb.ModelInferResponse, pb.ModelMetadataResponse]:
    """One call the compiled door batches, one it forwards."""
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    return (stub.ModelInfer(infer(), timeout=30),
            stub.ModelMetadata(pb.ModelMetadataRequest(name="housing"), timeout=30))


def refusal(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refused:
        ask(channel)
    return refused.value.code()


def credentials(pki: Path, client: bool) -> grpc.ChannelCredentials:
    if not client:
        return grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
    return grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes(),
                                        private_key=(pki / "client.key").read_bytes(),
                                        certificate_chain=(pki / "client.pem").read_bytes())


def test_tls_serves_through_both_doors_and_plaintext_is_refused(registry: Path, pki: Path):
    tls = ("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"))
    answers, refusals, servers = {}, {}, {}
    for door in DOORS:
        with running_server(registry, "--front-end", door, *QUIET, *tls) as server:
            servers[door] = server
            with grpc.secure_channel(server.address, credentials(pki, client=False)) as channel:
                answers[door] = ask(channel)
            with grpc.insecure_channel(server.address) as plain:
                refusals[door] = refusal(plain)
    assert any(line.rstrip().endswith("; compiled gRPC front end") for line in servers["compiled"].log)
    assert answers["compiled"] == answers["python"]
    assert answers["compiled"][0].id == "tls-1" and answers["compiled"][0].outputs[0].shape == [len(ROWS), 1]
    assert refusals["compiled"] == refusals["python"] == grpc.StatusCode.UNAVAILABLE
    assert door_counts(servers["compiled"])[0] == 1  # the ModelInfer was the door's own, over TLS


def test_mutual_tls_refuses_clients_without_a_certificate_on_both_doors(registry: Path, pki: Path):
    mutual = ("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
              "--tls-client-ca", str(pki / "ca.pem"))
    answers, refusals = {}, {}
    for door in DOORS:
        with running_server(registry, "--front-end", door, *QUIET, *mutual) as server:
            with grpc.secure_channel(server.address, credentials(pki, client=False)) as anonymous:
                refusals[door] = refusal(anonymous)
            with grpc.secure_channel(server.address, credentials(pki, client=True)) as known:
                answers[door] = ask(known)
            with grpc.insecure_channel(server.address) as plain:
                assert refusal(plain) == grpc.StatusCode.UNAVAILABLE
    assert refusals["compiled"] == refusals["python"] == grpc.StatusCode.UNAVAILABLE
    assert answers["compiled"] == answers["python"]


@pytest.mark.parametrize("door", DOORS)
def test_a_client_certificate_from_another_ca_is_refused(registry: Path, pki: Path, tmp_path: Path, door: str):
    stranger = make_pki(tmp_path)  # a CA of its own: its client certificate is well-formed but not ours
    with running_server(registry, "--front-end", door, *QUIET, "--tls-cert", str(pki / "server.pem"),
                        "--tls-key", str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem")) as server:
        foreign = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes(),
                                               private_key=(stranger / "client.key").read_bytes(),
                                               certificate_chain=(stranger / "client.pem").read_bytes())
        with grpc.secure_channel(server.address, foreign) as channel:
            assert refusal(channel) == grpc.StatusCode.UNAVAILABLE
