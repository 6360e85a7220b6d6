"""The suite with more than one contacts process: each replica on a port of its own, all sharing
the durable consumer of changes, on PostgreSQL; refused on SQLite."""

from __future__ import annotations

import os
import random
import time
import uuid

import grpc
import pytest
import sqlalchemy as sa

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from listboss_common.processes import health_status
from listboss_testing.fixtures import POSTGRES_ADMIN_URL
from listboss_tools.bench import make_batch
from listboss_tools.suite import Suite, postgres_url

EVENTS = 600
PEOPLE = 50


class _OwnDatabases(Suite):
    """A suite whose PostgreSQL databases belong to this test alone (Suite's fixed names would
    be shared with any other run on the server)."""

    def __init__(self, *args, suffix: str, **kwargs):
        super().__init__(*args, **kwargs)
        self._suffix = suffix

    def database_url(self, service: str) -> str:
        return postgres_url(self.database, f"listboss_{service}_{self._suffix}")


@pytest.fixture
def replicated_suite(tmp_path):
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as error:
        admin.dispose()
        if os.environ.get("LISTBOSS_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL is not reachable ({error.orig}); set LISTBOSS_REQUIRE_POSTGRES=1 to fail instead")
    suite = _OwnDatabases.on_free_ports(
        tmp_path / "suite",
        database=POSTGRES_ADMIN_URL,
        contacts_replicas=2,
        output=None,
        suffix=f"test_{uuid.uuid4().hex[:12]}",
    )
    try:
        suite.start()
        yield suite
        # Both replicas shut down cleanly on SIGTERM, as every other part.
        assert suite.stop() == {"ingest": 0, "segmentation": 0, "contacts": 0, "contacts-2": 0, "nats": 0}
    finally:
        suite.stop()
        with admin.connect() as connection:
            for service in ("segmentation", "contacts"):
                name = sa.make_url(suite.database_url(service)).database
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_more_than_one_contacts_replica_is_refused_on_sqlite(tmp_path):
    with pytest.raises(ValueError, match="PostgreSQL"):
        Suite.on_free_ports(tmp_path, contacts_replicas=2)
    with pytest.raises(ValueError, match="at least 1"):
        Suite.on_free_ports(tmp_path, contacts_replicas=0)


def test_one_replica_is_the_suite_as_it_always_was(tmp_path):
    suite = Suite.on_free_ports(tmp_path)
    assert suite.service_parts == ("ingest", "segmentation", "contacts")
    assert suite.contacts_addresses == [suite.contacts_address]


@pytest.mark.e2e
@pytest.mark.postgres
def test_replicas_share_the_changes_and_each_answers_for_all(replicated_suite):
    suite = replicated_suite
    assert suite.service_parts == ("ingest", "segmentation", "contacts", "contacts-2")
    first, second = suite.contacts_addresses
    assert first == suite.contacts_address and first != second
    assert suite.pid("contacts") != suite.pid("contacts-2")
    assert suite.metrics_url("contacts") != suite.metrics_url("contacts-2")
    assert [health_status(address) for address in suite.contacts_addresses] == ["SERVING", "SERVING"]

    internal = (("authorization", f"Bearer {suite.internal_token}"),)
    with grpc.insecure_channel(suite.ingest_address) as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        rng = random.Random(3)
        for _ in range(EVENTS // 200):
            request = ingest_pb.BatchIngestEventsRequest(
                request_id=uuid.uuid4().hex, events=make_batch(200, PEOPLE, rng)
            )
            assert stub.BatchIngestEvents(request, metadata=internal, timeout=30).accepted_count == 200

    engine = sa.create_engine(suite.database_url("contacts"))
    try:
        recorded = 0
        deadline = time.monotonic() + 60
        while recorded < EVENTS and time.monotonic() < deadline:
            time.sleep(0.2)
            with engine.connect() as connection:
                recorded = connection.exec_driver_sql("SELECT count(*) FROM history").scalar_one()
        with engine.connect() as connection:
            contacts = connection.exec_driver_sql("SELECT count(*) FROM contacts").scalar_one()
    finally:
        engine.dispose()
    # Every event applied exactly once, whichever replica took it.
    assert recorded == EVENTS
    assert 0 < contacts <= PEOPLE

    producer = (("authorization", f"Bearer {suite.producer_token('bench')}"),)
    counts = []
    for address in suite.contacts_addresses:
        with grpc.insecure_channel(address) as channel:
            reply = contacts_grpc.ContactsServiceStub(channel).CountContacts(
                contacts_pb.CountContactsRequest(parent="producers/bench"), metadata=producer, timeout=10
            )
            counts.append(reply.count)
    assert counts == [contacts, contacts]
