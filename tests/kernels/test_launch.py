"""Launch sizes for the CUDA twins (kernels/launch.py): pure functions of the batch and the device's limits."""

from __future__ import annotations

import pytest

from driftline.kernels.launch import SIMULATOR_LIMITS, DeviceLimits, Launch, launch_for, resolve

H200 = DeviceLimits("NVIDIA H200", multiprocessors=132, max_threads_per_block=1024, warp_size=32,
                    shared_bytes_per_block=48 << 10)


@pytest.mark.parametrize(("items", "want"), [
    (0, Launch(1, 32)),  # nothing to do still launches a valid grid
    (1, Launch(1, 32)),  # one row: one warp, not eight idle ones
    (12, Launch(1, 32)),
    (33, Launch(1, 64)),  # whole warps
    (1000, Launch(4, 256)),
    (12_000_000, Launch(132 * 8, 256)),  # a full device, then the grid-stride loop
])
def test_threads_follow_the_batch_and_blocks_stop_at_a_full_device(items: int, want: Launch) -> None:
    assert launch_for(items, H200) == want


def test_the_device_caps_the_block_and_the_caller_may_ask_for_less() -> None:
    small = DeviceLimits("small", multiprocessors=2, max_threads_per_block=128, warp_size=32,
                         shared_bytes_per_block=16 << 10)
    assert launch_for(10_000, small) == Launch(16, 128)
    assert launch_for(10_000, small, blocks_per_sm=4) == Launch(8, 128)
    assert launch_for(10_000, H200, preferred_threads=128, items_per_thread=4) == Launch(20, 128)
    sim = launch_for(1000, SIMULATOR_LIMITS)
    assert sim.threads_per_block == 16 and sim.threads < 1000  # the simulator's grid wraps: small and fixed


def test_explicit_sizes_take_precedence() -> None:
    assert resolve(1000, 16, 2, H200) == Launch(2, 16)
    assert resolve(1000, None, 3, H200) == Launch(3, 256)
    assert resolve(1000, 8, None, H200) == Launch(125, 8)  # no cap given: one item a thread, within a full device
    assert resolve(10, None, None, H200) == launch_for(10, H200)
    with pytest.raises(ValueError, match="threads_per_block"):
        resolve(10, 0, None, H200)
    with pytest.raises(ValueError, match="max_blocks"):
        resolve(10, None, 0, H200)
    with pytest.raises(ValueError, match="items_per_thread"):
        launch_for(10, H200, items_per_thread=0)


@pytest.mark.parametrize("columns", [1, 5, 11, 12, 64])
@pytest.mark.parametrize("threads", [16, 128, 256])
def test_drift_grids_are_a_multiple_of_the_columns(columns: int, threads: int) -> None:
    from driftline.kernels.drift_cuda import column_aligned_blocks

    for blocks in (1, 2, 7, 528, 1056):
        aligned = column_aligned_blocks(blocks, threads, columns)
        assert aligned >= 1 and aligned * threads % columns == 0  # each thread's grid-stride loop stays in a column
        assert abs(aligned - blocks) <= columns  # and the grid stays about the size the launch helper chose
