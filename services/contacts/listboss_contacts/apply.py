"""Applying contact changes: one transaction per batch, idempotent and order-independent.

For a batch of changes this: drops events already in the history (the same
event applied twice changes nothing); captures or updates each contact (label
AUTO; its data is the newest event's); creates tags on first use; stores each
tag link's newest operation (see :mod:`listboss_contacts.domain`) while keeping
tag counts; and records every event in its product's history. The work is done
in a few set-based statements per batch, not per event.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from listboss.changes.v1 import contact_change_pb2
from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss_common import db
from listboss_common.db import is_postgres, now, to_micros
from listboss_contacts import domain
from listboss_contacts.schema import (
    contact_products,
    contact_tags,
    contacts,
    history,
    product_daily,
    tag_change_outbox,
    tags,
)

_ADD = contact_change_pb2.TagOperation.ACTION_ADD
# Bound parameters per IN (...) list: far below SQLite's and PostgreSQL's limits.
_CHUNK = 500

TagKey = tuple[str, str, str]  # (producer, product, tag key)


def chunks(items: Sequence, size: int = _CHUNK) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class TagIds:
    """Tag ids by (producer, product, key), cached across batches.

    Tags are never deleted, so a cached id stays right; ids learnt inside a
    transaction join the cache only once it commits (:meth:`commit`).
    """

    def __init__(self) -> None:
        self._known: dict[TagKey, int] = {}

    def lookup(self, connection: Connection, wanted: dict[TagKey, tuple[str, bool]]) -> dict[TagKey, int]:
        """Ids for ``wanted`` (key -> (display name, automatic)), creating missing tags."""
        found = {key: self._known[key] for key in wanted if key in self._known}
        missing = [key for key in wanted if key not in found]
        if missing:
            found.update(_select_tag_ids(connection, missing))
            to_create = [key for key in missing if key not in found]
            if to_create:
                stamp = to_micros(now())
                rows = [
                    dict(
                        producer=p,
                        product=product,
                        key=key,
                        display_name=wanted[(p, product, key)][0],
                        automatic=wanted[(p, product, key)][1],
                        contact_count=0,
                        create_time=stamp,
                    )
                    for p, product, key in to_create
                ]
                connection.execute(db.insert(connection, tags).on_conflict_do_nothing(), rows)
                found.update(_select_tag_ids(connection, to_create))
        return found

    def commit(self, learnt: dict[TagKey, int]) -> None:
        self._known.update(learnt)


def _select_tag_ids(connection: Connection, keys: Sequence[TagKey]) -> dict[TagKey, int]:
    by_product: dict[tuple[str, str], list[str]] = defaultdict(list)
    for producer, product, key in keys:
        by_product[(producer, product)].append(key)
    found: dict[TagKey, int] = {}
    for (producer, product), names in by_product.items():
        rows = connection.execute(
            sa.select(tags.c.id, tags.c.key).where(
                tags.c.producer == producer, tags.c.product == product, tags.c.key.in_(names)
            )
        )
        found.update({(producer, product, row.key): row.id for row in rows})
    return found


@dataclass
class AppliedBatch:
    applied: int = 0
    skipped: int = 0
    # Tag ids to cache once the transaction commits.
    tag_ids: dict[TagKey, int] = field(default_factory=dict)


def _stamp(change: contact_change_pb2.ContactChange) -> domain.Stamp:
    occur = change.event.occur_time
    return (occur.seconds * 1_000_000 + occur.nanos // 1000, change.event.id)


def _merge_attributes(
    into: dict[str, tuple[str, domain.Stamp]], incoming: dict[str, tuple[str, domain.Stamp]]
) -> bool:
    """Merges chosen contact data key by key, the newest stamp winning (order-independent,
    idempotent); says whether anything changed."""
    changed = False
    for key, (value, stamp) in incoming.items():
        if key not in into or stamp > into[key][1]:
            into[key] = (value, stamp)
            changed = True
    return changed


def _stored_attributes(stamps_json: str) -> dict[str, tuple[str, domain.Stamp]]:
    return {key: (value, (time, event)) for key, (value, time, event) in json.loads(stamps_json or "{}").items()}


def _contact_columns(attributes: dict[str, tuple[str, domain.Stamp]]) -> dict:
    """The contact's columns from the data segmentations chose to send, and nothing else."""
    values = {key: value for key, (value, _) in attributes.items()}
    name = values.get("name") or " ".join(v for v in (values.get("first_name"), values.get("last_name")) if v)
    return dict(
        display_name=name,
        phone=values.get("phone", ""),
        country_code=values.get("country_code", ""),
        attributes=json.dumps(values, sort_keys=True),
        attribute_stamps=json.dumps(
            {key: [value, stamp[0], stamp[1]] for key, (value, stamp) in attributes.items()}, sort_keys=True
        ),
    )


def apply_changes(
    connection: Connection, changes: Sequence[contact_change_pb2.ContactChange], tag_ids: TagIds
) -> AppliedBatch:
    result = AppliedBatch()
    fresh = _unapplied(connection, changes)
    result.skipped = len(changes) - len(fresh)
    if not fresh:
        return result
    contact_ids, created = _capture_contacts(connection, fresh)
    # Backfill changes re-apply tag operations and contact data of recorded events:
    # they count as no new event, write no history and never capture a contact.
    live = [change for change in fresh if not change.backfill]
    wanted: dict[TagKey, tuple[str, bool]] = {}
    for change in fresh:
        event = change.event
        for operation in change.tag_operations:
            wanted.setdefault(
                (event.producer, event.product.id, operation.tag_key),
                (operation.tag_display_name or operation.tag_key, operation.automatic),
            )
    result.tag_ids = tag_ids.lookup(connection, wanted)
    _store_tag_links(connection, fresh, contact_ids, result.tag_ids)
    if live:
        _record_history(connection, live, contact_ids, created)
        _count_product_events(connection, live, _link_products(connection, live, contact_ids))
    result.applied = len(fresh)
    return result


def _unapplied(
    connection: Connection, changes: Sequence[contact_change_pb2.ContactChange]
) -> list[contact_change_pb2.ContactChange]:
    """The changes whose events are not in the history yet, each once; and every
    backfill change whose contact exists (or is captured by a live change of the batch)."""
    unique: dict[tuple[str, str], contact_change_pb2.ContactChange] = {}
    backfills: dict[tuple[str, str, str], contact_change_pb2.ContactChange] = {}
    for change in changes:
        if change.backfill:
            backfills.setdefault((change.event.producer, change.event.id, change.backfill), change)
        else:
            unique.setdefault((change.event.producer, change.event.id), change)
    ids_by_producer: dict[str, list[str]] = defaultdict(list)
    for producer, event_id in unique:
        ids_by_producer[producer].append(event_id)
    for producer, event_ids in ids_by_producer.items():
        for chunk in chunks(event_ids):
            rows = connection.execute(
                sa.select(history.c.event_id).where(history.c.producer == producer, history.c.event_id.in_(chunk))
            )
            for row in rows:
                del unique[(producer, row.event_id)]
    return list(unique.values()) + _with_contact(connection, list(backfills.values()), unique.values())


def _with_contact(
    connection: Connection,
    backfills: Sequence[contact_change_pb2.ContactChange],
    live: Iterable[contact_change_pb2.ContactChange],
) -> list[contact_change_pb2.ContactChange]:
    """The backfill changes whose person is a contact already (an erased person stays erased)."""
    if not backfills:
        return []
    present = {(c.event.producer, c.event.person.email) for c in live}
    emails: dict[str, list[str]] = defaultdict(list)
    for change in backfills:
        emails[change.event.producer].append(change.event.person.email)
    for producer, wanted in emails.items():
        present.update((producer, email) for email in _select_contacts(connection, producer, sorted(set(wanted))))
    return [c for c in backfills if (c.event.producer, c.event.person.email) in present]


def _select_contacts(connection: Connection, producer: str, emails: Sequence[str]) -> dict[str, sa.Row]:
    found: dict[str, sa.Row] = {}
    for chunk in chunks(emails):
        rows = connection.execute(
            sa.select(
                contacts.c.id,
                contacts.c.email,
                contacts.c.data_time,
                contacts.c.data_event,
                contacts.c.first_event_time,
                contacts.c.last_event_time,
                contacts.c.attribute_stamps,
            ).where(contacts.c.producer == producer, contacts.c.email.in_(chunk))
        )
        found.update({row.email: row for row in rows})
    return found


def _capture_contacts(
    connection: Connection, changes: Sequence[contact_change_pb2.ContactChange]
) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]]]:
    """Creates or updates the batch's contacts; returns their ids and the ones created."""
    newest: dict[tuple[str, str], contact_change_pb2.ContactChange] = {}
    first: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], int] = {}
    chosen: dict[tuple[str, str], dict[str, tuple[str, domain.Stamp]]] = defaultdict(dict)
    for change in changes:
        key = (change.event.producer, change.event.person.email)
        stamp = _stamp(change)
        _merge_attributes(chosen[key], {k: (v, stamp) for k, v in change.contact_data.items()})
        if key not in newest or stamp > _stamp(newest[key]):
            newest[key] = change
        first[key] = min(first.get(key, stamp[0]), stamp[0])
        last[key] = max(last.get(key, stamp[0]), stamp[0])

    moment = to_micros(now())
    emails_by_producer: dict[str, list[str]] = defaultdict(list)
    for producer, email in newest:
        emails_by_producer[producer].append(email)

    ids: dict[tuple[str, str], int] = {}
    created: set[tuple[str, str]] = set()
    updates = []
    for producer, emails in emails_by_producer.items():
        existing = _select_contacts(connection, producer, emails)
        new_rows = []
        for email in emails:
            key = (producer, email)
            change = newest[key]
            stamp = _stamp(change)
            row = existing.get(email)
            attributes = _stored_attributes(row.attribute_stamps) if row is not None else {}
            attributes_changed = _merge_attributes(attributes, chosen[key])
            data = _contact_columns(attributes)
            if row is None:
                new_rows.append(
                    dict(
                        producer=producer,
                        email=email,
                        source=contacts_pb.CONTACT_SOURCE_AUTO,
                        data_time=stamp[0],
                        data_event=stamp[1],
                        first_event_time=first[key],
                        last_event_time=last[key],
                        create_time=moment,
                        update_time=moment,
                        **data,
                    )
                )
                continue
            ids[key] = row.id
            update = dict(
                b_id=row.id,
                first_event_time=min(row.first_event_time, first[key]),
                last_event_time=max(row.last_event_time, last[key]),
                update_time=moment,
            )
            if attributes_changed:
                update.update(data)
            if stamp > (row.data_time, row.data_event):
                update.update(data_time=stamp[0], data_event=stamp[1])
            updates.append(update)
        if new_rows:
            connection.execute(db.insert(connection, contacts).on_conflict_do_nothing(), new_rows)
            inserted = _select_contacts(connection, producer, [r["email"] for r in new_rows])
            for email, row in inserted.items():
                ids[(producer, email)] = row.id
                created.add((producer, email))
    # Rows differ in which columns they set; group them so each statement is an executemany.
    by_columns: dict[tuple[str, ...], list[dict]] = defaultdict(list)
    for update in updates:
        by_columns[tuple(sorted(update))].append(update)
    for columns, rows in by_columns.items():
        statement = (
            contacts.update()
            .where(contacts.c.id == sa.bindparam("b_id"))
            .values({c: sa.bindparam(c) for c in columns if c != "b_id"})
        )
        connection.execute(statement, rows)
    return ids, created


def _store_tag_links(
    connection: Connection,
    changes: Sequence[contact_change_pb2.ContactChange],
    contact_ids: dict[tuple[str, str], int],
    tag_ids: dict[TagKey, int],
) -> None:
    incoming: dict[tuple[int, int], domain.TagLink] = {}
    for change in changes:
        event = change.event
        contact_id = contact_ids[(event.producer, event.person.email)]
        stamp = _stamp(change)
        for operation in change.tag_operations:
            pair = (contact_id, tag_ids[(event.producer, event.product.id, operation.tag_key)])
            link = domain.TagLink(operation.action == _ADD, stamp, operation.segmentation)
            if pair not in incoming or link.stamp > incoming[pair].stamp:
                incoming[pair] = link
    if not incoming:
        return

    current: dict[tuple[int, int], domain.TagLink] = {}
    contact_list = sorted({contact_id for contact_id, _ in incoming})
    for chunk in chunks(contact_list):
        query = sa.select(
            contact_tags.c.contact_id,
            contact_tags.c.tag_id,
            contact_tags.c.present,
            contact_tags.c.stamp_time,
            contact_tags.c.stamp_event,
            contact_tags.c.segmentation,
        ).where(contact_tags.c.contact_id.in_(chunk))
        if is_postgres(connection):
            # Two replicas changing one contact's tags serialise here.
            query = query.order_by(contact_tags.c.contact_id, contact_tags.c.tag_id).with_for_update()
        for row in connection.execute(query):
            current[(row.contact_id, row.tag_id)] = domain.TagLink(
                row.present, (row.stamp_time, row.stamp_event), row.segmentation
            )

    inserts, updates = [], []
    deltas: dict[int, int] = defaultdict(int)
    outbox: list[dict] = []
    tag_keys = {tag_id: key for key, tag_id in tag_ids.items()}
    for (contact_id, tag_id), link in sorted(incoming.items()):
        before = current.get((contact_id, tag_id))
        stored = domain.resolve(before, link)
        if stored is None:
            continue
        row = dict(
            b_contact_id=contact_id,
            b_tag_id=tag_id,
            present=stored.present,
            stamp_time=stored.stamp[0],
            stamp_event=stored.stamp[1],
            segmentation=stored.segmentation,
        )
        (updates if before is not None else inserts).append(row)
        delta = domain.count_delta(before, stored)
        deltas[tag_id] += delta
        if delta:  # the present state changed: automations hear of it (tag_changes.py)
            outbox.append(outbox_row(tag_keys[tag_id], contact_id, stored))

    if inserts:
        connection.execute(
            contact_tags.insert(),
            [
                dict(contact_id=row.pop("b_contact_id"), tag_id=row.pop("b_tag_id"), **row)
                for row in inserts
            ],
        )
    if updates:
        connection.execute(
            contact_tags.update()
            .where(contact_tags.c.contact_id == sa.bindparam("b_contact_id"))
            .where(contact_tags.c.tag_id == sa.bindparam("b_tag_id"))
            .values(
                present=sa.bindparam("present"),
                stamp_time=sa.bindparam("stamp_time"),
                stamp_event=sa.bindparam("stamp_event"),
                segmentation=sa.bindparam("segmentation"),
            ),
            updates,
        )
    if outbox:
        connection.execute(tag_change_outbox.insert(), outbox)
    changed = [dict(b_id=tag_id, delta=delta) for tag_id, delta in sorted(deltas.items()) if delta]
    if changed:
        connection.execute(
            tags.update()
            .where(tags.c.id == sa.bindparam("b_id"))
            .values(contact_count=tags.c.contact_count + sa.bindparam("delta")),
            changed,
        )


def _record_history(
    connection: Connection,
    changes: Sequence[contact_change_pb2.ContactChange],
    contact_ids: dict[tuple[str, str], int],
    created: set[tuple[str, str]],
) -> None:
    # The event that captured a new contact is its oldest one in the batch.
    capturing: dict[tuple[str, str], contact_change_pb2.ContactChange] = {}
    for change in changes:
        key = (change.event.producer, change.event.person.email)
        if key in created and (key not in capturing or _stamp(change) < _stamp(capturing[key])):
            capturing[key] = change
    moment = to_micros(now())
    rows = []
    for change in changes:
        event = change.event
        key = (event.producer, event.person.email)
        rows.append(
            dict(
                producer=event.producer,
                product=event.product.id,
                event_id=event.id,
                event_type=event.type,
                occur_time=_stamp(change)[0],
                record_time=moment,
                contact_id=contact_ids[key],
                email=event.person.email,
                contact_created=capturing.get(key) is change,
                added_tags=json.dumps([op.tag_key for op in change.tag_operations if op.action == _ADD]),
                removed_tags=json.dumps([op.tag_key for op in change.tag_operations if op.action != _ADD]),
                fired_segmentations=json.dumps(list(change.fired_segmentations)),
            )
        )
    connection.execute(history.insert(), rows)


def outbox_row(tag: TagKey, contact_id: int, stored: domain.TagLink) -> dict:
    """A tag_change_outbox row: resource ids only, no personal data (see README, erasure)."""
    producer, product, key = tag
    return dict(
        producer=producer,
        contact_id=contact_id,
        product=product,
        tag_key=key,
        added=stored.present,
        event_id=stored.stamp[1],
        segmentation=stored.segmentation,
        occur_time=stored.stamp[0],
        commit_time=to_micros(now()),
    )


MICROS_PER_DAY = 86_400 * 1_000_000


def _link_products(
    connection: Connection,
    changes: Sequence[contact_change_pb2.ContactChange],
    contact_ids: dict[tuple[str, str], int],
) -> set[tuple[str, str]]:
    """Records which products each contact had events of (for `product = ...` filters);
    returns the (producer, event id) of the events that linked a contact to a product for the first time."""
    firsts: dict[tuple[int, str], contact_change_pb2.ContactChange] = {}
    for change in changes:
        event = change.event
        pair = (contact_ids[(event.producer, event.person.email)], event.product.id)
        if pair not in firsts or _stamp(change) < _stamp(firsts[pair]):
            firsts[pair] = change
    rows = [
        dict(contact_id=contact_id, producer=change.event.producer, product=product, first_event_time=_stamp(change)[0])
        for (contact_id, product), change in sorted(firsts.items())
    ]
    statement = (
        db.insert(connection, contact_products)
        .on_conflict_do_nothing()
        .returning(contact_products.c.contact_id, contact_products.c.product)
    )
    linked: set[tuple[str, str]] = set()
    for chunk in chunks(rows):
        for row in connection.execute(statement, list(chunk)):
            event = firsts[(row.contact_id, row.product)].event
            linked.add((event.producer, event.id))
    return linked


def _count_product_events(
    connection: Connection, changes: Sequence[contact_change_pb2.ContactChange], linking: set[tuple[str, str]]
) -> None:
    """Adds the batch to the per-product daily counters the dashboard reads."""
    counts: dict[tuple[str, str, int, int], list[int]] = defaultdict(lambda: [0, 0])
    for change in changes:
        event = change.event
        key = (event.producer, event.product.id, _stamp(change)[0] // MICROS_PER_DAY, event.type)
        counts[key][0] += 1
        counts[key][1] += (event.producer, event.id) in linking
    statement = db.insert(connection, product_daily)
    statement = statement.on_conflict_do_update(
        index_elements=[product_daily.c.producer, product_daily.c.product, product_daily.c.day, product_daily.c.event_type],
        set_=dict(
            events=product_daily.c.events + statement.excluded.events,
            captured=product_daily.c.captured + statement.excluded.captured,
        ),
    )
    rows = [
        dict(producer=producer, product=product, day=day, event_type=event_type, events=events, captured=captured)
        for (producer, product, day, event_type), (events, captured) in sorted(counts.items())
    ]
    connection.execute(statement, rows)
