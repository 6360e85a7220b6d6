"""The tag-change relay on PostgreSQL with several replicas (real nats-server, real PostgreSQL):
rows go out in id order even when transactions commit out of id order, and when the relaying
replica dies another one relays within a few seconds."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss_common import bus
from listboss_common.db import create_engine
from listboss_contacts import schema
from listboss_contacts.tag_changes import OutboxRelay
from listboss_testing import eventually

pytestmark = pytest.mark.postgres


@pytest.fixture
def engines(postgres_url):
    """Two engines on one migrated contacts database: two replicas' connection pools."""
    made = [create_engine(postgres_url), create_engine(postgres_url)]
    schema.migrate_database(made[0])
    yield made
    for engine in made:
        engine.dispose()


@pytest.fixture
async def js(nc):
    context = nc.jetstream()
    await bus.ensure_streams(context, [bus.TAG_CHANGES])
    return context


def outbox_row(event_id: str, tag: str = "buyer") -> dict:
    return dict(
        producer="alice",
        contact_id=1,
        product="42",
        tag_key=tag,
        added=True,
        event_id=event_id,
        segmentation="",
        occur_time=1_700_000_000_000_000,
        commit_time=int(time.time() * 1_000_000),
    )


def write(connection, event_id: str) -> int:
    """Writes one outbox row in the connection's transaction (after a first write, as the
    contacts write path does: the transaction has its id before it draws an outbox id)."""
    connection.execute(sa.text("SELECT pg_current_xact_id()"))
    return connection.execute(
        schema.tag_change_outbox.insert().values(**outbox_row(event_id)).returning(schema.tag_change_outbox.c.id)
    ).scalar_one()


def commit_one(engine, event_id: str) -> int:
    with engine.begin() as connection:
        return write(connection, event_id)


async def published(js) -> list[tuple[int, str]]:
    """(outbox id, event) of every tag change in the stream, in stream order."""
    info = await js.stream_info(bus.TAG_CHANGES.name)
    found: list[tuple[int, str]] = []
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        change = pb.TagChange.FromString((await js.get_msg(bus.TAG_CHANGES.name, seq=seq)).data)
        found.append((int(change.id), change.event.rsplit("/", 1)[1]))
    return found


async def test_a_late_commit_with_a_smaller_id_is_not_overtaken(engines, js):
    engine = engines[0]
    relay = OutboxRelay(engine, js)
    slow = engine.connect()
    try:
        slow.begin()
        first_id = await asyncio.to_thread(write, slow, "slow")  # drawn first, committed last
        second_id = await asyncio.to_thread(commit_one, engine, "fast")
        assert second_id > first_id
        # The fast one is committed, but the slow one may still commit before it: held back.
        assert await relay.relay_once() == 0
        assert await published(js) == []
        await asyncio.to_thread(slow.commit)
        assert await relay.relay_once() == 2
        assert await published(js) == [(first_id, "slow"), (second_id, "fast")]

        # A transaction that rolls back leaves a hole that is passed over once it has ended.
        slow.begin()
        await asyncio.to_thread(write, slow, "abandoned")
        third_id = await asyncio.to_thread(commit_one, engine, "after-the-hole")
        assert await relay.relay_once() == 0
        await asyncio.to_thread(slow.rollback)
        assert await relay.relay_once() == 1
        assert (await published(js))[-1] == (third_id, "after-the-hole")
    finally:
        slow.close()
        await asyncio.to_thread(relay._resign)


async def test_concurrent_writers_are_published_in_id_order(engines, js):
    relay = OutboxRelay(engines[0], js, poll_interval=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))

    def writer(name: str, count: int) -> None:
        # Each transaction stays open a little, so the two writers' transactions overlap.
        for number in range(count):
            with engines[1].begin() as connection:
                write(connection, f"{name}-{number}")
                connection.execute(sa.text("SELECT pg_sleep(0.002)"))

    try:
        await asyncio.gather(asyncio.to_thread(writer, "a", 150), asyncio.to_thread(writer, "b", 150))

        async def all_out():
            found = await published(js)
            return found if len(found) == 300 else None

        found = await eventually(all_out, timeout=20, message="not every tag change was relayed")
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    ids = [row_id for row_id, _ in found]
    assert ids == sorted(ids) and len(set(ids)) == 300


async def test_another_replica_relays_within_seconds_when_the_relaying_one_dies(engines, js, postgres_url):
    first = OutboxRelay(engines[0], js, poll_interval=0.2)
    second = OutboxRelay(engines[1], js, poll_interval=0.2)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    first_task = asyncio.create_task(first.run(stop_first))
    await asyncio.to_thread(commit_one, engines[0], "before")
    await eventually(lambda: _count(js, 1), timeout=10, message="the first replica never relayed")
    second_task = asyncio.create_task(second.run(stop_second))
    try:
        await asyncio.sleep(0.5)
        assert first._leader is not None and second._leader is None  # the first holds the relay lock

        # The first replica dies: its loop stops where it is and its database session ends
        # (as when the process is killed), without unlocking anything.
        session = first._leader
        first._leader = None
        first_task.cancel()
        await asyncio.gather(first_task, return_exceptions=True)
        admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                pid = connection.execute(
                    sa.text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
                ).scalar_one()
                killed = time.monotonic()
                connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            admin.dispose()
        session.invalidate()

        await asyncio.to_thread(commit_one, engines[1], "after")
        await eventually(lambda: _count(js, 2), timeout=5, message="no replica relayed after the first died")
        failover = time.monotonic() - killed
        assert second._leader is not None
        assert [event for _, event in await published(js)] == ["before", "after"]
        assert failover < 5.0
    finally:
        stop_second.set()
        await asyncio.wait_for(second_task, 10)


async def _count(js, wanted: int) -> bool:
    info = await js.stream_info(bus.TAG_CHANGES.name)
    return info.state.messages >= wanted
