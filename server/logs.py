"""``--log-format json``: one JSON object per log line, naming the request's trace.

Every line logged while a request is being served carries ``trace_id`` and ``span_id`` (the span
current where the line was logged: the RPC's, a batch's, a drift update's) when tracing is on; when
it is off, the caller's own ``trace_id`` (and ``parent_span_id``) from its ``traceparent``, if it
sent one. Lines outside any request carry neither.
"""

from __future__ import annotations

import datetime
import json
import logging

from driftline.server import telemetry

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            line["worker"] = self.worker
        line.update(telemetry.log_ids())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(log_format: str, worker: int | None = None) -> None:
    """Switch the process's log handlers (set up by the CLI) to ``log_format``."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    if log_format == "text":
        return
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter(worker))
