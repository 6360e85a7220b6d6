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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
T = TypeVar("T")


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers run beside the one writer; NORMAL sync is durable
            # across process crashes, which is the failure we guard against.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # A connection attempt gives up after 5 s, so an unreachable server is an error the
    # workers wait out (see worker.py) rather than a call that hangs.
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True, connect_args={"connect_timeout": 5})


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


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
