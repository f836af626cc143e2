"""The dynamic batcher, driven directly on an event loop with a real onnxruntime session.

Submitting several requests without awaiting in between makes the batch boundaries
deterministic: the batcher dispatches at the end of the event-loop turn, so requests submitted in
one turn share batches, oldest first, up to max_batch_size rows.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from driftline.errors import DeadlineExpired, Unavailable
from driftline.registry import Registry
from driftline.server.batcher import Batch, Batcher, BatchSettings
from driftline.server.model import load_version
from driftline.trainer.train import TrainConfig, publish, train


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    registry = Registry(tmp_path_factory.mktemp("batcher") / "registry")
    trained = train(TrainConfig(model="housing", rows=600, params={"n_estimators": 15}))
    version = publish(registry, "housing", trained.onnx_model, trained.metadata, trained.profile, trained.schema)
    return load_version(registry.open("housing", version), ["CPUExecutionProvider"], 1)


@pytest.fixture
def pool():
    with ThreadPoolExecutor(2) as executor:
        yield executor


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 200, size=(n, 11)).astype(np.float32)


def direct(served, x: np.ndarray) -> np.ndarray:
    return served.session.run(None, {"input": x})[0]


def test_concurrent_requests_get_exactly_their_own_rows(served, pool):
    batches: list[Batch] = []
    sizes = [1, 3, 1, 7, 2, 1, 5, 1, 1, 4, 2, 1]

    async def scenario():
        batcher = Batcher(served, BatchSettings(max_batch_size=16, max_queue_delay_us=10_000_000,
                                                max_concurrent_batches=1), pool, [batches.append])
        inputs = [rows(n, seed) for seed, n in enumerate(sizes)]
        futures = [batcher.submit({"input": x}, None) for x in inputs]
        return inputs, await asyncio.gather(*futures)

    inputs, results = asyncio.run(scenario())
    for x, (prediction,) in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(prediction, direct(served, x))
    # Batches of at most 16 rows, oldest first: 1+3+1+7+2+1 = 15 (adding 5 would pass 16), then 5+1+1+4+2+1.
    assert [b.requests for b in batches] == [6, 6]
    assert [len(b.rows) for b in batches] == [15, 14]
    assert served.stats.batches[15].count >= 1


def test_lone_request_runs_at_once_without_waiting_for_company(served, pool):
    async def scenario():
        batcher = Batcher(served, BatchSettings(max_queue_delay_us=60_000_000), pool)
        return await asyncio.wait_for(batcher.submit({"input": rows(2, 1)}, None), timeout=30)

    (prediction,) = asyncio.run(scenario())
    assert prediction.shape == (2, 1)


def test_batching_off_runs_each_request_alone(served, pool):
    batches: list[Batch] = []

    async def scenario():
        batcher = Batcher(served, BatchSettings(max_batch_size=1, max_concurrent_batches=1), pool, [batches.append])
        await asyncio.gather(*(batcher.submit({"input": rows(1, s)}, None) for s in range(5)))

    asyncio.run(scenario())
    assert [b.requests for b in batches] == [1] * 5


def test_full_queue_is_refused_at_once(served, pool):
    async def scenario():
        batcher = Batcher(served, BatchSettings(max_queue_size=2, max_concurrent_batches=1), pool)
        queued = [batcher.submit({"input": rows(1, s)}, None) for s in (1, 2)]
        with pytest.raises(Unavailable, match="queue full"):
            batcher.submit({"input": rows(1, 3)}, None)
        return await asyncio.gather(*queued)

    assert len(asyncio.run(scenario())) == 2


def test_expired_deadline_leaves_the_queue_without_running(served, pool):
    batches: list[Batch] = []

    async def scenario():
        batcher = Batcher(served, BatchSettings(max_concurrent_batches=1), pool, [batches.append])
        running = batcher.submit({"input": rows(1, 0)}, None)
        expired = batcher.submit({"input": rows(1, 1)}, deadline=time.monotonic() - 1)
        alive = batcher.submit({"input": rows(2, 2)}, deadline=time.monotonic() + 60)
        with pytest.raises(DeadlineExpired, match="nothing was run"):
            await expired
        return await asyncio.gather(running, alive)

    before = served.stats.expired
    asyncio.run(scenario())
    assert served.stats.expired == before + 1
    assert [len(b.rows) for b in batches] == [3]  # 1 + 2: the expired row never reached onnxruntime


def test_cancelled_caller_leaves_its_batch(served, pool):
    batches: list[Batch] = []

    async def scenario():
        batcher = Batcher(served, BatchSettings(max_concurrent_batches=1), pool, [batches.append])
        running = batcher.submit({"input": rows(1, 0)}, None)
        gone = batcher.submit({"input": rows(3, 1)}, None)
        stays = batcher.submit({"input": rows(2, 2)}, None)
        gone.cancel()
        return await asyncio.gather(running, stays)

    asyncio.run(scenario())
    assert [len(b.rows) for b in batches] == [3]  # 1 + 2: the cancelled caller's 3 rows left


def test_settings_are_validated():
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchSettings(max_batch_size=0)
    with pytest.raises(ValueError, match="max_queue_size"):
        BatchSettings(max_queue_size=0)


def test_model_config_file_overrides_per_model(tmp_path: Path):
    from driftline.kernels.drift_stats import Thresholds
    from driftline.server.monitor import DriftSettings
    from driftline.server.settings import load_model_config

    path = tmp_path / "models.toml"
    path.write_text("[housing]\nmax_batch_size = 8\n[housing.drift]\nwindow_rows = 300\npsi = 0.3\n")
    batching, drift, _ = load_model_config(path, BatchSettings(max_queue_size=7), DriftSettings())
    assert batching["housing"] == BatchSettings(max_batch_size=8, max_queue_size=7)
    assert drift["housing"] == DriftSettings(window_rows=300, thresholds=Thresholds(psi=0.3))
    path.write_text("[housing]\nmax_batch = 8\n")
    with pytest.raises(ValueError, match="unknown settings"):
        load_model_config(path, BatchSettings(), DriftSettings())
