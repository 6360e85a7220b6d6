"""Streams, publishing and packing against a real nats-server with JetStream (the
workers are tested in test_worker.py)."""

from __future__ import annotations

import itertools

import pytest
from nats.js.api import StorageType

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import bus

STREAM = bus.EVENTS.name
DEADLETTER = bus.DEADLETTER.name


async def publish(js, payload: bytes, producer: str = "alice", msg_id: str | None = None):
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    return await js.publish(bus.events_subject(producer), payload, headers=headers)


async def test_nats_msg_id_deduplicates(js):
    first = await publish(js, b"event", msg_id="alice/e-1")
    second = await publish(js, b"event again", msg_id="alice/e-1")
    other = await publish(js, b"other", msg_id="alice/e-2")

    assert first.duplicate is not True
    assert second.duplicate is True
    assert second.seq == first.seq
    assert other.duplicate is not True
    info = await js.stream_info(STREAM)
    assert info.state.messages == 2
    stored = await js.get_msg(STREAM, seq=first.seq)
    assert stored.data == b"event"


async def test_ensure_streams_is_idempotent_and_file_backed(js):
    await bus.ensure_streams(js, [bus.EVENTS, bus.CHANGES, bus.DEADLETTER])
    await bus.ensure_streams(js, [bus.EVENTS, bus.CHANGES, bus.DEADLETTER])
    info = await js.stream_info(bus.CHANGES.name)
    assert info.config.subjects == ["listboss.changes.>"]
    assert info.config.storage in (StorageType.FILE, "file")
    assert info.config.duplicate_window == pytest.approx(120.0)


async def test_ensure_streams_brings_settings_up_to_date(js):
    changed = bus.EVENTS.config()
    changed.duplicate_window = 10.0
    await js.update_stream(changed)
    assert (await js.stream_info(STREAM)).config.duplicate_window == pytest.approx(10.0)
    await bus.ensure_streams(js, [bus.EVENTS])
    assert (await js.stream_info(STREAM)).config.duplicate_window == pytest.approx(120.0)


# --- pack and content_id: pure functions --------------------------------------------------------


def test_pack_splits_by_size():
    items = list(range(10))
    groups = bus.pack(items, lambda _: 100, limit=250)  # 108 per item with framing: two per group
    assert groups == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_pack_keeps_order_and_every_item():
    sizes = {i: (i * 37) % 300 for i in range(200)}
    groups = bus.pack(list(sizes), sizes.__getitem__, limit=1000)
    assert [i for group in groups for i in group] == list(sizes)
    for group in groups:
        assert sum(sizes[i] + 8 for i in group) <= 1000
    # Greedy: a group closes only when the next item would not fit.
    for group, following in itertools.pairwise(groups):
        assert sum(sizes[i] + 8 for i in group) + sizes[following[0]] + 8 > 1000


def test_pack_oversized_item_travels_alone():
    sizes = {"a": 10, "big": 5000, "b": 10, "c": 10}
    assert bus.pack(list(sizes), sizes.__getitem__, limit=100) == [["a"], ["big"], ["b", "c"]]


def test_pack_empty_and_default_limit():
    assert bus.pack([], len) == []
    items = [b"x" * 1000] * 1000  # ~1 MB in total: more than one default-limit group
    groups = bus.pack(items, len)
    assert len(groups) == 2
    assert all(sum(len(i) + 8 for i in g) <= bus.MAX_PACKED_BYTES for g in groups)


def test_content_id_is_stable_and_separates_parts():
    assert bus.content_id("alice", "e1", "e2") == bus.content_id("alice", "e1", "e2")
    assert len(bus.content_id("x")) == 32
    assert bus.content_id("alice", "e1") != bus.content_id("alice", "e2")
    assert bus.content_id("ab", "c") != bus.content_id("a", "bc")


def test_packed_items_round_trip_and_label_items():
    events = [event_pb2.Event(id=f"e{i}", producer="alice") for i in range(3)]
    data = bus.EVENT_ITEMS.encode(events)
    assert bus.EVENT_ITEMS.decode(data) == events
    assert bus.EVENT_ITEMS.describe(events[1]) == ("alice", "e1")
    change = contact_change_pb2.ContactChange(event=events[2])
    assert bus.CHANGE_ITEMS.describe(change) == ("alice", "e2")
    assert bus.CHANGE_ITEMS.decode(bus.CHANGE_ITEMS.encode([change])) == [change]


def test_packed_items_that_do_not_decode_are_poison():
    with pytest.raises(bus.PoisonMessage, match="not a EventBatch"):
        bus.EVENT_ITEMS.decode(b"\xff\xff\xff")
