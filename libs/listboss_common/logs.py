"""Structured logging: JSON lines in production, a console renderer on a terminal.

Context (request id, method, event id) is bound through contextvars, so every
line logged while handling a request or message carries its ids.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(service: str) -> None:
    fmt = os.environ.get("LISTBOSS_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    level = logging.getLevelName(os.environ.get("LISTBOSS_LOG_LEVEL", "INFO").upper())
    if not isinstance(level, int):
        level = logging.INFO
    renderer = structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
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
