"""Applying changes, the decisions alone: plain values in and out, no database, no protobuf."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from listboss_contacts import domain
from listboss_contacts.domain import Change, ContactEvents, StoredContact, TagLink, TagOperation

S = 1_000_000  # microseconds per second


def op(key, added=True, segmentation="seg", display_name="", automatic=True):
    return TagOperation(key, added, display_name, automatic, segmentation)


def change(
    event_id,
    email="ana@example.com",
    seconds=100,
    ops=(),
    *,
    data=None,
    backfill="",
    product="42",
    producer="alice",
    event_type=3,
):
    return Change(
        producer, event_id, event_type, product, email, seconds * S, tuple(ops), ("seg",), data or {}, backfill
    )


# --------------------------------------------------------------------------- tag links


def test_the_newer_stamp_wins_and_ties_go_to_the_greater_event_id():
    old, new = TagLink(True, (100, "b"), "s"), TagLink(False, (200, "a"), "s")
    assert domain.resolve(None, old) == old
    assert domain.resolve(old, new) == new
    assert domain.resolve(new, old) is None
    assert domain.resolve(old, old) is None  # the same operation again changes nothing
    assert domain.resolve(TagLink(False, (100, "a"), "s"), old) == old


def test_count_moves_only_when_presence_changes():
    present, absent = TagLink(True, (1, "a"), "s"), TagLink(False, (2, "b"), "s")
    assert domain.count_delta(None, present) == 1
    assert domain.count_delta(None, absent) == 0
    assert domain.count_delta(present, absent) == -1
    assert domain.count_delta(absent, present) == 1
    assert domain.count_delta(present, present) == 0


def test_the_batchs_newest_operation_per_contact_and_tag_wins_in_any_order():
    changes = [
        change("e2", seconds=200, ops=[op("x", added=False)]),
        change("e1", seconds=100, ops=[op("x"), op("y")]),
        change("e3", "bia@example.com", seconds=50, ops=[op("x")]),
    ]
    contact_ids = {("alice", "ana@example.com"): 1, ("alice", "bia@example.com"): 2}
    tag_ids = {("alice", "42", "x"): 10, ("alice", "42", "y"): 11}
    links = domain.newest_links(changes, contact_ids, tag_ids)
    assert links == {
        (1, 10): TagLink(False, (200 * S, "e2"), "seg"),
        (1, 11): TagLink(True, (100 * S, "e1"), "seg"),
        (2, 10): TagLink(True, (50 * S, "e3"), "seg"),
    }
    assert domain.newest_links(reversed(changes), contact_ids, tag_ids) == links


def test_link_writes_insert_update_count_and_report_changes_of_presence():
    keys = {10: ("alice", "42", "x"), 11: ("alice", "42", "y"), 12: ("alice", "42", "z")}
    current = {
        (1, 10): TagLink(True, (100, "a"), "s"),  # removed by a newer operation
        (1, 11): TagLink(True, (100, "a"), "s"),  # a newer addition keeps it present
        (1, 12): TagLink(True, (300, "c"), "s"),  # an older removal loses
    }
    incoming = {
        (1, 10): TagLink(False, (200, "b"), "t"),
        (1, 11): TagLink(True, (200, "b"), "t"),
        (1, 12): TagLink(False, (200, "b"), "t"),
        (2, 10): TagLink(True, (200, "b"), "t"),  # new link
        (2, 11): TagLink(False, (200, "b"), "t"),  # new, absent: kept so an older addition cannot win later
    }
    writes = domain.link_writes(incoming, current, keys)
    assert [pair for pair, _ in writes.inserts] == [(2, 10), (2, 11)]
    assert [pair for pair, _ in writes.updates] == [(1, 10), (1, 11)]
    assert writes.count_deltas == {}  # x: -1 (contact 1) +1 (contact 2); y: +0, +0
    assert writes.changes == [
        domain.TagChange(("alice", "42", "x"), 1, TagLink(False, (200, "b"), "t")),
        domain.TagChange(("alice", "42", "x"), 2, TagLink(True, (200, "b"), "t")),
    ]


def test_count_deltas_leave_out_zero_and_sum_per_tag():
    keys = {10: ("alice", "42", "x"), 11: ("alice", "42", "y")}
    incoming = {
        (1, 10): TagLink(True, (1, "a"), "s"),
        (2, 10): TagLink(True, (1, "a"), "s"),
        (1, 11): TagLink(False, (1, "a"), "s"),
    }
    assert domain.link_writes(incoming, {}, keys).count_deltas == {10: 2}


# (contact, tag, present, time, event): one event says one thing about a link, as in real changes.
links_strategy = st.lists(
    st.tuples(st.integers(1, 2), st.integers(10, 11), st.integers(0, 3), st.sampled_from("ab")),
    max_size=12,
).map(lambda ops: [(c, t, (c + t + time + ord(e)) % 3 != 0, time, e) for c, t, time, e in ops])


@given(links_strategy, st.randoms(use_true_random=False), st.integers(1, 4))
def test_any_order_and_batching_of_operations_ends_in_the_same_links_and_counts(operations, rng, batch):
    """Applying operations batch by batch (newest per batch, then over what is stored)
    ends in the newest operation per link, with counts that match, whatever the order."""
    keys = {10: ("p", "1", "x"), 11: ("p", "1", "y")}

    def run(sequence):
        stored: dict = {}
        counts = {10: 0, 11: 0}
        for start in range(0, len(sequence), batch):
            incoming: dict = {}
            for contact, tag, present, time, event in sequence[start : start + batch]:
                link = TagLink(present, (time, event), "s")
                if (contact, tag) not in incoming or link.stamp > incoming[(contact, tag)].stamp:
                    incoming[(contact, tag)] = link
            writes = domain.link_writes(incoming, stored, keys)
            for pair, link in writes.inserts + writes.updates:
                stored[pair] = link
            for tag, delta in writes.count_deltas.items():
                counts[tag] += delta
        present = {pair: link.present for pair, link in stored.items()}
        assert counts == {tag: sum(p for (_, t), p in present.items() if t == tag) for tag in keys}
        return present

    shuffled = list(operations) * 2
    rng.shuffle(shuffled)
    assert run(shuffled) == run(operations)


# --------------------------------------------------------------------------- which changes apply


def test_each_event_applies_once_and_recorded_events_are_skipped():
    live, backfills = domain.distinct([change("e1"), change("e2"), change("e1", seconds=999)])
    assert list(live) == [("alice", "e1"), ("alice", "e2")] and live[("alice", "e1")].occur_time == 100 * S
    assert backfills == []
    assert [c.event_id for c in domain.unapplied(live, backfills, {("alice", "e1")}, set())] == ["e2"]


def test_backfills_apply_only_to_contacts_that_exist_or_are_captured_in_the_batch():
    captured = change("e1", "new@example.com")
    batch = [
        captured,
        change("e1", "new@example.com", backfill="b/1"),
        change("e7", "known@example.com", backfill="b/1"),
        change("e7", "known@example.com", backfill="b/1"),  # the same backfill again: once
        change("e8", "ghost@example.com", backfill="b/1"),
        change("e9", "erased@example.com", backfill="b/1"),
    ]
    live, backfills = domain.distinct(batch)
    assert domain.backfill_emails(backfills) == {
        "alice": ["erased@example.com", "ghost@example.com", "known@example.com", "new@example.com"]
    }
    known = {("alice", "known@example.com")}
    applied = domain.unapplied(live, backfills, set(), known)
    assert [(c.event_id, c.email, c.backfill) for c in applied] == [
        ("e1", "new@example.com", ""),
        ("e1", "new@example.com", "b/1"),
        ("e7", "known@example.com", "b/1"),
    ]
    # A recorded live event does not make its person present: an erased person stays erased.
    live, backfills = domain.distinct([change("e9", "erased@example.com"), batch[-1]])
    assert domain.unapplied(live, backfills, {("alice", "e9")}, set()) == []


def test_wanted_tags_take_the_first_operations_display_name_or_the_key():
    changes = [
        change("e1", ops=[op("x"), op("y", display_name="Y", automatic=False)]),
        change("e2", ops=[op("y", display_name="Other")], product="7"),
        change("e3", ops=[op("y", display_name="Later")]),
    ]
    assert domain.wanted_tags(changes) == {
        ("alice", "42", "x"): ("x", True),
        ("alice", "42", "y"): ("Y", False),
        ("alice", "7", "y"): ("Other", True),
    }


# --------------------------------------------------------------------------- contacts


def test_contact_data_is_merged_key_by_key_newest_wins_in_any_order():
    changes = [
        change("e1", seconds=100, data={"name": "Old", "phone": "1"}),
        change("e2", seconds=300, data={"name": "New"}),
        change("e3", seconds=200, data={"phone": "2", "name": "Middle"}),
    ]
    for order in (changes, changes[::-1], changes[1:] + changes[:1]):
        [(key, seen)] = domain.contact_events(order).items()
        assert key == ("alice", "ana@example.com")
        assert (seen.newest, seen.first_event_time, seen.last_event_time) == ((300 * S, "e2"), 100 * S, 300 * S)
        assert {k: v for k, (v, _) in seen.chosen.items()} == {"name": "New", "phone": "2"}


def test_contact_columns_come_from_chosen_data_only():
    data = domain.contact_data(
        {"first_name": ("Ana", (1, "a")), "last_name": ("Lima", (1, "a")), "country_code": ("BR", (1, "a"))}
    )
    assert (data.display_name, data.phone, data.country_code) == ("Ana Lima", "", "BR")
    assert domain.contact_data({"name": ("Ana", (1, "a")), "first_name": ("X", (1, "a"))}).display_name == "Ana"
    assert domain.contact_data({}) == domain.ContactData("", "", "", {})


def test_a_new_person_is_captured_with_the_batchs_data():
    seen = ContactEvents((200, "e2"), 100, 200, {"name": ("Ana", (200, "e2"))})
    new = domain.capture("ana@example.com", None, seen)
    assert new == domain.NewContact(
        "ana@example.com", (200, "e2"), 100, 200, domain.ContactData("Ana", "", "", {"name": ("Ana", (200, "e2"))})
    )


def test_a_stored_contact_is_updated_only_where_the_batch_is_newer():
    stored = StoredContact(7, (300, "e3"), 200, 300, {"name": ("Ana", (300, "e3"))})
    older = ContactEvents((100, "e1"), 100, 100, {"name": ("Old", (100, "e1"))})
    assert domain.capture("ana@example.com", stored, older) == domain.ContactUpdate(7, 100, 300, None, None)
    newer = ContactEvents((400, "e4"), 400, 400, {"phone": ("9", (400, "e4"))})
    update = domain.capture("ana@example.com", stored, newer)
    assert (update.id, update.first_event_time, update.last_event_time, update.data_stamp) == (7, 200, 400, (400, "e4"))
    assert (update.data.display_name, update.data.phone) == ("Ana", "9")
    assert stored.attributes == {"name": ("Ana", (300, "e3"))}  # the stored value is not mutated


def test_by_producer_keeps_order():
    assert domain.by_producer([("a", "x"), ("b", "y"), ("a", "z")]) == {"a": ["x", "z"], "b": ["y"]}


# --------------------------------------------------------------------------- history and products


def test_history_marks_the_oldest_event_of_a_captured_contact_and_lists_tags():
    changes = [
        change("e2", seconds=200, ops=[op("x"), op("y", added=False)]),
        change("e1", seconds=100),
        change("e3", "bia@example.com", seconds=50),
    ]
    ids = {("alice", "ana@example.com"): 1, ("alice", "bia@example.com"): 2}
    entries = domain.history_entries(changes, ids, created={("alice", "ana@example.com")})
    assert [(e.event_id, e.contact_id, e.contact_created) for e in entries] == [
        ("e2", 1, False),
        ("e1", 1, True),
        ("e3", 2, False),
    ]
    assert (entries[0].added_tags, entries[0].removed_tags, entries[0].fired_segmentations) == (["x"], ["y"], ["seg"])
    assert (entries[0].occur_time, entries[0].product, entries[0].event_type) == (200 * S, "42", 3)


def test_products_are_linked_by_their_oldest_event_and_counted_per_day():
    day = domain.MICROS_PER_DAY // S
    changes = [
        change("e2", seconds=day + 5, event_type=3),
        change("e1", seconds=day + 1, event_type=3),
        change("e3", seconds=2 * day, event_type=4),
        change("e4", "bia@example.com", seconds=2 * day, event_type=4, product="7"),
    ]
    ids = {("alice", "ana@example.com"): 1, ("alice", "bia@example.com"): 2}
    firsts = domain.first_product_events(changes, ids)
    assert {pair: c.event_id for pair, c in firsts.items()} == {(1, "42"): "e1", (2, "7"): "e4"}
    # Only bia's link is new: ana was linked to product 42 before this batch.
    assert domain.daily_counts(changes, {("alice", "e4")}) == {
        ("alice", "42", 1, 3): (2, 0),
        ("alice", "42", 2, 4): (1, 0),
        ("alice", "7", 2, 4): (1, 1),
    }
