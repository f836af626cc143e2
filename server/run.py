"""Running a version's onnxruntime session off the event loop.

onnxruntime releases the GIL inside ``run``, so a thread pool lets the event loop decode the next
requests while the current ones execute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from driftline.server.model import ServedVersion


class Runner:
    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="driftline-run")

    async def run(self, served: ServedVersion, rows: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter_ns()
        outputs = await loop.run_in_executor(self._pool, _run, served, rows, names)
        served.stats.executed(len(rows), time.perf_counter_ns() - started)
        for name, array in zip(names, outputs, strict=True):
            if array.shape[:1] != (len(rows),):
                raise RuntimeError(f"{served.name} output {name} has {array.shape[0]} rows for {len(rows)} input rows")
        return outputs

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _run(served: ServedVersion, rows: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
    return served.session.run(list(names), {served.input.name: rows})
