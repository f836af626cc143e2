"""eager.start: a coroutine's first step runs at once; one that waits carries on in a task, as a task would."""

from __future__ import annotations

import asyncio

import pytest

from driftline.server import eager


def test_a_coroutine_that_never_waits_is_done_before_start_returns():
    steps = []

    async def quick() -> int:
        steps.append("ran")
        return 7

    async def main() -> None:
        future = eager.start(quick())
        assert steps == ["ran"] and future.done() and future.result() == 7

    asyncio.run(main())


def test_an_error_before_any_wait_is_the_future_s():
    async def broken() -> None:
        raise ValueError("bad message")

    async def main() -> None:
        future = eager.start(broken())
        assert future.done()
        with pytest.raises(ValueError, match="bad message"):
            future.result()

    asyncio.run(main())


def test_a_coroutine_that_waits_resumes_with_the_result_and_errors_it_awaited():
    async def waits(gate: asyncio.Future[int]) -> int:
        first = await gate
        await asyncio.sleep(0)  # a bare yield to the loop, too
        try:
            await asyncio.get_running_loop().create_future()  # never set: cancelled below
        except asyncio.CancelledError:
            return first + 1
        return -1

    async def main() -> None:
        gate = asyncio.get_running_loop().create_future()
        future = eager.start(waits(gate))
        assert not future.done()
        gate.set_result(41)
        for _ in range(5):
            await asyncio.sleep(0)
        future.cancel()  # reaches the coroutine at its await, which answers instead of stopping
        assert await future == 42

    asyncio.run(main())


def test_cancelling_a_waiting_coroutine_cancels_it_inside():
    cleaned = []

    async def waits() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            cleaned.append("finally ran")

    async def main() -> None:
        future = eager.start(waits())
        await asyncio.sleep(0)
        future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await future
        assert cleaned == ["finally ran"]

    asyncio.run(main())


def test_what_the_coroutine_sets_in_a_context_variable_stays_its_own():
    import contextvars

    current = contextvars.ContextVar("current", default="caller's")

    async def sets_and_waits(gate: asyncio.Future[None]) -> str:
        current.set("the message's")
        await gate
        return current.get()

    async def main() -> None:
        gate = asyncio.get_running_loop().create_future()
        future = eager.start(sets_and_waits(gate))
        assert current.get() == "caller's"  # as with a task: the caller's context is untouched
        gate.set_result(None)
        assert await future == "the message's"

    asyncio.run(main())
