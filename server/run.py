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


def run_batch(served: ServedVersion, inputs: dict[str, np.ndarray], rows: int) -> list[np.ndarray]:
    """Every output of the model for ``inputs`` (by name), in the version's output order, then its hidden ones.

    A batching model must answer ``rows`` rows in every output: the batcher splits them back by row.
    """
    if served.device is not None:  # the device path: IO binding, the outputs' device twins kept for monitoring
        outputs = served.device.run(inputs, rows)
    else:
        outputs = served.session.run(served.run_names if served.hidden_outputs else None, inputs)
    if served.batching:
        for name, array in zip(served.run_names, outputs, strict=True):
            if array.shape[:1] != (rows,):
                raise RuntimeError(f"{served.name} output {name} has shape {list(array.shape)} for {rows} input rows")
    return outputs
