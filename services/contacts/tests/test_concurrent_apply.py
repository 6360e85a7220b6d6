"""Two appliers on one PostgreSQL database at once, as two contacts replicas run: each applies its
own share of the events, shuffled, over the same contacts and tags. They must end where one
applier applying every event ends: same contacts, tag links, tag counts, history, product links
and dashboard events, with no deadlock and no lost counter update, and the last tag change the
outbox holds for each link must be the link's final state."""

from __future__ import annotations

import random
import threading

import pytest
import sqlalchemy as sa

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common.db import create_engine
from listboss_contacts import schema
from listboss_contacts.consumer import ChangeApplier

pytestmark = pytest.mark.postgres

ADD = contact_change_pb2.TagOperation.ACTION_ADD
REMOVE = contact_change_pb2.TagOperation.ACTION_REMOVE
EVENTS = 900
PEOPLE = 30
BATCHES_TIMEOUT = 120  # seconds for each applier's whole share


def make_changes(prefix: str, seed: int) -> list[contact_change_pb2.ContactChange]:
    """The same events for any ``prefix`` of the producers' names (runs side by side in one database)."""
    rnd = random.Random(seed)
    changes = []
    for number in range(EVENTS):
        person = rnd.randrange(PEOPLE)
        event = event_pb2.Event(
            id=f"e{number}",
            producer=prefix + rnd.choice(["alice", "bob"]),
            type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
            product=event_pb2.Product(id=rnd.choice(["1", "2", "3"])),
            person=event_pb2.Person(email=f"p{person}@example.com"),
        )
        # Few distinct times: equal times make the event id decide.
        event.occur_time.FromSeconds(1_700_000_000 + rnd.randrange(200))
        change = contact_change_pb2.ContactChange(event=event, fired_segmentations=["seg"])
        if rnd.random() < 0.5:
            change.contact_data.update({"name": f"Name {number}", "phone": f"+55 {number}"})
        for key in rnd.sample(["a", "b", "c", "d"], rnd.randrange(1, 4)):
            change.tag_operations.add(
                action=ADD if rnd.random() < 0.6 else REMOVE,
                tag_key=key,
                tag_display_name=key.upper(),
                automatic=False,
                segmentation=f"seg-{number % 3}",
            )
        changes.append(change)
    return changes


def apply_all(applier: ChangeApplier, changes: list, batch: int, errors: list) -> None:
    try:
        for start in range(0, len(changes), batch):
            applier.apply(changes[start : start + batch])
    except Exception as error:  # reported by the test
        errors.append(error)


def final_state(engine: sa.Engine, prefix: str) -> dict:
    """What the producers named ``prefix``... hold, their names without the prefix."""
    with engine.connect() as connection:

        def rows(query: str) -> list:
            found = connection.exec_driver_sql(query, (prefix + "%",))
            return sorted((row[0].removeprefix(prefix), *row[1:]) for row in found)

        links = rows(
            "SELECT c.producer, c.email, t.product, t.key, l.present, l.stamp_time, l.stamp_event, l.segmentation"
            " FROM contact_tags l JOIN contacts c ON c.id = l.contact_id JOIN tags t ON t.id = l.tag_id"
            " WHERE c.producer LIKE %s"
        )
        last_published = {}
        for producer, email, product, key, added in connection.exec_driver_sql(
            "SELECT o.producer, c.email, o.product, o.tag_key, o.added FROM tag_change_outbox o"
            " JOIN contacts c ON c.id = o.contact_id WHERE o.producer LIKE %s ORDER BY o.id",
            (prefix + "%",),
        ):
            last_published[(producer.removeprefix(prefix), email, product, key)] = added
        return dict(
            contacts=rows(
                "SELECT producer, email, display_name, phone, attributes, attribute_stamps, data_time, data_event,"
                " first_event_time, last_event_time FROM contacts WHERE producer LIKE %s"
            ),
            links=links,
            tag_counts=rows("SELECT producer, product, key, contact_count FROM tags WHERE producer LIKE %s"),
            counted_links=rows(
                "SELECT t.producer, t.product, t.key, count(l.contact_id) FROM tags t"
                " LEFT JOIN contact_tags l ON l.tag_id = t.id AND l.present"
                " WHERE t.producer LIKE %s GROUP BY t.producer, t.product, t.key"
            ),
            history=rows(
                "SELECT h.producer, h.event_id, c.email, h.added_tags, h.removed_tags, h.fired_segmentations"
                " FROM history h JOIN contacts c ON c.id = h.contact_id WHERE h.producer LIKE %s"
            ),
            products=rows(
                # Not first_event_time: the oldest event of the batch that linked them, which depends on batching.
                "SELECT p.producer, c.email, p.product FROM contact_products p"
                " JOIN contacts c ON c.id = p.contact_id WHERE p.producer LIKE %s"
            ),
            daily_events=rows(
                "SELECT producer, product, day, event_type, events FROM product_daily WHERE producer LIKE %s"
            ),
            captured=rows(
                "SELECT producer, product, sum(captured) FROM product_daily WHERE producer LIKE %s"
                " GROUP BY producer, product"
            ),
            linked=rows(
                "SELECT producer, product, count(*) FROM contact_products WHERE producer LIKE %s"
                " GROUP BY producer, product"
            ),
            last_published=sorted(last_published.items()),
            present_links=sorted(
                ((producer, email, product, key), present) for producer, email, product, key, present, *_ in links
            ),
        )


def test_two_concurrent_appliers_end_where_one_applier_ends(postgres_url):
    engine = create_engine(postgres_url)
    try:
        schema.migrate_database(engine)
        alone = make_changes("one-", seed=7)
        random.Random(1).shuffle(alone)
        apply_all(ChangeApplier(engine), alone, 100, errors := [])
        assert not errors

        # Two shares of the events (every event in one of them), each shuffled: the same
        # contacts and tags in both, applied in different orders at the same time.
        shares: list[list] = [[], []]
        for change in make_changes("two-", seed=7):
            shares[random.Random(change.event.id).randrange(2)].append(change)
        for number, share in enumerate(shares):
            random.Random(number).shuffle(share)
        threads = [
            threading.Thread(target=apply_all, args=(ChangeApplier(engine), share, batch, errors))
            for share, batch in zip(shares, (40, 70), strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(BATCHES_TIMEOUT)
        assert not any(thread.is_alive() for thread in threads), "an applier did not finish in time"
        assert not errors, errors  # a deadlock or a unique violation would show here

        one, two = final_state(engine, "one-"), final_state(engine, "two-")
        assert len(one["history"]) == EVENTS
        assert one["tag_counts"] == one["counted_links"]
        assert two["tag_counts"] == two["counted_links"]
        assert one["captured"] == one["linked"] and two["captured"] == two["linked"]
        assert one["last_published"] == [item for item in one["present_links"] if item in one["last_published"]]
        assert two["last_published"] == [item for item in two["present_links"] if item in two["last_published"]]
        for part in ("contacts", "links", "tag_counts", "history", "products", "daily_events", "captured"):
            assert two[part] == one[part], part
    finally:
        engine.dispose()
