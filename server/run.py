"""The onnxruntime call for one batch, made on an executor thread.

onnxruntime releases the GIL inside ``run``, so while one batch executes the event loop keeps
decoding the next requests.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from driftline.server.model import ServedVersion


def executor(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="driftline-run")


def run_batch(served: ServedVersion, rows: np.ndarray) -> list[np.ndarray]:
    """Every output of the model for ``rows``, in the version's output order."""
    outputs = served.session.run(None, {served.input.name: rows})
    for name, array in zip(served.output_names, outputs, strict=True):
        if array.shape[:1] != (len(rows),):
            raise RuntimeError(f"{served.name} output {name} has {array.shape[0]} rows for {len(rows)} input rows")
    return outputs
