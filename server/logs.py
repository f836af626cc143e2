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
import threading
import time

from driftline.server import telemetry

FORMATS = ("text", "json")
REPEAT_INTERVAL_S = 10.0  # an identical warning or error is logged once per interval, then counted
# Loggers whose warnings a client can cause at will: gRPC's (a malformed message, logged with a traceback per call),
# uvicorn's (a malformed HTTP request) and the server's own.
WATCHED_LOGGERS = ("grpc._cython.cygrpc", "uvicorn.error", "driftline.server")
# Errors that are a client's doing: their tracebacks point into gRPC's parser and say nothing about the server.
CLIENT_ERRORS = ("DecodeError",)
_SUMMARY = "driftline_repeats"  # marks the count line, which the filter lets through


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


class Repeats(logging.Filter):
    """Lets a warning or error through once per interval; identical ones within the interval are counted, not
    logged, and when it ends one line says how many there were. A client that sends a thousand malformed
    requests a second costs one log line per interval, not a thousand tracebacks."""

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, str], list] = {}  # key -> [first seen (monotonic), repeats, timer]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, _SUMMARY, False):
            return True
        if record.exc_info and record.exc_info[0] is not None and record.exc_info[0].__name__ in CLIENT_ERRORS:
            record.exc_info = record.exc_text = None
            record.msg = f"{record.msg} (a malformed message from a client; answered without running anything)"
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        key = (record.name, record.levelno, record.getMessage())
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or now - seen[0] >= self.interval_s:
                self._forget_old(now)
                self._seen[key] = [now, 0, None]
                return True
            seen[1] += 1
            if seen[2] is None:
                seen[2] = threading.Timer(seen[0] + self.interval_s - now, self._summarise, (key,))
                seen[2].daemon = True
                seen[2].start()
        return False

    def _summarise(self, key: tuple[str, int, str]) -> None:
        with self._lock:
            seen = self._seen.pop(key, None)
        if seen and seen[1]:
            name, level, message = key
            logging.getLogger(name).log(level, "%s (repeated %d more times in %.0f s)", message, seen[1],
                                        self.interval_s, extra={_SUMMARY: True})

    def _forget_old(self, now: float) -> None:
        if len(self._seen) > 1000:  # distinct lines each pass; only their first-seen times are kept, briefly
            for key in [k for k, v in self._seen.items() if v[2] is None and now - v[0] >= self.interval_s]:
                del self._seen[key]


def quiet_repeats(interval_s: float = REPEAT_INTERVAL_S) -> None:
    """Put a :class:`Repeats` filter on every watched logger (once: calling again changes nothing)."""
    for name in WATCHED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, Repeats) for f in logger.filters):
            logger.addFilter(Repeats(interval_s))


def configure(log_format: str, worker: int | None = None) -> None:
    """Switch the process's log handlers (set up by the CLI) to ``log_format``; repeated warnings are counted."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    quiet_repeats()
    if log_format == "text":
        return
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter(worker))
