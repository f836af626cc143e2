"""Admin calls need the token beyond loopback; TLS and mutual TLS with certificates made here."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from driftline.proto import driftline_pb2 as dpb
from driftline.proto import driftline_pb2_grpc
from driftline.proto import grpc_service_pb2 as pb
from driftline.proto import grpc_service_pb2_grpc
from helpers import READY_LINE, driftline

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("admin") / "registry"
    for seed in ("1", "2"):
        driftline("train", "housing", "--registry", str(root), "--rows", "400", "--seed", seed,
                  "--param", "n_estimators=5")
    return root


def start(registry: Path, *args: str) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "driftline", "serve", "--registry", str(registry), "--port", "0", "--workers", "1",
         "--model", "housing:1", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for line in process.stdout:
        match = READY_LINE.search(line)
        if match:
            return process, int(match.group("port"))
    raise AssertionError("server did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=15)


def swap(channel: grpc.Channel, version: str, token: str | None = None):
    metadata = [("authorization", f"Bearer {token}")] if token else []
    return driftline_pb2_grpc.AdminStub(channel).Swap(dpb.SwapRequest(name="housing", version=version),
                                                      metadata=metadata, timeout=60)


def served_version(channel: grpc.Channel) -> list[str]:
    stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
    return list(stub.ModelMetadata(pb.ModelMetadataRequest(name="housing"), timeout=30).versions)


def test_beyond_loopback_admin_needs_the_token(registry: Path):
    # 0.0.0.0 listens beyond loopback; the test still connects through 127.0.0.1 only.
    process, port = start(registry, "--host", "0.0.0.0", "--admin-token", TOKEN)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as missing:
                swap(channel, "2")
            assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as wrong:
                swap(channel, "2", token="guess")
            assert wrong.value.code() == grpc.StatusCode.PERMISSION_DENIED
            load = pb.RepositoryModelLoadRequest(model_name="housing")
            with pytest.raises(grpc.RpcError) as triton_load:
                grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryModelLoad(load, timeout=30)
            assert triton_load.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert served_version(channel) == ["1"]  # refused calls changed nothing
            assert swap(channel, "2", token=TOKEN).version == "2"
            assert served_version(channel) == ["2"]
    finally:
        stop(process)


def test_beyond_loopback_without_a_token_admin_is_disabled(registry: Path):
    process, port = start(registry, "--host", "0.0.0.0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                swap(channel, "2", token="anything")
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "--admin-token" in refused.value.details()
            assert served_version(channel) == ["1"]
    finally:
        stop(process)


def make_ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "driftline test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    write(folder / "ca.pem", cert, None)
    return key, cert


def issue(folder: Path, stem: str, ca_key, ca_cert, server: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    write(folder / f"{stem}.pem", builder.sign(ca_key, hashes.SHA256()), None)
    write(folder / f"{stem}.key", None, key)


def write(path: Path, cert, key) -> None:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = make_ca(folder)
    issue(folder, "server", ca_key, ca_cert, server=True)
    issue(folder, "client", ca_key, ca_cert, server=False)
    return folder


def test_tls_serves_and_the_cli_swaps_over_it(registry: Path, pki: Path):
    process, port = start(registry, "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"))
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            assert served_version(channel) == ["1"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as plain, pytest.raises(grpc.RpcError):
            served_version(plain)
        out = driftline("swap", "housing", "2", "--server", f"127.0.0.1:{port}", "--tls-ca", str(pki / "ca.pem"))
        assert "serving version 2" in out.stdout
    finally:
        stop(process)


def test_mutual_tls_refuses_clients_without_a_certificate(registry: Path, pki: Path):
    process, port = start(registry, "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                          "--tls-client-ca", str(pki / "ca.pem"))
    try:
        anonymous = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", anonymous) as channel, pytest.raises(grpc.RpcError):
            served_version(channel)
        known = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.pem").read_bytes(),
            private_key=(pki / "client.key").read_bytes(),
            certificate_chain=(pki / "client.pem").read_bytes(),
        )
        with grpc.secure_channel(f"127.0.0.1:{port}", known) as channel:
            assert served_version(channel) == ["1"]
    finally:
        stop(process)


@pytest.mark.parametrize("front_end", ["python", "compiled"])
def test_a_certificate_that_does_not_load_is_named_at_start(registry: Path, pki: Path, tmp_path: Path,
                                                           front_end: str):
    if front_end == "compiled":
        pytest.importorskip("driftline.server.compiled._door", reason="the compiled gRPC front end is not built")
    broken = tmp_path / "server.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    result = driftline("serve", "--registry", str(registry), "--port", "0", "--workers", "1", "--no-http",
                       "--no-metrics", "--front-end", front_end, "--tls-cert", str(broken), "--tls-key",
                       str(pki / "server.key"), check=False)
    assert result.returncode != 0
    assert f"cannot serve TLS with --tls-cert {broken}" in result.stderr
    assert "port is in use" not in result.stderr
