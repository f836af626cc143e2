"""Which asyncio event loop runs a server process: uvloop where it is installed, else the standard one.

Python's gRPC transport spends most of a small request's CPU in the event loop's machinery; uvloop (libuv) cut
driftline's server CPU per batch-1 request by about 30 us of ~450 on the 2-core benchmark machine
(benchmarks/RESULTS.md, "The hot path"), and the HTTP front end, on the same loop, gains likewise. ``asyncio``
stays selectable (``--event-loop asyncio``) for platforms without uvloop and to measure what it is worth.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHOICES = ("auto", "uvloop", "asyncio")


def resolve(choice: str) -> str:
    """The loop ``choice`` means here: ``auto`` is uvloop when it can be imported."""
    if choice not in CHOICES:
        raise ValueError(f"event loop must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "auto":
        return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    if choice == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ValueError("--event-loop uvloop: uvloop is not installed (pip install uvloop), or use auto")
    return choice


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` resolves to."""
    if resolve(choice) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
