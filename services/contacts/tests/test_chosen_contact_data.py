"""What segmentations chose to send is all contacts stores (SQLite and PostgreSQL), and
backfill changes re-apply tag operations of recorded events without a second history entry."""

from __future__ import annotations

import json

import sqlalchemy as sa

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_contacts import schema
from listboss_contacts.apply import TagIds, apply_changes

ADD = contact_change_pb2.TagOperation.ACTION_ADD


def change(event_id, seconds, data, adds=(), *, email="ana@example.com", backfill=""):
    event = event_pb2.Event(
        id=event_id,
        producer="alice",
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id="42", name="Course"),
        person=event_pb2.Person(email=email, name="In The Event", phone="+55 11 1111", country_code="BR"),
    )
    event.occur_time.FromSeconds(seconds)
    result = contact_change_pb2.ContactChange(event=event, contact_data=data, backfill=backfill)
    for key in adds:
        result.tag_operations.add(action=ADD, tag_key=key, tag_display_name=key, segmentation="seg")
    return result


def apply(engine, changes):
    tag_ids = TagIds()
    with engine.begin() as connection:
        result = apply_changes(connection, changes, tag_ids)
    return result


def contact(engine, email="ana@example.com"):
    with engine.connect() as connection:
        return connection.execute(sa.select(schema.contacts).where(schema.contacts.c.email == email)).first()


def rows(engine, table):
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.select(table))]


def test_only_chosen_data_is_stored(engine):
    apply(engine, [change("e1", 100, {"email": "ana@example.com", "name": "Ana"})])
    row = contact(engine)
    # The event carried a phone and a country; nobody chose them.
    assert (row.display_name, row.phone, row.country_code) == ("Ana", "", "")
    assert json.loads(row.attributes) == {"email": "ana@example.com", "name": "Ana"}
    apply(engine, [change("e2", 200, {"phone": "+55 11 2222", "country_code": "BR", "address.city": "Recife"})])
    row = contact(engine)
    assert (row.display_name, row.phone, row.country_code) == ("Ana", "+55 11 2222", "BR")
    assert json.loads(row.attributes)["address.city"] == "Recife"


def test_each_attribute_is_the_newest_in_any_order(engine):
    changes = [
        change("e1", 100, {"name": "Old", "phone": "1"}),
        change("e2", 300, {"name": "New"}),
        change("e3", 200, {"phone": "2", "name": "Middle"}),
    ]
    apply(engine, [changes[1]])
    apply(engine, [changes[2], changes[0]])
    apply(engine, changes)  # repeated: already applied
    row = contact(engine)
    assert (row.display_name, row.phone) == ("New", "2")


def test_backfill_changes_apply_tags_without_history_and_only_to_known_contacts(engine):
    live = change("e1", 100, {"email": "ana@example.com", "name": "Ana"})
    apply(engine, [live])
    history_before = rows(engine, schema.history)
    result = apply(
        engine,
        [
            change("e1", 100, {"document": "123"}, adds=["billet-buyers"], backfill="b/1"),
            change("e9", 100, {"name": "Ghost"}, adds=["billet-buyers"], email="ghost@example.com", backfill="b/1"),
        ],
    )
    assert (result.applied, result.skipped) == (1, 1)  # the ghost is skipped
    assert rows(engine, schema.history) == history_before
    assert contact(engine, "ghost@example.com") is None  # a backfill never captures anyone
    assert json.loads(contact(engine).attributes)["document"] == "123"
    with engine.connect() as connection:
        counts = dict(connection.execute(sa.select(schema.tags.c.key, schema.tags.c.contact_count)).all())
    assert counts == {"billet-buyers": 1}
    state = (rows(engine, schema.contact_tags), rows(engine, schema.tags), rows(engine, schema.history))
    apply(engine, [change("e1", 100, {"document": "123"}, adds=["billet-buyers"], backfill="b/2")])
    assert (rows(engine, schema.contact_tags), rows(engine, schema.tags), rows(engine, schema.history)) == state
