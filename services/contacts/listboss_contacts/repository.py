"""The database adapter for applying changes: the reads and writes of the contacts
tables that :mod:`listboss_contacts.apply` needs, in domain values.

Every method is one or a few set-based statements for the whole batch (IN lists
in chunks, executemany), never one per event. JSON columns are encoded and
decoded here, so the domain sees plain values.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss_common import db
from listboss_common.db import is_postgres, now, to_micros
from listboss_contacts import domain
from listboss_contacts.domain import EventKey, LinkKey, TagKey, TagLink
from listboss_contacts.schema import (
    contact_products,
    contact_tags,
    contacts,
    history,
    product_daily,
    tag_change_outbox,
    tags,
)

# Bound parameters per IN (...) list: far below SQLite's and PostgreSQL's limits.
_CHUNK = 500


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

    def lookup(self, connection: Connection, wanted: Mapping[TagKey, tuple[str, bool]]) -> dict[TagKey, int]:
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

    def commit(self, learnt: Mapping[TagKey, int]) -> None:
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


class ContactStore:
    """The contacts tables inside one transaction (the caller's connection)."""

    def __init__(self, connection: Connection):
        self.connection = connection

    # ------------------------------------------------------------------ reads

    def recorded(self, event_ids: Mapping[str, Sequence[str]]) -> set[EventKey]:
        """Which of the events (producer -> ids) the history already holds."""
        found: set[EventKey] = set()
        for producer, ids in event_ids.items():
            for chunk in chunks(ids):
                rows = self.connection.execute(
                    sa.select(history.c.event_id).where(history.c.producer == producer, history.c.event_id.in_(chunk))
                )
                found.update((producer, row.event_id) for row in rows)
        return found

    def contact_ids(self, producer: str, emails: Sequence[str]) -> dict[str, int]:
        """Email -> id of the producer's contacts among ``emails``."""
        found: dict[str, int] = {}
        for chunk in chunks(emails):
            rows = self.connection.execute(
                sa.select(contacts.c.id, contacts.c.email).where(
                    contacts.c.producer == producer, contacts.c.email.in_(chunk)
                )
            )
            found.update({row.email: row.id for row in rows})
        return found

    def contacts(self, producer: str, emails: Sequence[str]) -> dict[str, domain.StoredContact]:
        """The producer's stored contacts among ``emails``, by email."""
        found: dict[str, domain.StoredContact] = {}
        for chunk in chunks(emails):
            rows = self.connection.execute(
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
            for row in rows:
                found[row.email] = domain.StoredContact(
                    row.id,
                    (row.data_time, row.data_event),
                    row.first_event_time,
                    row.last_event_time,
                    _decode_attributes(row.attribute_stamps),
                )
        return found

    def tag_links(self, contact_ids: Iterable[int]) -> dict[LinkKey, TagLink]:
        """Every stored tag link of the contacts, locked on PostgreSQL until the commit."""
        current: dict[LinkKey, TagLink] = {}
        for chunk in chunks(sorted(contact_ids)):
            query = sa.select(
                contact_tags.c.contact_id,
                contact_tags.c.tag_id,
                contact_tags.c.present,
                contact_tags.c.stamp_time,
                contact_tags.c.stamp_event,
                contact_tags.c.segmentation,
            ).where(contact_tags.c.contact_id.in_(chunk))
            if is_postgres(self.connection):
                # Two replicas changing one contact's tags serialise here.
                query = query.order_by(contact_tags.c.contact_id, contact_tags.c.tag_id).with_for_update()
            for row in self.connection.execute(query):
                current[(row.contact_id, row.tag_id)] = TagLink(
                    row.present, (row.stamp_time, row.stamp_event), row.segmentation
                )
        return current

    # ------------------------------------------------------------------ writes

    def add_contacts(self, producer: str, new: Sequence[domain.NewContact]) -> dict[str, int]:
        """Inserts the producer's new contacts (label AUTO); returns their ids by email
        (including any another transaction inserted meanwhile)."""
        if not new:
            return {}
        moment = to_micros(now())
        rows = [
            dict(
                producer=producer,
                email=contact.email,
                source=contacts_pb.CONTACT_SOURCE_AUTO,
                data_time=contact.data_stamp[0],
                data_event=contact.data_stamp[1],
                first_event_time=contact.first_event_time,
                last_event_time=contact.last_event_time,
                create_time=moment,
                update_time=moment,
                **_data_columns(contact.data),
            )
            for contact in new
        ]
        self.connection.execute(db.insert(self.connection, contacts).on_conflict_do_nothing(), rows)
        return self.contact_ids(producer, [contact.email for contact in new])

    def update_contacts(self, updates: Sequence[domain.ContactUpdate]) -> None:
        moment = to_micros(now())
        # Rows differ in which columns they set; group them so each statement is an executemany.
        by_columns: dict[tuple[str, ...], list[dict]] = defaultdict(list)
        for update in updates:
            row: dict[str, object] = dict(
                b_id=update.id,
                first_event_time=update.first_event_time,
                last_event_time=update.last_event_time,
                update_time=moment,
            )
            if update.data is not None:
                row.update(_data_columns(update.data))
            if update.data_stamp is not None:
                row.update(data_time=update.data_stamp[0], data_event=update.data_stamp[1])
            by_columns[tuple(sorted(row))].append(row)
        for columns, rows in by_columns.items():
            statement = (
                contacts.update()
                .where(contacts.c.id == sa.bindparam("b_id"))
                .values({c: sa.bindparam(c) for c in columns if c != "b_id"})
            )
            self.connection.execute(statement, rows)

    def tag_ids(self, wanted: Mapping[TagKey, tuple[str, bool]], cache: TagIds) -> dict[TagKey, int]:
        return cache.lookup(self.connection, wanted)

    def write_links(self, writes: domain.LinkWrites) -> None:
        """Stores the links, writes the tag changes to the outbox and moves the tag counts."""
        if writes.inserts:
            self.connection.execute(
                contact_tags.insert(),
                [
                    dict(contact_id=contact_id, tag_id=tag_id, **_link_columns(link))
                    for (contact_id, tag_id), link in writes.inserts
                ],
            )
        if writes.updates:
            self.connection.execute(
                contact_tags.update()
                .where(contact_tags.c.contact_id == sa.bindparam("b_contact_id"))
                .where(contact_tags.c.tag_id == sa.bindparam("b_tag_id"))
                .values(
                    present=sa.bindparam("present"),
                    stamp_time=sa.bindparam("stamp_time"),
                    stamp_event=sa.bindparam("stamp_event"),
                    segmentation=sa.bindparam("segmentation"),
                ),
                [
                    dict(b_contact_id=contact_id, b_tag_id=tag_id, **_link_columns(link))
                    for (contact_id, tag_id), link in writes.updates
                ],
            )
        if writes.changes:
            self.connection.execute(tag_change_outbox.insert(), [outbox_row(change) for change in writes.changes])
        if writes.count_deltas:
            self.connection.execute(
                tags.update()
                .where(tags.c.id == sa.bindparam("b_id"))
                .values(contact_count=tags.c.contact_count + sa.bindparam("delta")),
                [dict(b_id=tag_id, delta=delta) for tag_id, delta in writes.count_deltas.items()],
            )

    def add_history(self, entries: Sequence[domain.HistoryEntry]) -> None:
        moment = to_micros(now())
        self.connection.execute(
            history.insert(),
            [
                dict(
                    producer=entry.producer,
                    product=entry.product,
                    event_id=entry.event_id,
                    event_type=entry.event_type,
                    occur_time=entry.occur_time,
                    record_time=moment,
                    contact_id=entry.contact_id,
                    email=entry.email,
                    contact_created=entry.contact_created,
                    added_tags=json.dumps(entry.added_tags),
                    removed_tags=json.dumps(entry.removed_tags),
                    fired_segmentations=json.dumps(entry.fired_segmentations),
                )
                for entry in entries
            ],
        )

    def link_products(self, firsts: Mapping[tuple[int, str], domain.Change]) -> set[tuple[int, str]]:
        """Links each contact to the products of ``firsts`` ((contact id, product) -> the
        oldest event linking them); returns the pairs that were not linked before."""
        rows = [
            dict(contact_id=contact_id, producer=change.producer, product=product, first_event_time=change.occur_time)
            for (contact_id, product), change in sorted(firsts.items())
        ]
        statement = (
            db.insert(self.connection, contact_products)
            .on_conflict_do_nothing()
            .returning(contact_products.c.contact_id, contact_products.c.product)
        )
        linked: set[tuple[int, str]] = set()
        for chunk in chunks(rows):
            linked.update((row.contact_id, row.product) for row in self.connection.execute(statement, list(chunk)))
        return linked

    def add_daily_counts(self, counts: Mapping[domain.DailyKey, tuple[int, int]]) -> None:
        """Adds to the per-product daily counters the dashboard reads."""
        statement = db.insert(self.connection, product_daily)
        statement = statement.on_conflict_do_update(
            index_elements=[
                product_daily.c.producer,
                product_daily.c.product,
                product_daily.c.day,
                product_daily.c.event_type,
            ],
            set_=dict(
                events=product_daily.c.events + statement.excluded.events,
                captured=product_daily.c.captured + statement.excluded.captured,
            ),
        )
        rows = [
            dict(producer=producer, product=product, day=day, event_type=event_type, events=events, captured=captured)
            for (producer, product, day, event_type), (events, captured) in counts.items()
        ]
        self.connection.execute(statement, rows)


def outbox_row(change: domain.TagChange) -> dict:
    """A tag_change_outbox row: resource ids only, no personal data (see docs/api.md, "Erasure")."""
    producer, product, key = change.tag
    link = change.link
    return dict(
        producer=producer,
        contact_id=change.contact_id,
        product=product,
        tag_key=key,
        added=link.present,
        event_id=link.stamp[1],
        segmentation=link.segmentation,
        occur_time=link.stamp[0],
        commit_time=to_micros(now()),
    )


def _link_columns(link: TagLink) -> dict:
    return dict(
        present=link.present, stamp_time=link.stamp[0], stamp_event=link.stamp[1], segmentation=link.segmentation
    )


def _decode_attributes(stamps_json: str) -> domain.Attributes:
    return {key: (value, (time, event)) for key, (value, time, event) in json.loads(stamps_json or "{}").items()}


def _data_columns(data: domain.ContactData) -> dict:
    """``attributes`` holds the values Send reads; ``attribute_stamps`` each value's stamp too."""
    return dict(
        display_name=data.display_name,
        phone=data.phone,
        country_code=data.country_code,
        attributes=json.dumps({key: value for key, (value, _) in data.attributes.items()}, sort_keys=True),
        attribute_stamps=json.dumps(
            {key: [value, stamp[0], stamp[1]] for key, (value, stamp) in data.attributes.items()}, sort_keys=True
        ),
    )
