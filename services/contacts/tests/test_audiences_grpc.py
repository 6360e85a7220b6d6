"""The audience RPCs over real gRPC on SQLite and PostgreSQL (tenancy, scopes, validation,
paging, the limit, etags), and audience entries and exits relayed to a real nats-server and
read with WatchTagChanges' audience filter."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as pb_grpc
from listboss_common.auth import READ
from listboss_contacts import audiences
from listboss_contacts.consumer import ChangeApplier
from listboss_contacts.grpc_api import METHOD_SCOPES, ContactsServicer
from listboss_contacts.tag_changes import OutboxRelay
from listboss_testing import bearer, binding

from .test_audiences import T0, change

SERVICE = pb.DESCRIPTOR.services_by_name["ContactsService"]
ALICE = bearer("alice")
BOB = bearer("bob")
PARENT = "producers/alice"


class Service:
    def __init__(self, engine, js=None):
        self.engine = engine
        self.servicer = ContactsServicer(engine, js)
        self.applier = ChangeApplier(engine)

    async def start(self, grpc_server):
        self.served = await grpc_server(
            [binding(SERVICE, pb_grpc.add_ContactsServiceServicer_to_server, self.servicer, METHOD_SCOPES)]
        )
        self.stub = pb_grpc.ContactsServiceStub(self.served.channel)


@pytest.fixture
async def service(engine, grpc_server):
    service = Service(engine)
    await service.start(grpc_server)
    yield service
    await service.served.close()


@pytest.fixture
async def streaming(engine, nc, grpc_server):
    service = Service(engine, nc.jetstream())
    await service.start(grpc_server)
    yield service
    service.servicer.close_streams()
    await service.served.close()


def violations(error: grpc.RpcError) -> dict[str, str]:
    found = {}
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            found.update({v.field: v.description for v in request.field_violations})
    return found


def reason(error: grpc.RpcError) -> str:
    for detail in rpc_status.from_call(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


async def create(stub, audience_id, filter_text, *, publish=False, metadata=ALICE, parent=PARENT):
    return await stub.CreateAudience(
        pb.CreateAudienceRequest(
            parent=parent,
            audience_id=audience_id,
            audience=pb.Audience(display_name=f"The {audience_id}", filter=filter_text),
            publish_existing_entries=publish,
        ),
        metadata=metadata,
    )


async def test_create_get_list_update_delete(service):
    stub = service.stub
    await asyncio.to_thread(
        service.applier.apply,
        [change("e1", "ana@x.com", T0, adds=["a"]), change("e2", "bob@x.com", T0, adds=["b"])],
    )
    created = await create(stub, "buyers", 'tag = "a"')
    assert (created.name, created.display_name, created.member_count) == (
        "producers/alice/audiences/buyers",
        "The buyers",
        1,
    )
    assert created.etag and created.create_time.seconds > 0
    generated = await stub.CreateAudience(
        pb.CreateAudienceRequest(parent=PARENT, audience=pb.Audience(display_name="x", filter='tag = "b"')),
        metadata=ALICE,
    )
    assert generated.name.startswith("producers/alice/audiences/aud-")
    await create(stub, "third", 'email : "x.com"')
    assert (await stub.GetAudience(pb.GetAudienceRequest(name=created.name), metadata=ALICE)) == created

    seen, token, pages = [], "", 0
    while pages < 5:
        page = await stub.ListAudiences(
            pb.ListAudiencesRequest(parent=PARENT, page_size=2, page_token=token), metadata=ALICE
        )
        seen += [audience.name.rsplit("/", 1)[1] for audience in page.audiences]
        token, pages = page.next_page_token, pages + 1
        if not token:
            break
    assert seen == ["buyers", generated.name.rsplit("/", 1)[1], "third"] and pages == 2

    updated = await stub.UpdateAudience(
        pb.UpdateAudienceRequest(
            audience=pb.Audience(name=created.name, filter='tag = "a" OR tag = "b"', etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["filter"]),
        ),
        metadata=ALICE,
    )
    assert (updated.member_count, updated.display_name) == (2, "The buyers") and updated.etag != created.etag
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.DeleteAudience(pb.DeleteAudienceRequest(name=created.name, etag=created.etag), metadata=ALICE)
    assert stale.value.code() == grpc.StatusCode.ABORTED and reason(stale.value) == "ETAG_MISMATCH"
    await stub.DeleteAudience(pb.DeleteAudienceRequest(name=created.name, etag=updated.etag), metadata=ALICE)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetAudience(pb.GetAudienceRequest(name=created.name), metadata=ALICE)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_tenancy_scopes_and_the_limit(service, monkeypatch):
    stub = service.stub
    created = await create(stub, "mine", 'tag = "a"')
    for call in (
        stub.GetAudience(pb.GetAudienceRequest(name=created.name), metadata=BOB),
        stub.ListAudiences(pb.ListAudiencesRequest(parent=PARENT), metadata=BOB),
        stub.DeleteAudience(pb.DeleteAudienceRequest(name=created.name), metadata=BOB),
        create(stub, "theirs", 'tag = "a"', metadata=BOB),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Bob's own audiences are his: the same id is free there, and he lists only his.
    await create(stub, "mine", 'tag = "b"', metadata=BOB, parent="producers/bob")
    listed = await stub.ListAudiences(pb.ListAudiencesRequest(parent="producers/bob"), metadata=BOB)
    assert [a.filter for a in listed.audiences] == ['tag = "b"']

    reader = bearer("alice", READ)
    assert (await stub.GetAudience(pb.GetAudienceRequest(name=created.name), metadata=reader)).name == created.name
    with pytest.raises(grpc.aio.AioRpcError) as read_only:
        await create(stub, "other", 'tag = "a"', metadata=reader)
    assert read_only.value.code() == grpc.StatusCode.PERMISSION_DENIED

    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await create(stub, "mine", 'tag = "a"')
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    monkeypatch.setattr(audiences, "MAX_AUDIENCES", 2)
    await create(stub, "second", 'tag = "a"')
    with pytest.raises(grpc.aio.AioRpcError) as limit:
        await create(stub, "third", 'tag = "a"')
    assert limit.value.code() == grpc.StatusCode.FAILED_PRECONDITION and reason(limit.value) == "AUDIENCES_LIMIT"
    assert "at most 2 audiences" in limit.value.details()


@pytest.mark.parametrize(
    ("audience_id", "display_name", "filter_text", "field", "fragment"),
    [
        ("Bad_Id", "x", 'tag = "a"', "audience_id", "lower-case"),
        ("ok", "", 'tag = "a"', "audience.display_name", "required"),
        ("ok", "x" * 201, 'tag = "a"', "audience.display_name", "at most 200"),
        ("ok", "x", "", "audience.filter", "required"),
        ("ok", "x", 'tag = "a" AND colour = "red"', "audience.filter", "unknown field 'colour'"),
        ("ok", "x", 'tag = "a" AND (', "audience.filter", "position"),
    ],
)
async def test_bad_audiences_are_invalid_argument_naming_the_field(
    service, audience_id, display_name, filter_text, field, fragment
):
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await service.stub.CreateAudience(
            pb.CreateAudienceRequest(
                parent=PARENT,
                audience_id=audience_id,
                audience=pb.Audience(display_name=display_name, filter=filter_text),
            ),
            metadata=ALICE,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in violations(bad.value)[field]
    assert "Error" not in bad.value.details() and "Traceback" not in bad.value.details()


async def test_bad_updates_name_the_mask_path(service):
    created = await create(service.stub, "aud", 'tag = "a"')
    for paths, field in ((["member_count"], "update_mask.paths[0]"), (["filter", "colour"], "update_mask.paths[1]")):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await service.stub.UpdateAudience(
                pb.UpdateAudienceRequest(
                    audience=pb.Audience(name=created.name, filter='tag = "b"'),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                ),
                metadata=ALICE,
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in violations(bad.value)
    with pytest.raises(grpc.aio.AioRpcError) as bad_filter:
        await service.stub.UpdateAudience(
            pb.UpdateAudienceRequest(audience=pb.Audience(name=created.name, filter="tag =")), metadata=ALICE
        )
    assert "audience.filter" in violations(bad_filter.value)


async def take(stream, count, timeout=15.0):
    got = []

    async def read():
        async for item in stream:
            if item.HasField("change"):
                got.append(item.change)
                if len(got) == count:
                    return

    await asyncio.wait_for(read(), timeout)
    return got


async def test_entries_and_exits_reach_watchers_through_the_relay(streaming, nc):
    service, stub = streaming, streaming.stub
    relay = OutboxRelay(service.engine, nc.jetstream())
    apply = service.applier.apply
    await asyncio.to_thread(apply, [change("e0", "old@x.com", T0, adds=["a"])])
    await create(stub, "silent", 'tag = "a"')  # old@ becomes a member without an entry
    loud = await create(stub, "loud", 'tag = "a"', publish=True)  # old@'s entry is published
    await asyncio.to_thread(apply, [change("e1", "ana@x.com", T0 + 1, adds=["a"])])
    await asyncio.to_thread(apply, [change("e2", "ana@x.com", T0 + 2, removes=["a"])])
    await stub.UpdateAudience(
        pb.UpdateAudienceRequest(audience=pb.Audience(name=loud.name, filter='tag = "b"', etag=loud.etag)),
        metadata=ALICE,
    )
    for _ in range(5):
        if not await relay.relay_once():
            break

    only_silent = stub.WatchTagChanges(
        pb.WatchTagChangesRequest(parent=PARENT, audiences=["producers/alice/audiences/silent"]), metadata=ALICE
    )
    got = await take(only_silent, 2)
    only_silent.cancel()
    assert [(c.kind, c.contact.count("/"), c.event.rsplit("/", 1)[-1]) for c in got] == [
        (pb.TagChange.KIND_AUDIENCE_ENTERED, 3, "e1"),
        (pb.TagChange.KIND_AUDIENCE_EXITED, 3, "e2"),
    ]
    assert got[0].audience == "producers/alice/audiences/silent" and got[0].contact == got[1].contact
    assert got[0].event == "producers/alice/products/42/events/e1" and not got[0].tag

    every_audience = stub.WatchTagChanges(pb.WatchTagChangesRequest(parent=PARENT, audiences=["-"]), metadata=ALICE)
    got = await take(every_audience, 6)
    every_audience.cancel()
    # old@ entered loud at its creation; ana entered and left both (audience id order within a
    # batch); loud's new filter took old@ out.
    assert [(c.audience.rsplit("/", 1)[1], c.kind, bool(c.event)) for c in got] == [
        ("loud", pb.TagChange.KIND_AUDIENCE_ENTERED, False),
        ("silent", pb.TagChange.KIND_AUDIENCE_ENTERED, True),
        ("loud", pb.TagChange.KIND_AUDIENCE_ENTERED, True),
        ("silent", pb.TagChange.KIND_AUDIENCE_EXITED, True),
        ("loud", pb.TagChange.KIND_AUDIENCE_EXITED, True),
        ("loud", pb.TagChange.KIND_AUDIENCE_EXITED, False),
    ]

    # A tag filter sees tag changes only, marked as such.
    tags_only = stub.WatchTagChanges(pb.WatchTagChangesRequest(parent=PARENT, tags=["a"]), metadata=ALICE)
    got = await take(tags_only, 3)
    tags_only.cancel()
    assert {c.kind for c in got} == {pb.TagChange.KIND_TAG} and not any(c.audience for c in got)

    with pytest.raises(grpc.aio.AioRpcError) as other_producer:
        stream = stub.WatchTagChanges(
            pb.WatchTagChangesRequest(parent=PARENT, audiences=["producers/bob/audiences/x"]), metadata=ALICE
        )
        await take(stream, 1)
    assert other_producer.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "audiences[0]" in violations(other_producer.value)
