"""Structured JSON logs.

One JSON object per line with ``service``, ``level``, ``logger`` and ``message``, plus any
of ``request_id``, ``airlock_id``, ``trace_id`` and ``stage`` passed in ``extra``. Log calls
must never include prompt text, answers, PII values or secrets: pass ids and counts only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

CONTEXT_FIELDS = ("request_id", "airlock_id", "trace_id", "stage", "tenant", "code")


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
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
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
