"""Start a coroutine now, on the caller's turn of the event loop, and make a task only if it has to wait.

A stream's messages each become a coroutine (decode, request path, encode). Most finish without ever waiting (a
lone request runs at once on the loop, see ``Batcher.run_now``), and for those a task costs more than the work:
its creation, and a further turn of the loop before its first step. Python 3.12 calls this an eager task
(``asyncio.eager_task_factory``); driftline supports 3.11, whose loops have none, so this is the same idea for one
coroutine: run its first step here; if it completes, the answer is a finished future; if it suspends, a task takes
over exactly where it stopped (the object it yielded is handed to the task as if the task had run that step, so
cancellation and exceptions reach the coroutine as they would in a task of its own).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


def start(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """A future of ``coro``'s result, already done when ``coro`` finished without suspending."""
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()  # as a task has: what the coroutine sets stays its own
    try:
        yielded = context.run(coro.send, None)
    except StopIteration as done:
        future = loop.create_future()
        future.set_result(done.value)
        return future
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - the future carries it, as a task's would
        future = loop.create_future()
        future.set_exception(exc)
        return future
    return loop.create_task(_resume(coro, yielded), context=context)


class _Suspend:
    """Yields, to the task running it, what the started coroutine yielded (a future to wait on, or None)."""

    __slots__ = ("what",)

    def __init__(self, what: Any) -> None:
        self.what = what

    def __await__(self) -> Generator[Any, None, None]:
        yield self.what


async def _resume(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    while True:
        try:
            await _Suspend(yielded)
        except BaseException as exc:  # noqa: BLE001 - cancellation and errors belong to the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration as done:
                return done.value
            continue
        try:
            yielded = coro.send(None)
        except StopIteration as done:
            return done.value
