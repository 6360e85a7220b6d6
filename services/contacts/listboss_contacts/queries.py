"""Reads for Send: contacts by filter, one contact, tags with counts, a product's history."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss_common import filtering
from listboss_common.errors import invalid_field
from listboss_common.filtering import FieldSpec
from listboss_contacts.schema import contact_tags, contacts, history, tags

_EQUALITY = frozenset({"=", "!="})

# The fields a contact filter may name (AIP-160). README.md documents them.
CONTACT_FILTER_FIELDS: dict[str, FieldSpec] = {
    "tag": FieldSpec("tag", _EQUALITY, "string"),
    "email": FieldSpec("email", _EQUALITY | {":"}, "string"),
    "source": FieldSpec("source", _EQUALITY, "enum", frozenset({"AUTO"})),
}


def parse_contact_filter(text: str) -> filtering.Node | None:
    try:
        return filtering.validate(filtering.parse(text), CONTACT_FILTER_FIELDS)
    except filtering.FilterError as error:
        raise invalid_field("filter", str(error)) from None


def _split_tag_id(tag_id: str) -> tuple[str, str]:
    """"{product}.{key}" -> (product, key). Keys hold no dots; product ids may."""
    product, _, key = tag_id.rpartition(".")
    return product, key


def tag_id(product: str, key: str) -> str:
    return f"{product}.{key}"


def _tag_ids_named(connection: Connection, producer: str, value: str) -> list[int]:
    """The ids of the producer's tags a filter value names: a key (every product's
    tag with that key) or a resource name producers/{producer}/tags/{product}.{key}."""
    query = sa.select(tags.c.id).where(tags.c.producer == producer)
    prefix = f"producers/{producer}/tags/"
    if value.startswith("producers/"):
        if not value.startswith(prefix):
            return []  # another producer's tag: matches nothing here
        product, key = _split_tag_id(value.removeprefix(prefix))
        query = query.where(tags.c.product == product, tags.c.key == key)
    else:
        query = query.where(tags.c.key == value)
    return [row.id for row in connection.execute(query)]


def _compile(connection: Connection, producer: str, node: filtering.Node) -> sa.ColumnElement[bool]:
    if isinstance(node, filtering.And):
        return sa.and_(*(_compile(connection, producer, term) for term in node.terms))
    if isinstance(node, filtering.Or):
        return sa.or_(*(_compile(connection, producer, term) for term in node.terms))
    if isinstance(node, filtering.Not):
        return sa.not_(_compile(connection, producer, node.term))
    assert isinstance(node, filtering.Comparison)
    if node.field == "tag":
        ids = _tag_ids_named(connection, producer, str(node.value))
        has_tag = contacts.c.id.in_(
            sa.select(contact_tags.c.contact_id).where(contact_tags.c.tag_id.in_(ids), contact_tags.c.present)
        )
        condition = has_tag if ids else sa.false()
    elif node.field == "email":
        value = str(node.value).strip().lower()
        if node.op == ":":
            escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            condition = contacts.c.email.like(f"%{escaped}%", escape="\\")
        else:
            condition = contacts.c.email == value
    else:  # source
        condition = contacts.c.source == contacts_pb.CONTACT_SOURCE_AUTO
    return sa.not_(condition) if node.op == "!=" else condition


@dataclass(frozen=True)
class ContactTagRow:
    product: str
    key: str
    display_name: str
    automatic: bool
    stamp_time: int
    stamp_event: str
    segmentation: str


def _contact_tags(connection: Connection, contact_ids: Sequence[int]) -> dict[int, list[ContactTagRow]]:
    found: dict[int, list[ContactTagRow]] = defaultdict(list)
    if not contact_ids:
        return found
    rows = connection.execute(
        sa.select(
            contact_tags.c.contact_id,
            contact_tags.c.stamp_time,
            contact_tags.c.stamp_event,
            contact_tags.c.segmentation,
            tags.c.product,
            tags.c.key,
            tags.c.display_name,
            tags.c.automatic,
        )
        .join(tags, tags.c.id == contact_tags.c.tag_id)
        .where(contact_tags.c.contact_id.in_(contact_ids), contact_tags.c.present)
        .order_by(contact_tags.c.contact_id, tags.c.product, tags.c.key)
    )
    for row in rows:
        found[row.contact_id].append(
            ContactTagRow(
                row.product, row.key, row.display_name, row.automatic, row.stamp_time, row.stamp_event, row.segmentation
            )
        )
    return found


def list_contacts(
    connection: Connection, producer: str, node: filtering.Node | None, after_id: int | None, limit: int
) -> list[tuple[sa.Row, list[ContactTagRow]]]:
    query = sa.select(contacts).where(contacts.c.producer == producer)
    if node is not None:
        query = query.where(_compile(connection, producer, node))
    if after_id is not None:
        query = query.where(contacts.c.id > after_id)
    rows = connection.execute(query.order_by(contacts.c.id).limit(limit)).all()
    tag_rows = _contact_tags(connection, [row.id for row in rows])
    return [(row, tag_rows.get(row.id, [])) for row in rows]


def get_contact(connection: Connection, producer: str, contact_id: int) -> tuple[sa.Row, list[ContactTagRow]] | None:
    row = connection.execute(
        sa.select(contacts).where(contacts.c.producer == producer, contacts.c.id == contact_id)
    ).first()
    if row is None:
        return None
    return row, _contact_tags(connection, [row.id]).get(row.id, [])


def list_tags(
    connection: Connection, producer: str, product: str | None, after_id: int | None, limit: int
) -> list[sa.Row]:
    query = sa.select(tags).where(tags.c.producer == producer)
    if product is not None:
        query = query.where(tags.c.product == product)
    if after_id is not None:
        query = query.where(tags.c.id > after_id)
    return connection.execute(query.order_by(tags.c.id).limit(limit)).all()


@dataclass(frozen=True)
class HistoryRow:
    id: int
    product: str
    event_id: str
    event_type: int
    occur_time: int
    record_time: int
    contact_id: int | None
    email: str
    contact_created: bool
    added_tags: list[str]
    removed_tags: list[str]
    fired_segmentations: list[str]


def list_history(
    connection: Connection, producer: str, product: str, before_id: int | None, limit: int
) -> list[HistoryRow]:
    """Newest recorded first."""
    query = sa.select(history).where(history.c.producer == producer, history.c.product == product)
    if before_id is not None:
        query = query.where(history.c.id < before_id)
    rows = connection.execute(query.order_by(history.c.id.desc()).limit(limit))
    return [
        HistoryRow(
            row.id,
            row.product,
            row.event_id,
            row.event_type,
            row.occur_time,
            row.record_time,
            row.contact_id,
            row.email,
            row.contact_created,
            json.loads(row.added_tags),
            json.loads(row.removed_tags),
            json.loads(row.fired_segmentations),
        )
        for row in rows
    ]
