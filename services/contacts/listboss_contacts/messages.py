"""Translation between protobuf messages and the contacts service's values: bus
``ContactChange`` messages to :class:`~listboss_contacts.domain.Change`, and stored
rows (contacts, tags, history, dashboard, outbox) to ContactsService messages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from listboss.changes.v1 import contact_change_pb2
from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss_common.resources import CONTACT, HISTORY_EVENT, PRODUCT, TAG
from listboss_common.timestamps import timestamp
from listboss_contacts import domain, queries

_ADD = contact_change_pb2.TagOperation.ACTION_ADD

# --------------------------------------------------------------------------- bus -> domain


def change_from(
    message: contact_change_pb2.ContactChange, person: tuple[str, dict[str, str]] | None = None
) -> domain.Change:
    """``person``: the change's (email, contact data) when they came sealed
    (:func:`listboss_common.personal_data.open_changes`); else the clear fields are read."""
    event = message.event
    email, data = person if person is not None else (event.person.email, dict(message.contact_data))
    occur = event.occur_time
    # Positional arguments: this runs for every change of every batch.
    return domain.Change(
        event.producer,
        event.id,
        event.type,
        event.product.id,
        email,
        occur.seconds * 1_000_000 + occur.nanos // 1000,
        tuple(
            [
                domain.TagOperation(op.tag_key, op.action == _ADD, op.tag_display_name, op.automatic, op.segmentation)
                for op in message.tag_operations
            ]
        ),
        tuple(message.fired_segmentations),
        data,
        message.backfill,
        _purchase(event) if event.HasField("purchase") else None,
    )


def _purchase(event) -> domain.Purchase | None:
    purchase = event.purchase
    if not purchase.transaction:
        return None
    time = purchase.approved_time if purchase.approved_time.seconds else purchase.order_time
    value = purchase.price.value
    return domain.Purchase(
        purchase.transaction,
        purchase.price.currency_code.upper(),
        round(value * 1_000_000) if math.isfinite(value) and abs(value) < 1e12 else 0,
        time.seconds * 1_000_000 + time.nanos // 1000,
    )


def changes_from(
    messages: Iterable[contact_change_pb2.ContactChange], persons: Iterable[tuple[str, dict[str, str]]] | None = None
) -> list[domain.Change]:
    if persons is None:
        return [change_from(message) for message in messages]
    return [change_from(message, person) for message, person in zip(messages, persons, strict=True)]


# --------------------------------------------------------------------------- rows -> ContactsService


def _kind(automatic: bool) -> pb.TagKind:
    return pb.TAG_KIND_AUTOMATIC if automatic else pb.TAG_KIND_CUSTOM


def _ts(micros: int) -> dict:
    # A dict initialises a Timestamp field without building a message first: the
    # cheapest way in Python protobuf, which matters at export rates.
    return {"seconds": micros // 1_000_000, "nanos": (micros % 1_000_000) * 1000}


def contact_fields(
    producer: str, row: queries.ContactRow, tag_rows: list[queries.ContactTagRow], tag_parts: dict | None = None
) -> dict:
    """The Contact message's fields for a contacts row. Names are built with
    f-strings (ResourcePattern.format costs microseconds per call) and each tag's
    fixed fields once per ``tag_parts`` cache (pass one dict per response)."""
    fields = dict(
        name=f"producers/{producer}/contacts/{row.id}",
        email=row.email,
        display_name=row.display_name,
        phone=row.phone,
        country_code=row.country_code,
        source=row.source,
        first_event_time=_ts(row.first_event_time),
        last_event_time=_ts(row.last_event_time),
        create_time=_ts(row.create_time),
        update_time=_ts(row.update_time),
    )
    if row.attributes != "{}":
        fields["attributes"] = json.loads(row.attributes)
    if tag_rows:
        if tag_parts is None:
            tag_parts = {}
        tag_list = []
        for t in tag_rows:
            identity = (t.product, t.key, t.display_name, t.automatic)
            parts = tag_parts.get(identity)
            if parts is None:
                parts = tag_parts[identity] = dict(
                    tag=f"producers/{producer}/tags/{t.product}.{t.key}",
                    key=t.key,
                    display_name=t.display_name,
                    product=f"producers/{producer}/products/{t.product}",
                    kind=_kind(t.automatic),
                )
            tag_list.append(
                {**parts, "apply_time": _ts(t.stamp_time), "segmentation": t.segmentation, "event_id": t.stamp_event}
            )
        fields["tags"] = tag_list
    return fields


def contact_message(
    producer: str,
    row: queries.ContactRow,
    tag_rows: list[queries.ContactTagRow],
    traits: Iterable[queries.PurchaseTraits] = (),
) -> pb.Contact:
    fields = contact_fields(producer, row, tag_rows)
    for found in traits:
        if found.product:
            fields.setdefault("product_purchase_traits", []).append(
                {"product": f"producers/{producer}/products/{found.product}", "traits": _traits(found)}
            )
        else:
            fields["purchase_traits"] = _traits(found)
    return pb.Contact(**fields)


def _traits(found: queries.PurchaseTraits) -> dict:
    return dict(
        purchase_count=found.purchases,
        spent=[{"currency_code": currency, "value": amount / 1_000_000} for currency, amount in found.spent],
        first_purchase_time=_ts(found.first_purchase_time),
        last_purchase_time=_ts(found.last_purchase_time),
    )


def add_contacts(
    repeated, producer: str, found: Iterable[tuple[queries.ContactRow, list[queries.ContactTagRow]]]
) -> None:
    """Appends contacts to a response's repeated ``contacts`` field (one tag-parts cache for all)."""
    add = repeated.add
    parts: dict = {}  # contact_fields' tag_parts cache
    for row, tag_rows in found:
        add(**contact_fields(producer, row, tag_rows, parts))


def tag_message(row) -> pb.Tag:
    return pb.Tag(
        name=TAG.format(row.producer, queries.tag_id(row.product, row.key)),
        key=row.key,
        display_name=row.display_name,
        product=PRODUCT.format(row.producer, row.product),
        kind=_kind(row.automatic),
        contact_count=row.contact_count,
        create_time=timestamp(row.create_time),
    )


def history_message(producer: str, row: queries.HistoryRow) -> pb.HistoryEvent:
    return pb.HistoryEvent(
        name=HISTORY_EVENT.format(producer, row.product, row.event_id),
        type=row.event_type,
        occur_time=timestamp(row.occur_time),
        record_time=timestamp(row.record_time),
        contact=CONTACT.format(producer, str(row.contact_id)) if row.contact_id is not None else "",
        email=row.email,
        contact_created=row.contact_created,
        added_tags=row.added_tags,
        removed_tags=row.removed_tags,
        fired_segmentations=row.fired_segmentations,
    )


def dashboard_message(name: str, figures: queries.Dashboard) -> pb.ProductDashboard:
    day = domain.MICROS_PER_DAY
    return pb.ProductDashboard(
        name=name,
        start_time=timestamp(figures.start_day * day),
        end_time=timestamp(figures.end_day * day),
        contact_count=figures.contact_count,
        contacts_captured=figures.contacts_captured,
        event_count=figures.event_count,
        events_by_type=[pb.EventTypeCount(type=kind, count=count) for kind, count in figures.events_by_type],
        days=[
            pb.DailyFigures(day=timestamp(number * day), event_count=events, contacts_captured=captured)
            for number, events, captured in figures.days
        ],
        tags=[tag_message(row) for row in figures.tags],
    )


def tag_change_message(row) -> pb.TagChange:
    """A ``tag_change_outbox`` row as the ``TagChange`` the relay publishes (names built with
    f-strings and times as dicts: the relay builds one per tag change)."""
    producer = row.producer
    return pb.TagChange(
        id=str(row.id),
        contact=f"producers/{producer}/contacts/{row.contact_id}",
        tag=f"producers/{producer}/tags/{row.product}.{row.tag_key}",
        tag_key=row.tag_key,
        action=pb.TagChange.ACTION_ADDED if row.added else pb.TagChange.ACTION_REMOVED,
        event=f"producers/{producer}/products/{row.product}/events/{row.event_id}",
        segmentation=row.segmentation,
        occur_time=_ts(row.occur_time),
        commit_time=_ts(row.commit_time),
    )
