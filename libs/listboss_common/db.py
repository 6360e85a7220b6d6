"""Databases through SQLAlchemy 2: engines for SQLite and PostgreSQL, the lock replicas
migrate under, and the frozen pre-Alembic migration path (schemas migrate through Alembic:
``listboss_common.migrations``).

Services use SQLAlchemy Core on a synchronous engine and run their
transactions in a worker thread (``asyncio.to_thread``), so the event loop
keeps serving while the database works. Times are stored as integer
microseconds since the epoch (UTC): portable, exact and cheap to compare.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from listboss_common import deadlines
from listboss_common.config import ConfigError

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
T = TypeVar("T")


def create_engine(url: str, *, application_name: str = "listboss") -> Engine:
    """An engine for ``url``. Its errors leave out the statement's parameters
    (``hide_parameters``): error texts reach logs and dead-letter headers, and the
    parameters are people's emails, names and phones. On PostgreSQL its connections carry
    ``application_name`` (``listboss-contacts``, ``listboss-ops``, …), so ``pg_stat_activity``
    and the server's logs tell whose a session is; SQLite has no such thing."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers run beside the one writer; NORMAL sync is durable
            # across process crashes, which is the failure we guard against.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            # Deleted content is overwritten with zeros, not left in free pages, so an
            # erased person's data does not linger in the file (see checkpoint_wal).
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.close()

        return engine
    # A connection attempt gives up after 5 s, so an unreachable server is an error the
    # workers wait out (see worker.py) rather than a call that hangs.
    return sa.create_engine(
        url,
        pool_size=8,
        max_overflow=8,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5, "application_name": application_name},
        hide_parameters=True,
    )


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


# -- statement timeouts ------------------------------------------------------------------------
# On PostgreSQL every unit of work bounds its statements with ``SET LOCAL statement_timeout``
# (it lasts until the transaction ends, so a pooled connection never carries it to its next
# user): an RPC's by the caller's remaining deadline, capped by LISTBOSS_STATEMENT_TIMEOUT; a
# bus worker's by WORKER_STATEMENT_TIMEOUT, whatever any caller asked. SQLite has no statement
# timeout (a statement there waits at most busy_timeout for a lock, then runs to its end).

STATEMENT_TIMEOUT_ENV = "LISTBOSS_STATEMENT_TIMEOUT"
# The longest an RPC's statement may run, with or without a deadline (seconds).
DEFAULT_STATEMENT_TIMEOUT = 30.0
# A bus worker's transaction: generous (a large batch on a busy server), but a statement stuck
# behind a lock nobody releases ends and is retried (SQLSTATE class 57 is a passing failure).
WORKER_STATEMENT_SECONDS = 300.0
# Below this a statement could not even start: the deadline is as good as passed.
_MIN_STATEMENT_MS = 1


def statement_timeout_from_env() -> float:
    """LISTBOSS_STATEMENT_TIMEOUT in seconds (default 30): the cap of every RPC's statements."""
    raw = os.environ.get(STATEMENT_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_STATEMENT_TIMEOUT
    try:
        seconds = float(raw.removesuffix("s"))
    except ValueError:
        raise ConfigError(f"{STATEMENT_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not 0 < seconds < 86_400:
        raise ConfigError(f"{STATEMENT_TIMEOUT_ENV} must be more than 0 and less than a day, got {raw!r}")
    return seconds


@dataclass(frozen=True)
class StatementTimeout:
    """How long a transaction's statements may run: ``maximum`` seconds, or less when
    ``follow_deadline`` and the current RPC has less time left (:mod:`listboss_common.deadlines`)."""

    maximum: float
    follow_deadline: bool = False

    def seconds(self) -> float:
        if self.follow_deadline:
            left = deadlines.remaining()
            if left is not None:
                return min(self.maximum, left)
        return self.maximum

    def apply(self, connection: Connection) -> None:
        """Bounds the statements of ``connection``'s transaction (beginning it) on PostgreSQL."""
        if is_postgres(connection):
            milliseconds = max(_MIN_STATEMENT_MS, int(self.seconds() * 1000))
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")


def rpc_statement_timeout(maximum: float = DEFAULT_STATEMENT_TIMEOUT) -> StatementTimeout:
    """An RPC's: the caller's remaining deadline, at most ``maximum`` (no deadline: ``maximum``)."""
    return StatementTimeout(maximum, follow_deadline=True)


WORKER_STATEMENT_TIMEOUT = StatementTimeout(WORKER_STATEMENT_SECONDS)


# How long a WAL checkpoint after an erasure waits for readers and writers to let go.
CHECKPOINT_BUSY_TIMEOUT_MS = 1000


def checkpoint_wal(engine: Engine) -> bool:
    """On SQLite, copies the write-ahead log into the database file and truncates it, so
    the pages a deletion replaced (still in the log) are gone. Best effort, outside any
    transaction: waits at most :data:`CHECKPOINT_BUSY_TIMEOUT_MS` and returns False when
    a reader or writer kept it from finishing (the next checkpoint does it). On
    PostgreSQL there is nothing to do here: deleted rows stay in the heap until VACUUM
    (docs/operations.md, "Erasure")."""
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as connection:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={CHECKPOINT_BUSY_TIMEOUT_MS}")
        try:
            busy, _frames, _copied = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        finally:
            connection.exec_driver_sql("PRAGMA busy_timeout=30000")
        connection.commit()
    return busy == 0


def advisory_lock_key(name: str) -> int:
    """The PostgreSQL advisory-lock key (a signed 64-bit integer) of the lock called ``name``:
    the first 8 bytes of its SHA-256, so every process derives the same key from the same name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def hold_migration_lock(connection: Connection, namespace: str) -> None:
    """On PostgreSQL, takes the advisory lock of ``namespace`` (one per service), waiting for
    it, and holds it until the transaction ends, so replicas starting together migrate one at
    a time. The pre-Alembic path below and ``migrations.upgrade`` use the same key, so old and
    new replicas of a rolling start wait for each other too."""
    if is_postgres(connection):
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_lock_key(namespace)})


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def to_micros(moment: dt.datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=micros)


def insert(connection: Connection, table: sa.Table):
    """An INSERT for ``table`` in the connection's dialect, so that
    ``on_conflict_do_nothing`` / ``on_conflict_do_update`` work on SQLite and PostgreSQL."""
    if is_postgres(connection):
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


async def read(engine: Engine, function: Callable[..., T], *args) -> T:
    """Runs ``function(connection, *args)`` on a connection in a worker thread."""

    def run() -> T:
        with engine.connect() as connection:
            return function(connection, *args)

    return await asyncio.to_thread(run)


async def write(engine: Engine, function: Callable[..., T], *args) -> T:
    """Runs ``function(connection, *args)`` in one transaction in a worker thread."""

    def run() -> T:
        with engine.begin() as connection:
            return function(connection, *args)

    return await asyncio.to_thread(run)


# --------------------------------------------------------------------------- before Alembic
# The services' schemas were once lists of SQL steps recorded in a `schema_migrations`
# table. That path is frozen: it only adopts databases it built (listboss_common.migrations
# runs a service's missing old steps, then stamps its Alembic baseline) and lets tests build
# such databases. New schema changes are Alembic revisions.


@dataclass(frozen=True)
class Migration:
    """One schema step. ``upgrade`` receives a connection inside the migration's transaction."""

    version: int
    description: str
    upgrade: Callable[[Connection], None]


def sql_migration(version: int, description: str, *statements: str) -> Migration:
    """A migration made of portable SQL statements. ``{id}`` in a statement becomes
    the dialect's auto-increment primary key column type."""

    def upgrade(connection: Connection) -> None:
        ident = "BIGSERIAL PRIMARY KEY" if is_postgres(connection) else "INTEGER PRIMARY KEY AUTOINCREMENT"
        for statement in statements:
            connection.exec_driver_sql(statement.replace("{id}", ident))

    return Migration(version, description, upgrade)


def migrate(engine: Engine, migrations: Sequence[Migration], *, namespace: str) -> list[int]:
    """Applies the migrations not yet applied, in order, under the migration lock of
    ``namespace``; returns the versions applied. (The pre-Alembic path, as it ran.)"""
    with engine.begin() as connection:
        hold_migration_lock(connection, namespace)
        return apply_sql_migrations(connection, migrations)


def apply_sql_migrations(connection: Connection, migrations: Sequence[Migration]) -> list[int]:
    """Runs, in the connection's transaction, the migrations ``schema_migrations`` does not
    list, and records them there; returns the versions applied."""
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError("migration versions must be unique and ascending")
    applied_now: list[int] = []
    connection.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)"
    )
    done = {row[0] for row in connection.exec_driver_sql("SELECT version FROM schema_migrations")}
    for migration in migrations:
        if migration.version in done:
            continue
        migration.upgrade(connection)
        connection.execute(
            sa.text("INSERT INTO schema_migrations (version, description, applied_at) VALUES (:v, :d, :t)"),
            {"v": migration.version, "d": migration.description, "t": to_micros(now())},
        )
        applied_now.append(migration.version)
    return applied_now
