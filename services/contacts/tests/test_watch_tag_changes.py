"""tag_changes.watch against a real nats-server: every change after the cursor, in order,
exactly once, through one bounded batch at a time; through lost deliveries, a deleted
consumer and a NATS restart; and a cursor whose changes the stream no longer keeps."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from structlog.testing import capture_logs

from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as pb_grpc
from listboss_common import bus
from listboss_common.errors import ServiceError
from listboss_contacts import tag_changes
from listboss_contacts.grpc_api import METHOD_SCOPES, ContactsServicer
from listboss_contacts.tag_changes import ChangeReader, TagSelector, watch
from listboss_testing import bearer, binding

STREAM = bus.TAG_CHANGES.name
EVERY_TAG = TagSelector([])


async def publish(js, producer: str, count: int, start: int = 0, key: str = "a") -> list[int]:
    """``count`` changes for ``producer`` with ids ``start``…; returns their stream sequences."""
    sequences = []
    for number in range(start, start + count):
        change = pb.TagChange(id=str(number), tag_key=key, tag=f"producers/{producer}/tags/1.{key}")
        ack = await js.publish(bus.tag_changes_subject(producer), change.SerializeToString())
        sequences.append(ack.seq)
    return sequences


async def take(iterator, count: int, timeout: float = 20.0, pause: float = 0.0) -> list:
    got = []

    async def read():
        async for item in iterator:
            got.append(item)
            if len(got) == count:
                return
            if pause:
                await asyncio.sleep(pause)

    await asyncio.wait_for(read(), timeout)
    return got


async def watch_consumers(js) -> list:
    return [c for c in await js.consumers_info(STREAM) if c.config.description == "WatchTagChanges"]


async def test_every_change_in_order_one_bounded_batch_at_a_time(js):
    await publish(js, "alice", 300)
    await publish(js, "bob", 50)  # another producer's changes, between alice's
    await publish(js, "alice", 300, start=300)
    stopping = asyncio.Event()
    changes = watch(js, "alice", 0, EVERY_TAG, stopping, batch=64, poll=0.2)
    first = await take(changes, 10)

    # The watcher's caller is busy with the tenth change: nothing more was asked of NATS
    # than the batch in hand.
    [consumer] = await watch_consumers(js)
    assert consumer.config.ack_policy == "none" and consumer.config.filter_subject == "listboss.tagchanges.alice"
    assert consumer.delivered.consumer_seq == 64
    assert consumer.num_pending == 600 - 64

    rest = await take(changes, 590)
    items = first + rest
    assert [int(change.id) for change, _ in items] == list(range(600))
    sequences = [sequence for _, sequence in items]
    assert sequences == sorted(set(sequences))
    await changes.aclose()
    assert await watch_consumers(js) == []  # removed when the watcher ends


async def test_resuming_after_a_cursor_misses_nothing_and_repeats_nothing(js):
    await publish(js, "alice", 100)
    stopping = asyncio.Event()
    reading = watch(js, "alice", 0, EVERY_TAG, stopping, batch=32, poll=0.2)
    first = await take(reading, 45)
    await reading.aclose()
    cursor = tag_changes.encode_cursor(first[-1][1])
    await publish(js, "alice", 20, start=100)

    resumed = watch(js, "alice", tag_changes.decode_cursor(cursor), EVERY_TAG, stopping, batch=32, poll=0.2)
    rest = await take(resumed, 75)
    await resumed.aclose()
    assert [int(change.id) for change, _ in first + rest] == list(range(120))


async def test_filtered_changes_move_the_cursor_once_quiet(js):
    await publish(js, "alice", 3, key="a")
    skipped = await publish(js, "alice", 2, start=3, key="b")
    stopping = asyncio.Event()
    reading = watch(js, "alice", 0, TagSelector(["a"]), stopping, idle=0.3, poll=0.2)
    got = await take(reading, 4)
    await reading.aclose()
    assert [change.id for change, _ in got[:3]] == ["0", "1", "2"]
    assert got[3] == (None, skipped[-1])


async def test_a_delivery_lost_in_transit_is_read_again(js, monkeypatch):
    await publish(js, "alice", 200)
    original_fetch = ChangeReader.fetch
    lost = []

    async def losing_fetch(self, timeout):
        # Drop one message between the server and the reader, once, as a broken
        # connection would: the consumer (no acks) has counted it as delivered.
        subscription = self._subscription
        if subscription is not None and not lost:
            fetch = subscription.fetch

            async def fetch_and_lose(batch, timeout):
                messages = await fetch(batch, timeout=timeout)
                if len(messages) > 5 and not lost:
                    lost.append(messages.pop(5))
                return messages

            subscription.fetch = fetch_and_lose
        return await original_fetch(self, timeout)

    monkeypatch.setattr(ChangeReader, "fetch", losing_fetch)
    stopping = asyncio.Event()
    reading = watch(js, "alice", 0, EVERY_TAG, stopping, batch=50, poll=0.2)
    with capture_logs() as logs:
        got = await take(reading, 200)
    await reading.aclose()
    assert lost
    assert [entry["after"] for entry in logs if entry["event"] == "tag-change delivery lost; reading again"] == [
        lost[0].metadata.sequence.stream - 1
    ]
    assert [int(change.id) for change, _ in got] == list(range(200))


async def test_a_consumer_deleted_under_the_watcher_is_made_again(js):
    await publish(js, "alice", 100)
    stopping = asyncio.Event()
    reading = watch(js, "alice", 0, EVERY_TAG, stopping, batch=40, poll=0.2)
    first = await take(reading, 30)
    # As nats-server does once a client has read nothing for the inactive threshold.
    [consumer] = await watch_consumers(js)
    await js.delete_consumer(STREAM, consumer.name)
    rest = await take(reading, 70)
    await reading.aclose()
    assert [int(change.id) for change, _ in first + rest] == list(range(100))


async def test_a_nats_restart_during_a_watch_loses_and_repeats_nothing(js, nats_server, monkeypatch):
    await publish(js, "alice", 150)
    opened = []
    original_open = ChangeReader._open

    async def counting_open(self):
        opened.append(self.position)
        await original_open(self)

    monkeypatch.setattr(ChangeReader, "_open", counting_open)
    stopping = asyncio.Event()
    reading = watch(js, "alice", 0, EVERY_TAG, stopping, batch=50, poll=0.2)
    first = await take(reading, 60)
    nats_server.stop()
    nats_server.start()
    for _ in range(100):  # the client reconnects (bounded)
        with contextlib.suppress(Exception):
            await publish(js, "alice", 50, start=150)
            break
        await asyncio.sleep(0.1)
    rest = await take(reading, 140, timeout=30)
    await reading.aclose()
    assert [int(change.id) for change, _ in first + rest] == list(range(200))
    assert opened[0] == 0 and len(opened) >= 2  # a new consumer after the restart, from where it was


async def test_watching_ends_when_stopping(js):
    await publish(js, "alice", 5)
    stopping = asyncio.Event()
    reading = watch(js, "alice", 0, EVERY_TAG, stopping, poll=0.2)
    await take(reading, 5)
    stopping.set()
    assert await asyncio.wait_for(take(reading, 1), 5) == []
    assert await watch_consumers(js) == []


async def test_a_cursor_before_the_oldest_kept_change_is_expired(js):
    sequences = await publish(js, "alice", 10)
    await js.purge_stream(STREAM, seq=sequences[6])  # keeps the changes from the seventh on
    stopping = asyncio.Event()

    # From the cursor of the fifth change: the sixth is gone, so the watcher would miss it.
    with pytest.raises(ServiceError) as error:
        await take(watch(js, "alice", sequences[4], EVERY_TAG, stopping, poll=0.2), 1)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION and error.value.reason == "CURSOR_EXPIRED"

    # From the sixth's cursor, and from an empty one (the oldest kept): nothing is missing.
    for after in (sequences[5], 0):
        reading = watch(js, "alice", after, EVERY_TAG, stopping, poll=0.2)
        got = await take(reading, 4)
        await reading.aclose()
        assert [change.id for change, _ in got] == ["6", "7", "8", "9"]


async def test_an_expired_cursor_is_failed_precondition_over_grpc(js, grpc_server):
    sequences = await publish(js, "alice", 4)
    await js.purge_stream(STREAM, seq=sequences[3])
    servicer = ContactsServicer(None, js)
    served = await grpc_server(
        [
            binding(
                pb.DESCRIPTOR.services_by_name["ContactsService"],
                pb_grpc.add_ContactsServiceServicer_to_server,
                servicer,
                METHOD_SCOPES,
            )
        ]
    )
    try:
        stream = pb_grpc.ContactsServiceStub(served.channel).WatchTagChanges(
            pb.WatchTagChangesRequest(parent="producers/alice", cursor=tag_changes.encode_cursor(sequences[0])),
            metadata=bearer("alice"),
            timeout=10,
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for _ in stream:
                pass
    finally:
        servicer.close_streams()
        await served.close()
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(error.value)
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "CURSOR_EXPIRED"
