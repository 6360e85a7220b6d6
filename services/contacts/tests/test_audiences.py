"""Audience membership on SQLite and PostgreSQL: entries and exits written to the outbox as
batches are applied (incremental, idempotent), at creation (silent unless asked), on a new
filter, on erasure and as time passes (the sweep, with an injected clock); and a property:
any order, batching and redelivery of events ends in the memberships that evaluating every
filter from scratch gives, and the published entries and exits replay to them."""

from __future__ import annotations

import random
import threading

import grpc
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.pool import StaticPool

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common.db import is_postgres
from listboss_common.errors import ServiceError
from listboss_contacts import audiences, erasure, queries, schema
from listboss_contacts.apply import TagIds, apply_changes
from listboss_contacts.audiences import AudienceStore, AudienceSweeper

ADD = contact_change_pb2.TagOperation.ACTION_ADD
REMOVE = contact_change_pb2.TagOperation.ACTION_REMOVE
DAY = 86_400
T0 = 1_700_000_000
BUYERS = 'tag = "purchase-approved" AND NOT tag = "purchase-refunded"'


def change(event_id, email, seconds, adds=(), removes=(), *, producer="alice", product="42"):
    event = event_pb2.Event(
        id=event_id,
        producer=producer,
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id=product, name="Course"),
        person=event_pb2.Person(email=email, name="Ana"),
    )
    event.occur_time.FromSeconds(seconds)
    result = contact_change_pb2.ContactChange(event=event, contact_data={"email": email})
    for key in removes:
        result.tag_operations.add(action=REMOVE, tag_key=key, automatic=True, segmentation=f"auto-{key}")
    for key in adds:
        result.tag_operations.add(action=ADD, tag_key=key, automatic=True, segmentation=f"auto-{key}")
    return result


def apply(engine, changes, tag_ids=None):
    tag_ids = tag_ids or TagIds()
    with engine.begin() as connection:
        result = apply_changes(connection, changes, tag_ids)
    tag_ids.commit(result.tag_ids)
    return result


def create(engine, audience_id, filter_text, *, publish=False, now=T0 * 1_000_000, producer="alice"):
    with engine.begin() as connection:
        created, _ = AudienceStore(connection).create(producer, audience_id, "Name", filter_text, publish, now)
    return created


def emails(engine, producer="alice") -> dict[int, str]:
    with engine.connect() as connection:
        rows = connection.execute(sa.select(schema.contacts.c.id, schema.contacts.c.email)).all()
    return {row.id: row.email for row in rows}


def members(engine, audience_id, producer="alice") -> set[str]:
    names = emails(engine)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(schema.audience_members.c.contact_id)
            .join(schema.audiences, schema.audiences.c.id == schema.audience_members.c.audience_id)
            .where(schema.audiences.c.producer == producer, schema.audiences.c.audience_id == audience_id)
        ).scalars()
        return {names[contact_id] for contact_id in rows}


def member_count(engine, audience_id, producer="alice") -> int:
    with engine.connect() as connection:
        return AudienceStore(connection).get(producer, audience_id).member_count


def published(engine, names=None) -> list[tuple[str, str, bool, str]]:
    """The audience changes waiting in the outbox: (audience, email, entered, event), in id order."""
    names = names or emails(engine)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(schema.tag_change_outbox)
            .where(schema.tag_change_outbox.c.audience != "")
            .order_by(schema.tag_change_outbox.c.id)
        ).all()
    return [(row.audience, names.get(row.contact_id, "?"), row.added, row.event_id) for row in rows]


def clear_outbox(engine) -> None:
    with engine.begin() as connection:
        connection.execute(schema.tag_change_outbox.delete())


def test_batches_publish_entries_and_exits_and_a_redelivery_changes_nothing(engine):
    create(engine, "buyers", BUYERS)
    apply(engine, [change("e1", "ana@x.com", T0, adds=["purchase-approved"]), change("e2", "bob@x.com", T0)])
    assert published(engine) == [("buyers", "ana@x.com", True, "e1")]
    assert members(engine, "buyers") == {"ana@x.com"} and member_count(engine, "buyers") == 1

    refund = change("e3", "ana@x.com", T0 + 10, adds=["purchase-refunded"])
    apply(engine, [refund])
    assert published(engine)[1:] == [("buyers", "ana@x.com", False, "e3")]
    assert members(engine, "buyers") == set() and member_count(engine, "buyers") == 0

    apply(engine, [refund, change("e1", "ana@x.com", T0, adds=["purchase-approved"])])  # redelivered
    assert len(published(engine)) == 2


def test_an_older_event_arriving_later_ends_in_the_same_membership(engine):
    create(engine, "buyers", BUYERS)
    # The refund (newer) arrives first; the purchase approval (older) after it.
    apply(engine, [change("e2", "ana@x.com", T0 + 10, adds=["purchase-refunded"], removes=["purchase-approved"])])
    apply(engine, [change("e1", "ana@x.com", T0, adds=["purchase-approved"])])
    assert members(engine, "buyers") == set() and published(engine) == []


def test_creating_records_existing_matches_silently_unless_asked(engine):
    apply(engine, [change("e1", "ana@x.com", T0, adds=["a"]), change("e2", "bob@x.com", T0, adds=["a"])])
    clear_outbox(engine)
    quiet = create(engine, "quiet", 'tag = "a"')
    assert quiet.member_count == 2 and members(engine, "quiet") == {"ana@x.com", "bob@x.com"}
    assert published(engine) == []

    loud = create(engine, "loud", 'tag = "a"', publish=True)
    assert loud.member_count == 2
    # Entries caused by no event: the creation.
    assert sorted(published(engine)) == [("loud", "ana@x.com", True, ""), ("loud", "bob@x.com", True, "")]


def test_a_new_filter_publishes_the_difference_and_the_etag_guards_it(engine):
    apply(engine, [change("e1", "ana@x.com", T0, adds=["a"]), change("e2", "bob@x.com", T0, adds=["b"])])
    clear_outbox(engine)
    created = create(engine, "aud", 'tag = "a"')
    with engine.begin() as connection, pytest.raises(ServiceError) as stale:
        AudienceStore(connection).update("alice", "aud", "r0", None, 'tag = "b"', T0 * 1_000_000)
    assert stale.value.code == grpc.StatusCode.ABORTED and stale.value.reason == "ETAG_MISMATCH"
    with engine.begin() as connection:
        updated, _ = AudienceStore(connection).update("alice", "aud", created.etag, None, 'tag = "b"', T0 * 1_000_000)
    assert updated.etag != created.etag and updated.member_count == 1
    assert sorted(published(engine)) == [("aud", "ana@x.com", False, ""), ("aud", "bob@x.com", True, "")]
    # A new display name alone evaluates nothing.
    with engine.begin() as connection:
        AudienceStore(connection).update("alice", "aud", "", "Renamed", None, T0 * 1_000_000)
    assert len(published(engine)) == 2


def test_erasure_takes_the_contact_out_and_publishes_the_exit(engine):
    create(engine, "aud", 'tag = "a"')
    apply(engine, [change("e1", "ana@x.com", T0, adds=["a"]), change("e2", "bob@x.com", T0, adds=["a"])])
    clear_outbox(engine)
    names = emails(engine)
    ana = next(contact_id for contact_id, email in names.items() if email == "ana@x.com")
    with engine.begin() as connection:
        assert erasure.erase_contact(connection, "alice", ana)
    assert published(engine, names) == [("aud", "ana@x.com", False, "")]
    assert members(engine, "aud") == {"bob@x.com"} and member_count(engine, "aud") == 1


def test_the_sweep_publishes_exits_and_entries_as_time_passes(engine, monkeypatch):
    now = [(T0 + 5 * DAY) * 1_000_000]
    monkeypatch.setattr(audiences, "now_micros", lambda: now[0])  # the clock batches evaluate with
    create(engine, "recent", "last_event_time >= now - 30d", now=now[0])
    apply(engine, [change("e1", "ana@x.com", T0, adds=["a"]), change("e2", "bob@x.com", T0 + 20 * DAY)])
    assert members(engine, "recent") == {"ana@x.com", "bob@x.com"}
    clear_outbox(engine)
    sweeper = AudienceSweeper(engine, interval=60, clock=lambda: now[0])

    assert sweeper.sweep_once().exited == 0  # swept at creation: not due yet
    now[0] += 31 * DAY * 1_000_000 - 5 * DAY * 1_000_000  # T0 + 31 days: ana's last event is too old
    done = sweeper.sweep_once()
    assert (done.entered, done.exited) == (0, 1)
    assert published(engine) == [("recent", "ana@x.com", False, "")]
    assert sweeper.sweep_once().exited == 0  # swept this minute already
    now[0] += 30 * DAY * 1_000_000
    assert sweeper.sweep_once().exited == 1 and members(engine, "recent") == set()
    # A new event brings ana back at once (the batch evaluates its contacts, with the clock).
    apply(engine, [change("e3", "ana@x.com", (now[0] // 1_000_000) - DAY)])
    assert members(engine, "recent") == {"ana@x.com"} and member_count(engine, "recent") == 1


def test_tenancy_limits_and_bad_filters(engine, monkeypatch):
    create(engine, "aud", 'tag = "a"')
    create(engine, "aud", 'tag = "a"', producer="bob")  # the same id, another producer
    with engine.connect() as connection:
        assert [a.audience_id for a in AudienceStore(connection).list("bob", None, 10)] == ["aud"]
    with pytest.raises(ServiceError) as taken:
        create(engine, "aud", 'tag = "b"')
    assert taken.value.code == grpc.StatusCode.ALREADY_EXISTS
    monkeypatch.setattr(audiences, "MAX_AUDIENCES", 2)
    create(engine, "second", 'tag = "b"')
    with pytest.raises(ServiceError) as limit:
        create(engine, "third", 'tag = "b"')
    assert limit.value.code == grpc.StatusCode.FAILED_PRECONDITION and limit.value.reason == "AUDIENCES_LIMIT"
    assert "at most 2 audiences" in limit.value.message
    with pytest.raises(ServiceError) as bad:
        audiences.parse_filter('tag = "a" AND colour = "red"')
    assert [v.field for v in bad.value.violations] == ["audience.filter"]
    assert "unknown field 'colour'" in bad.value.violations[0].description
    assert "position 14" in bad.value.violations[0].description


# --------------------------------------------------------------------------- the property

EMAILS = ["a@x.com", "b@x.com", "c@x.com"]
FILTERS = [
    'tag = "t1"',
    'tag = "t1" AND NOT tag = "t2"',
    'tag = "t2" OR email = "c@x.com"',
    'NOT tag = "t1"',
    "last_event_time >= 2023-11-14T22:13:30Z",
    'product = "9" AND tag = "t2"',
]

operation = st.tuples(st.sampled_from(["t1", "t2"]), st.booleans())
event_spec = st.tuples(
    st.sampled_from(EMAILS),
    st.integers(T0, T0 + 20),
    st.lists(operation, max_size=2),
    st.sampled_from(["42", "9"]),
)


def build(specs) -> list[contact_change_pb2.ContactChange]:
    built = []
    for index, (email, seconds, operations, product) in enumerate(specs):
        adds = [key for key, added in operations if added]
        removes = [key for key, added in operations if not added]
        built.append(change(f"evt-{index}", email, seconds, adds, removes, product=product))
    return built


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(event_spec, min_size=1, max_size=14),
    order=st.randoms(use_true_random=False),
    batch_sizes=st.lists(st.integers(1, 5), max_size=14),
    redeliveries=st.lists(st.integers(0, 13), max_size=4),
    created_after=st.integers(0, 6),
    publish_existing=st.booleans(),
)
def test_memberships_match_evaluating_every_filter_from_scratch(
    specs, order, batch_sizes, redeliveries, created_after, publish_existing
):
    changes = build(specs)
    delivered = list(changes) + [changes[index % len(changes)] for index in redeliveries]
    order.shuffle(delivered)
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    schema.migrate_database(engine)
    try:
        tag_ids = TagIds()
        batches, start, sizes = [], 0, iter(batch_sizes)
        while start < len(delivered):
            size = next(sizes, 2)
            batches.append(delivered[start : start + size])
            start += size
        # Some audiences exist from the start; the others are created between batches.
        early, late = FILTERS[::2], FILTERS[1::2]
        for number, text in enumerate(early):
            create(engine, f"early-{number}", text)
        for index, batch in enumerate(batches):
            if index == created_after:
                for number, text in enumerate(late):
                    create(engine, f"late-{number}", text, publish=publish_existing)
            apply(engine, batch, tag_ids)
        if created_after >= len(batches):
            for number, text in enumerate(late):
                create(engine, f"late-{number}", text, publish=publish_existing)

        with engine.connect() as connection:
            store = AudienceStore(connection)
            for audience in store.list("alice", None, 100):
                node = queries.parse_contact_filter(audience.filter)
                expected = queries.all_matching_contact_ids(connection, "alice", node)
                kept = set(
                    connection.execute(
                        sa.select(schema.audience_members.c.contact_id).where(
                            schema.audience_members.c.audience_id == audience.id
                        )
                    ).scalars()
                )
                assert kept == expected, audience.filter
                assert audience.member_count == len(expected)
                # The published entries and exits alternate and agree with the membership; they
                # replay to all of it unless creation recorded the first members silently.
                rows = connection.execute(
                    sa.select(schema.tag_change_outbox.c.contact_id, schema.tag_change_outbox.c.added)
                    .where(schema.tag_change_outbox.c.audience == audience.audience_id)
                    .order_by(schema.tag_change_outbox.c.id)
                ).all()
                state: dict[int, bool] = {}
                for contact_id, added in rows:
                    assert state.get(contact_id, not added) != added  # never twice the same way
                    state[contact_id] = added
                assert all(inside == (contact_id in expected) for contact_id, inside in state.items())
                if audience.audience_id.startswith("early") or publish_existing:
                    assert {contact_id for contact_id, inside in state.items() if inside} == expected
    finally:
        engine.dispose()


def test_replicas_applying_while_audiences_change_end_exact(engine):
    """PostgreSQL, where writers run at once: two appliers and a third connection creating and
    changing audiences meanwhile; every membership then equals the filter evaluated from scratch."""
    if not is_postgres(engine):
        pytest.skip("SQLite has one writer at a time")
    rnd = random.Random(7)
    changes = [
        change(
            f"c{number}",
            f"p{rnd.randrange(30)}@x.com",
            T0 + rnd.randrange(50),
            adds=rnd.sample(["t1", "t2"], rnd.randrange(3)),
            removes=rnd.sample(["t1", "t2"], rnd.randrange(2)),
            product=rnd.choice(["42", "9"]),
        )
        for number in range(400)
    ]
    # The contacts exist first: this is about audiences, not two replicas creating one contact.
    apply(engine, [change(f"first-{person}", f"p{person}@x.com", T0 - 1) for person in range(30)])
    shares = [changes[0::2], changes[1::2]]
    failures: list[BaseException] = []

    def applier(share):
        try:
            tag_ids = TagIds()
            for start in range(0, len(share), 10):
                apply(engine, share[start : start + 10], tag_ids)
        except BaseException as error:  # reported by the test below
            failures.append(error)

    def editor():
        try:
            for number, text in enumerate(FILTERS):
                created = create(engine, f"a{number}", text)
                with engine.begin() as connection:
                    AudienceStore(connection).update(
                        "alice", created.audience_id, created.etag, None, f"NOT ({text})", T0 * 1_000_000
                    )
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=applier, args=(share,)) for share in shares]
    threads.append(threading.Thread(target=editor))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, [str(failure) for failure in failures]
    with engine.connect() as connection:
        found = AudienceStore(connection).list("alice", None, 100)
        assert len(found) == len(FILTERS)
        for audience in found:
            expected = queries.all_matching_contact_ids(
                connection, "alice", queries.parse_contact_filter(audience.filter)
            )
            kept = set(
                connection.execute(
                    sa.select(schema.audience_members.c.contact_id).where(
                        schema.audience_members.c.audience_id == audience.id
                    )
                ).scalars()
            )
            assert kept == expected and audience.member_count == len(expected), audience.filter
