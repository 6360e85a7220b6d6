"""The database adapter for applying changes: the reads and writes of the contacts
tables that :mod:`listboss_contacts.apply` needs, in domain values.

Every method is one or a few set-based statements for the whole batch, never one per
event: the hot ones in each database's own SQL with rows as tuples (:mod:`listboss_contacts.bulk`).
JSON columns are encoded and decoded here, so the domain sees plain values.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss_common import db
from listboss_common.db import is_postgres, now, to_micros
from listboss_contacts import bulk, domain
from listboss_contacts.domain import EventKey, LinkKey, TagKey, TagLink
from listboss_contacts.schema import (
    contact_products,
    contact_spending,
    contact_tags,
    contact_traits,
    contacts,
    history,
    product_daily,
    purchases,
    tag_change_outbox,
    tags,
)


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
            rows = bulk.select_in(
                self.connection,
                "SELECT event_id FROM history WHERE producer = {p} AND event_id {values}",
                (producer,),
                ids,
            )
            found.update((producer, event_id) for (event_id,) in rows)
        return found

    def contact_ids(self, producer: str, emails: Sequence[str]) -> dict[str, int]:
        """Email -> id of the producer's contacts among ``emails``."""
        rows = bulk.select_in(
            self.connection,
            "SELECT email, id FROM contacts WHERE producer = {p} AND email {values}",
            (producer,),
            emails,
        )
        return {email: contact_id for email, contact_id in rows}

    def contacts(self, producer: str, emails: Sequence[str]) -> dict[str, domain.StoredContact]:
        """The producer's stored contacts among ``emails``, by email; on PostgreSQL locked in id
        order until the commit, so that a concurrent transaction (another replica) changing the
        same contacts waits and then reads what this one wrote (their data is merged, not lost)."""
        lock = " ORDER BY id FOR NO KEY UPDATE" if is_postgres(self.connection) else ""
        rows = bulk.select_in(
            self.connection,
            "SELECT email, id, data_time, data_event, first_event_time, last_event_time, attribute_stamps"
            " FROM contacts WHERE producer = {p} AND email {values}" + lock,
            (producer,),
            emails,
        )
        return {
            email: domain.StoredContact(
                contact_id, (data_time, data_event), first_time, last_time, _decode_attributes(stamps)
            )
            for email, contact_id, data_time, data_event, first_time, last_time, stamps in rows
        }

    def tag_links(self, pairs: Iterable[LinkKey]) -> dict[LinkKey, TagLink]:
        """The stored links among ``pairs`` ((contact id, tag id)), locked on PostgreSQL in
        (contact, tag) order until the commit: two replicas changing one link serialise here."""
        wanted = sorted(pairs)
        if not wanted:
            return {}
        columns = "t.contact_id, t.tag_id, t.present, t.stamp_time, t.stamp_event, t.segmentation"
        if is_postgres(self.connection):
            contact_ids, tag_ids = zip(*wanted, strict=True)
            rows: Iterable[sa.Row] = self.connection.exec_driver_sql(
                f"SELECT {columns} FROM contact_tags AS t"
                " JOIN unnest(%b::bigint[], %b::bigint[]) AS w(contact_id, tag_id)"
                " ON t.contact_id = w.contact_id AND t.tag_id = w.tag_id"
                " ORDER BY t.contact_id, t.tag_id FOR NO KEY UPDATE OF t",
                (list(contact_ids), list(tag_ids)),
            )
        else:
            rows = []
            for chunk in bulk.chunks(wanted):
                pairs_sql = ", ".join("(?, ?)" for _ in chunk)
                rows.extend(
                    self.connection.exec_driver_sql(
                        f"WITH w(contact_id, tag_id) AS (VALUES {pairs_sql}) SELECT {columns}"
                        " FROM w CROSS JOIN contact_tags AS t"
                        " ON t.contact_id = w.contact_id AND t.tag_id = w.tag_id",
                        tuple(value for pair in chunk for value in pair),
                    )
                )
        return {
            (contact_id, tag_id): TagLink(bool(present), (stamp_time, stamp_event), segmentation)
            for contact_id, tag_id, present, stamp_time, stamp_event, segmentation in rows
        }

    # ------------------------------------------------------------------ writes

    def add_contacts(self, producer: str, new: Sequence[domain.NewContact]) -> dict[str, int]:
        """Inserts the producer's new contacts (label AUTO), in email order; returns the ids of
        those this transaction inserted, by email. A contact another transaction (a replica)
        inserted meanwhile is left out: the caller reads it and merges into it."""
        if not new:
            return {}
        moment = to_micros(now())
        rows = [
            (
                producer,
                contact.email,
                contacts_pb.CONTACT_SOURCE_AUTO,
                contact.data_stamp[0],
                contact.data_stamp[1],
                contact.first_event_time,
                contact.last_event_time,
                moment,
                moment,
                *_data_values(contact.data),
            )
            for contact in sorted(new, key=lambda contact: contact.email)
        ]
        if is_postgres(self.connection):
            source, parameters = bulk.unnest(contacts, _NEW_CONTACT_COLUMNS, rows)
            inserted = self.connection.exec_driver_sql(
                f"INSERT INTO contacts ({', '.join(_NEW_CONTACT_COLUMNS)}) SELECT * FROM {source}"
                " ON CONFLICT DO NOTHING RETURNING email, id",
                tuple(parameters),
            )
            return {email: contact_id for email, contact_id in inserted}
        # SQLite has one writer at a time: none of them was inserted since this transaction read
        # (a write after a stale read fails as busy and is retried), so every one is this one's.
        bulk.insert(self.connection, contacts, _NEW_CONTACT_COLUMNS, rows, "ON CONFLICT DO NOTHING")
        return self.contact_ids(producer, [contact.email for contact in new])

    def update_contacts(self, updates: Sequence[domain.ContactUpdate]) -> None:
        """Updates contacts read by :meth:`contacts` (so locked on PostgreSQL), in id order."""
        if not updates:
            return
        moment = to_micros(now())
        # Rows differ in which columns they set; one statement for each set of columns.
        by_columns: dict[tuple[bool, bool], list[tuple]] = defaultdict(list)
        for update in sorted(updates, key=lambda update: update.id):
            row: tuple = (update.id, update.first_event_time, update.last_event_time, moment)
            if update.data is not None:
                row += _data_values(update.data)
            if update.data_stamp is not None:
                row += update.data_stamp
            by_columns[(update.data is not None, update.data_stamp is not None)].append(row)
        for (with_data, with_stamp), rows in by_columns.items():
            columns = ["first_event_time", "last_event_time", "update_time"]
            if with_data:
                columns += _DATA_COLUMNS
            if with_stamp:
                columns += ["data_time", "data_event"]
            bulk.update(self.connection, contacts, ["id"], columns, rows)

    def tag_ids(self, wanted: Mapping[TagKey, tuple[str, bool]], cache: TagIds) -> dict[TagKey, int]:
        return cache.lookup(self.connection, wanted)

    def write_links(self, writes: domain.LinkWrites) -> None:
        """Stores the links, writes the tag changes to the outbox and moves the tag counts."""
        link_columns = ["contact_id", "tag_id", "present", "stamp_time", "stamp_event", "segmentation"]
        bulk.insert(
            self.connection,
            contact_tags,
            link_columns,
            [(contact_id, tag_id, *_link_values(link)) for (contact_id, tag_id), link in writes.inserts],
        )
        bulk.update(
            self.connection,
            contact_tags,
            link_columns[:2],
            link_columns[2:],
            [(contact_id, tag_id, *_link_values(link)) for (contact_id, tag_id), link in writes.updates],
        )
        if writes.changes:
            moment = to_micros(now())
            bulk.insert(
                self.connection,
                tag_change_outbox,
                _OUTBOX_COLUMNS,
                [_outbox_values(change, moment) for change in writes.changes],
            )
        if writes.count_deltas:
            bulk.lock_rows(self.connection, tags, list(writes.count_deltas))
            bulk.update(self.connection, tags, ["id"], ["contact_count+"], sorted(writes.count_deltas.items()))

    def add_history(self, entries: Sequence[domain.HistoryEntry]) -> None:
        moment = to_micros(now())
        lists = _JsonLists()
        bulk.insert(
            self.connection,
            history,
            _HISTORY_COLUMNS,
            [
                (
                    entry.producer,
                    entry.product,
                    entry.event_id,
                    entry.event_type,
                    entry.occur_time,
                    moment,
                    entry.contact_id,
                    entry.email,
                    entry.contact_created,
                    lists.encode(entry.added_tags),
                    lists.encode(entry.removed_tags),
                    lists.encode(entry.fired_segmentations),
                )
                for entry in entries
            ],
        )

    def link_products(self, firsts: Mapping[tuple[int, str], domain.Change]) -> set[tuple[int, str]]:
        """Links each contact to the products of ``firsts`` ((contact id, product) -> the
        oldest event linking them), in (contact, product) order; returns the pairs that were
        not linked before."""
        rows = [
            (contact_id, change.producer, product, change.occur_time)
            for (contact_id, product), change in sorted(firsts.items())
        ]
        columns = ["contact_id", "producer", "product", "first_event_time"]
        if is_postgres(self.connection):
            source, parameters = bulk.unnest(contact_products, columns, rows)
            inserted = self.connection.exec_driver_sql(
                f"INSERT INTO contact_products ({', '.join(columns)}) SELECT * FROM {source}"
                " ON CONFLICT DO NOTHING RETURNING contact_id, product",
                tuple(parameters),
            )
            return {(contact_id, product) for contact_id, product in inserted}
        # SQLite has one writer at a time: the links read here stay as they are until the commit.
        linked: set[tuple[int, str]] = set()
        for chunk in bulk.chunks(sorted({contact_id for contact_id, _ in firsts})):
            marks = ", ".join("?" for _ in chunk)
            found = self.connection.exec_driver_sql(
                f"SELECT contact_id, product FROM contact_products WHERE contact_id IN ({marks})", tuple(chunk)
            )
            linked.update((contact_id, product) for contact_id, product in found)
        missing = [row for row in rows if (row[0], row[2]) not in linked]
        bulk.insert(self.connection, contact_products, columns, missing)
        return {(row[0], row[2]) for row in missing}

    def add_daily_counts(self, counts: Mapping[domain.DailyKey, tuple[int, int]]) -> None:
        """Adds to the per-product daily counters the dashboard reads, in key order."""
        bulk.insert(
            self.connection,
            product_daily,
            ["producer", "product", "day", "event_type", "events", "captured"],
            [(*key, events, captured) for key, (events, captured) in sorted(counts.items())],
            "ON CONFLICT (producer, product, day, event_type) DO UPDATE SET"
            " events = product_daily.events + excluded.events,"
            " captured = product_daily.captured + excluded.captured",
        )

    # ------------------------------------------------------------------ purchases and traits

    def purchases_of(self, contact_ids: Sequence[int]) -> dict[domain.PurchaseKey, domain.PurchaseState]:
        """Every stored purchase of these contacts, by (contact id, transaction). The contacts
        are locked already (:meth:`contacts`), so two replicas changing one contact's purchases
        serialise there and each derives its traits from all of them."""
        rows = bulk.select_in(
            self.connection,
            "SELECT contact_id, transaction_id, producer, product, counted, stamp_time, stamp_event,"
            " purchase_time, currency, amount FROM purchases WHERE contact_id {values}",
            (),
            contact_ids,
            "bigint",
        )
        return {(row[0], row[1]): _purchase_state(row[2:]) for row in rows}

    def write_purchases(self, writes: domain.PurchaseWrites) -> None:
        """Stores the purchases and the changes of the traits derived from them
        (:func:`listboss_contacts.domain.purchase_writes`)."""
        bulk.insert(
            self.connection,
            purchases,
            _PURCHASE_COLUMNS,
            [
                (contact_id, transaction, *_purchase_values(state))
                for (contact_id, transaction), state in writes.inserts
            ],
        )
        bulk.update(
            self.connection,
            purchases,
            _PURCHASE_COLUMNS[:2],
            _PURCHASE_COLUMNS[2:],
            [
                (contact_id, transaction, *_purchase_values(state))
                for (contact_id, transaction), state in writes.updates
            ],
        )
        producers = writes.producers
        bulk.insert(
            self.connection,
            contact_traits,
            _TRAIT_COLUMNS,
            [
                (contact_id, product, producers[contact_id], t.purchases, t.first_purchase_time, t.last_purchase_time)
                for (contact_id, product), t in writes.traits
            ],
            "ON CONFLICT (contact_id, product) DO UPDATE SET purchases = excluded.purchases,"
            " first_purchase_time = excluded.first_purchase_time, last_purchase_time = excluded.last_purchase_time",
        )
        bulk.delete_keys(self.connection, contact_traits, ["contact_id", "product"], writes.traits_gone)
        bulk.insert(
            self.connection,
            contact_spending,
            ["contact_id", "product", "currency", "producer", "amount"],
            [
                (contact_id, product, currency, producers[contact_id], amount)
                for (contact_id, product, currency), amount in writes.spending
            ],
            "ON CONFLICT (contact_id, product, currency) DO UPDATE SET amount = excluded.amount",
        )
        bulk.delete_keys(self.connection, contact_spending, ["contact_id", "product", "currency"], writes.spending_gone)


_NEW_CONTACT_COLUMNS = [
    "producer",
    "email",
    "source",
    "data_time",
    "data_event",
    "first_event_time",
    "last_event_time",
    "create_time",
    "update_time",
    "display_name",
    "phone",
    "country_code",
    "attributes",
    "attribute_stamps",
]
_PURCHASE_COLUMNS = [
    "contact_id",
    "transaction_id",
    "producer",
    "product",
    "counted",
    "stamp_time",
    "stamp_event",
    "purchase_time",
    "currency",
    "amount",
]
_TRAIT_COLUMNS = ["contact_id", "product", "producer", "purchases", "first_purchase_time", "last_purchase_time"]
_DATA_COLUMNS = ["display_name", "phone", "country_code", "attributes", "attribute_stamps"]
_HISTORY_COLUMNS = [
    "producer",
    "product",
    "event_id",
    "event_type",
    "occur_time",
    "record_time",
    "contact_id",
    "email",
    "contact_created",
    "added_tags",
    "removed_tags",
    "fired_segmentations",
]
_OUTBOX_COLUMNS = [
    "producer",
    "contact_id",
    "product",
    "tag_key",
    "added",
    "event_id",
    "segmentation",
    "occur_time",
    "commit_time",
]


class _JsonLists:
    """JSON arrays of a batch's tag keys and segmentation names: the same few lists repeat
    (an event type's automatic tags), so each distinct list is encoded once."""

    def __init__(self) -> None:
        self._encoded: dict[tuple[str, ...], str] = {(): "[]"}

    def encode(self, items: Sequence[str]) -> str:
        key = tuple(items)
        text = self._encoded.get(key)
        if text is None:
            text = self._encoded[key] = json.dumps(items)
        return text


def outbox_row(change: domain.TagChange) -> dict:
    """A tag_change_outbox row: resource ids only, no personal data (see docs/api.md, "Erasure")."""
    return dict(zip(_OUTBOX_COLUMNS, _outbox_values(change, to_micros(now())), strict=True))


def _outbox_values(change: domain.TagChange, commit_time: int) -> tuple:
    producer, product, key = change.tag
    link = change.link
    return (
        producer,
        change.contact_id,
        product,
        key,
        link.present,
        link.stamp[1],
        link.segmentation,
        link.stamp[0],
        commit_time,
    )


def _purchase_values(state: domain.PurchaseState) -> tuple:
    return (
        state.producer,
        state.product,
        state.counted,
        state.stamp[0],
        state.stamp[1],
        state.purchase_time,
        state.currency,
        state.amount,
    )


def _purchase_state(row: Sequence) -> domain.PurchaseState:
    """(producer, product, counted, stamp time, stamp event, purchase time, currency, amount)."""
    producer, product, counted, stamp_time, stamp_event, purchase_time, currency, amount = row
    return domain.PurchaseState(
        producer, product, bool(counted), (stamp_time, stamp_event), purchase_time, currency, amount
    )


def _link_values(link: TagLink) -> tuple:
    return (link.present, link.stamp[0], link.stamp[1], link.segmentation)


def _decode_attributes(stamps_json: str) -> domain.Attributes:
    if not stamps_json or stamps_json == "{}":
        return {}
    return {key: (value, (time, event)) for key, (value, time, event) in json.loads(stamps_json).items()}


# json.dumps(..., sort_keys=True) builds a new encoder on every call; this one is built once.
_SORTED_JSON = json.JSONEncoder(sort_keys=True)


def _data_values(data: domain.ContactData) -> tuple:
    """The columns of _DATA_COLUMNS: ``attributes`` holds the values Send reads;
    ``attribute_stamps`` each value's stamp too."""
    if not data.attributes:
        return (data.display_name, data.phone, data.country_code, "{}", "{}")
    return (
        data.display_name,
        data.phone,
        data.country_code,
        _SORTED_JSON.encode({key: value for key, (value, _) in data.attributes.items()}),
        _SORTED_JSON.encode({key: [value, stamp[0], stamp[1]] for key, (value, stamp) in data.attributes.items()}),
    )
