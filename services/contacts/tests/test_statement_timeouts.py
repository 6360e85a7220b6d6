"""ContactsService's queries end by the caller's deadline (PostgreSQL): a query held up by a
lock answers DEADLINE_EXCEEDED promptly, its statement is cancelled in the database rather than
left waiting, and the pooled connection serves the next call."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as pb_grpc
from listboss_common.db import create_engine
from listboss_contacts import schema
from listboss_contacts.grpc_api import METHOD_SCOPES, ContactsServicer
from listboss_testing import bearer, binding, eventually, rich_status

pytestmark = pytest.mark.postgres

SERVICE = pb.DESCRIPTOR.services_by_name["ContactsService"]
APPLICATION = "listboss-contacts"
COUNT = pb.CountContactsRequest(parent="producers/alice")


@pytest.fixture
def engine(postgres_url):
    engine = create_engine(postgres_url, application_name=APPLICATION)
    schema.migrate_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def observer(postgres_url):
    """Another session on the test's database, to watch pg_stat_activity and hold locks."""
    engine = sa.create_engine(postgres_url, poolclass=NullPool)
    yield engine
    engine.dispose()


async def serve(grpc_server, engine, **options) -> pb_grpc.ContactsServiceStub:
    servicer = ContactsServicer(engine, **options)
    served = await grpc_server(
        [binding(SERVICE, pb_grpc.add_ContactsServiceServicer_to_server, servicer, METHOD_SCOPES)]
    )
    return pb_grpc.ContactsServiceStub(served.channel)


@contextlib.contextmanager
def contacts_locked(observer: sa.Engine) -> Iterator[None]:
    """Every query of the contacts table waits while this holds its lock."""
    with observer.connect() as connection:
        connection.exec_driver_sql("LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE")
        yield
        connection.rollback()


def service_sessions(observer: sa.Engine) -> list[tuple[int, str | None]]:
    """(pid, state) of the service's sessions on the test's database."""
    with observer.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT pid, state FROM pg_stat_activity"
                " WHERE application_name = :name AND datname = current_database() ORDER BY pid"
            ),
            {"name": APPLICATION},
        )
        return [(row.pid, row.state) for row in rows]


async def test_the_service_is_named_in_pg_stat_activity_while_connected(grpc_server, engine, observer):
    contacts = await serve(grpc_server, engine)
    assert (await contacts.CountContacts(COUNT, metadata=bearer("alice"))).count == 0
    sessions = service_sessions(observer)
    assert len(sessions) == 1 and sessions[0][1] == "idle"  # pooled, between calls


async def test_a_query_past_the_statement_timeout_is_deadline_exceeded_and_the_connection_serves_on(
    grpc_server, engine, observer
):
    contacts = await serve(grpc_server, engine, statement_timeout=0.5)
    await contacts.CountContacts(COUNT, metadata=bearer("alice"))
    (pid_before, _), *_ = service_sessions(observer)
    with contacts_locked(observer):
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await contacts.CountContacts(COUNT, metadata=bearer("alice"), timeout=30)
        elapsed = time.monotonic() - started
    # The server's answer (with its ErrorInfo), not the client's own deadline: that was 30 s.
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    info, _ = rich_status(caught.value)
    assert info.reason == "STATEMENT_TIMEOUT"
    assert elapsed < 10, elapsed  # the 0.5 s cap, not the lock's end
    assert (await contacts.CountContacts(COUNT, metadata=bearer("alice"))).count == 0
    assert [pid for pid, _ in service_sessions(observer)] == [pid_before]  # the same connection


async def test_the_callers_deadline_cancels_the_query_in_the_database(grpc_server, engine, observer):
    contacts = await serve(grpc_server, engine)  # the 30 s default cap: the deadline is shorter
    await contacts.CountContacts(COUNT, metadata=bearer("alice"))
    (pid_before, _), *_ = service_sessions(observer)
    with contacts_locked(observer):
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await contacts.CountContacts(COUNT, metadata=bearer("alice"), timeout=1.0)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 10
        # While the lock is still held, the query no longer waits on it: PostgreSQL cancelled
        # it when the caller's time ran out (without the timeout it would wait for the lock).
        await eventually(lambda: all(state != "active" for _, state in service_sessions(observer)), timeout=10)
    assert (await contacts.CountContacts(COUNT, metadata=bearer("alice"))).count == 0
    assert [pid for pid, _ in service_sessions(observer)] == [pid_before]
