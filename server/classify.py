"""Triton's classification extension: an output answered as its top-k classes instead of its values.

Asked per output (parameter ``classification: k``), the answer is a BYTES tensor of ``[rows, k]``
elements ``"score:index"`` (``"score:index:label"`` when the version knows its classes), best first,
scores written as Triton writes them (fixed, six decimals).
"""

from __future__ import annotations

import numpy as np

from driftline.errors import InvalidInput
from driftline.server.tensors import bytes_array


def top_classes(name: str, values: np.ndarray, k: int, labels: tuple | None, batched: bool) -> np.ndarray:
    if values.dtype == object:
        raise InvalidInput(f"output {name!r} holds text; classification needs numeric scores")
    rows = values.reshape(len(values) if batched and values.ndim else 1, -1)
    if k > rows.shape[1]:
        raise InvalidInput(f"classification of output {name!r} asks for the top {k} of {rows.shape[1]} values per "
                           f"row; ask for at most {rows.shape[1]}")
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    cells = []
    for r, picked in enumerate(order):
        for index in picked.tolist():
            cell = f"{float(rows[r, index]):f}:{index}"
            if labels is not None and index < len(labels):
                cell += f":{labels[index]}"
            cells.append(cell.encode())
    return bytes_array(cells).reshape((len(rows), k) if batched else (k,))
