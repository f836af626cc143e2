"""Who can read /metrics: TLS when the server has it (client certificates too), and the metrics token."""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import RunningServer, driftline, running_server
from pki import make_pki

METRICS_LINE = re.compile(r"; metrics (?P<scheme>https?)://127\.0\.0\.1:(?P<port>\d+)/metrics")
TOKEN = "scrape-me-2f7c"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics-door") / "registry"
    driftline("train", "housing", "--registry", str(root), "--rows", "400", "--param", "n_estimators=5")
    return root


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def announced(server: RunningServer) -> tuple[str, int]:
    match = next(m for line in list(server.log) if (m := METRICS_LINE.search(line)))
    return match.group("scheme"), int(match.group("port"))


def get(url: str, context: ssl.SSLContext | None = None, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def trusting(pki: Path, client: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client:
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return context


def test_metrics_are_https_with_the_servers_certificate(registry: Path, pki: Path):
    with running_server(registry, "--metrics-port", "0", "--tls-cert", str(pki / "server.pem"),
                        "--tls-key", str(pki / "server.key")) as server:
        scheme, port = announced(server)
        assert scheme == "https"
        status, text = get(f"https://127.0.0.1:{port}/metrics", trusting(pki))
        assert status == 200 and "driftline_model_served_version" in text
        # Plain HTTP gets no figures: the server expects a TLS handshake.
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            get(f"http://127.0.0.1:{port}/metrics")


def test_mutual_tls_metrics_need_a_client_certificate(registry: Path, pki: Path):
    with running_server(registry, "--metrics-port", "0", "--tls-cert", str(pki / "server.pem"),
                        "--tls-key", str(pki / "server.key"), "--tls-client-ca", str(pki / "ca.pem")) as server:
        _, port = announced(server)
        url = f"https://127.0.0.1:{port}/metrics"
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError, OSError)):
            get(url, trusting(pki))
        status, text = get(url, trusting(pki, client=True))
        assert status == 200 and "driftline_model_served_version" in text
        # A refused handshake costs the server nothing: the next scraper is served.
        assert get(url, trusting(pki, client=True))[0] == 200


def test_metrics_token_is_asked_of_every_scrape(registry: Path):
    with running_server(registry, "--metrics-port", "0", "--metrics-token", TOKEN) as server:
        scheme, port = announced(server)
        assert scheme == "http"  # no TLS configured: Prometheus's default scrape still works, with the token
        url = f"http://127.0.0.1:{port}/metrics"
        status, text = get(url)
        assert status == 401 and "driftline_" not in text
        assert get(url, token="guess")[0] == 401
        assert get(f"http://127.0.0.1:{port}/v2/health/ready")[0] == 401  # not even the 404 says the port is ours
        status, text = get(url, token=TOKEN)
        assert status == 200 and "driftline_model_served_version" in text
