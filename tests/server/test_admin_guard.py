"""Every admin call is guarded, on loopback too once a token is set; the CLI's client certificate reaches the server.

test_admin_security.py tries Swap and RepositoryModelLoad beyond loopback; here each of the four admin calls
(Swap, Rollback, RepositoryModelLoad, RepositoryModelUnload) and HTTP's load/unload is refused without the token
on a loopback server started with ``--admin-token``, and a refused call changes nothing. Then the CLI's
``--tls-cert/--tls-key`` against a server that requires client certificates (mutual TLS).
"""

from __future__ import annotations

import http.client
from pathlib import Path

import grpc
import onnx_models
import pytest
from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc, grpc_service_pb2_grpc
from driftline.proto import grpc_service_pb2 as pb
from pki import make_pki
from helpers import driftline, running_server

TOKEN = "loopback-s3cret"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guard") / "registry"
    for seed in ("1", "2"):
        driftline("train", "housing", "--registry", str(root), "--rows", "400", "--seed", seed,
                  "--param", "n_estimators=5")
    return root


def bearer(token: str | None) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")] if token else []


def admin_calls(channel: grpc.Channel) -> dict:
    """Each admin call, as a function of the metadata it is sent with."""
    admin = driftline_pb2_grpc.AdminStub(channel)
    triton = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    return {
        "Swap": lambda md: admin.Swap(dpb.SwapRequest(name="housing", version="2"), metadata=md, timeout=60),
        "Rollback": lambda md: admin.Rollback(dpb.RollbackRequest(name="housing"), metadata=md, timeout=60),
        "RepositoryModelUnload": lambda md: triton.RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name="housing"), metadata=md, timeout=60),
        "RepositoryModelLoad": lambda md: triton.RepositoryModelLoad(
            pb.RepositoryModelLoadRequest(model_name="housing"), metadata=md, timeout=60),
    }


def serving(channel: grpc.Channel) -> tuple[bool, list[str]]:
    triton = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    ready = triton.ModelReady(pb.ModelReadyRequest(name="housing"), timeout=30).ready
    versions = list(triton.ModelMetadata(pb.ModelMetadataRequest(name="housing"), timeout=30).versions) if ready else []
    return ready, versions


def assert_refused(call, metadata, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        call(metadata)
    assert refused.value.code() == code, refused.value.details()


def http_post(url: str, path: str, token: str | None) -> int:
    connection = http.client.HTTPConnection(url, timeout=60)
    try:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        connection.request("POST", path, body=b"{}", headers={"content-type": "application/json", **headers})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_on_loopback_a_token_guards_every_admin_call(registry: Path):
    with running_server(registry, "--model", "housing:1", "--admin-token", TOKEN, *onnx_models.serve_flags()) \
            as server, grpc.insecure_channel(server.address) as channel:
        calls = admin_calls(channel)
        url = onnx_models.http_url(server)

        def refused_everywhere(expected: tuple[bool, list[str]]) -> None:
            for name, call in calls.items():
                assert_refused(call, [], grpc.StatusCode.UNAUTHENTICATED)
                assert_refused(call, bearer("guess"), grpc.StatusCode.PERMISSION_DENIED)
                assert serving(channel) == expected, f"a refused {name} changed what is served"
            for action in ("unload", "load"):
                assert http_post(url, f"/v2/repository/models/housing/{action}", None) == 401
                assert http_post(url, f"/v2/repository/models/housing/{action}", "guess") == 403
                assert serving(channel) == expected, f"a refused HTTP {action} changed what is served"

        refused_everywhere((True, ["1"]))
        # With the token each goes through; refusals in between (Rollback with something to roll back to,
        # Unload of a loaded model, Load of an unloaded one) still change nothing.
        assert calls["Swap"](bearer(TOKEN)).version == "2"
        refused_everywhere((True, ["2"]))
        assert calls["Rollback"](bearer(TOKEN)).version == "1"
        assert serving(channel) == (True, ["1"])
        calls["RepositoryModelUnload"](bearer(TOKEN))
        assert serving(channel) == (False, [])
        assert_refused(calls["RepositoryModelLoad"], [], grpc.StatusCode.UNAUTHENTICATED)
        assert http_post(url, "/v2/repository/models/housing/load", None) == 401
        assert serving(channel) == (False, [])
        calls["RepositoryModelLoad"](bearer(TOKEN))
        assert serving(channel)[0] is True
        assert http_post(url, "/v2/repository/models/housing/unload", TOKEN) == 200
        assert serving(channel) == (False, [])
        assert http_post(url, "/v2/repository/models/housing/load", TOKEN) == 200
        assert serving(channel)[0] is True
        # The CLI sends the token it is given, and only then is obeyed.
        refused = driftline("swap", "housing", "1", "--server", server.address, check=False,
                            env={"DRIFTLINE_ADMIN_TOKEN": ""})
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr
        out = driftline("swap", "housing", "1", "--server", server.address, "--admin-token", TOKEN).stdout
        assert "serving version 1" in out


# -- mutual TLS: the CLI's client certificate -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all made here."""
    return make_pki(tmp_path_factory.mktemp("guard-pki"))


def test_the_cli_presents_its_client_certificate_to_a_mutual_tls_server(registry: Path, pki: Path):
    with running_server(registry, "--model", "housing:1", "--no-http", "--tls-cert", str(pki / "server.pem"),
                        "--tls-key", str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem")) as server:
        trust = ("--server", server.address, "--tls-ca", str(pki / "ca.pem"))
        anonymous = driftline("swap", "housing", "2", *trust, check=False)
        assert anonymous.returncode == 1, anonymous.stdout  # the server asks for a certificate the CLI did not send
        identified = (*trust, "--tls-cert", str(pki / "client.pem"), "--tls-key", str(pki / "client.key"))
        assert "serving version 2 (was version 1)" in driftline("swap", "housing", "2", *identified).stdout
        assert "serving version 1 (was version 2)" in driftline("rollback", "housing", *identified).stdout
