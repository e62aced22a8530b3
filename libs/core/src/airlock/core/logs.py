"""Structured JSON logs.

One JSON object per line with ``service``, ``level``, ``logger`` and ``message``, plus any
of ``request_id``, ``airlock_id``, ``trace_id`` and ``stage`` passed in ``extra`` or bound
for a stretch of work with :func:`bind` (the stage runtime and the handlers bind a record's
ids while they work on it, so every line about a record names it). Log calls must never
include prompt text, answers, PII values or secrets: pass ids and counts only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

CONTEXT_FIELDS = ("request_id", "airlock_id", "trace_id", "stage", "tenant", "code", "anomaly")

_bound: ContextVar[Mapping[str, object] | None] = ContextVar("airlock_log_context", default=None)


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add ``fields`` (ids, never text) to every line logged in this context until exit.

    Context variables follow asyncio tasks, so a record's ids stay with the work on it;
    an explicit ``extra`` on a log call wins over a bound field.
    """
    current = _bound.get()
    token = _bound.set({**(current or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def bound() -> Mapping[str, object]:
    """The fields bound in this context."""
    return _bound.get() or {}


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON objects."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line for ``record``."""
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _bound.get() or {}
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = context.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(service: str, level: str | None = None) -> None:
    """Send every log record to stderr as JSON, tagged with ``service``.

    Args:
        service: The service name written into each line.
        level: Log level; defaults to ``AIRLOCK_LOG_LEVEL`` or INFO.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("AIRLOCK_LOG_LEVEL", "INFO")).upper())
    # aiokafka logs every coordinator hiccup at ERROR; keep it, but not its debug chatter.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # uvicorn (health endpoints) brings its own handlers; send its records through ours,
    # and keep probe requests out of the log.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # The OpenAI client logs every HTTP request at INFO; one line per call is ours to write.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
