"""The publisher against a real JetStream: packing that survives retries, and the wire form."""

from __future__ import annotations

import time

import nats.errors
import pytest

from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_common.errors import ServiceError
from listboss_ingest.publisher import EventPublisher, pack_events, pack_groups

STREAM = bus.EVENTS.name


def make_events(count: int, nanos: int) -> list[event_pb2.Event]:
    events = []
    for index in range(count):
        event = event_pb2.Event(
            id=f"e-{index:05d}",
            producer="alice",
            type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
            product=event_pb2.Product(id="7", name="Course " * 20),
            person=event_pb2.Person(email=f"person{index}@example.com", name="Person " * 10),
        )
        event.occur_time.FromSeconds(int(time.time()) - 60)
        event.receive_time.seconds = int(time.time())
        event.receive_time.nanos = nanos
        events.append(event)
    return events


def groups_of(events):
    return [(producer, group) for producer, group, _ in pack_groups(events, [e.SerializeToString() for e in events])]


def test_packing_does_not_depend_on_the_receive_time():
    # nanos=1 takes 1 varint byte, 999999999 takes 5: 4 bytes per event would shift the cuts.
    early, late = make_events(6000, nanos=1), make_events(6000, nanos=999_999_999)
    assert len(groups_of(early)) > 1
    assert groups_of(early) == groups_of(late)


def test_pack_events_is_the_wire_form_of_an_event_batch():
    events = make_events(3, nanos=5)
    events[1].person.name = "x" * 20_000  # a length needing a 3-byte varint
    packed = pack_events([e.SerializeToString() for e in events])
    assert packed == event_pb2.EventBatch(events=events).SerializeToString()
    assert list(event_pb2.EventBatch.FromString(packed).events) == events


class FailingOnce:
    """A JetStream context whose publishes of message number ``fail`` raise once."""

    def __init__(self, js, fail: str):
        self._js = js
        self._fail = fail
        self._nc = js._nc

    async def publish(self, subject, payload, timeout=None, headers=None):
        if headers["Nats-Msg-Id"].endswith(self._fail):
            self._fail = "-never-"
            raise nats.errors.TimeoutError
        return await self._js.publish(subject, payload, timeout=timeout, headers=headers)


async def test_a_retried_batch_after_a_partial_failure_stores_every_event_once(js):
    first_try = make_events(6000, nanos=1)
    with pytest.raises(ServiceError):
        await EventPublisher(FailingOnce(js, "/1")).publish_many("req-retry", first_try)
    retry = make_events(6000, nanos=999_999_999)  # stamped again, longer varints
    duplicates = await EventPublisher(js).publish_many("req-retry", retry)

    cuts = groups_of(retry)
    assert len(cuts) > 2
    expected = [
        number != 1 for _, group, number in pack_groups(retry, [e.SerializeToString() for e in retry]) for _ in group
    ]
    assert duplicates == expected  # only message 1 was new on the retry
    info = await js.stream_info(STREAM)
    stored = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        stored.extend(e.id for e in event_pb2.EventBatch.FromString((await js.get_msg(STREAM, seq=seq)).data).events)
    assert sorted(stored) == sorted(e.id for e in retry)  # each event exactly once, none lost
