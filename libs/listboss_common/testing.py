"""Test support shared by every service's tests: a real nats-server on free ports,
SQLite and PostgreSQL databases, tokens, and gRPC servers on port 0.

Loaded as a pytest plugin by the repository's conftest.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from listboss_common import bus
from listboss_common.auth import issue_token
from listboss_common.processes import NatsServer, free_port

# What tests import from here besides the fixtures (processes.py holds the process helpers).
__all__ = ["AUTH_SECRET", "POSTGRES_ADMIN_URL", "NatsServer", "bearer", "free_port", "token"]

AUTH_SECRET = "test-secret"
# Where PostgreSQL runs for the tests; each test gets a database of its own there.
POSTGRES_ADMIN_URL = os.environ.get(
    "LISTBOSS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream in the test's folder; the test may stop and start it."""
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer):
    """A client of the test's nats-server, with every ListBoss stream created."""
    client = await bus.connect(nats_server.url, name="listboss-tests")
    await bus.ensure_streams(client.jetstream(), [bus.EVENTS, bus.CHANGES, bus.DEADLETTER, bus.TAG_CHANGES])
    yield client
    await client.close()


@pytest.fixture
def js(nc):
    """JetStream on :func:`nc`."""
    return nc.jetstream()


def _postgres_required() -> bool:
    return os.environ.get("LISTBOSS_REQUIRE_POSTGRES") == "1"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"listboss_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as error:
        admin.dispose()
        if _postgres_required():
            raise
        pytest.skip(f"PostgreSQL is not reachable ({error.orig}); set LISTBOSS_REQUIRE_POSTGRES=1 to fail instead")
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("postgres_url")


def token(producer: str | None) -> str:
    return issue_token(AUTH_SECRET, producer)


def bearer(producer: str | None) -> tuple[tuple[str, str]]:
    """gRPC metadata authenticating as ``producer`` (None: the internal role)."""
    return (("authorization", f"Bearer {token(producer)}"),)
