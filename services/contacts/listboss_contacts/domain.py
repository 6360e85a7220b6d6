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
    purchase: Purchase | None = None  # the event's purchase, when it names a transaction

    @property
    def stamp(self) -> Stamp:
        return (self.occur_time, self.event_id)

    @property
    def contact(self) -> ContactKey:
        return (self.producer, self.email)

    @property
    def event(self) -> EventKey:
        return (self.producer, self.event_id)


class Purchase(NamedTuple):
    """What an event says of its purchase."""

    transaction: str
    currency: str  # ISO 4217
    amount: int  # millionths of the currency unit: sums stay exact
    purchase_time: int  # microseconds: approved, else ordered; 0 when the event gave neither


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


# --------------------------------------------------------------------------- purchases and traits
#
# A purchase is a last-writer-wins register per (contact, transaction), like a tag link: the
# event with the greatest stamp decides whether it counts and with which figures. The traits
# (number of purchases, spent per currency, first and last purchase time, products bought)
# are then a function of the counted purchases alone, derived again for every contact whose
# purchases changed in a batch. So any order and any repetition of the same events end in
# the same traits. (First and last times are a minimum and a maximum: a refund cannot be
# subtracted from them, which is why they are derived, not moved by deltas.)

# EventType numbers (listboss.events.v1; this module imports no protobuf, a test checks the names).
PURCHASE_COUNTED_TYPES = frozenset({3, 4})  # PURCHASE_APPROVED, PURCHASE_COMPLETE
# PURCHASE_CANCELED, PURCHASE_EXPIRED, PURCHASE_PROTEST, PURCHASE_REFUNDED, PURCHASE_CHARGEBACK
PURCHASE_TAKEN_BACK_TYPES = frozenset({5, 6, 8, 9, 10})
# Every other type (cart abandoned, billet printed, delayed, subscription and club events, ...)
# says nothing about whether money was kept: it leaves the purchase as it is.

PurchaseKey = tuple[int, str]  # (contact id, transaction)


class PurchaseState(NamedTuple):
    """A purchase as stored: counted or taken back out, by the newest event that decided it."""

    producer: str
    product: str
    counted: bool
    stamp: Stamp
    purchase_time: int
    currency: str
    amount: int


def purchase_state(change: Change) -> PurchaseState | None:
    """The state ``change`` gives its purchase, or None when it decides none."""
    purchase = change.purchase
    if purchase is None or not purchase.transaction:
        return None
    counted = change.event_type in PURCHASE_COUNTED_TYPES
    if not counted and change.event_type not in PURCHASE_TAKEN_BACK_TYPES:
        return None
    return PurchaseState(
        change.producer,
        change.product,
        counted,
        change.stamp,
        purchase.purchase_time or change.occur_time,
        purchase.currency,
        purchase.amount,
    )


def newest_purchases(
    changes: Iterable[Change], contact_ids: Mapping[ContactKey, int]
) -> dict[PurchaseKey, PurchaseState]:
    """The batch's newest state per (contact, transaction)."""
    incoming: dict[PurchaseKey, PurchaseState] = {}
    for change in changes:
        if change.purchase is None:
            continue
        contact_id = contact_ids.get(change.contact)
        state = purchase_state(change)
        if contact_id is None or state is None:
            continue
        key = (contact_id, change.purchase.transaction)
        held = incoming.get(key)
        if held is None or state.stamp > held.stamp:
            incoming[key] = state
    return incoming


TraitKey = tuple[int, str]  # (contact id, product; "" for the producer as a whole)
SpendingKey = tuple[int, str, str]  # (contact id, product, currency)


@dataclass
class PurchaseWrites:
    """Purchases to store, and the changes of the traits derived from them, in key order:
    only the rows whose values change are written, only the ones that no longer hold deleted."""

    inserts: list[tuple[PurchaseKey, PurchaseState]]
    updates: list[tuple[PurchaseKey, PurchaseState]]
    producers: dict[int, str]  # contact id -> producer, for the contacts below
    traits: list[tuple[TraitKey, Traits]]  # new or changed
    traits_gone: list[TraitKey]
    spending: list[tuple[SpendingKey, int]]  # new or changed amounts
    spending_gone: list[SpendingKey]


def purchase_writes(
    incoming: Mapping[PurchaseKey, PurchaseState], stored: Mapping[PurchaseKey, PurchaseState]
) -> PurchaseWrites:
    """What storing ``incoming`` over the ``stored`` purchases writes, in key order, and the
    traits of the contacts it changes. ``stored`` holds every stored purchase of the
    contacts ``incoming`` names (their traits are derived from all of them)."""
    writes = PurchaseWrites([], [], {}, [], [], [], [])
    touched: set[int] = set()
    for key in sorted(incoming):
        state = incoming[key]
        before = stored.get(key)
        if before is not None and before.stamp >= state.stamp:
            continue
        (writes.updates if before is not None else writes.inserts).append((key, state))
        if state.counted or (before is not None and before.counted):
            touched.add(key[0])
    if not touched:
        return writes
    written = dict(writes.inserts + writes.updates)
    held_before: dict[int, list[PurchaseState]] = defaultdict(list)
    held_after: dict[int, list[PurchaseState]] = defaultdict(list)
    for key in stored.keys() | written.keys():
        if key[0] in touched:
            if key in stored:
                held_before[key[0]].append(stored[key])
            held_after[key[0]].append(written.get(key) or stored[key])
    for contact_id in sorted(touched):
        writes.producers[contact_id] = held_after[contact_id][0].producer
        _trait_changes(
            writes, contact_id, purchase_traits(held_before[contact_id]), purchase_traits(held_after[contact_id])
        )
    return writes


def _trait_changes(
    writes: PurchaseWrites, contact_id: int, old: Mapping[str, Traits], new: Mapping[str, Traits]
) -> None:
    for product, traits in new.items():
        held = old.get(product)
        if held != traits:
            writes.traits.append(((contact_id, product), traits))
        held_spent = held.spent if held is not None else {}
        for currency, amount in sorted(traits.spent.items()):
            if held_spent.get(currency) != amount:
                writes.spending.append(((contact_id, product, currency), amount))
        writes.spending_gone.extend(
            (contact_id, product, currency) for currency in sorted(held_spent) if currency not in traits.spent
        )
    for product, held in old.items():
        if product not in new:
            writes.traits_gone.append((contact_id, product))
            writes.spending_gone.extend((contact_id, product, currency) for currency in sorted(held.spent))


class Traits(NamedTuple):
    """A contact's purchase traits, for one product or (product "") the producer as a whole."""

    purchases: int
    first_purchase_time: int
    last_purchase_time: int
    spent: dict[str, int]  # currency -> millionths of its unit


def purchase_traits(counted: Iterable[PurchaseState]) -> dict[str, Traits]:
    """Product ("" for all of them) -> traits of one contact's counted purchases."""
    found: dict[str, Traits] = {}
    for state in counted:
        if not state.counted:
            continue
        # "" is the producer as a whole; a purchase of no product counts only there.
        for product in ("", state.product) if state.product else ("",):
            held = found.get(product)
            if held is None:
                held = found[product] = Traits(0, state.purchase_time, state.purchase_time, {})
            spent = held.spent
            if state.currency:
                spent[state.currency] = spent.get(state.currency, 0) + state.amount
            found[product] = Traits(
                held.purchases + 1,
                min(held.first_purchase_time, state.purchase_time),
                max(held.last_purchase_time, state.purchase_time),
                spent,
            )
    return dict(sorted(found.items()))
