"""How the CUDA twins launch: threads per block and blocks, picked from the batch and the device, and a
device view of each argument.

Every kernel of the ``*_cuda`` modules walks its work items with a grid-stride loop, so any grid gives the
right answer; the grid only decides how fast. :func:`launch_for` sizes it:

* threads per block: the kernel's preferred block (256, a multiple of the warp), cut down to whole warps for
  a small batch (one row of 12 features needs one warp, not 8 idle ones) and to the device's maximum;
* blocks: enough to give each thread about one item, but no more than ``blocks_per_sm`` blocks per
  multiprocessor: beyond a full device, more blocks only add scheduling and, for the kernels that flush
  per-block sums with atomics, more atomics on the same addresses.

:func:`device_limits` reads the current device's multiprocessor count, largest block, warp size and shared
memory per block (numba caches the attributes after the first read). Under numba's simulator
(``NUMBA_ENABLE_CUDASIM=1``) there are no such attributes: :data:`SIMULATOR_LIMITS` is a fixed, deliberately
small device (every simulated thread is a Python thread) whose grids still make several blocks and a wrapping
grid-stride loop. :func:`device_view` gives a kernel argument as the device sees it. Pure functions of their
inputs: nothing is kept between calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SIMULATOR_LIMITS", "DeviceLimits", "Launch", "device_limits", "launch_for", "device_view", "resolve"]


@dataclass(frozen=True)
class DeviceLimits:
    """What a launch may use on one device."""

    name: str
    multiprocessors: int
    max_threads_per_block: int
    warp_size: int
    shared_bytes_per_block: int  # static shared memory a block may declare (48 KiB on every CUDA GPU so far)
    simulated: bool = False


SIMULATOR_LIMITS = DeviceLimits("numba CUDA simulator", multiprocessors=2, max_threads_per_block=16, warp_size=8,
                                shared_bytes_per_block=48 << 10, simulated=True)


def device_limits() -> DeviceLimits:
    """The current CUDA device's limits (:data:`SIMULATOR_LIMITS` under the simulator)."""
    from numba import config, cuda

    if config.ENABLE_CUDASIM:
        return SIMULATOR_LIMITS
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    return DeviceLimits(name, int(device.MULTIPROCESSOR_COUNT), int(device.MAX_THREADS_PER_BLOCK),
                        int(device.WARP_SIZE), int(device.MAX_SHARED_MEMORY_PER_BLOCK))


def device_view(a, stream=0):  # noqa: ANN001, ANN201 - any array; a numba device array
    """A device view of ``a``: numba device arrays as they are, ``__cuda_array_interface__`` arrays (CuPy,
    PyTorch) wrapped without a copy, host arrays copied over on ``stream``."""
    import numpy as np
    from numba import cuda

    if hasattr(a, "copy_to_host"):
        return a
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a)
    return cuda.to_device(np.ascontiguousarray(a), stream=stream)


@dataclass(frozen=True)
class Launch:
    """A grid: ``kernel[blocks, threads_per_block, stream](...)``."""

    blocks: int
    threads_per_block: int

    @property
    def threads(self) -> int:
        return self.blocks * self.threads_per_block


def launch_for(items: int, limits: DeviceLimits, *, preferred_threads: int = 256, blocks_per_sm: int = 8,
               items_per_thread: int = 1) -> Launch:
    """The grid for ``items`` work items (grid-stride: each thread takes ``items_per_thread`` or more)."""
    if items_per_thread < 1 or preferred_threads < 1 or blocks_per_sm < 1:
        raise ValueError("preferred_threads, blocks_per_sm and items_per_thread must be >= 1")
    warp = max(1, limits.warp_size)
    wanted_threads = max(1, math.ceil(max(items, 1) / items_per_thread))
    threads = min(preferred_threads, limits.max_threads_per_block, math.ceil(wanted_threads / warp) * warp)
    threads = max(1, threads)
    blocks = max(1, min(math.ceil(wanted_threads / threads), limits.multiprocessors * blocks_per_sm))
    return Launch(blocks, threads)


def resolve(items: int, threads_per_block: int | None, max_blocks: int | None, limits: DeviceLimits | None, *,
            preferred_threads: int = 256, blocks_per_sm: int = 8) -> Launch:
    """The grid a twin launches: :func:`launch_for`'s choice, with a caller's explicit ``threads_per_block``
    and/or ``max_blocks`` (tests use them to make the grid-stride loop wrap) taking precedence."""
    if (threads_per_block is not None and threads_per_block < 1) or (max_blocks is not None and max_blocks < 1):
        raise ValueError("threads_per_block and max_blocks must be >= 1")
    chosen = launch_for(items, limits or device_limits(), preferred_threads=preferred_threads,
                        blocks_per_sm=blocks_per_sm)
    threads = threads_per_block or chosen.threads_per_block
    blocks = max(1, math.ceil(max(items, 1) / threads))
    if max_blocks is not None:
        blocks = min(blocks, max_blocks)
    elif threads_per_block is None:
        blocks = chosen.blocks
    else:
        blocks = min(blocks, chosen.blocks * max(1, chosen.threads_per_block // threads))
    return Launch(max(1, blocks), threads)
