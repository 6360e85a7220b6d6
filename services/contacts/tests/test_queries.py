"""Contact filters, orders, counts, history filters, the dashboard, erasure and the
tag-change outbox on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common.db import create_engine
from listboss_common.errors import InvalidArgument
from listboss_common.paging import SortOrder
from listboss_contacts import queries, schema
from listboss_contacts.apply import TagIds, apply_changes
from listboss_contacts.erasure import erase_contact

ADD = contact_change_pb2.TagOperation.ACTION_ADD
REMOVE = contact_change_pb2.TagOperation.ACTION_REMOVE
APPROVED = event_pb2.EVENT_TYPE_PURCHASE_APPROVED
REFUNDED = event_pb2.EVENT_TYPE_PURCHASE_REFUNDED
DAY = 86_400


def change(event_id, email, seconds, adds=(), removes=(), *, producer="alice", product="42", kind=APPROVED):
    event = event_pb2.Event(
        id=event_id,
        producer=producer,
        type=kind,
        product=event_pb2.Product(id=product, name="Course"),
        person=event_pb2.Person(email=email, name="Ana"),
    )
    event.occur_time.FromSeconds(seconds)
    result = contact_change_pb2.ContactChange(event=event, fired_segmentations=["seg"])
    for key in removes:
        result.tag_operations.add(action=REMOVE, tag_key=key, tag_display_name=key, automatic=True, segmentation="seg")
    for key in adds:
        result.tag_operations.add(
            action=ADD, tag_key=key, tag_display_name=key, automatic=True, segmentation=f"seg-{key}"
        )
    return result


def apply(engine, changes):
    tag_ids = TagIds()
    with engine.begin() as connection:
        result = apply_changes(connection, changes, tag_ids)
    tag_ids.commit(result.tag_ids)
    return result


def emails(engine, text="", order=queries.DEFAULT_ORDER, page=1000, producer="alice"):
    """Every matching email, read page by page through keyset positions."""
    node = queries.parse_contact_filter(text)
    found, after = [], None
    with engine.connect() as connection:
        while True:
            rows = queries.list_contacts(connection, producer, node, after, page, order, with_tags=False)
            found += [row.email for row, _ in rows]
            if len(rows) < page:
                return found
            after = queries.position_of(rows[-1][0], order)


def count(engine, text="", producer="alice"):
    with engine.connect() as connection:
        return queries.count_contacts(connection, producer, queries.parse_contact_filter(text))


# --------------------------------------------------------------------------- filters against an oracle

PRODUCTS = ("1", "2")
KEYS = ("a", "b", "c")


@pytest.fixture
def population(engine):
    """60 people with random tags in two products, events on random days; returns
    what each person should look like (the oracle the SQL is checked against)."""
    rng = random.Random(7)
    people = {}
    changes = []
    for i in range(60):
        email = f"p{i:02d}@{'gmail.com' if i % 3 else 'corp.example'}"
        tagset, products, times = set(), set(), []
        for j in range(rng.randint(1, 4)):
            product = rng.choice(PRODUCTS)
            key = rng.choice(KEYS)
            seconds = 1_700_000_000 + rng.randint(0, 100) * DAY + i * 60 + j
            add = rng.random() < 0.7
            changes.append(
                change(
                    f"e{i}-{j}",
                    email,
                    seconds,
                    adds=[key] if add else [],
                    removes=[] if add else [key],
                    product=product,
                )
            )
            products.add(product)
            times.append((seconds, add, product, key))
        for _seconds, add, product, key in sorted(times):
            (tagset.add if add else tagset.discard)((product, key))
        people[email] = dict(email=email, tags=tagset, products=products, last=max(t[0] for t in times))
    rng.shuffle(changes)
    for start in range(0, len(changes), 25):
        apply(engine, changes[start : start + 25])
    apply(engine, [change("x1", "bob@gmail.com", 1_700_000_000, adds=["a"], producer="bob", product="1")])
    return people


def oracle(people, predicate):
    return sorted(email for email, person in people.items() if predicate(person))


def has(person, key, product=None):
    return any(k == key and (product is None or p == product) for p, k in person["tags"])


CASES = [
    ("", lambda p: True),
    ('tag = "a"', lambda p: has(p, "a")),
    ('tag = "a" AND NOT tag = "b"', lambda p: has(p, "a") and not has(p, "b")),
    (
        'tag = "producers/alice/tags/1.a" AND -tag = "producers/alice/tags/2.b"',
        lambda p: has(p, "a", "1") and not has(p, "b", "2"),
    ),
    ('tag = "producers/alice/tags/1.a" tag != "c"', lambda p: has(p, "a", "1") and not has(p, "c")),
    ('tag = "a" OR tag = "c"', lambda p: has(p, "a") or has(p, "c")),
    ('(tag = "a" OR tag = "b") AND NOT (tag = "c")', lambda p: (has(p, "a") or has(p, "b")) and not has(p, "c")),
    ('product = "2"', lambda p: "2" in p["products"]),
    ('product = "producers/alice/products/1" AND NOT product = "2"', lambda p: p["products"] == {"1"}),
    ('product = "producers/bob/products/1"', lambda p: False),
    ('email : "@corp.example"', lambda p: p["email"].endswith("@corp.example")),
    (
        'email = "p03@corp.example" OR email = "p04@gmail.com"',
        lambda p: p["email"] in ("p03@corp.example", "p04@gmail.com"),
    ),
    ('source = AUTO AND tag = "nothing-like-this"', lambda p: False),
    ("source = AUTO", lambda p: True),
    ("last_event_time >= 2023-12-01T00:00:00Z", lambda p: p["last"] >= 1_701_388_800),
    (
        'last_event_time < "2023-12-01T00:00:00-03:00" AND tag = "b"',
        lambda p: p["last"] < 1_701_399_600 and has(p, "b"),
    ),
]


@pytest.mark.parametrize(("text", "predicate"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_filters_match_the_oracle_in_every_order_and_count(engine, population, text, predicate):
    expected = oracle(population, predicate)
    by_id = emails(engine, text, page=7)
    assert sorted(by_id) == expected
    assert len(set(by_id)) == len(by_id)
    assert emails(engine, text, SortOrder("email"), page=5) == expected
    assert emails(engine, text, SortOrder("email", True), page=5) == expected[::-1]
    assert emails(engine, text, SortOrder("name", True), page=6) == by_id[::-1]
    created = emails(engine, text, SortOrder("create_time"), page=4)
    assert sorted(created) == expected and len(created) == len(expected)
    assert count(engine, text) == len(expected)


def test_create_time_order_is_by_capture_then_id(engine):
    apply(engine, [change("e1", "late@x.com", 100)])
    apply(engine, [change("e2", "early@x.com", 50)])
    with engine.begin() as connection:
        connection.execute(
            schema.contacts.update().where(schema.contacts.c.email == "late@x.com").values(create_time=1)
        )
    assert emails(engine, order=SortOrder("create_time")) == ["late@x.com", "early@x.com"]
    assert emails(engine, order=SortOrder("create_time", True), page=1) == ["early@x.com", "late@x.com"]
    assert emails(engine, "create_time > 1970-01-01T00:00:00.000001Z") == ["early@x.com"]


def test_single_tag_count_reads_the_kept_count(engine):
    apply(engine, [change(f"e{i}", f"p{i}@x.com", 100, adds=["a"]) for i in range(3)])
    assert count(engine, 'tag = "a"') == 3
    with engine.begin() as connection:  # proves no COUNT(*) runs for `tag = X`
        connection.execute(schema.tags.update().values(contact_count=12345))
    assert count(engine, 'tag = "a"') == 12345
    assert count(engine, 'tag = "a" AND source = AUTO') == 3


def test_filter_errors_name_the_position_or_the_field():
    with pytest.raises(InvalidArgument) as error:
        queries.parse_contact_filter('tag = "a" AND (tag = "b"')
    assert "at position 24" in error.value.violations[0].description
    with pytest.raises(InvalidArgument) as error:
        queries.parse_contact_filter('tag = "a" AND colour = "red"')
    assert "unknown field 'colour'" in error.value.violations[0].description
    assert error.value.violations[0].field == "filter"
    with pytest.raises(InvalidArgument):
        queries.parse_contact_filter("create_time > yesterday")
    with pytest.raises(InvalidArgument):
        queries.parse_contact_filter("tag > a")


# --------------------------------------------------------------------------- history, dashboard


def test_history_filters(engine):
    apply(
        engine,
        [
            change("e1", "ana@x.com", 1000 * DAY, adds=["approved"]),
            change("e2", "bob@y.com", 1001 * DAY, kind=REFUNDED),
            change("e3", "ana@x.com", 1002 * DAY, kind=REFUNDED, removes=["approved"]),
            change("e4", "ana@x.com", 1002 * DAY, product="other"),
        ],
    )

    def ids(text):
        with engine.connect() as connection:
            rows = queries.list_history(connection, "alice", "42", None, 100, queries.parse_history_filter(text))
        return [row.event_id for row in rows]

    assert ids("") == ["e3", "e2", "e1"]
    assert ids("type = PURCHASE_REFUNDED") == ["e3", "e2"]
    assert ids('type = EVENT_TYPE_PURCHASE_APPROVED OR email = "bob@y.com"') == ["e2", "e1"]
    assert ids('email : "@x.com" AND NOT type = PURCHASE_APPROVED') == ["e3"]
    assert ids(f"occur_time >= {datetime.fromtimestamp(1001 * DAY, UTC).isoformat()}") == ["e3", "e2"]
    with engine.connect() as connection:
        ana = connection.execute(sa.select(schema.contacts.c.id).where(schema.contacts.c.email == "ana@x.com")).scalar()
    assert ids(f'contact = "producers/alice/contacts/{ana}"') == ["e3", "e1"]
    assert ids('contact = "producers/bob/contacts/1"') == []
    with engine.connect() as connection:
        [removed] = queries.list_history(connection, "alice", "42", None, 1, None)
    assert removed.removed_tags == ["approved"] and removed.email == "ana@x.com"
    with pytest.raises(InvalidArgument):
        queries.parse_history_filter("type = SOMETHING_ELSE")


def test_dashboard_counters(engine):
    apply(
        engine,
        [
            change("e1", "ana@x.com", 1000 * DAY + 5, adds=["approved"]),
            change("e2", "bob@x.com", 1000 * DAY + 9, adds=["approved"]),
            change("e3", "ana@x.com", 1001 * DAY, kind=REFUNDED, removes=["approved"]),
            change("e4", "cy@x.com", 1001 * DAY, product="other"),
        ],
    )
    # An older event of a linked person arriving later counts as an event, not a capture.
    apply(engine, [change("e0", "ana@x.com", 999 * DAY, kind=REFUNDED), change("e1", "ana@x.com", 1000 * DAY + 5)])
    with engine.connect() as connection:
        figures = queries.product_dashboard(connection, "alice", "42", 990, 1010)
        narrow = queries.product_dashboard(connection, "alice", "42", 1001, 1002)
    assert figures.contact_count == 2
    assert figures.days == [(999, 1, 0), (1000, 2, 2), (1001, 1, 0)]
    assert figures.events_by_type == [(APPROVED, 2), (REFUNDED, 2)]
    assert {row.key: row.contact_count for row in figures.tags} == {"approved": 1}
    assert narrow.days == [(1001, 1, 0)] and narrow.events_by_type == [(REFUNDED, 1)]


def test_migrations_backfill_product_links_and_counters_from_history(database_url):
    engine = create_engine(database_url)
    try:
        from listboss_common.db import migrate
        from listboss_contacts.migrations import legacy

        # A database of the first pre-Alembic step only: adopting it runs the old steps 2-10.
        migrate(engine, legacy.MIGRATIONS[:1], namespace="listboss_contacts")
        with engine.begin() as connection:
            contact_id = connection.execute(
                schema.contacts.insert()
                .values(
                    producer="alice",
                    email="ana@x.com",
                    display_name="",
                    phone="",
                    country_code="",
                    source=1,
                    data_time=0,
                    data_event="e1",
                    first_event_time=0,
                    last_event_time=0,
                    create_time=0,
                    update_time=0,
                )
                .returning(schema.contacts.c.id)
            ).scalar()
            for event_id, day, kind in [("e1", 10, APPROVED), ("e2", 11, REFUNDED), ("e3", 11, REFUNDED)]:
                connection.execute(
                    schema.history.insert().values(
                        producer="alice",
                        product="42",
                        event_id=event_id,
                        event_type=kind,
                        occur_time=day * DAY * 10**6,
                        record_time=0,
                        contact_id=contact_id,
                        email="ana@x.com",
                        contact_created=event_id == "e1",
                        added_tags="[]",
                        removed_tags="[]",
                        fired_segmentations="[]",
                    )
                )
        schema.migrate_database(engine)
        with engine.connect() as connection:
            links = connection.execute(sa.select(schema.contact_products)).all()
            daily = connection.execute(
                sa.select(schema.product_daily).order_by(schema.product_daily.c.day, schema.product_daily.c.event_type)
            ).all()
        assert [(r.contact_id, r.product, r.first_event_time) for r in links] == [(contact_id, "42", 10 * DAY * 10**6)]
        assert [(r.day, r.event_type, r.events, r.captured) for r in daily] == [
            (10, APPROVED, 1, 1),
            (11, REFUNDED, 2, 0),
        ]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- erasure and the outbox


def outbox(engine):
    with engine.connect() as connection:
        rows = connection.execute(sa.select(schema.tag_change_outbox).order_by(schema.tag_change_outbox.c.id)).all()
    return [(row.contact_id, row.product, row.tag_key, row.added, row.event_id, row.segmentation) for row in rows]


def test_outbox_holds_only_changes_of_the_present_state(engine):
    apply(engine, [change("e1", "ana@x.com", 100, adds=["a"], removes=["b"])])  # b was never present
    [(contact_id, *_)] = outbox(engine)
    apply(engine, [change("e1", "ana@x.com", 100, adds=["a"])])  # the same event again: nothing
    apply(engine, [change("e0", "ana@x.com", 50, removes=["a"])])  # older: loses, nothing
    apply(engine, [change("e2", "ana@x.com", 200, adds=["a"])])  # newer but already present: nothing
    apply(engine, [change("e3", "ana@x.com", 300, removes=["a"]), change("e4", "bob@x.com", 300, adds=["b"])])
    rows = outbox(engine)
    assert rows[0] == (contact_id, "42", "a", True, "e1", "seg-a")
    assert rows[1] == (contact_id, "42", "a", False, "e3", "seg")
    assert rows[2][1:] == ("42", "b", True, "e4", "seg-b")
    assert len(rows) == 3


def test_erasure_removes_the_person_and_a_later_event_starts_fresh(engine):
    apply(
        engine,
        [
            change("e1", "ana@x.com", 100, adds=["a", "b"]),
            change("e2", "ana@x.com", 200, removes=["b"], product="7"),
            change("e3", "bob@x.com", 100, adds=["a"]),
        ],
    )
    with engine.connect() as connection:
        ana = connection.execute(sa.select(schema.contacts.c.id).where(schema.contacts.c.email == "ana@x.com")).scalar()
    with engine.begin() as connection:
        assert erase_contact(connection, "bob", ana) is False  # another producer's contact: untouched
        assert erase_contact(connection, "alice", ana) is True
        assert erase_contact(connection, "alice", ana) is False
    assert emails(engine) == ["bob@x.com"]
    with engine.connect() as connection:
        counts = {r.key: r.contact_count for r in queries.list_tags(connection, "alice", None, None, 100)}
        history = connection.execute(sa.select(schema.history).order_by(schema.history.c.event_id)).all()
        links = connection.execute(
            sa.select(sa.func.count()).select_from(schema.contact_tags).where(schema.contact_tags.c.contact_id == ana)
        ).scalar()
        products = connection.execute(sa.select(schema.contact_products.c.contact_id)).scalars().all()
    assert counts == {"a": 1, "b": 0}
    assert [(r.event_id, r.contact_id, r.email) for r in history if r.event_id != "e3"] == [
        ("e1", None, ""),
        ("e2", None, ""),
    ]
    assert links == 0 and ana not in products
    assert count(engine, 'tag = "a"') == 1 and count(engine, 'product = "7"') == 0
    assert "ana@x.com" not in str(outbox(engine))

    # A redelivered old event is still known; a new one captures a new contact.
    assert apply(engine, [change("e1", "ana@x.com", 100, adds=["a", "b"])]).applied == 0
    assert emails(engine) == ["bob@x.com"]
    apply(engine, [change("e9", "ana@x.com", 500, adds=["c"])])
    with engine.connect() as connection:
        [(fresh, tag_rows)] = queries.list_contacts(
            connection, "alice", queries.parse_contact_filter('email = "ana@x.com"'), None, 10
        )
    assert fresh.id != ana and [t.key for t in tag_rows] == ["c"]
    assert count(engine, 'tag = "a"') == 1


def test_counts_of_a_key_used_by_several_products_count_each_contact_once(engine):
    apply(
        engine,
        [
            change("e1", "ana@x.com", 100, adds=["a"], product="1"),
            change("e2", "ana@x.com", 100, adds=["a"], product="2"),
            change("e3", "bob@x.com", 100, adds=["a"], product="2"),
        ],
    )
    assert count(engine, 'tag = "a"') == 2
    assert count(engine, 'tag = "producers/alice/tags/2.a"') == 2
    assert count(engine, 'tag = "nothing"') == 0
    assert emails(engine, 'tag = "a"') == ["ana@x.com", "bob@x.com"]


# --------------------------------------------------------------------------- random filters against the oracle

LEAVES = [
    ('tag = "a"', lambda p: has(p, "a")),
    ('tag = "b"', lambda p: has(p, "b")),
    ('tag = "producers/alice/tags/2.c"', lambda p: has(p, "c", "2")),
    ('tag != "c"', lambda p: not has(p, "c")),
    ('product = "1"', lambda p: "1" in p["products"]),
    ("source = AUTO", lambda p: True),
    ('email : "@corp"', lambda p: p["email"].endswith("@corp.example")),
    ("last_event_time >= 2023-12-20T00:00:00Z", lambda p: p["last"] >= 1_703_030_400),
]
filters = st.recursive(
    st.sampled_from(LEAVES),
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=3).map(
            lambda terms: (
                " AND ".join(f"({t})" for t, _ in terms),
                lambda p, fs=[f for _, f in terms]: all(f(p) for f in fs),
            )
        ),
        st.lists(children, min_size=2, max_size=3).map(
            lambda terms: (
                " OR ".join(f"({t})" for t, _ in terms),
                lambda p, fs=[f for _, f in terms]: any(f(p) for f in fs),
            )
        ),
        children.map(lambda term: (f"NOT ({term[0]})", lambda p, f=term[1]: not f(p))),
    ),
    max_leaves=6,
)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=filters, page=st.integers(1, 25), descending=st.booleans())
def test_random_filters_match_the_oracle(engine, population, case, page, descending):
    text, predicate = case
    expected = oracle(population, predicate)
    assert sorted(emails(engine, text, page=page)) == expected
    assert emails(engine, text, SortOrder("email", descending), page=page) == (
        expected[::-1] if descending else expected
    )
    assert count(engine, text) == len(expected)
