"""A batch's run on the device path: inputs copied to the device once, onnxruntime bound to device buffers,
outputs left on the device for the monitoring kernels; only the answers come back to the host.

``session.run`` takes host arrays and returns host arrays: on a GPU every batch would cross the bus twice and
the drift and TreeSHAP kernels would then read host copies. With onnxruntime's IO binding the inputs are bound
to device buffers (filled from a pinned host staging buffer that is reused, grown, never allocated per batch)
and the outputs to device buffers this module allocates from the bounded pool (server/device_memory.py), so
onnxruntime writes straight into arrays the kernels read (server/arrays.py).

IO binding works with CPU buffers too: the same code runs on the host with numpy (``HostMemory``), which is
how it is tested on a machine without a GPU and shown to answer exactly as ``session.run`` does.

A batch whose device allocation fails is rerun on the CPU (a CPU-only session of the same model, made on the
first fallback), with one log line and ``driftline_device_fallbacks_total``: never a failed request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort

from driftline.datatypes import NUMPY_OF
from driftline.errors import Unavailable
from driftline.registry import TensorSpec
from driftline.server import metrics
from driftline.server.arrays import CUDA, ortvalue_view, to_host
from driftline.server.device_memory import LazyDeviceMemory, out_of_memory
from driftline.server.providers import CUDA as CUDA_PROVIDER, gpu_visible

log = logging.getLogger("driftline.server")


@dataclass(frozen=True)
class DeviceArrays:
    """A batch's inputs and outputs (by name) where the kernels read them: ``xp`` arrays on the device."""

    inputs: dict[str, Any]
    outputs: dict[str, Any]
    xp: ModuleType


class RanOutputs(list):
    """A batch's host outputs, in run order (what callers are answered), carrying the device arrays they came
    from (``device``) to the monitor. A plain list to everything else: the batcher splits it by rows as before."""

    device: DeviceArrays | None = None


class Staging:
    """One pinned host buffer per input, reused by every batch of one thread and grown (doubling) when a batch
    outgrows it. Pinned memory lets the copy to the device run at full bus speed without a driver bounce."""

    def __init__(self, allocate: Callable[[int], np.ndarray]) -> None:
        self._allocate = allocate  # bytes -> a uint8 host buffer (pinned on a GPU)
        self._local = threading.local()
        self.grown = 0  # buffers allocated, over all threads (grows are rare: the figure says so)

    def hold(self, name: str, array: np.ndarray) -> np.ndarray:
        """``array`` copied into this thread's staging buffer for ``name``; a view of the buffer."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        buffer = buffers.get(name)
        if buffer is None or buffer.nbytes < array.nbytes:
            size = max(array.nbytes, 2 * (buffer.nbytes if buffer is not None else 0), 4096)
            buffer = buffers[name] = self._allocate(size)
            self.grown += 1
        staged = buffer[: array.nbytes].view(array.dtype).reshape(array.shape)
        np.copyto(staged, array)
        return staged


class DeviceRunner:
    """Runs a version's batches with IO binding on ``memory``'s device; one per loaded version."""

    def __init__(self, name: str, version: int, session: ort.InferenceSession, outputs: Sequence[TensorSpec],
                 memory: Any, cpu_session: Callable[[], ort.InferenceSession], device_id: int = 0) -> None:
        self.name, self.version = name, version
        self.session = session
        self.outputs = tuple(outputs)  # in run order
        self.run_names = tuple(o.name for o in self.outputs)
        self.memory = memory
        self.device_id = device_id
        self._cpu_session = cpu_session
        self._cpu: ort.InferenceSession | None = None
        self._cpu_lock = threading.Lock()
        self.staging = Staging(_pinned(memory.xp) if memory.device == CUDA else _host)
        self.fallbacks = 0
        # Outputs go into buffers allocated here once a run has shown that their shapes follow the signature
        # (the warm-up's); until then, and for good when one does not, onnxruntime allocates them.
        self.preallocates: bool | None = None

    @property
    def device(self) -> str:
        return self.memory.device

    def run(self, inputs: dict[str, np.ndarray], rows: int) -> RanOutputs:
        """Every output for ``inputs``, in run order, on the host; the device arrays ride along for the monitor.
        Out of device memory: the same batch on the CPU, answered just the same."""
        try:
            return self._bound(inputs, rows)
        except Exception as exc:
            reason = out_of_memory(exc)
            if reason is None:
                raise
            self.fallbacks += 1
            log.warning("%s version %d: out of device memory (%s: %s); this batch of %d rows runs on the CPU",
                        self.name, self.version, reason, str(exc).splitlines()[0][:200], rows)
            metrics.device_fallback(self.name, self.version, reason)
            return RanOutputs(self.cpu_session().run(list(self.run_names), inputs))

    def cpu_session(self) -> ort.InferenceSession:
        with self._cpu_lock:
            if self._cpu is None:
                self._cpu = self._cpu_session()
            return self._cpu

    def _bound(self, inputs: dict[str, np.ndarray], rows: int) -> RanOutputs:
        xp, kind, device_id = self.memory.xp, self.memory.device, self.device_id
        binding = self.session.io_binding()  # one per call: a binding is not shared between threads
        on_device: dict[str, Any] = {}
        for name, array in inputs.items():
            placed = self._place(name, np.ascontiguousarray(array))
            binding.bind_input(name, kind, device_id, placed.dtype, list(placed.shape), _pointer(placed))
            on_device[name] = placed
        if kind == CUDA:  # the copies ran on CuPy's stream; onnxruntime reads on its own, and staging is reused
            xp.cuda.get_current_stream().synchronize()
        outputs: dict[str, Any] = {}
        for spec in self.outputs:
            shape = _answer_shape(spec, rows) if self.preallocates else None
            if shape is None:  # a dimension only the run knows: onnxruntime allocates it, on the same device
                binding.bind_output(spec.name, kind, device_id)
                continue
            array = outputs[spec.name] = self.memory.empty(shape, NUMPY_OF[spec.datatype])
            binding.bind_output(spec.name, kind, device_id, array.dtype, list(shape), _pointer(array))
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        if len(outputs) < len(self.outputs):
            for name, value in zip(self.run_names, binding.get_outputs(), strict=True):
                outputs.setdefault(name, ortvalue_view(value, xp))
            if self.preallocates is None:
                self.preallocates = all(_answer_shape(s, rows) == tuple(outputs[s.name].shape) for s in self.outputs)
        ran = RanOutputs(to_host(outputs[name]) for name in self.run_names)
        ran.device = DeviceArrays(on_device, outputs, xp)
        return ran

    def _place(self, name: str, array: np.ndarray) -> Any:
        """The one copy of an input to the device (through the pinned staging buffer); on the host, the input."""
        if self.memory.device != CUDA:
            return array
        placed = self.memory.empty(array.shape, array.dtype)
        placed.set(self.staging.hold(name, array))
        return placed


def _answer_shape(spec: TensorSpec, rows: int) -> tuple[int, ...] | None:
    """An output's shape for ``rows`` rows when the signature fixes it (a batch dimension, then fixed ones)."""
    if not spec.shape or spec.shape[0] != -1 or any(d < 0 for d in spec.shape[1:]):
        return None
    return (rows, *spec.shape[1:])


def _pointer(array: Any) -> int:
    return array.ctypes.data if isinstance(array, np.ndarray) else array.data.ptr


def _host(size: int) -> np.ndarray:
    return np.empty(size, np.uint8)


def _pinned(xp: ModuleType) -> Callable[[int], np.ndarray]:
    def allocate(size: int) -> np.ndarray:
        return np.frombuffer(xp.cuda.alloc_pinned_memory(size), np.uint8, size)

    return allocate


# -- choosing the path, at load ----------------------------------------------------------------------------------
def eligible(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str:
    """Why a version's signature cannot take the device path ('' when it can): text never goes to the device."""
    for spec in (*inputs, *outputs):
        if spec.datatype not in NUMPY_OF:
            return f"{spec.name} is {spec.datatype}"
    return ""


def runner_for(name: str, version: int, session: ort.InferenceSession, inputs: Sequence[TensorSpec],
               run_outputs: Sequence[TensorSpec], device_memory: LazyDeviceMemory | None,
               cpu_session: Callable[[], ort.InferenceSession]) -> tuple[DeviceRunner | None, str]:
    """The version's device runner and why (the reason is logged and shown): the device path needs a visible GPU,
    the CUDA provider in what the session really runs on, settings that allow it and a numeric signature.
    ``cpu_session`` opens the same model on the CPU, for batches that run out of device memory."""
    if device_memory is None:
        return None, "off in the settings"
    if CUDA_PROVIDER not in session.get_providers() or not gpu_visible():
        return None, "the session runs on the CPU"
    why_not = eligible(inputs, run_outputs)
    if why_not:
        return None, why_not
    try:
        memory = device_memory.get()
    except Unavailable as exc:
        return None, str(exc)
    return DeviceRunner(name, version, session, run_outputs, memory, cpu_session, memory.device_id), ""
