"""The gRPC entrypoint: translates ContactsService requests into handler calls
(:mod:`~listboss_contacts.handlers`, run in a worker thread) and their results into
responses (:mod:`~listboss_contacts.messages`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import nats.errors
from google.protobuf import empty_pb2
from nats.js import JetStreamContext
from sqlalchemy.engine import Engine

from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as pb_grpc
from listboss_common import personal_data
from listboss_common.auth import READ, WRITE, require_producer_access
from listboss_common.db import DEFAULT_STATEMENT_TIMEOUT, rpc_statement_timeout
from listboss_common.deadlines import database_deadline
from listboss_common.errors import invalid_field, not_found, unavailable
from listboss_common.paging import decode_page_token, page_size, parse_order_by
from listboss_common.resources import CONTACT, PRODUCER, PRODUCT, ResourcePattern
from listboss_common.timestamps import micros
from listboss_contacts import audiences, domain, handlers, messages, queries, tag_changes
from listboss_contacts.unit_of_work import UnitOfWork

# The token scope each RPC needs, checked before the handler runs; an RPC missing here is refused.
# A read token (the email tool's) lists, counts, exports, gets and watches; erasing needs write.
METHOD_SCOPES = {
    "GetContact": READ,
    "ListContacts": READ,
    "CountContacts": READ,
    "ExportContacts": READ,
    "ListTags": READ,
    "ListEvents": READ,
    "GetProductDashboard": READ,
    "WatchTagChanges": READ,
    "GetAudience": READ,
    "ListAudiences": READ,
    "DeleteContact": WRITE,
    "CreateAudience": WRITE,
    "UpdateAudience": WRITE,
    "DeleteAudience": WRITE,
}

DASHBOARD = ResourcePattern("producers/{producer}/products/{product}/dashboard")
DEFAULT_DASHBOARD_DAYS = 30


def _check_position(position: list | None, order) -> list | None:
    """A decoded page token's keyset position, checked against its order's shape:
    tokens are opaque but not signed, so their contents are input like any other."""
    if position is None:
        return None
    column = queries.CONTACT_ORDERS[order.field]
    kinds = (int,) if column == "id" else (str, int) if column == "email" else (int, int)
    if len(position) != len(kinds) or not all(
        isinstance(value, kind) and not isinstance(value, bool) for value, kind in zip(position, kinds, strict=True)
    ):
        raise invalid_field("page_token", "is not a page token issued by this service")
    return position


class ContactsServicer(pb_grpc.ContactsServiceServicer):
    def __init__(
        self,
        engine: Engine,
        js: JetStreamContext | None = None,
        unit_of_work: Callable[[], UnitOfWork] | None = None,
        person_keys: personal_data.PersonKeys | None = None,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
    ):
        # Each RPC's statements end by its deadline, and within ``statement_timeout`` seconds.
        timeout = rpc_statement_timeout(statement_timeout)
        self._uow = unit_of_work or (lambda: UnitOfWork(engine, timeout))
        self._js = js
        # Erasure destroys the person's key on the bus; the service always passes it.
        self._person_keys = person_keys
        # Set at shutdown: open WatchTagChanges streams end cleanly (status OK).
        self._closing = asyncio.Event()

    def close_streams(self) -> None:
        self._closing.set()

    async def _call(self, handler, *args):
        with database_deadline():
            return await asyncio.to_thread(handler, self._uow(), *args)

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
        found = (
            await self._call(handlers.get_contact_with_traits, producer, contact_id) if contact_id is not None else None
        )
        if found is None:
            raise not_found(request.name)
        return messages.contact_message(producer, *found)

    async def ListContacts(self, request: pb.ListContactsRequest, context) -> pb.ListContactsResponse:
        producer = self._producer(request.parent)
        node = queries.parse_contact_filter(request.filter)
        order = parse_order_by(request.order_by, queries.CONTACT_ORDERS, queries.DEFAULT_ORDER)
        size = page_size(request.page_size)
        binding = (request.parent, request.filter, str(order))
        after = _check_position(decode_page_token(request.page_token, *binding), order)
        page = await self._call(handlers.list_contacts, producer, node, order, after, size)
        response = pb.ListContactsResponse()
        messages.add_contacts(response.contacts, producer, page.items)
        response.next_page_token = page.next_page_token(*binding)
        return response

    async def CountContacts(self, request: pb.CountContactsRequest, context) -> pb.CountContactsResponse:
        producer = self._producer(request.parent)
        node = queries.parse_contact_filter(request.filter)
        return pb.CountContactsResponse(count=await self._call(handlers.count_contacts, producer, node))

    async def ExportContacts(self, request: pb.ExportContactsRequest, context):
        """Streams the audience in keyset chunks: memory holds one chunk, however large the audience."""
        producer = self._producer(request.parent)
        node = queries.parse_contact_filter(request.filter)
        order = parse_order_by(request.order_by, queries.CONTACT_ORDERS, queries.DEFAULT_ORDER)
        full = request.view == pb.CONTACT_VIEW_FULL

        def chunk(uow: UnitOfWork, after: list | None) -> tuple[pb.ExportContactsResponse, list | None]:
            # The message is built in the worker thread too: at export rates that is most of the work.
            page = handlers.export_chunk(uow, producer, node, order, after, full)
            message = pb.ExportContactsResponse()
            messages.add_contacts(message.contacts, producer, page.items)
            return message, page.next_position

        # Read the next chunk while the current one is being sent.
        pending = asyncio.ensure_future(self._call(chunk, None))
        try:
            while True:
                message, after = await pending
                if after is not None:
                    pending = asyncio.ensure_future(self._call(chunk, after))
                if message.contacts:
                    yield message
                if after is None:
                    return
        finally:
            if not pending.done():
                pending.cancel()

    async def DeleteContact(self, request: pb.DeleteContactRequest, context) -> empty_pb2.Empty:
        """Destroys the person's key on the bus (every sealed copy of their data becomes
        unreadable), then erases the contact from the database. NATS away: UNAVAILABLE
        before the database is touched; a repeated call completes what one left undone."""
        producer, contact_id = self._contact(request.name)
        found = await self._call(handlers.get_contact, producer, contact_id) if contact_id is not None else None
        if found is None:
            raise not_found(request.name)
        if self._person_keys is not None:
            await self._destroy_person_key(producer, found[0].email)
        erased = await self._call(handlers.delete_contact, producer, contact_id)
        if not erased:
            raise not_found(request.name)
        return empty_pb2.Empty()

    async def _destroy_person_key(self, producer: str, email: str) -> None:
        assert self._person_keys is not None
        nc = getattr(self._js, "_nc", None)
        if nc is not None and not nc.is_connected:
            raise unavailable("the event bus is not reachable; retry the erasure", "BUS_UNAVAILABLE")
        try:
            await self._person_keys.destroy(producer, email)
        except nats.errors.Error as error:
            raise unavailable(
                f"the event bus did not erase the person's key; retry ({type(error).__name__})", "BUS_UNAVAILABLE"
            ) from error

    async def ListTags(self, request: pb.ListTagsRequest, context) -> pb.ListTagsResponse:
        producer = self._producer(request.parent)
        product = None
        if request.product:
            product_producer, product = PRODUCT.parse(request.product, "product")
            if product_producer != producer:
                raise invalid_field("product", "must be a product of the parent producer")
        size = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent, request.product)
        after = _check_position(position, queries.DEFAULT_ORDER)
        page = await self._call(handlers.list_tags, producer, product, after[0] if after else None, size)
        return pb.ListTagsResponse(
            tags=[messages.tag_message(row) for row in page.items],
            next_page_token=page.next_page_token(request.parent, request.product),
        )

    async def ListEvents(self, request: pb.ListEventsRequest, context) -> pb.ListEventsResponse:
        producer, product = PRODUCT.parse(request.parent, "parent")
        require_producer_access(producer, request.parent)
        node = queries.parse_history_filter(request.filter)
        size = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent, request.filter)
        before = _check_position(position, queries.DEFAULT_ORDER)
        page = await self._call(handlers.list_events, producer, product, node, before[0] if before else None, size)
        return pb.ListEventsResponse(
            events=[messages.history_message(producer, row) for row in page.items],
            next_page_token=page.next_page_token(request.parent, request.filter),
        )

    async def GetProductDashboard(self, request: pb.GetProductDashboardRequest, context) -> pb.ProductDashboard:
        producer, product = DASHBOARD.parse(request.name, "name")
        require_producer_access(producer, request.name)
        end = micros(request.end_time) if request.HasField("end_time") else int(time.time() * 1_000_000)
        start = (
            micros(request.start_time)
            if request.HasField("start_time")
            else end - DEFAULT_DASHBOARD_DAYS * domain.MICROS_PER_DAY
        )
        if start >= end:
            raise invalid_field("start_time", "must be before end_time")
        figures = await self._call(handlers.product_dashboard, producer, product, start, end)
        return messages.dashboard_message(request.name, figures)

    async def WatchTagChanges(self, request: pb.WatchTagChangesRequest, context):
        producer = self._producer(request.parent)
        after = tag_changes.decode_cursor(request.cursor)
        if self._js is None:
            raise unavailable("the tag-change stream is not available")
        wanted_audiences = [_audience_selector(producer, value, index) for index, value in enumerate(request.audiences)]
        changes = handlers.watch_tag_changes(
            self._js, producer, after, request.tags, self._closing, audiences=wanted_audiences
        )
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

    # ------------------------------------------------------------------ audiences

    async def GetAudience(self, request: pb.GetAudienceRequest, context) -> pb.Audience:
        producer, audience_id = _audience_ids(request.name, "name")
        return _audience_message(await self._call(handlers.get_audience, producer, audience_id))

    async def ListAudiences(self, request: pb.ListAudiencesRequest, context) -> pb.ListAudiencesResponse:
        producer = self._producer(request.parent)
        size = page_size(request.page_size)
        after = _check_position(decode_page_token(request.page_token, request.parent), queries.DEFAULT_ORDER)
        page = await self._call(handlers.list_audiences, producer, after[0] if after else None, size)
        return pb.ListAudiencesResponse(
            audiences=[_audience_message(record) for record in page.items],
            next_page_token=page.next_page_token(request.parent),
        )

    async def CreateAudience(self, request: pb.CreateAudienceRequest, context) -> pb.Audience:
        producer = self._producer(request.parent)
        audience_id = request.audience_id or audiences.new_audience_id()
        audiences.check_audience_id(audience_id)
        given = request.audience  # its output-only fields (name, member_count, times, etag) are ignored
        display_name = audiences.check_display_name(given.display_name)
        audiences.parse_filter(given.filter)  # INVALID_ARGUMENT before the database is touched
        created = await self._call(
            handlers.create_audience,
            producer,
            audience_id,
            display_name,
            given.filter,
            request.publish_existing_entries,
            audiences.now_micros(),
        )
        return _audience_message(created)

    async def UpdateAudience(self, request: pb.UpdateAudienceRequest, context) -> pb.Audience:
        given = request.audience
        producer, audience_id = _audience_ids(given.name, "audience.name")
        paths = list(request.update_mask.paths)
        if not paths:
            paths = [path for path in _AUDIENCE_UPDATABLE if getattr(given, path)]
            if not paths:
                raise invalid_field("update_mask", "names no field to update")
        elif paths == ["*"]:
            paths = list(_AUDIENCE_UPDATABLE)
        for index, path in enumerate(paths):
            if path not in _AUDIENCE_UPDATABLE:
                why = (
                    "is output only"
                    if path in ("name", "member_count", "create_time", "update_time", "etag")
                    else f"is not a field of an audience; updatable: {', '.join(_AUDIENCE_UPDATABLE)}"
                )
                raise invalid_field(f"update_mask.paths[{index}]", f"{path!r} {why}")
        display_name = audiences.check_display_name(given.display_name) if "display_name" in paths else None
        filter_text = None
        if "filter" in paths:
            audiences.parse_filter(given.filter)
            filter_text = given.filter
        updated = await self._call(
            handlers.update_audience,
            producer,
            audience_id,
            given.etag,
            display_name,
            filter_text,
            audiences.now_micros(),
        )
        return _audience_message(updated)

    async def DeleteAudience(self, request: pb.DeleteAudienceRequest, context) -> empty_pb2.Empty:
        producer, audience_id = _audience_ids(request.name, "name")
        await self._call(handlers.delete_audience, producer, audience_id, request.etag)
        return empty_pb2.Empty()


_AUDIENCE_UPDATABLE = ("display_name", "filter")


def _audience_ids(name: str, field: str) -> tuple[str, str]:
    producer, audience_id = audiences.AUDIENCE.parse(name, field)
    require_producer_access(producer, name)
    return producer, audience_id


def _audience_selector(producer: str, value: str, index: int) -> str:
    """A WatchTagChangesRequest.audiences value as an audience id ("-": every audience)."""
    if value == "-" or (not value.startswith("producers/") and audiences.is_audience_id(value)):
        return value
    if value.startswith("producers/"):
        owner, audience_id = audiences.AUDIENCE.parse(value, f"audiences[{index}]")
        if owner == producer:
            return audience_id
    raise invalid_field(
        f"audiences[{index}]",
        f"must be an audience id, a resource name producers/{producer}/audiences/{{audience}}, or '-' for every audience",
    )


def _audience_message(record: audiences.Audience) -> pb.Audience:
    message = pb.Audience(
        name=record.name,
        display_name=record.display_name,
        filter=record.filter,
        member_count=record.member_count,
        etag=record.etag,
    )
    message.create_time.FromMicroseconds(record.create_time)
    message.update_time.FromMicroseconds(record.update_time)
    return message
