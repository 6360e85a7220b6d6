"""The fixtures shared by every test in the repository: a real nats-server on free ports,
SQLite and PostgreSQL databases, migrated engines, and real gRPC servers on port 0.

Loaded as a pytest plugin by the repository's conftest.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from listboss_common import bus
from listboss_common.db import create_engine
from listboss_common.processes import NatsServer
from listboss_testing.grpc_servers import GrpcServers

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


@pytest.fixture
async def person_keys(nc, js):
    """The person-key store on the test's nats-server, under the session's data key
    (:mod:`listboss_testing.personal_data`), hearing key destructions like a service."""
    from listboss_common.personal_data import PersonKeys
    from listboss_testing.personal_data import keyring

    await bus.ensure_streams(js, [bus.PERSON_KEYS])
    keys = PersonKeys(js, keyring())
    await keys.listen(nc)
    return keys


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


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Callable[..., Engine]]:
    """``migrated_engine(migrate, url=None)``: an engine on ``url`` (default: the test's
    ``database_url``, so SQLite and PostgreSQL) migrated by ``migrate`` (a service's
    ``migrate_database``); disposed after the test."""
    engines: list[Engine] = []

    def make(migrate: Callable[[Engine], None], url: str | None = None) -> Engine:
        engine = create_engine(url or database_url)
        engines.append(engine)
        migrate(engine)
        return engine

    yield make
    for engine in reversed(engines):
        engine.dispose()


@pytest.fixture
async def grpc_server():
    """``await grpc_server(bindings, readiness=None)``: the production GrpcServer on a free port
    with those bindings (see ``listboss_testing.binding``), verifying the session's JWKS
    (``listboss_testing.tokens``; ``verifier=`` for another); gives a
    :class:`~listboss_testing.grpc_servers.Served` (``port``, ``channel``, ``server``). Channels
    are closed and servers stopped after the test, newest first."""
    servers = GrpcServers()
    yield servers
    await servers.close()
