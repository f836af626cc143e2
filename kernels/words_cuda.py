"""CUDA twins of :func:`driftline.kernels.words.count_ids` and :func:`~driftline.kernels.words.row_word_stats`.

* ``count_ids``: one thread per word (grid-stride loop), ``cuda.atomic.add`` into the counts; the result
  equals the CPU kernel's exactly (integer atomics).
* ``row_word_stats``: one thread per row (grid-stride loop), reading that row's slice of ``ids``. Rows are
  short texts, so a thread per row keeps the kernel free of atomics; a table of long documents would want a
  block per row instead.

Both compile the CPU kernels' per-word source (:func:`driftline.kernels.words.clamp_id_py`,
:func:`~driftline.kernels.words.word_flags_py`) as device functions, so both sides count with the same rules.
The host wrappers take numba device arrays, anything with ``__cuda_array_interface__`` (CuPy, PyTorch) or
numpy arrays (copied over and, for outputs, back). All ``numba.cuda`` use of the word kernels is in this module;
it imports without a GPU and the kernels compile at their first launch. Under ``NUMBA_ENABLE_CUDASIM=1``
(set before numba is imported) they run in the simulator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from driftline.kernels.launch import DeviceLimits, device_view, resolve
from driftline.kernels.words import clamp_id_py, word_flags_py

__all__ = ["count_ids_cuda", "row_word_stats_cuda"]

_clamp_id = cuda.jit(device=True)(clamp_id_py)
_word_flags = cuda.jit(device=True)(word_flags_py)


@cuda.jit
def _count_ids(ids, counts):  # noqa: ANN001
    size = counts.shape[0]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, ids.shape[0], stride):
        cuda.atomic.add(counts, _clamp_id(ids[i], size), 1)


@cuda.jit
def _row_word_stats(ids, offsets, vocabulary, language, tokens_out, oov_out, language_out):  # noqa: ANN001
    rows = offsets.shape[0] - 1
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for r in range(start, rows, stride):
        oov = 0
        reference = 0
        for i in range(offsets[r], offsets[r + 1]):
            flag_oov, flag_reference = _word_flags(ids[i], vocabulary, language)
            oov += flag_oov
            reference += flag_reference
        tokens_out[r] = float(offsets[r + 1] - offsets[r])
        oov_out[r] = float(oov)
        language_out[r] = float(reference)


def _is_device(a: Any) -> bool:
    return hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__")


def _back_to_host(device: Any, host: np.ndarray, stream: Any) -> None:
    host[...] = device.copy_to_host(stream=stream)
    if stream != 0:
        stream.synchronize()


def _check_ids(ids: Any) -> None:
    if len(ids.shape) != 1 or not np.issubdtype(np.dtype(ids.dtype), np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got {ids.dtype} {tuple(ids.shape)}")


def count_ids_cuda(ids: Any, counts: Any, *, threads_per_block: int | None = None, max_blocks: int | None = None,
                   stream: Any = None, limits: DeviceLimits | None = None) -> Any:
    """:func:`~driftline.kernels.words.count_ids` on the GPU: add 1 to ``counts[id]`` per id, in place.

    ``counts`` on the device is updated there (nothing waited for); a numpy ``counts`` is copied over,
    counted into and copied back (waiting for ``stream``; None: the default stream). Returns ``counts``. The
    grid is :mod:`driftline.kernels.launch`'s unless ``threads_per_block`` / ``max_blocks`` say otherwise.
    """
    stream = 0 if stream is None else stream
    _check_ids(ids)
    if len(counts.shape) != 1:
        raise ValueError(f"counts must be 1-D, got shape {tuple(counts.shape)}")
    words = ids.shape[0]
    if words == 0:
        return counts
    if counts.shape[0] == 0:
        raise ValueError("count_ids_cuda: no entry to count words in")
    grid = resolve(words, threads_per_block, max_blocks, limits)
    counts_device = device_view(counts, stream)
    _count_ids[grid.blocks, grid.threads_per_block, stream](device_view(ids, stream), counts_device)
    if not _is_device(counts):
        _back_to_host(counts_device, counts, stream)
    return counts


def row_word_stats_cuda(ids: Any, offsets: Any, vocabulary: int, language: int,
                        tokens_out: Any, oov_out: Any, language_out: Any, *,
                        threads_per_block: int | None = None, max_blocks: int | None = None, stream: Any = None,
                        limits: DeviceLimits | None = None) -> None:
    """:func:`~driftline.kernels.words.row_word_stats` on the GPU: per row, its words, out-of-vocabulary
    words and language reference words as float64 counts in the three ``[rows]`` outputs.

    Outputs on the device are written there (nothing waited for); numpy outputs are filled from the device
    (waiting for ``stream``; None: the default stream).
    """
    stream = 0 if stream is None else stream
    _check_ids(ids)
    if len(offsets.shape) != 1 or offsets.shape[0] < 1:
        raise ValueError(f"offsets must be 1-D with rows + 1 entries, got shape {tuple(offsets.shape)}")
    rows = offsets.shape[0] - 1
    for name, out in (("tokens_out", tokens_out), ("oov_out", oov_out), ("language_out", language_out)):
        if tuple(out.shape) != (rows,) or np.dtype(out.dtype) != np.float64:
            raise ValueError(f"{name} must be float64 [{rows}], got {out.dtype} {tuple(out.shape)}")
    if rows == 0:
        return
    grid = resolve(rows, threads_per_block, max_blocks, limits)
    outs = [device_view(out, stream) for out in (tokens_out, oov_out, language_out)]
    # a batch of empty texts has no ids; give the kernel a one-element array rather than a zero-size one
    ids_device = device_view(ids if ids.shape[0] else np.zeros(1, dtype=np.int64), stream)
    _row_word_stats[grid.blocks, grid.threads_per_block, stream](ids_device, device_view(offsets, stream),
                                                       np.int64(vocabulary), np.int64(language), *outs)
    for device, host in zip(outs, (tokens_out, oov_out, language_out), strict=True):
        if not _is_device(host):
            _back_to_host(device, host, stream)
