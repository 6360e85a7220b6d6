"""Structured logging: JSON lines in production, a console renderer on a terminal.

Context (request id, method, event id) is bound through contextvars, so every
line logged while handling a request or message carries its ids. With tracing on
(``LISTBOSS_TRACES_EXPORTER``, :mod:`listboss_common.tracing`) every line logged
inside a span also carries ``trace_id`` and ``span_id``.

No line carries a person's data: lines name ids and field paths, never values, and
exceptions are written through :func:`format_exception`, which leaves out what a
database error quotes from the row.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import structlog

from listboss_common import tracing
from listboss_common.faults import describe_error


def format_exception(exc_info) -> str:
    """A logged exception as a traceback whose messages are those of
    :func:`~listboss_common.faults.describe_error`: the frames as Python prints them,
    but a database error's message without the row values its driver quotes."""
    _, error, _ = exc_info
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{describe_error(current)}")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n\nThe above exception led to the following one:\n\n".join(reversed(parts))


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
            structlog.processors.ExceptionRenderer(format_exception),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
