"""Bus messages to domain values, and outbox rows to TagChange messages."""

from __future__ import annotations

from types import SimpleNamespace

from listboss.changes.v1 import contact_change_pb2
from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss.events.v1 import event_pb2
from listboss_contacts import domain, messages


def test_a_contact_change_becomes_a_domain_change():
    event = event_pb2.Event(
        id="e1",
        producer="alice",
        type=event_pb2.EVENT_TYPE_PURCHASE_REFUNDED,
        product=event_pb2.Product(id="42", name="Course"),
        person=event_pb2.Person(email="ana@example.com", name="Not chosen"),
    )
    event.occur_time.seconds, event.occur_time.nanos = 100, 123_456_789
    message = contact_change_pb2.ContactChange(
        event=event, fired_segmentations=["s1", "s2"], contact_data={"name": "Ana"}, backfill="b/1"
    )
    message.tag_operations.add(
        action=contact_change_pb2.TagOperation.ACTION_ADD,
        tag_key="x",
        tag_display_name="X",
        automatic=True,
        segmentation="s1",
    )
    message.tag_operations.add(action=contact_change_pb2.TagOperation.ACTION_REMOVE, tag_key="y", segmentation="s2")
    assert messages.change_from(message) == domain.Change(
        producer="alice",
        event_id="e1",
        event_type=event_pb2.EVENT_TYPE_PURCHASE_REFUNDED,
        product="42",
        email="ana@example.com",
        occur_time=100_123_456,
        operations=(domain.TagOperation("x", True, "X", True, "s1"), domain.TagOperation("y", False, "", False, "s2")),
        fired_segmentations=("s1", "s2"),
        contact_data={"name": "Ana"},
        backfill="b/1",
    )


def test_an_outbox_row_becomes_a_tag_change():
    row = SimpleNamespace(
        id=5,
        producer="alice",
        contact_id=7,
        product="42",
        tag_key="x",
        added=False,
        event_id="e1",
        segmentation="seg",
        occur_time=1_500_000,
        commit_time=2_000_000,
    )
    change = messages.tag_change_message(row)
    assert (change.id, change.contact, change.tag, change.event) == (
        "5",
        "producers/alice/contacts/7",
        "producers/alice/tags/42.x",
        "producers/alice/products/42/events/e1",
    )
    assert change.action == pb.TagChange.ACTION_REMOVED
    assert (change.occur_time.seconds, change.occur_time.nanos) == (1, 500_000_000)
