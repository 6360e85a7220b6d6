"""Property: any order and any repetition of the same events ends in the same tags and
the same purchase traits.

The events go through the real decision (segmentation's automatic table) and
the real store (contacts' apply on SQLite), in random batches. The traits are also
compared with the ones derived from scratch: each transaction's newest deciding event.
"""

from __future__ import annotations

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.pool import StaticPool

from listboss.events.v1 import event_pb2
from listboss_contacts import domain, messages, queries, schema
from listboss_contacts.apply import TagIds, apply_changes
from listboss_segmentation.consumer import change_for

EVENT_TYPES = [value for value in event_pb2.EventType.values() if value != event_pb2.EVENT_TYPE_UNSPECIFIED]
EMAILS = ["ana@example.com", "bia@example.com"]
# Transactions and the product each is a purchase of.
TRANSACTIONS = {"HP1": "7", "HP2": "7", "HP3": "8", "HP4": "8"}
PRICES = [("BRL", 97.0), ("BRL", 497.9), ("USD", 19.99)]


def make_event(
    index: int, event_type: int, email: str, seconds: int, transaction: str, price: tuple[str, float]
) -> event_pb2.Event:
    event = event_pb2.Event(
        id=f"evt-{index}",
        producer="alice",
        type=event_type,
        product=event_pb2.Product(id=TRANSACTIONS[transaction], name="Course"),
        person=event_pb2.Person(email=email),
        purchase=event_pb2.Purchase(
            transaction=f"{email}-{transaction}", price=event_pb2.Money(currency_code=price[0], value=price[1])
        ),
    )
    event.occur_time.FromSeconds(seconds)
    return event


events_strategy = st.lists(
    st.tuples(
        st.sampled_from(EVENT_TYPES),
        st.sampled_from(EMAILS),
        st.integers(1_700_000_000, 1_700_000_020),
        st.sampled_from(sorted(TRANSACTIONS)),
        st.sampled_from(PRICES),
    ),
    min_size=1,
    max_size=25,
).map(lambda specs: [make_event(i, *spec) for i, spec in enumerate(specs)])


def traits_from_scratch(changes) -> dict:
    """Each transaction's newest deciding event, then the traits of the counted ones."""
    newest: dict[tuple[str, str], domain.PurchaseState] = {}
    for change in messages.changes_from(changes):
        state = domain.purchase_state(change)
        if state is None or change.purchase is None:
            continue
        key = (change.email, change.purchase.transaction)
        if key not in newest or state.stamp > newest[key].stamp:
            newest[key] = state
    by_email: dict[str, list[domain.PurchaseState]] = {}
    for (email, _), state in newest.items():
        by_email.setdefault(email, []).append(state)
    found = {}
    for email, states in by_email.items():
        traits = domain.purchase_traits(states)
        if traits:
            found[email] = [
                (product, t.purchases, t.first_purchase_time, t.last_purchase_time, sorted(t.spent.items()))
                for product, t in traits.items()
            ]
    return found


def final_state(changes, batch_sizes) -> tuple:
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    schema.migrate_database(engine)
    tag_ids = TagIds()
    start = 0
    sizes = iter(batch_sizes)
    while start < len(changes):
        size = next(sizes, 1) or 1
        with engine.begin() as connection:
            result = apply_changes(connection, changes[start : start + size], tag_ids)
        tag_ids.commit(result.tag_ids)
        start += size
    with engine.connect() as connection:
        contacts = queries.list_contacts(connection, "alice", None, None, 100)
        tags = queries.list_tags(connection, "alice", None, None, 100)
        traits = {row.email: queries.purchase_traits(connection, row.id) for row, _ in contacts}
    engine.dispose()
    return (
        {row.email: sorted(f"{t.product}.{t.key}" for t in tag_rows) for row, tag_rows in contacts},
        {f"{row.product}.{row.key}": row.contact_count for row in tags if row.contact_count},
        {
            email: [(t.product, t.purchases, t.first_purchase_time, t.last_purchase_time, t.spent) for t in found]
            for email, found in traits.items()
            if found
        },
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=events_strategy,
    data=st.data(),
)
def test_any_order_and_duplication_ends_in_the_same_tags_and_traits(events, data):
    changes = [change_for(event) for event in events]
    in_order = sorted(changes, key=lambda c: (c.event.occur_time.seconds, c.event.id))
    expected = final_state(in_order, [1] * len(in_order))

    duplicated = changes + data.draw(st.lists(st.sampled_from(changes), max_size=10), label="repeats")
    shuffled = data.draw(st.permutations(duplicated), label="arrival order")
    batch_sizes = data.draw(st.lists(st.integers(1, 8), max_size=len(shuffled)), label="batch sizes")
    assert final_state(shuffled, batch_sizes) == expected
    tags_by_contact, tag_counts, traits = expected
    assert traits == traits_from_scratch(changes)
    # Each tag's count is the number of contacts carrying it.
    carried = {}
    for keys in tags_by_contact.values():
        for key in keys:
            carried[key] = carried.get(key, 0) + 1
    assert tag_counts == carried
