"""The batcher's share per caller (issue 13): one caller's queue of large requests does not delay another's one-row
request behind all of it. Driven directly on an event loop with a real onnxruntime session, as test_batcher.py."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from driftline.registry import Registry
from driftline.server import status
from driftline.server.batcher import Batch, Batcher, BatchSettings
from driftline.server.model import load_version
from driftline.trainer.train import TrainConfig, publish, train


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    registry = Registry(tmp_path_factory.mktemp("fairness") / "registry")
    trained = train(TrainConfig(model="housing", rows=600, params={"n_estimators": 15}))
    version = publish(registry, "housing", trained.onnx_model, trained.metadata, trained.profile, trained.schema)
    return load_version(registry.open("housing", version), ["CPUExecutionProvider"], 1)


class Connection:
    """What the gRPC boundary sets as the caller: a call's context, whose peer names its connection."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 200, size=(n, 11)).astype(np.float32)


def test_a_one_row_caller_goes_before_another_callers_queue(served):
    batches: list[Batch] = []

    async def scenario():
        batcher = Batcher(served, BatchSettings(max_batch_size=32, max_concurrent_batches=1),
                          ThreadPoolExecutor(1), [batches.append])
        status.caller.set(Connection("heavy"))
        heavy = [batcher.submit({"input": rows(30, s)}, None) for s in range(6)]
        status.caller.set(Connection("light"))
        light = batcher.submit({"input": rows(1, 99)}, None)
        await asyncio.gather(*heavy, light)

    asyncio.run(scenario())
    # First come, first served would run the six 30-row requests first and the one row with the last. By rows, the
    # light caller's single row is owed first, and the heavy caller's first request still fits beside it. (A caller
    # alone is still served oldest first: test_batcher.py.)
    assert [len(b.rows) for b in batches] == [31, 30, 30, 30, 30, 30]

