"""Applying contact changes: one transaction per batch, idempotent and order-independent.

For a batch of changes this: drops events already in the history (the same
event applied twice changes nothing); captures or updates each contact (label
AUTO; each key of its data is the newest event's that chose it); creates tags on
first use; stores each tag link's newest operation while keeping tag counts and
writing every change of a tag's presence to the outbox; records every event in
its product's history; links contacts to products and adds to the daily
counters; keeps each purchase's newest state and the purchase traits derived from
the counted ones. The decisions are :mod:`listboss_contacts.domain`'s; the reads and
writes, a few set-based statements per batch (not per event), are
:class:`~listboss_contacts.repository.ContactStore`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from listboss.changes.v1 import contact_change_pb2
from listboss_contacts import audiences, domain, messages
from listboss_contacts.domain import ContactKey, TagKey
from listboss_contacts.repository import ContactStore, TagIds

__all__ = ["AppliedBatch", "TagIds", "apply_batch", "apply_changes"]


@dataclass
class AppliedBatch:
    applied: int = 0
    skipped: int = 0
    # Tag ids to cache once the transaction commits.
    tag_ids: dict[TagKey, int] = field(default_factory=dict)


def apply_changes(
    connection: Connection, changes: Sequence[contact_change_pb2.ContactChange], tag_ids: TagIds
) -> AppliedBatch:
    """Applies ``ContactChange`` messages in the caller's transaction (``connection``): for
    tests that drive a transaction themselves; the service goes through
    :func:`listboss_contacts.handlers.apply_changes`."""
    return apply_batch(ContactStore(connection), messages.changes_from(changes), tag_ids)


def apply_batch(store: ContactStore, changes: Sequence[domain.Change], tag_ids: TagIds) -> AppliedBatch:
    result = AppliedBatch()
    fresh = _unapplied(store, changes)
    result.skipped = len(changes) - len(fresh)
    if not fresh:
        return result
    contact_ids, created = _capture_contacts(store, fresh)
    result.tag_ids = store.tag_ids(domain.wanted_tags(fresh), tag_ids)
    incoming = domain.newest_links(fresh, contact_ids, result.tag_ids)
    if incoming:
        current = store.tag_links(incoming)
        tag_keys = {tag_id: key for key, tag_id in result.tag_ids.items()}
        store.write_links(domain.link_writes(incoming, current, tag_keys))
    _apply_purchases(store, fresh, contact_ids)
    # Backfill changes re-apply tag operations and contact data of recorded events:
    # they count as no new event, write no history and never capture a contact.
    live = [change for change in fresh if not change.backfill]
    if live:
        store.add_history(domain.history_entries(live, contact_ids, created))
        firsts = domain.first_product_events(live, contact_ids)
        linked = store.link_products(firsts) if firsts else set()
        # Empty when every event of the batch names no product.
        daily = domain.daily_counts(live, {firsts[pair].event for pair in linked})
        if daily:
            store.add_daily_counts(daily)
    # Last, so the filters read everything the batch wrote: the touched contacts' audiences.
    audiences.reevaluate_batch(store.connection, fresh, contact_ids)
    result.applied = len(fresh)
    return result


def _apply_purchases(store: ContactStore, changes: Sequence[domain.Change], contact_ids: dict[ContactKey, int]) -> None:
    """Stores each purchase's newest state and derives again the traits of the contacts
    whose counted purchases changed. Backfill changes take part: a state already stored
    is not replaced by the same or an older one."""
    incoming = domain.newest_purchases(changes, contact_ids)
    if incoming:
        stored = store.purchases_of(sorted({contact_id for contact_id, _ in incoming}))
        store.write_purchases(domain.purchase_writes(incoming, stored))


def _unapplied(store: ContactStore, changes: Sequence[domain.Change]) -> list[domain.Change]:
    live, backfills = domain.distinct(changes)
    recorded = store.recorded(domain.by_producer(live))
    known: set[ContactKey] = set()
    for producer, emails in domain.backfill_emails(backfills).items():
        known.update((producer, email) for email in store.contact_ids(producer, emails))
    return domain.unapplied(live, backfills, recorded, known)


def _capture_contacts(
    store: ContactStore, changes: Sequence[domain.Change]
) -> tuple[dict[ContactKey, int], set[ContactKey]]:
    """Creates or updates the batch's contacts; returns their ids and the ones created."""
    seen = domain.contact_events(changes)
    ids: dict[ContactKey, int] = {}
    created: set[ContactKey] = set()
    updates: list[domain.ContactUpdate] = []
    # Producers in name order, emails in order within each (add_contacts): two replicas
    # inserting the same new contacts wait for each other instead of deadlocking.
    for producer, emails in sorted(domain.by_producer(seen).items()):
        stored = store.contacts(producer, emails)
        new: list[domain.NewContact] = []
        for email in emails:
            decided = domain.capture(email, stored.get(email), seen[(producer, email)])
            if isinstance(decided, domain.NewContact):
                new.append(decided)
            else:
                ids[(producer, email)] = decided.id
                updates.append(decided)
        for email, contact_id in store.add_contacts(producer, new).items():
            ids[(producer, email)] = contact_id
            created.add((producer, email))
        # Contacts another transaction created since they were read: merged into, like stored ones.
        taken = sorted(contact.email for contact in new if (producer, contact.email) not in created)
        if taken:
            stored = store.contacts(producer, taken)
            for email in taken:
                update = domain.capture(email, stored[email], seen[(producer, email)])
                assert isinstance(update, domain.ContactUpdate)
                ids[(producer, email)] = update.id
                updates.append(update)
    store.update_contacts(updates)
    return ids, created
