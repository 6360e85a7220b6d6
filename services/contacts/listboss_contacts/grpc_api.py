"""The gRPC entrypoint: translates ContactsService requests to queries."""

from __future__ import annotations

import asyncio
import json
import time

from google.protobuf import empty_pb2
from nats.js import JetStreamContext
from sqlalchemy.engine import Engine

from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as pb_grpc
from listboss_common import db
from listboss_common.auth import require_producer_access
from listboss_common.timestamps import micros, timestamp
from listboss_common.errors import invalid_field, not_found, unavailable
from listboss_common.paging import decode_page_token, encode_page_token, page_size, parse_order_by
from listboss_common.resources import CONTACT, HISTORY_EVENT, PRODUCER, PRODUCT, TAG, ResourcePattern
from listboss_contacts import queries, tag_changes
from listboss_contacts.erasure import erase_contact

DASHBOARD = ResourcePattern("producers/{producer}/products/{product}/dashboard")
# Contacts per export chunk: one keyset query and one stream message each.
EXPORT_CHUNK = 1000
DEFAULT_DASHBOARD_DAYS = 30
_DAY = queries.MICROS_PER_DAY


def _kind(automatic: bool) -> int:
    return pb.TAG_KIND_AUTOMATIC if automatic else pb.TAG_KIND_CUSTOM


def _ts(micros: int) -> dict:
    # A dict initialises a Timestamp field without building a message first: the
    # cheapest way in Python protobuf, which matters at export rates.
    return {"seconds": micros // 1_000_000, "nanos": (micros % 1_000_000) * 1000}


def contact_fields(producer: str, row, tag_rows: list[queries.ContactTagRow], tag_parts: dict | None = None) -> dict:
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


def contact_message(producer: str, row, tag_rows: list[queries.ContactTagRow]) -> pb.Contact:
    return pb.Contact(**contact_fields(producer, row, tag_rows))


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


def _check_position(position: list | None, order) -> list | None:
    """A decoded page token's keyset position, checked against its order's shape:
    tokens are opaque but not signed, so their contents are input like any other."""
    if position is None:
        return None
    column = queries.CONTACT_ORDERS[order.field]
    kinds = (int,) if column == "id" else (str, int) if column == "email" else (int, int)
    if len(position) != len(kinds) or not all(
        isinstance(value, kind) and not isinstance(value, bool) for value, kind in zip(position, kinds)
    ):
        raise invalid_field("page_token", "is not a page token issued by this service")
    return position


class ContactsServicer(pb_grpc.ContactsServiceServicer):
    def __init__(self, engine: Engine, js: JetStreamContext | None = None):
        self._engine = engine
        self._js = js
        # Set at shutdown: open WatchTagChanges streams end cleanly (status OK).
        self._closing = asyncio.Event()

    def close_streams(self) -> None:
        self._closing.set()

    async def _read(self, function, *args):
        return await db.read(self._engine, function, *args)

    async def _write(self, function, *args):
        return await db.write(self._engine, function, *args)

    @staticmethod
    def _producer(parent: str) -> str:
        (producer,) = PRODUCER.parse(parent, "parent")
        require_producer_access(producer, parent)
        return producer

    @staticmethod
    def _contact(name: str) -> tuple[str, int | None]:
        producer, contact = CONTACT.parse(name, "name")
        require_producer_access(producer, name)
        return producer, int(contact) if contact.isdigit() and len(contact) < 19 else None

    async def GetContact(self, request: pb.GetContactRequest, context) -> pb.Contact:
        producer, contact_id = self._contact(request.name)
        found = await self._read(queries.get_contact, producer, contact_id) if contact_id is not None else None
        if found is None:
            raise not_found(request.name)
        return contact_message(producer, *found)

    async def ListContacts(self, request: pb.ListContactsRequest, context) -> pb.ListContactsResponse:
        producer = self._producer(request.parent)
        node = queries.parse_contact_filter(request.filter)
        order = parse_order_by(request.order_by, queries.CONTACT_ORDERS, queries.DEFAULT_ORDER)
        limit = page_size(request.page_size)
        binding = (request.parent, request.filter, str(order))
        after = _check_position(decode_page_token(request.page_token, *binding), order)
        found = await self._read(queries.list_contacts, producer, node, after, limit + 1, order)
        response = pb.ListContactsResponse()
        add, parts = response.contacts.add, {}
        for row, tag_rows in found[:limit]:
            add(**contact_fields(producer, row, tag_rows, parts))
        if len(found) > limit:
            position = queries.position_of(found[limit - 1][0], order)
            response.next_page_token = encode_page_token(position, *binding)
        return response

    async def CountContacts(self, request: pb.CountContactsRequest, context) -> pb.CountContactsResponse:
        producer = self._producer(request.parent)
        node = queries.parse_contact_filter(request.filter)
        return pb.CountContactsResponse(count=await self._read(queries.count_contacts, producer, node))

    async def ExportContacts(self, request: pb.ExportContactsRequest, context):
        """Streams the audience in keyset chunks: memory holds one chunk, however large the audience."""
        producer = self._producer(request.parent)
        node = queries.parse_contact_filter(request.filter)
        order = parse_order_by(request.order_by, queries.CONTACT_ORDERS, queries.DEFAULT_ORDER)
        full = request.view == pb.CONTACT_VIEW_FULL

        def chunk(connection, after):
            found = queries.list_contacts(connection, producer, node, after, EXPORT_CHUNK, order, with_tags=full)
            position = queries.position_of(found[-1][0], order) if found else None
            message = pb.ExportContactsResponse()
            add, parts = message.contacts.add, {}
            for row, tag_rows in found:
                add(**contact_fields(producer, row, tag_rows, parts))
            return message, position, len(found)

        after = None
        # Read the next chunk while the current one is being sent.
        pending = asyncio.ensure_future(self._read(chunk, after))
        try:
            while True:
                message, after, count = await pending
                if count == EXPORT_CHUNK:
                    pending = asyncio.ensure_future(self._read(chunk, after))
                if count:
                    yield message
                if count < EXPORT_CHUNK:
                    return
        finally:
            if not pending.done():
                pending.cancel()

    async def DeleteContact(self, request: pb.DeleteContactRequest, context) -> empty_pb2.Empty:
        producer, contact_id = self._contact(request.name)
        erased = await self._write(erase_contact, producer, contact_id) if contact_id is not None else False
        if not erased:
            raise not_found(request.name)
        return empty_pb2.Empty()

    async def ListTags(self, request: pb.ListTagsRequest, context) -> pb.ListTagsResponse:
        producer = self._producer(request.parent)
        product = None
        if request.product:
            product_producer, product = PRODUCT.parse(request.product, "product")
            if product_producer != producer:
                raise invalid_field("product", "must be a product of the parent producer")
        limit = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent, request.product)
        after = _check_position(position, queries.DEFAULT_ORDER)
        rows = await self._read(queries.list_tags, producer, product, after[0] if after else None, limit + 1)
        response = pb.ListTagsResponse(tags=[tag_message(row) for row in rows[:limit]])
        if len(rows) > limit:
            response.next_page_token = encode_page_token([rows[limit - 1].id], request.parent, request.product)
        return response

    async def ListEvents(self, request: pb.ListEventsRequest, context) -> pb.ListEventsResponse:
        producer, product = PRODUCT.parse(request.parent, "parent")
        require_producer_access(producer, request.parent)
        node = queries.parse_history_filter(request.filter)
        limit = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent, request.filter)
        before = _check_position(position, queries.DEFAULT_ORDER)
        rows = await self._read(queries.list_history, producer, product, before[0] if before else None, limit + 1, node)
        response = pb.ListEventsResponse(events=[history_message(producer, row) for row in rows[:limit]])
        if len(rows) > limit:
            response.next_page_token = encode_page_token([rows[limit - 1].id], request.parent, request.filter)
        return response

    async def GetProductDashboard(self, request: pb.GetProductDashboardRequest, context) -> pb.ProductDashboard:
        producer, product = DASHBOARD.parse(request.name, "name")
        require_producer_access(producer, request.name)
        end = micros(request.end_time) if request.HasField("end_time") else int(time.time() * 1_000_000)
        start = micros(request.start_time) if request.HasField("start_time") else end - DEFAULT_DASHBOARD_DAYS * _DAY
        if start >= end:
            raise invalid_field("start_time", "must be before end_time")
        start_day, end_day = start // _DAY, -(-end // _DAY)
        figures = await self._read(queries.product_dashboard, producer, product, start_day, end_day)
        return pb.ProductDashboard(
            name=request.name,
            start_time=timestamp(start_day * _DAY),
            end_time=timestamp(end_day * _DAY),
            contact_count=figures.contact_count,
            contacts_captured=sum(captured for _, _, captured in figures.days),
            event_count=sum(events for _, events, _ in figures.days),
            events_by_type=[pb.EventTypeCount(type=kind, count=count) for kind, count in figures.events_by_type],
            days=[
                pb.DailyFigures(day=timestamp(day * _DAY), event_count=events, contacts_captured=captured)
                for day, events, captured in figures.days
            ],
            tags=[tag_message(row) for row in figures.tags],
        )

    async def WatchTagChanges(self, request: pb.WatchTagChangesRequest, context):
        producer = self._producer(request.parent)
        after = tag_changes.decode_cursor(request.cursor)
        if self._js is None:
            raise unavailable("the tag-change stream is not available")
        wanted = tag_changes.TagSelector(list(request.tags))
        changes = tag_changes.watch(self._js, producer, after, wanted, self._closing)
        try:
            # Each response is written (gRPC flow control) before the next change is read.
            async for change, sequence in changes:
                response = pb.WatchTagChangesResponse(cursor=tag_changes.encode_cursor(sequence))
                if change is not None:
                    response.change.CopyFrom(change)
                yield response
        finally:
            # Closed now, not when collected: the watcher's NATS consumer goes with the call.
            await changes.aclose()
