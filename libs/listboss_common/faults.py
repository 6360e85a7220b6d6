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


# Connection lost, server restarting or shutting down, deadlock, serialization failure,
# lock timeout (PostgreSQL reports all of these as OperationalError), a connection pool
# that cannot hand out a connection, and SQL that no longer matches the schema (an
# operator's problem, the same for every message: retrying after the fix succeeds).
_DATABASE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.ProgrammingError,
)

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

_TRANSIENT = (DependencyUnavailable, *_DATABASE, *_NATS, asyncio.TimeoutError, ConnectionError)


def is_transient(error: BaseException) -> bool:
    """True when ``error`` (or what caused it) is a passing failure of a dependency."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _TRANSIENT):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


def dependency_of(error: BaseException) -> str:
    """Which dependency a transient failure belongs to, for health and logs."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, _DATABASE):
            return "database"
        if isinstance(current, _NATS):
            return "nats"
        seen.add(id(current))
        current = current.__cause__
    return "dependency"
