"""The use cases with a fake publisher: no server, no NATS."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from listboss.events.v1 import event_pb2
from listboss_common.auth import Principal
from listboss_common.errors import InvalidArgument, ServiceError
from listboss_ingest import handlers
from listboss_ingest.sources import hotmart

WEBHOOK = (Path(__file__).resolve().parents[3] / "tests" / "data" / "hotmart" / "PURCHASE_APPROVED.json").read_bytes()
GRPC = event_pb2.EVENT_SOURCE_GRPC
ALICE = Principal("acme")
INTERNAL = Principal(None)


def canonical(**fields) -> event_pb2.Event:
    """A valid canonical event of producer acme, changed by ``fields``."""
    made = event_pb2.Event(
        id="evt-1",
        producer="acme",
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id="42"),
        person=event_pb2.Person(email="ana@example.com"),
    )
    made.occur_time.GetCurrentTime()
    for name, value in fields.items():
        setattr(made, name, value)
    return made


class FakePublisher:
    """Keeps what it is given; an id in ``stored`` is a duplicate."""

    def __init__(self, stored: set[str] = frozenset()):
        self.stored = set(stored)
        self.published: list[event_pb2.Event] = []
        self.request_ids: list[str] = []

    async def publish_one(self, event: event_pb2.Event, timeout: float | None = None) -> bool:
        self.published.append(event)
        duplicate = event.id in self.stored
        self.stored.add(event.id)
        return duplicate

    async def publish_many(self, request_id: str, events: list[event_pb2.Event]) -> list[bool]:
        self.request_ids.append(request_id)
        return [await self.publish_one(event) for event in events]


async def test_an_event_takes_the_callers_producer_and_is_stamped():
    publisher = FakePublisher()
    sent = canonical(producer="")
    stored, duplicate = await handlers.ingest_event(publisher, sent, ALICE, source=GRPC)
    assert (stored.producer, stored.source, duplicate) == ("acme", GRPC, False)
    assert stored.HasField("receive_time")
    assert sent.producer == "" and not sent.HasField("receive_time")  # the argument is not changed
    assert publisher.published == [stored]


async def test_an_event_of_another_producer_is_refused_unpublished():
    publisher = FakePublisher()
    with pytest.raises(ServiceError) as refused:
        await handlers.ingest_event(publisher, canonical(producer="other"), ALICE, source=GRPC)
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert publisher.published == []


async def test_an_invalid_event_names_its_fields_relative_to_the_event():
    with pytest.raises(InvalidArgument) as refused:
        await handlers.ingest_event(FakePublisher(), canonical(id=""), INTERNAL, source=GRPC)
    assert [v.field for v in refused.value.violations] == ["id"]


async def test_a_batch_judges_each_event_on_its_own():
    publisher = FakePublisher(stored={"old"})
    events = [
        canonical(id="a"),
        canonical(id=""),
        canonical(id="a"),
        canonical(id="b", producer="other"),
        canonical(id="old"),
    ]
    outcome = await handlers.ingest_batch(publisher, events, "", ALICE, source=GRPC)
    assert [(event_id, result) for event_id, result, _ in outcome.results] == [
        ("a", handlers.ACCEPTED),
        ("", handlers.REJECTED),
        ("a", handlers.DUPLICATE),
        ("b", handlers.REJECTED),
        ("old", handlers.DUPLICATE),
    ]
    assert [v.field for v in outcome.results[3][2]] == ["producer"]
    assert (outcome.accepted, outcome.duplicates, outcome.rejected) == (1, 2, 2)
    assert publisher.request_ids and publisher.request_ids[0]  # derived from the events' ids


@pytest.mark.parametrize(
    "events, request_id, field",
    [
        ([], "", "events"),
        ([canonical()] * (handlers.MAX_BATCH_EVENTS + 1), "", "events"),
        ([canonical()], "r" * 129, "request_id"),
    ],
)
async def test_a_batch_beyond_its_limits_is_refused_whole(events, request_id, field):
    with pytest.raises(InvalidArgument) as refused:
        await handlers.ingest_batch(FakePublisher(), events, request_id, INTERNAL, source=GRPC)
    assert [v.field for v in refused.value.violations] == [field]


async def test_a_webhook_becomes_a_stamped_event_then_is_stored():
    publisher = FakePublisher()
    event = handlers.webhook_event(hotmart, WEBHOOK, "acme")
    assert (event.producer, event.source) == ("acme", event_pb2.EVENT_SOURCE_WEBHOOK)
    assert event.HasField("receive_time")
    assert await handlers.store_webhook_event(publisher, event) is False
    assert await handlers.store_webhook_event(publisher, event) is True


def test_a_webhook_over_the_size_limit_is_refused_on_payload():
    with pytest.raises(InvalidArgument) as refused:
        handlers.webhook_event(hotmart, " " * handlers.MAX_WEBHOOK_BYTES + "{}", "acme")
    assert [v.field for v in refused.value.violations] == ["payload"]
