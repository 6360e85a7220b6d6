"""Structured logging: JSON lines in production, a console renderer on a terminal.

Context (request id, method, event id) is bound through contextvars, so every
line logged while handling a request or message carries its ids. With tracing on
(``LISTBOSS_TRACES_EXPORTER``, :mod:`listboss_common.tracing`) every line logged
inside a span also carries ``trace_id`` and ``span_id``.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

from listboss_common import tracing


def configure_logging(service: str) -> None:
    """Configures structlog, and tracing with it (the trace ids are part of the lines)."""
    tracing.configure_tracing(service)
    fmt = os.environ.get("LISTBOSS_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    level = logging.getLevelName(os.environ.get("LISTBOSS_LOG_LEVEL", "INFO").upper())
    if not isinstance(level, int):
        level = logging.INFO
    renderer = structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    # Only with tracing on: with it off, log lines cost nothing more.
    trace_ids = [tracing.add_trace_ids] if tracing.enabled() else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
