"""Telling a passing failure of the infrastructure from a failure of the work itself.

A bus worker waits out the first kind (the database restarting, NATS reconnecting, a
deadlock, a timeout) for as long as it lasts and never counts it against a message;
only the second kind (a message that cannot be decoded, breaks a rule, or fails a
constraint every time) can send a message to the dead-letter stream.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
import sqlalchemy.exc


class DependencyUnavailable(Exception):
    """Raised by code that finds a dependency it needs missing (e.g. no NATS connection)."""


# PostgreSQL's SQLSTATE classes of a passing failure: connection exception (08), invalid
# transaction state (25: a read-only standby after a failover), transaction rollback (40:
# serialization failure, deadlock), insufficient resources (53), object not in prerequisite
# state (55: lock not available), operator intervention (57: shutdown, statement timeout),
# system error (58), internal error (XX), and syntax error or access rule violation (42:
# undefined table or column, missing privilege — SQL that does not match the database, an
# operator's problem that is the same for every message, so retrying after the fix works).
# Others — data exception (22), integrity constraint (23), program limit exceeded (54: a
# NUL in text, an index row too large), a trigger's RAISE EXCEPTION (P0) — belong to the
# work, whatever exception class the driver reports them with.
_PASSING_SQLSTATE_CLASSES = frozenset({"08", "25", "40", "42", "53", "55", "57", "58", "XX"})


def _is_database_outage(error: BaseException) -> bool:
    if isinstance(error, (sqlalchemy.exc.DisconnectionError, sqlalchemy.exc.TimeoutError)):
        return True  # the pool could not hand out a working connection
    if not isinstance(error, sqlalchemy.exc.DBAPIError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate:
        return sqlstate[:2] in _PASSING_SQLSTATE_CLASSES
    # No answer from a server (refused, reset) or SQLite (locked, I/O error, no such table).
    return error.connection_invalidated or isinstance(
        error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
    )


# SQLSTATE query_canceled: a statement timeout fired (or an operator cancelled the query).
QUERY_CANCELED = "57014"


def is_query_canceled(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) is PostgreSQL cancelling a statement. A bus worker
    waits it out like any class 57 failure; an RPC answers it DEADLINE_EXCEEDED
    (:mod:`listboss_common.deadlines`)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, sqlalchemy.exc.DBAPIError) and getattr(current.orig, "sqlstate", None) == QUERY_CANCELED:
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


_NATS = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.FlushTimeoutError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,
)

_TRANSIENT = (DependencyUnavailable, *_NATS, asyncio.TimeoutError, ConnectionError)


def is_transient(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) is a passing failure of a dependency."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _TRANSIENT) or _is_database_outage(current):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


def dependency_of(error: BaseException) -> str:
    """Which dependency a transient failure belongs to, for health and logs."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if _is_database_outage(current):
            return "database"
        if isinstance(current, _NATS):
            return "nats"
        seen.add(id(current))
        current = current.__cause__
    return "dependency"


def describe_error(error: BaseException) -> str:
    """``error`` as it may appear in a log line or a dead letter's header: its class and
    message, without people's data. A database error keeps only the first line of the
    driver's message: what follows it (PostgreSQL's DETAIL, e.g. ``Key (producer,
    email)=(…)``), the SQL and its parameters may quote the values of a row."""
    if isinstance(error, sqlalchemy.exc.StatementError):
        cause = error.orig if error.orig is not None else error
        return f"{type(error).__name__}({type(cause).__name__}: {_first_line(cause)})"
    if type(error).__module__.split(".")[0] in _DATABASE_DRIVERS:
        return f"{type(error).__name__}({_first_line(error)})"
    return repr(error)


# The drivers whose errors travel unwrapped in an exception chain (a traceback's causes).
_DATABASE_DRIVERS = frozenset({"psycopg", "sqlite3", "_sqlite3"})


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]
