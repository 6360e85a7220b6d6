"""ContactsService over real gRPC (grpc.aio on port 0) on SQLite and PostgreSQL, and the
tag-change outbox relay and WatchTagChanges against a real nats-server."""

from __future__ import annotations

import asyncio
import time

import grpc
import nats
import pytest
import sqlalchemy as sa
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from listboss.changes.v1 import contact_change_pb2
from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as pb_grpc
from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_contacts import schema
from listboss_contacts.consumer import ChangeApplier
from listboss_contacts.grpc_api import METHOD_SCOPES, ContactsServicer
from listboss_contacts.tag_changes import OutboxRelay
from listboss_testing import bearer, binding

SERVICE = pb.DESCRIPTOR.services_by_name["ContactsService"]
ADD = contact_change_pb2.TagOperation.ACTION_ADD
REMOVE = contact_change_pb2.TagOperation.ACTION_REMOVE
ALICE = bearer("alice")
DAY = 86_400


def change(event_id, email, seconds, adds=(), removes=(), *, producer="alice", product="42"):
    event = event_pb2.Event(
        id=event_id,
        producer=producer,
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id=product, name="Course"),
        person=event_pb2.Person(email=email, name="Ana"),
    )
    event.occur_time.FromSeconds(seconds)
    result = contact_change_pb2.ContactChange(event=event)
    for key in removes:
        result.tag_operations.add(action=REMOVE, tag_key=key, automatic=True, segmentation=f"auto-{key}")
    for key in adds:
        result.tag_operations.add(action=ADD, tag_key=key, automatic=True, segmentation=f"auto-{key}")
    return result


class Service:
    """A ContactsService on a free port over a fresh database, with its applier."""

    def __init__(self, engine, js=None):
        self.engine = engine
        self.servicer = ContactsServicer(engine, js)
        self.applier = ChangeApplier(engine)

    async def start(self, grpc_server):
        self.served = await grpc_server(
            [binding(SERVICE, pb_grpc.add_ContactsServiceServicer_to_server, self.servicer, METHOD_SCOPES)]
        )
        self.stub = pb_grpc.ContactsServiceStub(self.served.channel)

    async def stop(self):
        await self.served.close()

    def apply(self, changes):
        return self.applier.apply(changes)


@pytest.fixture
async def service(engine, grpc_server):
    service = Service(engine)
    await service.start(grpc_server)
    yield service
    await service.stop()


def violations(error: grpc.RpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    found = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            found.update({v.field: v.description for v in request.field_violations})
    return found


async def all_pages(stub, **request):
    seen, token = [], ""
    while True:
        page = await stub.ListContacts(pb.ListContactsRequest(page_token=token, **request), metadata=ALICE)
        seen += [c.email for c in page.contacts]
        token = page.next_page_token
        if not token:
            return seen


async def test_list_count_and_export_with_filters_orders_and_tokens(service):
    service.apply(
        [
            change(
                f"e{i}", f"p{i:04d}@{'x' if i % 2 else 'y'}.com", 100 + i, adds=["a"] + (["b"] if i % 5 == 0 else [])
            )
            for i in range(2300)
        ]
    )
    stub = service.stub
    text = 'tag = "a" AND NOT tag = "b"'
    expected = [f"p{i:04d}@{'x' if i % 2 else 'y'}.com" for i in range(2300) if i % 5]
    assert await all_pages(stub, parent="producers/alice", filter=text, page_size=700) == expected
    by_email = await all_pages(stub, parent="producers/alice", filter=text, page_size=1000, order_by="email desc")
    assert by_email == sorted(expected, reverse=True)
    count = await stub.CountContacts(pb.CountContactsRequest(parent="producers/alice", filter=text), metadata=ALICE)
    assert count.count == len(expected)
    single = await stub.CountContacts(
        pb.CountContactsRequest(parent="producers/alice", filter='tag = "b"'), metadata=ALICE
    )
    assert single.count == 460

    exported, chunks = [], 0
    async for chunk in stub.ExportContacts(
        pb.ExportContactsRequest(parent="producers/alice", filter=text), metadata=ALICE
    ):
        chunks += 1
        exported += [c.email for c in chunk.contacts]
        assert all(not c.tags for c in chunk.contacts)  # the basic view
    assert exported == expected and chunks == 2
    full = [
        c
        async for chunk in stub.ExportContacts(
            pb.ExportContactsRequest(
                parent="producers/alice", filter='email : "p0005@"', view=pb.CONTACT_VIEW_FULL, order_by="create_time"
            ),
            metadata=ALICE,
        )
        for c in chunk.contacts
    ]
    assert [(c.email, sorted(t.key for t in c.tags)) for c in full] == [("p0005@x.com", ["a", "b"])]

    first = await stub.ListContacts(
        pb.ListContactsRequest(parent="producers/alice", filter=text, page_size=10), metadata=ALICE
    )
    for changed in (dict(filter='tag = "a"'), dict(filter=text, order_by="email")):
        with pytest.raises(grpc.RpcError) as error:
            await stub.ListContacts(
                pb.ListContactsRequest(parent="producers/alice", page_token=first.next_page_token, **changed),
                metadata=ALICE,
            )
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in violations(error.value)


@pytest.mark.parametrize(
    ("request_fields", "field", "fragment"),
    [
        (dict(filter='tag = "a" AND (tag = "b"'), "filter", "at position 24"),
        (dict(filter='colour = "red"'), "filter", "unknown field 'colour'"),
        (dict(filter="create_time > 2024-13-01T00:00:00Z"), "filter", "invalid timestamp"),
        (dict(order_by="display_name"), "order_by", "cannot order by 'display_name'"),
        (dict(order_by="email sideways"), "order_by", "expected one field"),
        (dict(page_token="garbage"), "page_token", "not a page token"),
        (dict(page_size=-1), "page_size", "negative"),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(service, request_fields, field, fragment):
    with pytest.raises(grpc.RpcError) as error:
        await service.stub.ListContacts(
            pb.ListContactsRequest(parent="producers/alice", **request_fields), metadata=ALICE
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in violations(error.value)[field]


async def test_delete_contact_erases_and_is_scoped(service):
    service.apply([change("e1", "ana@x.com", 100, adds=["a"]), change("e2", "bob@x.com", 100, adds=["a"])])
    stub = service.stub
    page = await stub.ListContacts(
        pb.ListContactsRequest(parent="producers/alice", filter='email = "ana@x.com"'), metadata=ALICE
    )
    [ana] = page.contacts
    with pytest.raises(grpc.RpcError) as error:
        await stub.DeleteContact(pb.DeleteContactRequest(name=ana.name), metadata=bearer("mallory"))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await stub.DeleteContact(pb.DeleteContactRequest(name=ana.name), metadata=ALICE)
    for call in (
        stub.DeleteContact(pb.DeleteContactRequest(name=ana.name), metadata=ALICE),
        stub.GetContact(pb.GetContactRequest(name=ana.name), metadata=ALICE),
    ):
        with pytest.raises(grpc.RpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    count = await stub.CountContacts(
        pb.CountContactsRequest(parent="producers/alice", filter='tag = "a"'), metadata=ALICE
    )
    assert count.count == 1
    events = await stub.ListEvents(pb.ListEventsRequest(parent="producers/alice/products/42"), metadata=ALICE)
    assert sorted((e.email, e.contact) for e in events.events)[0] == ("", "")


async def test_history_filter_and_dashboard(service):
    service.apply(
        [
            change("e1", "ana@x.com", 1000 * DAY, adds=["a"]),
            change("e2", "bob@x.com", 1001 * DAY, adds=["a"], removes=["b"]),
        ]
    )
    stub = service.stub
    events = await stub.ListEvents(
        pb.ListEventsRequest(
            parent="producers/alice/products/42", filter='email = "bob@x.com" AND type = PURCHASE_APPROVED'
        ),
        metadata=ALICE,
    )
    [bob] = events.events
    assert (list(bob.added_tags), list(bob.removed_tags), bob.contact_created) == (["a"], ["b"], True)
    with pytest.raises(grpc.RpcError) as error:
        await stub.ListEvents(
            pb.ListEventsRequest(parent="producers/alice/products/42", filter="tag = a"), metadata=ALICE
        )
    assert "unknown field 'tag'" in violations(error.value)["filter"]

    dashboard = await stub.GetProductDashboard(
        pb.GetProductDashboardRequest(
            name="producers/alice/products/42/dashboard",
            start_time=timestamp_pb2.Timestamp(seconds=990 * DAY),
            end_time=timestamp_pb2.Timestamp(seconds=1001 * DAY + 1),
        ),
        metadata=ALICE,
    )
    assert (dashboard.contact_count, dashboard.contacts_captured, dashboard.event_count) == (2, 2, 2)
    assert dashboard.end_time.seconds == 1002 * DAY
    assert [(t.type, t.count) for t in dashboard.events_by_type] == [(event_pb2.EVENT_TYPE_PURCHASE_APPROVED, 2)]
    assert [(d.day.seconds, d.event_count) for d in dashboard.days] == [(1000 * DAY, 1), (1001 * DAY, 1)]
    assert [(t.key, t.contact_count) for t in dashboard.tags] == [("a", 2), ("b", 0)]
    with pytest.raises(grpc.RpcError) as error:
        await stub.GetProductDashboard(
            pb.GetProductDashboardRequest(name="producers/alice/products/42/dashboard"), metadata=bearer("bob")
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --------------------------------------------------------------------------- tag changes through NATS


@pytest.fixture
async def streaming(engine, nc, grpc_server):
    service = Service(engine, nc.jetstream())
    await service.start(grpc_server)
    yield service
    service.servicer.close_streams()
    await service.stop()


async def outbox_size(engine) -> int:
    def read():
        with engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(schema.tag_change_outbox)).scalar()

    return await asyncio.to_thread(read)


async def take(stream, n, timeout=10.0):
    got = []

    async def read():
        async for item in stream:
            got.append(item)
            if len(got) == n:
                return

    await asyncio.wait_for(read(), timeout)
    return got


async def test_relay_publishes_committed_changes_in_order_and_watch_resumes(streaming, nc):
    service = streaming
    js = nc.jetstream()
    service.apply([change("e1", "ana@x.com", 100, adds=["a", "b"]), change("e2", "bob@x.com", 100, adds=["a"])])
    service.apply([change("e3", "ana@x.com", 200, removes=["a"]), change("e4", "bob@x.com", 50, removes=["a"])])
    assert await outbox_size(service.engine) == 4  # e4 is older than e2: no change
    relay = OutboxRelay(service.engine, js, batch_size=3)
    assert await relay.relay_once() == 3
    assert await relay.relay_once() == 1
    assert await outbox_size(service.engine) == 0

    stream = service.stub.WatchTagChanges(pb.WatchTagChangesRequest(parent="producers/alice"), metadata=ALICE)
    got = await take(stream, 4)
    stream.cancel()
    changes = [item.change for item in got]
    assert [(c.tag_key, c.action, c.event.rsplit("/", 1)[-1]) for c in changes] == [
        ("a", pb.TagChange.ACTION_ADDED, "e1"),
        ("b", pb.TagChange.ACTION_ADDED, "e1"),
        ("a", pb.TagChange.ACTION_ADDED, "e2"),
        ("a", pb.TagChange.ACTION_REMOVED, "e3"),
    ]
    assert [int(c.id) for c in changes] == sorted(int(c.id) for c in changes)
    assert changes[0].tag == "producers/alice/tags/42.a" and changes[0].segmentation == "auto-a"
    assert changes[0].contact.startswith("producers/alice/contacts/") and "@" not in str(changes)
    assert changes[0].event == "producers/alice/products/42/events/e1"

    # Resume after the second change, only tag "a": the rest, nothing twice, nothing missed.
    resumed = service.stub.WatchTagChanges(
        pb.WatchTagChangesRequest(parent="producers/alice", cursor=got[1].cursor, tags=["producers/alice/tags/42.a"]),
        metadata=ALICE,
    )
    first = await take(resumed, 2)
    assert [i.change.id for i in first] == [changes[2].id, changes[3].id]
    # New changes arrive on the open stream once committed and relayed.
    service.apply([change("e5", "cy@x.com", 300, adds=["a", "b"])])
    await relay.relay_once()
    [late] = await take(resumed, 1)
    assert (late.change.tag_key, late.change.event.rsplit("/", 1)[-1]) == ("a", "e5")
    # e5's "b" is filtered out; once the stream is quiet a response moves the cursor past it.
    [moved] = await take(resumed, 1)
    assert not moved.HasField("change") and moved.cursor != late.cursor
    resumed.cancel()
    service.apply([change("e6", "cy@x.com", 400, removes=["b"])])
    await relay.relay_once()
    after_moved = service.stub.WatchTagChanges(
        pb.WatchTagChangesRequest(parent="producers/alice", cursor=moved.cursor), metadata=ALICE
    )
    [next_one] = await take(after_moved, 1)
    after_moved.cancel()
    assert (next_one.change.tag_key, next_one.change.action) == ("b", pb.TagChange.ACTION_REMOVED)

    # Another producer's changes are not seen; a repeated publish is dropped by its Nats-Msg-Id.
    await js.publish(bus.tag_changes_subject("alice"), b"", headers={"Nats-Msg-Id": f"tagchange/{late.change.id}"})
    info = await js.stream_info(bus.TAG_CHANGES.name)
    assert info.state.messages == 7


async def test_watch_rejects_bad_cursors_and_other_producers(streaming):
    for request, code in [
        (pb.WatchTagChangesRequest(parent="producers/alice", cursor="nope"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.WatchTagChangesRequest(parent="producers/bob"), grpc.StatusCode.PERMISSION_DENIED),
    ]:
        with pytest.raises(grpc.RpcError) as error:
            async for _ in streaming.stub.WatchTagChanges(request, metadata=ALICE):
                pass
        assert error.value.code() == code


async def test_open_watch_streams_end_cleanly_at_shutdown(streaming, nc):
    stream = streaming.stub.WatchTagChanges(pb.WatchTagChangesRequest(parent="producers/alice"), metadata=ALICE)
    reading = asyncio.ensure_future(take(stream, 1, timeout=30))
    # Close only once the watch is open: its reader has made its JetStream consumer.
    # (A local bounded poll until the shared ``eventually`` lands.)
    deadline = time.monotonic() + 10
    while not (await nc.jetstream().stream_info(bus.TAG_CHANGES.name)).state.consumer_count:
        assert time.monotonic() < deadline, "the watch never opened"
        await asyncio.sleep(0.02)
    streaming.servicer.close_streams()
    assert await reading == []  # the stream ended, without an error
    assert await stream.code() == grpc.StatusCode.OK


async def test_relay_keeps_rows_while_nats_is_down_and_publishes_after(streaming, nc, nats_server):
    service = streaming
    relay = OutboxRelay(service.engine, nc.jetstream(), poll_interval=0.05, ack_timeout=1.0)
    service.apply([change("e1", "ana@x.com", 100, adds=["a"])])
    nats_server.stop()
    with pytest.raises((nats.errors.Error, TimeoutError)):  # no server, or no PubAck in time
        await relay.relay_once()
    assert await outbox_size(service.engine) == 1  # not acknowledged: kept
    nats_server.start()
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    deadline = time.monotonic() + 30
    while await outbox_size(service.engine) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(running, 10)
    assert await outbox_size(service.engine) == 0
    info = await nc.jetstream().stream_info(bus.TAG_CHANGES.name)
    assert info.state.messages == 1


async def test_one_replica_relays_at_a_time_on_postgresql(streaming, nc):
    service = streaming
    service.apply([change("e1", "ana@x.com", 100, adds=["a", "b"])])
    first = OutboxRelay(service.engine, nc.jetstream())
    second = OutboxRelay(service.engine, nc.jetstream())
    assert await first.relay_once() == 2
    service.apply([change("e2", "bob@x.com", 100, adds=["a"])])
    if service.engine.dialect.name == "postgresql":
        assert await second.relay_once() == 0  # the first holds the relay lock
        await asyncio.to_thread(first._resign)
    assert await second.relay_once() == 1
    await asyncio.to_thread(second._resign)
    assert await outbox_size(service.engine) == 0
