"""The status messages a request can get from either gRPC front end's queue, in one table.

The Python batcher (:mod:`driftline.server.batcher`) formats them with ``str.format``; the compiled door
(``server/compiled/``) gets the same table when it starts and fills the same ``{placeholders}``, so a client
reads the same words whichever door answered. Errors about a request's content need no table: the compiled
door hands every request it does not take to the Python door, which answers it as it always does.
"""

from __future__ import annotations

from driftline.server.validate import FLAGGED_PARAMETER

QUEUE_FULL = ("queue full: {model} version {version} already has {waiting} requests waiting (max_queue_size); "
              "retry later or raise --max-queue-size")
DEADLINE_IN_QUEUE = "deadline expired after {waited_ms} ms in the queue; nothing was run"
SERVER_BUSY = ("server busy: queued requests already hold {held} of input and this one needs {size} more, over the "
               "bound of {limit} (--max-queued-bytes); retry with backoff, send fewer rows per request, or raise "
               "--max-queued-bytes")  # sizes as mib() writes them


def mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def table() -> dict[str, str]:
    """What the compiled door is given at start."""
    return {"queue_full": QUEUE_FULL, "deadline_in_queue": DEADLINE_IN_QUEUE, "server_busy": SERVER_BUSY,
            "flagged_parameter": FLAGGED_PARAMETER}
