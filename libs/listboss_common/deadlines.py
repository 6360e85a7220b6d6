"""The caller's deadline, carried from the gRPC interceptor to the database.

The interceptor (:mod:`listboss_common.grpc_server`) records when each RPC's deadline falls
(:func:`start_call`, from ``context.time_remaining()``) in a context variable. grpc.aio runs
every RPC in a task of its own and ``asyncio.to_thread`` copies the context into the worker
thread, so the unit of work opened for the RPC reads the same value (:func:`remaining`) and
bounds its statements by it (:class:`listboss_common.db.StatementTimeout`). The bus workers
never run inside an RPC: for them there is no deadline here.

A statement that PostgreSQL cancels for running past that bound (SQLSTATE 57014,
``query_canceled``) means the caller's time ran out: :func:`database_deadline` answers it
``DEADLINE_EXCEEDED``, never ``INTERNAL``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

from listboss_common.errors import deadline_exceeded
from listboss_common.faults import is_query_canceled

# time.monotonic() at which the current RPC's deadline falls; None: no RPC, or no deadline.
_deadline: ContextVar[float | None] = ContextVar("listboss_rpc_deadline", default=None)


def start_call(time_remaining: float | None) -> None:
    """Records the current RPC's deadline, ``time_remaining`` seconds from now (None: none)."""
    _deadline.set(None if time_remaining is None else time.monotonic() + time_remaining)


def remaining() -> float | None:
    """Seconds left before the current RPC's deadline (0 or less once it passed); None when
    there is no RPC or it has no deadline."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@contextlib.contextmanager
def database_deadline() -> Iterator[None]:
    """Answers a statement cancelled by its timeout ``DEADLINE_EXCEEDED`` (reason
    ``STATEMENT_TIMEOUT``): the database work did not fit in the time the caller gave, or in
    ``LISTBOSS_STATEMENT_TIMEOUT``."""
    try:
        yield
    except Exception as error:
        if not is_query_canceled(error):
            raise
        raise deadline_exceeded(
            "the database did not answer within the call's deadline; retry with a longer deadline or a narrower request",
            "STATEMENT_TIMEOUT",
        ) from None
