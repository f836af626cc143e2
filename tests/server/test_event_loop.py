"""Which event loop a server process runs on (server/event_loop.py)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from driftline.server import event_loop


def test_auto_is_uvloop_when_installed_and_asyncio_is_always_there():
    expected = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert event_loop.resolve("auto") == expected
    assert event_loop.resolve("asyncio") == "asyncio"
    with pytest.raises(ValueError, match="auto, uvloop, asyncio"):
        event_loop.resolve("trio")


@pytest.mark.parametrize("choice", ["asyncio", "auto"])
def test_run_runs_the_coroutine_on_the_chosen_loop(choice):
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    module = event_loop.run(which(), choice)
    assert module.startswith("uvloop" if event_loop.resolve(choice) == "uvloop" else "asyncio")
