"""The gRPC entrypoint: translates ContactsService requests to queries."""

from __future__ import annotations

import asyncio

from google.protobuf import timestamp_pb2
from sqlalchemy.engine import Engine

from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as pb_grpc
from listboss_common.auth import require_producer_access
from listboss_common.errors import invalid_field, not_found
from listboss_common.paging import decode_page_token, encode_page_token, page_size
from listboss_common.resources import CONTACT, HISTORY_EVENT, PRODUCER, PRODUCT, TAG
from listboss_contacts import queries


def _timestamp(micros: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def _kind(automatic: bool) -> int:
    return pb.TAG_KIND_AUTOMATIC if automatic else pb.TAG_KIND_CUSTOM


def contact_message(producer: str, row, tag_rows: list[queries.ContactTagRow]) -> pb.Contact:
    return pb.Contact(
        name=CONTACT.format(producer, str(row.id)),
        email=row.email,
        display_name=row.display_name,
        phone=row.phone,
        country_code=row.country_code,
        source=row.source,
        tags=[
            pb.ContactTag(
                tag=TAG.format(producer, queries.tag_id(t.product, t.key)),
                key=t.key,
                display_name=t.display_name,
                product=PRODUCT.format(producer, t.product),
                kind=_kind(t.automatic),
                apply_time=_timestamp(t.stamp_time),
                segmentation=t.segmentation,
                event_id=t.stamp_event,
            )
            for t in tag_rows
        ],
        first_event_time=_timestamp(row.first_event_time),
        last_event_time=_timestamp(row.last_event_time),
        create_time=_timestamp(row.create_time),
        update_time=_timestamp(row.update_time),
    )


def tag_message(row) -> pb.Tag:
    return pb.Tag(
        name=TAG.format(row.producer, queries.tag_id(row.product, row.key)),
        key=row.key,
        display_name=row.display_name,
        product=PRODUCT.format(row.producer, row.product),
        kind=_kind(row.automatic),
        contact_count=row.contact_count,
        create_time=_timestamp(row.create_time),
    )


def history_message(producer: str, row: queries.HistoryRow) -> pb.HistoryEvent:
    return pb.HistoryEvent(
        name=HISTORY_EVENT.format(producer, row.product, row.event_id),
        type=row.event_type,
        occur_time=_timestamp(row.occur_time),
        record_time=_timestamp(row.record_time),
        contact=CONTACT.format(producer, str(row.contact_id)) if row.contact_id is not None else "",
        email=row.email,
        contact_created=row.contact_created,
        added_tags=row.added_tags,
        removed_tags=row.removed_tags,
        fired_segmentations=row.fired_segmentations,
    )


class ContactsServicer(pb_grpc.ContactsServiceServicer):
    def __init__(self, engine: Engine):
        self._engine = engine

    async def _read(self, function, *args):
        def run():
            with self._engine.connect() as connection:
                return function(connection, *args)

        return await asyncio.to_thread(run)

    @staticmethod
    def _producer(parent: str) -> str:
        (producer,) = PRODUCER.parse(parent, "parent")
        require_producer_access(producer, parent)
        return producer

    async def GetContact(self, request: pb.GetContactRequest, context) -> pb.Contact:
        producer, contact = CONTACT.parse(request.name, "name")
        require_producer_access(producer, request.name)
        found = await self._read(queries.get_contact, producer, int(contact)) if contact.isdigit() else None
        if found is None:
            raise not_found(request.name)
        return contact_message(producer, *found)

    async def ListContacts(self, request: pb.ListContactsRequest, context) -> pb.ListContactsResponse:
        producer = self._producer(request.parent)
        node = queries.parse_contact_filter(request.filter)
        limit = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent, request.filter)
        after = int(position[0]) if position else None
        found = await self._read(queries.list_contacts, producer, node, after, limit + 1)
        response = pb.ListContactsResponse(
            contacts=[contact_message(producer, row, tag_rows) for row, tag_rows in found[:limit]]
        )
        if len(found) > limit:
            response.next_page_token = encode_page_token([found[limit - 1][0].id], request.parent, request.filter)
        return response

    async def ListTags(self, request: pb.ListTagsRequest, context) -> pb.ListTagsResponse:
        producer = self._producer(request.parent)
        product = None
        if request.product:
            product_producer, product = PRODUCT.parse(request.product, "product")
            if product_producer != producer:
                raise invalid_field("product", "must be a product of the parent producer")
        limit = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent, request.product)
        after = int(position[0]) if position else None
        rows = await self._read(queries.list_tags, producer, product, after, limit + 1)
        response = pb.ListTagsResponse(tags=[tag_message(row) for row in rows[:limit]])
        if len(rows) > limit:
            response.next_page_token = encode_page_token([rows[limit - 1].id], request.parent, request.product)
        return response

    async def ListEvents(self, request: pb.ListEventsRequest, context) -> pb.ListEventsResponse:
        producer, product = PRODUCT.parse(request.parent, "parent")
        require_producer_access(producer, request.parent)
        limit = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent)
        before = int(position[0]) if position else None
        rows = await self._read(queries.list_history, producer, product, before, limit + 1)
        response = pb.ListEventsResponse(events=[history_message(producer, row) for row in rows[:limit]])
        if len(rows) > limit:
            response.next_page_token = encode_page_token([rows[limit - 1].id], request.parent)
        return response
