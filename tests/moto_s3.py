"""A real S3 API for tests: moto's server on 127.0.0.1, its endpoint and test credentials in the environment."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def moto_s3(*buckets: str) -> Iterator[dict[str, str]]:
    """Serve S3 on a free loopback port with ``buckets`` created; the environment names it until the block ends."""
    pytest.importorskip("moto", reason="moto[server] is a test dependency (pip install -e '.[test]')")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with _conditional_puts_atomic():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{server._server.server_port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        _forget_s3_clients()
        try:
            import boto3

            for bucket in buckets:
                boto3.client("s3").create_bucket(Bucket=bucket)
            yield env
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _forget_s3_clients()
            server.stop()


@contextmanager
def _conditional_puts_atomic() -> Iterator[None]:
    """S3 answers a PUT with ``If-None-Match: *`` atomically (the registry claims a version number with one);
    moto 5 checks that the key is absent and then stores it without a lock, so two of the server's threads can
    both win. One PUT at a time gives the fake the real service's contract while the block runs."""
    import threading

    from moto.s3.responses import S3Response

    original, one_at_a_time = S3Response.put_object, threading.Lock()

    def put_object(self):  # noqa: ANN001, ANN202 - moto's own signature
        with one_at_a_time:
            return original(self)

    S3Response.put_object = put_object
    try:
        yield
    finally:
        S3Response.put_object = original


def _forget_s3_clients() -> None:
    # fsspec keeps one S3FileSystem per set of arguments, and the endpoint comes from the environment, not the
    # arguments: without this a test would reach the moto server an earlier test stopped.
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
