"""Malformed requests to ContactsService over real gRPC: wrong and over-long resource names, bad
filters, orderings, page tokens and page sizes, bytes that are no request. Each is
INVALID_ARGUMENT naming the field, in the caller's terms and bounded in size."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable

import grpc
import pytest

from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as pb_grpc
from listboss_contacts.grpc_api import METHOD_SCOPES, ContactsServicer
from listboss_testing import bearer, binding, rich_status, violated_fields
from listboss_testing.rich_errors import assert_plain_rpc_error

SERVICE = pb.DESCRIPTOR.services_by_name["ContactsService"]
ALICE = bearer("alice")
LONG = "a" * 100_000
FORGED_TOKEN = base64.urlsafe_b64encode(json.dumps({"p": [{"x": 1}], "b": "0"}).encode()).decode()


@pytest.fixture
async def served(engine, grpc_server):
    return await grpc_server(
        [binding(SERVICE, pb_grpc.add_ContactsServiceServicer_to_server, ContactsServicer(engine), METHOD_SCOPES)]
    )


@pytest.fixture
def stub(served):
    return pb_grpc.ContactsServiceStub(served.channel)


async def _drain(stream) -> None:
    async for _ in stream:
        pass


# (label, call on the stub, the field the answer must name)
CASES: list[tuple[str, Callable[[pb_grpc.ContactsServiceStub], Awaitable[object]], str]] = [
    (
        "over-long producer",
        lambda s: s.GetContact(pb.GetContactRequest(name=f"producers/{LONG}/contacts/1"), metadata=ALICE),
        "name",
    ),
    (
        "over-long contact id",
        lambda s: s.GetContact(pb.GetContactRequest(name=f"producers/alice/contacts/{LONG}"), metadata=ALICE),
        "name",
    ),
    (
        "contact id one past the limit",
        lambda s: s.GetContact(pb.GetContactRequest(name="producers/alice/contacts/" + "1" * 129), metadata=ALICE),
        "name",
    ),
    (
        "wrong kind of name",
        lambda s: s.GetContact(pb.GetContactRequest(name="producers/alice/tags/1"), metadata=ALICE),
        "name",
    ),
    (
        "over-long list parent",
        lambda s: s.ListContacts(pb.ListContactsRequest(parent="producers/" + LONG), metadata=ALICE),
        "parent",
    ),
    (
        "bad filter",
        lambda s: s.ListContacts(pb.ListContactsRequest(parent="producers/alice", filter="tag = = ("), metadata=ALICE),
        "filter",
    ),
    (
        "over-long filter",
        lambda s: s.ListContacts(pb.ListContactsRequest(parent="producers/alice", filter=LONG), metadata=ALICE),
        "filter",
    ),
    (
        "unknown filter field",
        lambda s: s.ListContacts(
            pb.ListContactsRequest(parent="producers/alice", filter="shoe_size = 3"), metadata=ALICE
        ),
        "filter",
    ),
    (
        "bad order",
        lambda s: s.ListContacts(pb.ListContactsRequest(parent="producers/alice", order_by=LONG), metadata=ALICE),
        "order_by",
    ),
    (
        "negative page size",
        lambda s: s.ListContacts(pb.ListContactsRequest(parent="producers/alice", page_size=-1), metadata=ALICE),
        "page_size",
    ),
    (
        "page token not ours",
        lambda s: s.ListContacts(pb.ListContactsRequest(parent="producers/alice", page_token=LONG), metadata=ALICE),
        "page_token",
    ),
    (
        "forged page token",
        lambda s: s.ListContacts(
            pb.ListContactsRequest(parent="producers/alice", page_token=FORGED_TOKEN), metadata=ALICE
        ),
        "page_token",
    ),
    (
        "count with an over-long parent",
        lambda s: s.CountContacts(pb.CountContactsRequest(parent="producers/" + LONG), metadata=ALICE),
        "parent",
    ),
    (
        "tags of an over-long product",
        lambda s: s.ListTags(pb.ListTagsRequest(parent="producers/alice", product=LONG), metadata=ALICE),
        "product",
    ),
    (
        "events of an over-long product",
        lambda s: s.ListEvents(pb.ListEventsRequest(parent=f"producers/alice/products/{LONG}"), metadata=ALICE),
        "parent",
    ),
    (
        "events with a bad filter",
        lambda s: s.ListEvents(
            pb.ListEventsRequest(parent="producers/alice/products/42", filter="type = NOPE"), metadata=ALICE
        ),
        "filter",
    ),
    (
        "delete an over-long contact",
        lambda s: s.DeleteContact(pb.DeleteContactRequest(name=f"producers/alice/contacts/{LONG}"), metadata=ALICE),
        "name",
    ),
    (
        "dashboard of an over-long product",
        lambda s: s.GetProductDashboard(
            pb.GetProductDashboardRequest(name=f"producers/alice/products/{LONG}/dashboard"), metadata=ALICE
        ),
        "name",
    ),
    (
        "export with a bad filter",
        lambda s: _drain(
            s.ExportContacts(pb.ExportContactsRequest(parent="producers/alice", filter="(("), metadata=ALICE)
        ),
        "filter",
    ),
    (
        "export with an over-long parent",
        lambda s: _drain(s.ExportContacts(pb.ExportContactsRequest(parent="producers/" + LONG), metadata=ALICE)),
        "parent",
    ),
    (
        "watch with an over-long parent",
        lambda s: _drain(s.WatchTagChanges(pb.WatchTagChangesRequest(parent="producers/" + LONG), metadata=ALICE)),
        "parent",
    ),
]


@pytest.mark.parametrize(("label", "call", "field"), CASES, ids=[case[0] for case in CASES])
async def test_malformed_requests_are_named_plainly(stub, label, call, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stub)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert_plain_rpc_error(caught.value)
    assert field in violated_fields(rich_status(caught.value)[1])
    assert LONG[:200] not in caught.value.details()


async def test_bytes_that_are_no_request_are_named_plainly(served):
    get = served.channel.unary_unary("/listboss.contacts.v1.ContactsService/GetContact")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get(b"\x0a\x03\xff\xfe\xfd", metadata=ALICE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(rich_status(caught.value)[1]) == {"name"}
    assert_plain_rpc_error(caught.value)
