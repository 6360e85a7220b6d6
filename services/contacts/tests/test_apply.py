"""Applying contact changes on SQLite and PostgreSQL: capture, tags, counts, history, idempotence."""

from __future__ import annotations

import sqlalchemy as sa

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_contacts import queries, schema
from listboss_contacts.apply import TagIds, apply_changes

ADD = contact_change_pb2.TagOperation.ACTION_ADD
REMOVE = contact_change_pb2.TagOperation.ACTION_REMOVE


def change(event_id, email, seconds, adds=(), removes=(), *, producer="alice", product="42", name="Ana"):
    event = event_pb2.Event(
        id=event_id,
        producer=producer,
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id=product, name="Course"),
        person=event_pb2.Person(email=email, name=name, phone="+55 11 9999"),
    )
    event.occur_time.FromSeconds(seconds)
    # As the automatic segmentations choose: email and name (contacts stores only chosen data).
    result = contact_change_pb2.ContactChange(
        event=event, fired_segmentations=["seg"], contact_data={"email": email, "name": name}
    )
    for key in removes:
        result.tag_operations.add(
            action=REMOVE, tag_key=key, tag_display_name=key.title(), automatic=True, segmentation="seg"
        )
    for key in adds:
        result.tag_operations.add(
            action=ADD, tag_key=key, tag_display_name=key.title(), automatic=True, segmentation="seg"
        )
    return result


def apply(engine, changes, tag_ids=None):
    tag_ids = tag_ids or TagIds()
    with engine.begin() as connection:
        result = apply_changes(connection, changes, tag_ids)
    tag_ids.commit(result.tag_ids)
    return result


def tag_state(engine, producer="alice"):
    with engine.connect() as connection:
        found = queries.list_contacts(connection, producer, None, None, 1000)
    return {row.email: sorted(t.key for t in tag_rows) for row, tag_rows in found}


def counts(engine, producer="alice"):
    with engine.connect() as connection:
        return {row.key: row.contact_count for row in queries.list_tags(connection, producer, None, None, 1000)}


def test_captures_contact_with_auto_label_tags_and_history(engine):
    result = apply(engine, [change("e1", "ana@example.com", 100, adds=["cart-abandoned"])])
    assert result.applied == 1
    with engine.connect() as connection:
        [(row, tag_rows)] = queries.list_contacts(connection, "alice", None, None, 10)
        [entry] = queries.list_history(connection, "alice", "42", None, 10)
    # The event carries a phone, but no segmentation chose to send it: it is not stored.
    assert (row.email, row.display_name, row.phone, row.source) == ("ana@example.com", "Ana", "", 1)
    assert [(t.key, t.product, t.automatic, t.segmentation) for t in tag_rows] == [
        ("cart-abandoned", "42", True, "seg")
    ]
    assert entry.event_id == "e1" and entry.contact_created and entry.added_tags == ["cart-abandoned"]
    assert entry.contact_id == row.id and entry.fired_segmentations == ["seg"]


def test_same_event_twice_changes_nothing(engine):
    first = change("e1", "ana@example.com", 100, adds=["purchase-approved"])
    apply(engine, [first])
    again = apply(engine, [first, first])
    assert (again.applied, again.skipped) == (0, 2)
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.history)).scalar() == 1
    assert counts(engine) == {"purchase-approved": 1}


def test_older_event_arriving_later_does_not_bring_a_removed_tag_back(engine):
    approved = change("e2", "ana@example.com", 200, adds=["purchase-approved"], removes=["cart-abandoned"])
    abandoned = change("e1", "ana@example.com", 100, adds=["cart-abandoned"])
    apply(engine, [approved])
    apply(engine, [abandoned])
    assert tag_state(engine) == {"ana@example.com": ["purchase-approved"]}
    assert counts(engine) == {"purchase-approved": 1, "cart-abandoned": 0}


def test_ties_in_time_are_broken_by_event_id_in_any_order(engine):
    add = change("b", "ana@example.com", 100, adds=["x"])
    remove = change("a", "ana@example.com", 100, removes=["x"])
    apply(engine, [remove])
    apply(engine, [add])
    assert tag_state(engine) == {"ana@example.com": ["x"]}  # "b" > "a": the addition wins


def test_counts_follow_additions_and_removals(engine):
    apply(
        engine,
        [
            change("e1", "a@example.com", 100, adds=["x"]),
            change("e2", "b@example.com", 100, adds=["x"]),
            change("e3", "c@example.com", 100, adds=["x", "y"]),
        ],
    )
    apply(engine, [change("e4", "b@example.com", 200, removes=["x"])])
    assert counts(engine) == {"x": 2, "y": 1}


def test_contact_data_is_the_newest_events(engine):
    apply(engine, [change("e2", "ana@example.com", 200, name="Ana Maria")])
    apply(engine, [change("e1", "ana@example.com", 100, name="Old Name")])
    with engine.connect() as connection:
        [(row, _)] = queries.list_contacts(connection, "alice", None, None, 10)
    assert row.display_name == "Ana Maria"
    assert (row.first_event_time, row.last_event_time) == (100_000_000, 200_000_000)


def test_producers_are_kept_apart(engine):
    apply(engine, [change("e1", "ana@example.com", 100, adds=["x"], producer="alice")])
    apply(engine, [change("e1", "ana@example.com", 100, adds=["y"], producer="bob")])
    assert tag_state(engine, "alice") == {"ana@example.com": ["x"]}
    assert tag_state(engine, "bob") == {"ana@example.com": ["y"]}


def test_filter_by_tags_with_not_and_paging(engine):
    apply(
        engine,
        [
            change(f"e{i}", f"p{i}@example.com", 100, adds=["approved"] + (["refunded"] if i % 3 == 0 else []))
            for i in range(10)
        ],
    )
    node = queries.parse_contact_filter('tag = "approved" AND NOT tag = "refunded"')
    with engine.connect() as connection:
        first = queries.list_contacts(connection, "alice", node, None, 4)
        rest = queries.list_contacts(connection, "alice", node, first[-1][0].id, 100)
    emails = [row.email for row, _ in first + rest]
    assert emails == [f"p{i}@example.com" for i in range(10) if i % 3]


def test_tag_named_by_resource_name_is_that_products_tag_only(engine):
    apply(engine, [change("e1", "a@example.com", 100, adds=["x"], product="1")])
    apply(engine, [change("e2", "b@example.com", 100, adds=["x"], product="2")])
    with engine.connect() as connection:
        by_key = queries.list_contacts(connection, "alice", queries.parse_contact_filter('tag = "x"'), None, 10)
        by_name = queries.list_contacts(
            connection, "alice", queries.parse_contact_filter('tag = "producers/alice/tags/2.x"'), None, 10
        )
        foreign = queries.list_contacts(
            connection, "alice", queries.parse_contact_filter('tag = "producers/bob/tags/2.x"'), None, 10
        )
    assert len(by_key) == 2
    assert [row.email for row, _ in by_name] == ["b@example.com"]
    assert foreign == []


def test_migrations_are_recorded_and_run_once(engine):
    schema.migrate_database(engine)  # second run: nothing to do
    with engine.connect() as connection:
        assert schema.ALEMBIC.current(connection) == schema.ALEMBIC.head()


def test_an_event_without_a_product_captures_and_records_but_links_no_product(engine):
    productless = change("e1", "ana@example.com", 100)
    productless.event.ClearField("product")
    result = apply(engine, [productless, change("e2", "bea@example.com", 200, adds=["purchase-approved"])])
    assert result.applied == 2
    with engine.connect() as connection:
        contacts = {
            row.email: (row.source, tag_rows)
            for row, tag_rows in queries.list_contacts(connection, "alice", None, None, 10)
        }
        product_history = queries.list_history(connection, "alice", "42", None, 10)
        links = connection.execute(sa.select(schema.contact_products)).all()
        history = connection.execute(sa.select(schema.history.c.event_id, schema.history.c.product)).all()
        daily = connection.execute(sa.select(schema.product_daily.c.product)).all()
    assert contacts["ana@example.com"] == (1, [])  # captured, label AUTO, no tag
    assert sorted(history) == [("e1", ""), ("e2", "42")]  # recorded with what it did: nothing
    assert [entry.event_id for entry in product_history] == ["e2"]  # no product lists it
    assert {link.product for link in links} == {"42"}
    assert {row.product for row in daily} == {"42"}


def test_a_batch_of_events_without_a_product_alone_is_applied(engine):
    productless = change("e1", "ana@example.com", 100)
    productless.event.ClearField("product")
    assert apply(engine, [productless]).applied == 1
    with engine.connect() as connection:
        assert [row.email for row, _ in queries.list_contacts(connection, "alice", None, None, 10)] == [
            "ana@example.com"
        ]
