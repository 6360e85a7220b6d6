"""The suite with more than one contacts process: each replica on a port of its own, on PostgreSQL
(refused on SQLite), the partitions of the changes split between them and taken over when one dies."""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
import urllib.request
import uuid

import grpc
import pytest
import sqlalchemy as sa

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from listboss_common import bus
from listboss_common.partitions import read_owners
from listboss_common.processes import health_status
from listboss_testing import eventually_sync
from listboss_testing.fixtures import POSTGRES_ADMIN_URL
from listboss_tools.bench import make_batch
from listboss_tools.suite import Suite

EVENTS = 600
PEOPLE = 50


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
    suite = Suite.on_free_ports(
        tmp_path / "suite",
        database=POSTGRES_ADMIN_URL,
        contacts_replicas=2,
        output=None,
        database_suffix=f"test_{uuid.uuid4().hex[:12]}",
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


# --- partitions: each replica applies the changes of the contacts of its partitions alone


def _owners(suite) -> dict[int, str | None]:
    async def read() -> dict[int, str | None]:
        nc = await bus.connect(suite.nats_url, name="test-contacts-replicas")
        try:
            return await read_owners(nc.jetstream(), "contacts", bus.DEFAULT_PARTITIONS)
        except Exception:  # the bucket not there yet, a node electing
            return {}
        finally:
            await nc.close()

    return asyncio.run(read())


def _replica_of(member: str | None, pids: dict[str, int]) -> str | None:
    """The suite part whose process is ``member`` (members are named host-pid-random)."""
    for name, pid in pids.items():
        if member is not None and f"-{pid}-" in member:
            return name
    return None


def _split(suite, pids: dict[str, int]) -> dict[str, set[int]] | None:
    """Each replica's partitions, once every partition has an owner among ``pids``."""
    owners = _owners(suite)
    if len(owners) != bus.DEFAULT_PARTITIONS:
        return None
    split: dict[str, set[int]] = {name: set() for name in pids}
    for partition, member in owners.items():
        replica = _replica_of(member, pids)
        if replica is None:
            return None
        split[replica].add(partition)
    return split


def _items_by_partition(suite, name: str) -> dict[int, float]:
    """Changes the replica applied, per partition, from its own metrics."""
    text = urllib.request.urlopen(suite.metrics_url(name), timeout=5).read().decode()
    found = {}
    for match in re.finditer(
        r'^listboss_consumer_items_handled_total\{consumer="contacts-p(\d+)"\} (\S+)$', text, re.M
    ):
        found[int(match.group(1))] = float(match.group(2))
    return found


def _ingest(suite, count: int, seed: int) -> None:
    internal = (("authorization", f"Bearer {suite.internal_token}"),)
    with grpc.insecure_channel(suite.ingest_address) as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        rng = random.Random(seed)
        for _ in range(count // 200):
            request = ingest_pb.BatchIngestEventsRequest(
                request_id=uuid.uuid4().hex, events=make_batch(200, PEOPLE, rng)
            )
            assert stub.BatchIngestEvents(request, metadata=internal, timeout=30).accepted_count == 200


def _history_reaches(suite, expected: int, timeout: float) -> int:
    engine = sa.create_engine(suite.database_url("contacts"))
    try:
        recorded = 0
        deadline = time.monotonic() + timeout
        while recorded < expected and time.monotonic() < deadline:
            time.sleep(0.2)
            with engine.connect() as connection:
                recorded = connection.exec_driver_sql("SELECT count(*) FROM history").scalar_one()
        return recorded
    finally:
        engine.dispose()


@pytest.mark.e2e
@pytest.mark.postgres
def test_each_partition_is_applied_by_one_replica_and_a_killed_replicas_are_taken_over(replicated_suite):
    suite = replicated_suite
    pids = {name: suite.pid(name) for name in ("contacts", "contacts-2")}
    # The two replicas split the partitions evenly (the first started owns all, then hands over half).
    split = eventually_sync(
        lambda: (s := _split(suite, pids)) and sorted(len(p) for p in s.values()) == [4, 4] and s,
        timeout=60,
        message="the replicas did not split the partitions",
    )

    _ingest(suite, EVENTS, seed=5)
    # Every event applied exactly once.
    assert _history_reaches(suite, EVENTS, timeout=60) == EVENTS
    applied = {name: _items_by_partition(suite, name) for name in pids}
    # Each partition's changes were applied by its owner alone.
    for name, partitions in split.items():
        other = next(n for n in pids if n != name)
        assert all(applied[other].get(partition, 0) == 0 for partition in partitions), (name, applied)
    assert sum(sum(counts.values()) for counts in applied.values()) == EVENTS

    # One replica dies mid-run: the other takes its partitions once their leases expire, and finishes.
    suite.kill("contacts-2")
    _ingest(suite, EVENTS, seed=6)
    assert _history_reaches(suite, 2 * EVENTS, timeout=90) == 2 * EVENTS
    survivor = eventually_sync(
        lambda: (s := _split(suite, {"contacts": pids["contacts"]})) and s,
        timeout=30,
        message="the survivor did not take every partition",
    )
    assert survivor == {"contacts": set(range(bus.DEFAULT_PARTITIONS))}
    taken_over = _items_by_partition(suite, "contacts")
    # The survivor applied the second run's changes of the dead replica's partitions too.
    assert sum(taken_over.values()) > sum(applied["contacts"].values())

    # It comes back: the survivor hands it half of the partitions again.
    suite.restart("contacts-2")
    pids["contacts-2"] = suite.pid("contacts-2")
    eventually_sync(
        lambda: (s := _split(suite, pids)) and sorted(len(p) for p in s.values()) == [4, 4],
        timeout=60,
        message="the partitions were not handed back",
    )
