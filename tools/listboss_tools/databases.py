"""Where the suite's services keep their data: SQLite files in the data folder, or databases of
their own on a PostgreSQL server, created when missing (and dropped by the benchmarks, which
start from nothing)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

# Services that own a database, and the PostgreSQL database each gets.
DATABASE_NAMES = {"segmentation": "listboss_segmentation", "contacts": "listboss_contacts"}


def check_database_choice(database: str) -> None:
    """Raises ValueError unless ``database`` is "sqlite" or a PostgreSQL SQLAlchemy URL."""
    if database == "sqlite":
        return
    try:
        backend = make_url(database).get_backend_name()
    except ArgumentError:
        backend = ""
    if backend != "postgresql":
        raise ValueError(
            f"--database must be 'sqlite' or a PostgreSQL SQLAlchemy URL "
            f"(postgresql+psycopg://user:password@host:5432/), got {database!r}"
        )


def postgres_url(prefix: str, database: str) -> str:
    """``prefix`` (a PostgreSQL SQLAlchemy URL, its database part ignored) naming ``database``."""
    return make_url(prefix).set(database=database).render_as_string(hide_password=False)


def service_database_url(choice: str, data_dir: Path, service: str) -> str:
    """The database of ``service``: ``<data_dir>/<service>.db`` when ``choice`` is "sqlite",
    else its database (DATABASE_NAMES) on the PostgreSQL server ``choice`` names."""
    if choice == "sqlite":
        return f"sqlite:///{data_dir / f'{service}.db'}"
    return postgres_url(choice, DATABASE_NAMES[service])


def _server(url: str) -> Engine:
    """The server of ``url``, through its ``postgres`` database, outside transactions (CREATE
    and DROP DATABASE cannot run in one)."""
    return create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def ensure_postgres_database(url: str) -> str | None:
    """Creates the database of ``url`` when missing; returns a warning instead of failing.

    A fresh PostgreSQL has no ``listboss_*`` databases; creating them here makes
    ``--database postgresql+psycopg://...`` work in one step. Without the right
    to create databases the service itself reports what is wrong.
    """
    name = make_url(url).database
    engine = _server(url)
    try:
        with engine.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}).first()
            if not exists:
                assert name is not None, "the URL names no database"
                connection.execute(text(f"CREATE DATABASE {connection.dialect.identifier_preparer.quote(name)}"))
    except Exception as error:
        return f"could not check or create database {name!r}: {error}"
    finally:
        engine.dispose()
    return None


def drop_postgres_database(url: str) -> None:
    """Drops the database of ``url`` if it exists, closing its connections."""
    name = make_url(url).database
    engine = _server(url)
    try:
        with engine.connect() as connection:
            assert name is not None, "the URL names no database"
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        engine.dispose()
