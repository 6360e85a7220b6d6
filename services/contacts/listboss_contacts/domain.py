"""What applying a batch of contact changes decides, free of protobuf and of the database.

Every tag operation carries a stamp: the time its event occurred, with the
event id breaking ties. For each (contact, tag) the operation with the
greatest stamp decides whether the tag is present. Taking a maximum is
commutative, associative and idempotent, so any order and any repetition of
the same events ends in the same tags. A contact's data is merged the same way,
key by key.

The functions here take and return plain values (:class:`Change` and the
tuples below); :mod:`listboss_contacts.apply` reads what they need through the
repository and writes what they decide.

A change without an email (its person was erased while it was on the bus, see
:mod:`listboss_common.personal_data`) captures and tags nobody; its event is
still recorded in the history, without a contact.

A change without a product (the event named a person but no usable product) captures and
updates its contact and is recorded in the history with product "" (so no product's
``ListEvents`` shows it); it links the contact to no product, counts on no dashboard and,
having no tag operations (segmentation gives it none), tags nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

Stamp = tuple[int, str]  # (occur time in microseconds, event id)
ContactKey = tuple[str, str]  # (producer, email)
EventKey = tuple[str, str]  # (producer, event id)
TagKey = tuple[str, str, str]  # (producer, product, tag key)
LinkKey = tuple[int, int]  # (contact id, tag id)
Attributes = dict[str, tuple[str, Stamp]]  # key -> (value, stamp of the event that sent it)

MICROS_PER_DAY = 86_400 * 1_000_000


# --------------------------------------------------------------------------- values


class TagOperation(NamedTuple):
    tag_key: str
    added: bool  # False: removed
    display_name: str  # may be empty: the key is shown
    automatic: bool
    segmentation: str


class Change(NamedTuple):
    """One event's change to its contact. Named tuples: a batch holds thousands."""

    producer: str
    event_id: str
    event_type: int
    product: str
    email: str
    occur_time: int  # microseconds
    operations: tuple[TagOperation, ...]
    fired_segmentations: tuple[str, ...]
    contact_data: Mapping[str, str]  # what the fired segmentations chose to send
    backfill: str = ""  # a backfill's id: re-applies a recorded event's tags and data

    @property
    def stamp(self) -> Stamp:
        return (self.occur_time, self.event_id)

    @property
    def contact(self) -> ContactKey:
        return (self.producer, self.email)

    @property
    def event(self) -> EventKey:
        return (self.producer, self.event_id)


class TagLink(NamedTuple):
    """A stored or incoming tag link (a named tuple: a batch builds thousands)."""

    present: bool
    stamp: Stamp
    segmentation: str


# --------------------------------------------------------------------------- tag links


def resolve(current: TagLink | None, incoming: TagLink) -> TagLink | None:
    """The link to store after ``incoming``, or None when ``current`` is newer (nothing changes)."""
    if current is not None and current.stamp >= incoming.stamp:
        return None
    return incoming


def count_delta(current: TagLink | None, stored: TagLink) -> int:
    """How the tag's contact count moves when ``stored`` replaces ``current``."""
    was = current is not None and current.present
    return int(stored.present) - int(was)


def wanted_tags(changes: Iterable[Change]) -> dict[TagKey, tuple[str, bool]]:
    """The tags the batch's operations name -> (display name, automatic), as the first
    operation naming each says (used only when the tag is created)."""
    wanted: dict[TagKey, tuple[str, bool]] = {}
    for change in changes:
        for operation in change.operations:
            wanted.setdefault(
                (change.producer, change.product, operation.tag_key),
                (operation.display_name or operation.tag_key, operation.automatic),
            )
    return wanted


def newest_links(
    changes: Iterable[Change], contact_ids: Mapping[ContactKey, int], tag_ids: Mapping[TagKey, int]
) -> dict[LinkKey, TagLink]:
    """The batch's newest operation per (contact, tag)."""
    incoming: dict[LinkKey, TagLink] = {}
    for change in changes:
        contact_id = contact_ids.get(change.contact)
        if contact_id is None:  # no person (erased before the change arrived): no contact to tag
            continue
        stamp = change.stamp
        for operation in change.operations:
            pair = (contact_id, tag_ids[(change.producer, change.product, operation.tag_key)])
            held = incoming.get(pair)
            if held is None or stamp > held.stamp:
                incoming[pair] = TagLink(operation.added, stamp, operation.segmentation)
    return incoming


class TagChange(NamedTuple):
    """A change of a tag's presence on a contact: what the outbox carries to automations."""

    tag: TagKey
    contact_id: int
    link: TagLink


@dataclass
class LinkWrites:
    inserts: list[tuple[LinkKey, TagLink]]
    updates: list[tuple[LinkKey, TagLink]]
    count_deltas: dict[int, int]  # tag id -> change of its contact count (non-zero only)
    changes: list[TagChange]


def link_writes(
    incoming: Mapping[LinkKey, TagLink], current: Mapping[LinkKey, TagLink], tag_keys: Mapping[int, TagKey]
) -> LinkWrites:
    """What storing ``incoming`` over the ``current`` links writes, in (contact, tag) order:
    new and replaced links, tag count deltas, and a tag change for every link whose
    presence changed (a newer operation that keeps the state is no change)."""
    writes = LinkWrites([], [], {}, [])
    deltas: dict[int, int] = defaultdict(int)
    for pair in sorted(incoming):
        link = incoming[pair]
        before = current.get(pair)
        stored = resolve(before, link)
        if stored is None:
            continue
        (writes.updates if before is not None else writes.inserts).append((pair, stored))
        delta = count_delta(before, stored)
        deltas[pair[1]] += delta
        if delta:
            writes.changes.append(TagChange(tag_keys[pair[1]], pair[0], stored))
    writes.count_deltas = {tag_id: delta for tag_id, delta in sorted(deltas.items()) if delta}
    return writes


# --------------------------------------------------------------------------- which changes apply


def distinct(changes: Iterable[Change]) -> tuple[dict[EventKey, Change], list[Change]]:
    """The live changes by event, each event once, and the backfill changes, each
    (event, backfill) once; the first of repeats is kept."""
    live: dict[EventKey, Change] = {}
    backfills: dict[tuple[str, str, str], Change] = {}
    for change in changes:
        if change.backfill:
            backfills.setdefault((change.producer, change.event_id, change.backfill), change)
        else:
            live.setdefault(change.event, change)
    return live, list(backfills.values())


def unapplied(
    live: Mapping[EventKey, Change],
    backfills: Sequence[Change],
    recorded: Iterable[EventKey],
    known_contacts: Iterable[ContactKey],
) -> list[Change]:
    """The live changes whose events are not ``recorded`` in the history, then the
    backfill changes whose person is a known contact or captured by one of those live
    changes (a backfill never captures anyone, so an erased person stays erased)."""
    recorded = set(recorded)
    fresh = [change for key, change in live.items() if key not in recorded]
    present = {change.contact for change in fresh if change.email}
    present.update(known_contacts)
    return fresh + [change for change in backfills if change.contact in present]


def backfill_emails(backfills: Iterable[Change]) -> dict[str, list[str]]:
    """Producer -> the distinct emails of its backfill changes, sorted (whose contacts to look for)."""
    emails: dict[str, set[str]] = defaultdict(set)
    for change in backfills:
        emails[change.producer].add(change.email)
    return {producer: sorted(found) for producer, found in emails.items()}


# --------------------------------------------------------------------------- contacts


def merge_attributes(into: Attributes, incoming: Mapping[str, tuple[str, Stamp]]) -> bool:
    """Merges chosen contact data into ``into`` key by key, the newest stamp winning
    (order-independent, idempotent); says whether anything changed."""
    changed = False
    for key, (value, stamp) in incoming.items():
        if key not in into or stamp > into[key][1]:
            into[key] = (value, stamp)
            changed = True
    return changed


class ContactData(NamedTuple):
    """A contact's data columns, derived from the data segmentations chose to send and nothing else."""

    display_name: str
    phone: str
    country_code: str
    attributes: Attributes


def contact_data(attributes: Attributes) -> ContactData:
    values = {key: value for key, (value, _) in attributes.items()}
    name = values.get("name") or " ".join(v for v in (values.get("first_name"), values.get("last_name")) if v)
    return ContactData(name, values.get("phone", ""), values.get("country_code", ""), attributes)


@dataclass
class ContactEvents:
    """What a batch's changes say about one contact."""

    newest: Stamp
    first_event_time: int
    last_event_time: int
    chosen: Attributes


def contact_events(changes: Iterable[Change]) -> dict[ContactKey, ContactEvents]:
    """Per contact, in order of first appearance: its newest stamp, first and last event
    times, and the chosen data merged newest-wins."""
    found: dict[ContactKey, ContactEvents] = {}
    for change in changes:
        if not change.email:  # the person was erased: nobody to capture
            continue
        key = change.contact
        stamp = change.stamp
        seen = found.get(key)
        if seen is None:
            seen = found[key] = ContactEvents(stamp, stamp[0], stamp[0], {})
        else:
            seen.newest = max(seen.newest, stamp)
            seen.first_event_time = min(seen.first_event_time, stamp[0])
            seen.last_event_time = max(seen.last_event_time, stamp[0])
        chosen = seen.chosen
        for name, value in change.contact_data.items():  # merge_attributes, inlined: it runs per change
            held = chosen.get(name)
            if held is None or stamp > held[1]:
                chosen[name] = (value, stamp)
    return found


class StoredContact(NamedTuple):
    id: int
    data_stamp: Stamp  # the stamp of the newest event applied to the contact
    first_event_time: int
    last_event_time: int
    attributes: Attributes


class NewContact(NamedTuple):
    email: str
    data_stamp: Stamp
    first_event_time: int
    last_event_time: int
    data: ContactData


class ContactUpdate(NamedTuple):
    id: int
    first_event_time: int
    last_event_time: int
    data: ContactData | None  # None: the data did not change
    data_stamp: Stamp | None  # None: no newer event


def capture(email: str, stored: StoredContact | None, events: ContactEvents) -> NewContact | ContactUpdate:
    """A new contact (label AUTO) for a person not stored yet, else the update of the stored one."""
    attributes = dict(stored.attributes) if stored is not None else {}
    changed = merge_attributes(attributes, events.chosen)
    if stored is None:
        return NewContact(
            email, events.newest, events.first_event_time, events.last_event_time, contact_data(attributes)
        )
    return ContactUpdate(
        stored.id,
        min(stored.first_event_time, events.first_event_time),
        max(stored.last_event_time, events.last_event_time),
        contact_data(attributes) if changed else None,
        events.newest if events.newest > stored.data_stamp else None,
    )


def by_producer(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(producer, email or event id) pairs -> producer -> emails or event ids, in order
    (the store reads them per producer)."""
    found: dict[str, list[str]] = defaultdict(list)
    for producer, name in keys:
        found[producer].append(name)
    return found


# --------------------------------------------------------------------------- history and products


class HistoryEntry(NamedTuple):
    producer: str
    product: str
    event_id: str
    event_type: int
    occur_time: int
    contact_id: int | None  # None: the event's person was erased before it was applied
    email: str
    contact_created: bool
    added_tags: list[str]
    removed_tags: list[str]
    fired_segmentations: list[str]


def capturing_events(changes: Iterable[Change], created: Iterable[ContactKey]) -> set[EventKey]:
    """The event that captured each new contact: its oldest in the batch."""
    created = set(created)
    oldest: dict[ContactKey, Change] = {}
    for change in changes:
        key = change.contact
        if key in created and (key not in oldest or change.stamp < oldest[key].stamp):
            oldest[key] = change
    return {change.event for change in oldest.values()}


def history_entries(
    changes: Sequence[Change], contact_ids: Mapping[ContactKey, int], created: Iterable[ContactKey]
) -> list[HistoryEntry]:
    """One history entry per live change: what its event did."""
    capturing = capturing_events(changes, created)
    return [
        HistoryEntry(
            change.producer,
            change.product,
            change.event_id,
            change.event_type,
            change.occur_time,
            contact_ids.get(change.contact),
            change.email,
            change.event in capturing,
            [op.tag_key for op in change.operations if op.added],
            [op.tag_key for op in change.operations if not op.added],
            list(change.fired_segmentations),
        )
        for change in changes
    ]


def first_product_events(
    changes: Iterable[Change], contact_ids: Mapping[ContactKey, int]
) -> dict[tuple[int, str], Change]:
    """Per (contact id, product), the batch's oldest event: the one that links them if
    they were not linked yet (for ``product = ...`` filters and the dashboard). An event
    without a product links its contact to none."""
    firsts: dict[tuple[int, str], Change] = {}
    for change in changes:
        contact_id = contact_ids.get(change.contact)
        if contact_id is None or not change.product:
            continue
        pair = (contact_id, change.product)
        if pair not in firsts or change.stamp < firsts[pair].stamp:
            firsts[pair] = change
    return firsts


DailyKey = tuple[str, str, int, int]  # (producer, product, day since the epoch, event type)


def daily_counts(changes: Iterable[Change], linking: Iterable[EventKey]) -> dict[DailyKey, tuple[int, int]]:
    """The batch's additions to the per-product daily counters: (events, contacts
    captured), where captured counts the events that linked a contact to the product.
    An event without a product counts on no product's dashboard."""
    linking = set(linking)
    counts: dict[DailyKey, list[int]] = defaultdict(lambda: [0, 0])
    for change in changes:
        if not change.product:
            continue
        key = (change.producer, change.product, change.occur_time // MICROS_PER_DAY, change.event_type)
        counts[key][0] += 1
        counts[key][1] += change.event in linking
    return {key: (events, captured) for key, (events, captured) in sorted(counts.items())}
