"""Fixtures shared by the test modules.

``client`` and ``stub`` talk gRPC to ``server``, a RunningServer that each module using them defines for itself
(what it serves is the module's business). A module that means something else by either name, tritonclient.http's
client for one, defines its own, which takes the place of these.
"""

from __future__ import annotations

import grpc
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2_grpc


@pytest.fixture
def client(server):
    """tritonclient.grpc's client of the module's server."""
    with grpcclient.InferenceServerClient(url=server.address) as triton_client:
        yield triton_client


@pytest.fixture
def stub(server):
    """The generated gRPC stub of the inference service, on a channel of its own to the module's server."""
    with grpc.insecure_channel(server.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
