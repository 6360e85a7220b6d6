"""Segmentation: the automatic rules, the event consumer on real JetStream (SQLite and
PostgreSQL), and SegmentationService over real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import nats.errors
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss_common import bus
from listboss_common.worker import PullWorker, WorkerSpec
from listboss_segmentation import domain, storage
from listboss_segmentation.consumer import EventProcessor, change_for, decode_events
from listboss_segmentation.grpc_api import SegmentationServicer
from listboss_segmentation.messages import event_type_name
from listboss_testing import bearer, eventually

ADD = contact_change_pb2.TagOperation.ACTION_ADD
REMOVE = contact_change_pb2.TagOperation.ACTION_REMOVE

# The standard automatic tags, written out here independently of domain.AUTOMATIC_SEGMENTATIONS
# (the table the tests check): event -> (adds, removes).
STANDARD_TAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "PURCHASE_OUT_OF_SHOPPING_CART": ("cart-abandoned", ()),
    "PURCHASE_BILLET_PRINTED": ("billet-printed", ("cart-abandoned",)),
    "PURCHASE_APPROVED": (
        "purchase-approved",
        ("cart-abandoned", "billet-printed", "purchase-canceled", "purchase-expired", "purchase-delayed"),
    ),
    "PURCHASE_COMPLETE": ("purchase-complete", ()),
    "PURCHASE_CANCELED": ("purchase-canceled", ("billet-printed",)),
    "PURCHASE_EXPIRED": ("purchase-expired", ("billet-printed",)),
    "PURCHASE_DELAYED": ("purchase-delayed", ()),
    "PURCHASE_PROTEST": ("refund-requested", ()),
    "PURCHASE_REFUNDED": ("purchase-refunded", ("purchase-approved", "purchase-complete", "refund-requested")),
    "PURCHASE_CHARGEBACK": ("purchase-chargeback", ("purchase-approved", "purchase-complete")),
    "SUBSCRIPTION_CANCELLATION": ("subscription-canceled", ()),
    "SWITCH_PLAN": ("plan-switched", ()),
    "UPDATE_SUBSCRIPTION_CHARGE_DATE": ("charge-date-changed", ()),
    "CLUB_FIRST_ACCESS": ("members-area-accessed", ()),
    "CLUB_MODULE_COMPLETED": ("module-completed", ()),
}


# --- (a) the rules -----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", list(STANDARD_TAGS))
def test_automatic_rules_follow_the_design_table(event_type):
    # The evaluation the consumer runs, on a product with no custom segmentations.
    adds, removes = STANDARD_TAGS[event_type]
    decision = domain.evaluate(domain.AUTOMATIC_INDEX, event_type, event_pb2.Event())
    segmentation_id = f"auto-{adds}"
    assert [rule.segmentation_id for rule in decision.fired] == [segmentation_id]
    assert [(o.action, o.tag_key) for o in decision.operations] == [
        *((domain.TagAction.REMOVE, key) for key in removes),
        (domain.TagAction.ADD, adds),
    ]
    assert {o.segmentation_id for o in decision.operations} == {segmentation_id}


def test_unknown_event_type_fires_nothing():
    for event_type in ("UNSPECIFIED", "NO_SUCH_EVENT"):
        decision = domain.evaluate(domain.AUTOMATIC_INDEX, event_type, event_pb2.Event())
        assert (decision.operations, decision.fired) == ([], [])


def test_one_automatic_segmentation_per_event_of_the_table():
    names = {event_type_name(value) for value in event_pb2.EventType.values() if value}
    assert set(STANDARD_TAGS) <= names
    assert [s.event_type for s in domain.AUTOMATIC_SEGMENTATIONS] == list(STANDARD_TAGS)
    assert len(domain.AUTOMATIC_SEGMENTATIONS) == 15
    assert len({s.id for s in domain.AUTOMATIC_SEGMENTATIONS}) == 15
    # Every tag the rules touch has a label, and no rule removes the tag it adds.
    for segmentation in domain.AUTOMATIC_SEGMENTATIONS:
        assert segmentation.add_tag in domain.TAG_LABELS
        assert set(segmentation.remove_tags) <= set(domain.TAG_LABELS)
        assert segmentation.add_tag not in segmentation.remove_tags


def test_tag_display_name_includes_the_product_name():
    assert domain.tag_display_name("purchase-approved", "Course") == "Purchase approved - Course"
    assert domain.tag_display_name("purchase-approved", "") == "Purchase approved"


def test_change_for_names_the_product_segmentations():
    event = make_event("e1", event_pb2.EVENT_TYPE_PURCHASE_REFUNDED, product="42", product_name="Course")
    change = change_for(event)
    base = "producers/alice/products/42/segmentations/"
    assert change.event == event
    assert list(change.fired_segmentations) == [base + "auto-purchase-refunded"]
    assert [(o.action, o.tag_key, o.tag_display_name) for o in change.tag_operations] == [
        (REMOVE, "purchase-approved", "Purchase approved - Course"),
        (REMOVE, "purchase-complete", "Purchase complete - Course"),
        (REMOVE, "refund-requested", "Refund requested - Course"),
        (ADD, "purchase-refunded", "Purchase refunded - Course"),
    ]
    assert all(o.automatic and o.segmentation == base + "auto-purchase-refunded" for o in change.tag_operations)


# --- helpers -----------------------------------------------------------------------------------


def make_event(
    event_id: str,
    event_type: int,
    *,
    producer: str = "alice",
    product: str = "42",
    product_name: str = "Course",
    email: str = "ana@example.com",
    kind: int = event_pb2.PRODUCT_KIND_UNSPECIFIED,
) -> event_pb2.Event:
    event = event_pb2.Event(
        id=event_id,
        producer=producer,
        type=event_type,
        product=event_pb2.Product(id=product, name=product_name, kind=kind),
        person=event_pb2.Person(email=email),
        source=event_pb2.EVENT_SOURCE_GRPC,
    )
    event.occur_time.FromSeconds(1_700_000_000)
    event.receive_time.FromSeconds(1_700_000_100)
    return event


async def publish_events(js, *events: event_pb2.Event, msg_id: str | None = None) -> None:
    producer = events[0].producer
    payload = event_pb2.EventBatch(events=events).SerializeToString()
    await js.publish(bus.events_subject(producer), payload, headers={"Nats-Msg-Id": msg_id or events[0].id})


async def fetch_all(js, count: int, durable: str = "test-fetch"):
    subscription = await js.pull_subscribe("listboss.events.>", durable=durable, stream=bus.EVENTS.name)
    messages = []
    deadline = time.monotonic() + 10
    while len(messages) < count:
        assert time.monotonic() < deadline, f"fetched {len(messages)} of {count} messages"
        with contextlib.suppress(nats.errors.TimeoutError):
            messages.extend(await subscription.fetch(count - len(messages), timeout=1))
    return messages


async def changes_on_stream(js) -> list[tuple[str, list[contact_change_pb2.ContactChange]]]:
    info = await js.stream_info(bus.CHANGES.name)
    found = []
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(bus.CHANGES.name, seq=seq)
        found.append((message.subject, list(contact_change_pb2.ContactChangeBatch.FromString(message.data).changes)))
    return found


def product_record(engine, producer, product_id):
    with engine.connect() as connection:
        return storage.get_product(connection, producer, product_id)


def operations(change) -> list[tuple[int, str]]:
    return [(o.action, o.tag_key) for o in change.tag_operations]


# --- (b) the event consumer on real JetStream ---------------------------------------------------


async def test_processor_publishes_changes_and_records_products(engine, js):
    approved = make_event("e1", event_pb2.EVENT_TYPE_PURCHASE_APPROVED)
    cart = make_event("e2", event_pb2.EVENT_TYPE_PURCHASE_OUT_OF_SHOPPING_CART, email="bea@example.com")
    refunded = make_event(
        "e3",
        event_pb2.EVENT_TYPE_PURCHASE_REFUNDED,
        producer="bob",
        product="7",
        product_name="Book",
        kind=event_pb2.PRODUCT_KIND_WEBINAR,
    )
    await publish_events(js, approved, cart, msg_id="alice/batch/1")
    await publish_events(js, refunded)
    messages = await fetch_all(js, 2)

    await EventProcessor(js, engine).handle(decode_events(messages))

    partitions = bus.contacts_partitions()
    by_subject = dict(await changes_on_stream(js))
    # Each change travels on its producer's subject for its person's partition.
    assert set(by_subject) == {
        bus.changes_subject(event.producer, bus.event_partition(event, partitions))
        for event in (approved, cart, refunded)
    }
    alice_changes = sorted(
        (
            c
            for subject, changes in by_subject.items()
            if subject.startswith("listboss.changes.alice.")
            for c in changes
        ),
        key=lambda c: c.event.id,
    )
    assert [c.event.id for c in alice_changes] == ["e1", "e2"]
    assert alice_changes[0].event == approved

    base = "producers/alice/products/42/segmentations/"
    first = alice_changes[0]
    assert list(first.fired_segmentations) == [base + "auto-purchase-approved"]
    assert operations(first) == [
        (REMOVE, "cart-abandoned"),
        (REMOVE, "billet-printed"),
        (REMOVE, "purchase-canceled"),
        (REMOVE, "purchase-expired"),
        (REMOVE, "purchase-delayed"),
        (ADD, "purchase-approved"),
    ]
    assert all(o.automatic and o.segmentation == base + "auto-purchase-approved" for o in first.tag_operations)
    assert first.tag_operations[-1].tag_display_name == "Purchase approved - Course"

    second = alice_changes[1]
    assert list(second.fired_segmentations) == [base + "auto-cart-abandoned"]
    assert operations(second) == [(ADD, "cart-abandoned")]

    (bob_change,) = by_subject[bus.changes_subject("bob", bus.event_partition(refunded, partitions))]
    assert list(bob_change.fired_segmentations) == ["producers/bob/products/7/segmentations/auto-purchase-refunded"]
    assert operations(bob_change) == [
        (REMOVE, "purchase-approved"),
        (REMOVE, "purchase-complete"),
        (REMOVE, "refund-requested"),
        (ADD, "purchase-refunded"),
    ]
    assert bob_change.tag_operations[-1].tag_display_name == "Purchase refunded - Book"

    course = product_record(engine, "alice", "42")
    assert (course.display_name, course.kind, course.origin) == ("Course", event_pb2.PRODUCT_KIND_PRODUCT, "event")
    book = product_record(engine, "bob", "7")
    assert (book.display_name, book.kind, book.origin) == ("Book", event_pb2.PRODUCT_KIND_WEBINAR, "event")
    assert product_record(engine, "alice", "7") is None


def test_an_event_without_a_product_captures_its_contact_and_tags_nothing():
    event = make_event("e1", event_pb2.EVENT_TYPE_PURCHASE_APPROVED)
    event.ClearField("product")
    change = change_for(event)
    assert list(change.tag_operations) == []
    assert list(change.fired_segmentations) == []
    assert change.contact_data["email"] == event.person.email
    assert change.event == event


async def test_processor_registers_no_product_for_an_event_without_one(engine, js):
    productless = make_event("e1", event_pb2.EVENT_TYPE_PURCHASE_APPROVED)
    productless.ClearField("product")
    await publish_events(js, productless, make_event("e2", event_pb2.EVENT_TYPE_PURCHASE_APPROVED), msg_id="b1")
    await EventProcessor(js, engine).handle(decode_events(await fetch_all(js, 1)))
    ((_, changes),) = await changes_on_stream(js)
    assert [(c.event.id, len(c.tag_operations) > 0) for c in changes] == [("e1", False), ("e2", True)]
    assert product_record(engine, "alice", "") is None
    with engine.connect() as connection:
        assert [p.product_id for p in storage.list_products(connection, "alice", None, 10)] == ["42"]


async def test_redelivered_events_publish_no_second_change(engine, js):
    await publish_events(js, make_event("e1", event_pb2.EVENT_TYPE_PURCHASE_APPROVED))
    messages = await fetch_all(js, 1)
    # A redelivery may reach a fresh replica with an empty product cache.
    await EventProcessor(js, engine).handle(decode_events(messages))
    await EventProcessor(js, engine).handle(decode_events(messages))
    changes = await changes_on_stream(js)
    assert len(changes) == 1
    ((subject, (change,)),) = changes
    assert subject == bus.changes_subject("alice", bus.event_partition(change.event, bus.contacts_partitions()))
    assert change.event.id == "e1"


async def test_changes_travel_by_partition_of_their_person(engine, js):
    """All the changes about one person travel in one partition, and a message never mixes
    partitions: so one contacts replica at a time applies a contact's changes."""
    people = [f"person{n}@example.com" for n in range(24)]
    events = [
        make_event(f"e{n}", event_pb2.EVENT_TYPE_PURCHASE_APPROVED, email=people[n % len(people)]) for n in range(96)
    ]
    await publish_events(js, *events, msg_id="many")
    await EventProcessor(js, engine, partitions=4).handle(decode_events(await fetch_all(js, 1)))

    partition_of_person: dict[str, set[int]] = {}
    seen = []
    for subject, changes in await changes_on_stream(js):
        _, _, producer, partition = subject.split(".")
        assert producer == "alice" and 0 <= int(partition) < 4
        for change in changes:
            assert bus.event_partition(change.event, 4) == int(partition)
            partition_of_person.setdefault(change.event.person.email, set()).add(int(partition))
            seen.append(change.event.id)
    assert sorted(seen) == sorted(event.id for event in events)
    assert all(len(found) == 1 for found in partition_of_person.values())
    # A hash, not one bucket: 24 people spread over more than one partition.
    assert len(set().union(*partition_of_person.values())) > 1
    # The same email in another spelling is the same person, and the same partition.
    assert bus.event_partition(make_event("x", 1, email=" Person3@Example.com"), 4) == bus.event_partition(
        make_event("y", 1, email="person3@example.com"), 4
    )


async def test_registered_product_keeps_its_name_when_events_arrive(engine, js):
    with engine.begin() as connection:
        storage.register_product(connection, "alice", "42", "Registered Course", event_pb2.PRODUCT_KIND_PRODUCT)
    await publish_events(js, make_event("e1", event_pb2.EVENT_TYPE_PURCHASE_APPROVED, product_name="Event Name"))
    await publish_events(js, make_event("e2", event_pb2.EVENT_TYPE_PURCHASE_APPROVED, product="9", product_name=""))
    await EventProcessor(js, engine).handle(decode_events(await fetch_all(js, 2)))

    registered = product_record(engine, "alice", "42")
    assert (registered.display_name, registered.origin) == ("Registered Course", "registered")
    unnamed = product_record(engine, "alice", "9")
    assert unnamed.display_name == "9"  # no name in the event: the id stands in
    # The change still carries the event's own product name for tag display names.
    changes = [c for _, batch in await changes_on_stream(js) for c in batch]
    assert changes[0].tag_operations[-1].tag_display_name == "Purchase approved - Event Name"
    assert changes[1].tag_operations[-1].tag_display_name == "Purchase approved"


async def test_undecodable_message_is_poison(engine, js):
    await js.publish(bus.events_subject("alice"), b"\x0a\xff\x01garbage")
    messages = await fetch_all(js, 1)
    with pytest.raises(bus.PoisonMessage):
        decode_events(messages)
    assert await changes_on_stream(js) == []


async def test_pull_worker_runs_the_processor_end_to_end(engine, js):
    spec = WorkerSpec(stream=bus.EVENTS, durable="segmentation", items=bus.EVENT_ITEMS, batch_size=50)
    worker = PullWorker(js, spec, EventProcessor(js, engine).handle)
    await worker.subscribe()
    await publish_events(js, make_event("e1", event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED))
    await js.publish(bus.events_subject("alice"), b"\x0a\xff\x01garbage")  # dead-lettered, never blocks the rest
    await publish_events(js, make_event("e2", event_pb2.EVENT_TYPE_CLUB_FIRST_ACCESS, product="5"))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:

        async def settled():
            info = await js.consumer_info(bus.EVENTS.name, "segmentation")
            return info.num_pending == 0 and info.num_ack_pending == 0 and info.ack_floor.stream_seq == 3

        await eventually(settled)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)

    changes = {c.event.id: c for _, batch in await changes_on_stream(js) for c in batch}
    assert set(changes) == {"e1", "e2"}
    assert operations(changes["e1"]) == [(REMOVE, "cart-abandoned"), (ADD, "billet-printed")]
    assert list(changes["e2"].fired_segmentations) == [
        "producers/alice/products/5/segmentations/auto-members-area-accessed"
    ]
    assert (await js.stream_info(bus.DEADLETTER.name)).state.messages == 1
    assert product_record(engine, "alice", "42") is not None
    assert product_record(engine, "alice", "5") is not None


# --- (c) SegmentationService over gRPC -----------------------------------------------------------


@pytest.fixture
async def service(engine, serve):
    stub, _ = await serve(SegmentationServicer(engine))
    return stub


INTERNAL = bearer(None)


async def register(
    service,
    product_id="42",
    display_name="Course",
    producer="alice",
    kind=event_pb2.PRODUCT_KIND_PRODUCT,
    metadata=INTERNAL,
) -> pb.Product:
    return await service.RegisterProduct(
        pb.RegisterProductRequest(
            parent=f"producers/{producer}", product_id=product_id, display_name=display_name, kind=kind
        ),
        metadata=metadata,
    )


async def rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def field_violations(error: grpc.aio.AioRpcError) -> set[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    fields = set()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields |= {v.field for v in bad_request.field_violations}
    return fields


async def test_register_product_needs_the_internal_role(service, engine):
    error = await rpc_error(register(service, metadata=bearer("alice")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert product_record(engine, "alice", "42") is None
    error = await rpc_error(register(service, metadata=()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"display_name": ""}, "display_name"),
        ({"display_name": "   "}, "display_name"),
        ({"display_name": "x" * 201}, "display_name"),
        ({"product_id": ""}, "product_id"),
        ({"product_id": "a/b"}, "product_id"),
        ({"kind": event_pb2.PRODUCT_KIND_UNSPECIFIED}, "kind"),
    ],
)
async def test_register_product_validates(service, engine, overrides, field):
    error = await rpc_error(register(service, **overrides))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {field}
    with engine.connect() as connection:
        assert storage.list_products(connection, "alice", None, 10) == []


async def test_register_product_is_idempotent_and_updates_the_name(service, engine):
    first = await register(service, display_name="  Course  ")
    assert first.name == "producers/alice/products/42"
    assert first.display_name == "Course"
    assert first.kind == event_pb2.PRODUCT_KIND_PRODUCT

    again = await register(service)
    assert again.name == first.name and again.display_name == "Course"
    assert again.create_time == first.create_time

    renamed = await register(service, display_name="Course 2nd edition", kind=event_pb2.PRODUCT_KIND_WEBINAR)
    assert renamed.display_name == "Course 2nd edition"
    assert renamed.kind == event_pb2.PRODUCT_KIND_WEBINAR
    assert renamed.create_time == first.create_time
    assert renamed.update_time.ToNanoseconds() >= first.update_time.ToNanoseconds()

    fetched = await service.GetProduct(pb.GetProductRequest(name=first.name), metadata=bearer("alice"))
    assert fetched.display_name == "Course 2nd edition"
    listed = await service.ListProducts(pb.ListProductsRequest(parent="producers/alice"), metadata=bearer("alice"))
    assert [p.name for p in listed.products] == ["producers/alice/products/42"]


async def test_list_segmentations_pages_through_the_automatic_ones(service):
    await register(service)
    parent = "producers/alice/products/42"
    pages, token = [], ""
    while True:
        response = await service.ListSegmentations(
            pb.ListSegmentationsRequest(parent=parent, page_size=4, page_token=token), metadata=bearer("alice")
        )
        pages.append(list(response.segmentations))
        token = response.next_page_token
        if not token:
            break
        assert len(pages) < 10, "paging does not end"
    assert [len(page) for page in pages] == [4, 4, 4, 3]
    names = [s.name for page in pages for s in page]
    expected = [f"{parent}/segmentations/{s.id}" for s in domain.AUTOMATIC_SEGMENTATIONS]
    assert names == expected
    assert len(set(names)) == 15
    everything = [s for page in pages for s in page]
    assert all(s.kind == pb.SEGMENTATION_KIND_AUTOMATIC for s in everything)
    assert all(s.state == pb.SEGMENTATION_STATE_ACTIVE for s in everything)
    assert {event_type_name(s.event_type) for s in everything} == set(STANDARD_TAGS)

    # One page holds all of them with the default page size, and no token follows.
    whole = await service.ListSegmentations(pb.ListSegmentationsRequest(parent=parent), metadata=INTERNAL)
    assert [s.name for s in whole.segmentations] == expected
    assert whole.next_page_token == ""


async def test_list_segmentations_rejects_bad_paging(service):
    await register(service, "42")
    await register(service, "43", "Other course")
    error = await rpc_error(
        service.ListSegmentations(
            pb.ListSegmentationsRequest(parent="producers/alice/products/42", page_size=-1), metadata=bearer("alice")
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {"page_size"}

    first = await service.ListSegmentations(
        pb.ListSegmentationsRequest(parent="producers/alice/products/42", page_size=4), metadata=bearer("alice")
    )
    assert first.next_page_token
    error = await rpc_error(
        service.ListSegmentations(
            pb.ListSegmentationsRequest(
                parent="producers/alice/products/43", page_size=4, page_token=first.next_page_token
            ),
            metadata=bearer("alice"),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {"page_token"}

    error = await rpc_error(
        service.ListSegmentations(
            pb.ListSegmentationsRequest(parent="producers/alice/products/42", page_token="not-a-token!"),
            metadata=bearer("alice"),
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {"page_token"}


async def test_get_automatic_segmentation(service):
    product = await register(service)
    name = "producers/alice/products/42/segmentations/auto-purchase-approved"
    segmentation = await service.GetSegmentation(pb.GetSegmentationRequest(name=name), metadata=bearer("alice"))
    assert segmentation.name == name
    assert segmentation.kind == pb.SEGMENTATION_KIND_AUTOMATIC
    assert segmentation.provider == pb.PROVIDER_SEND
    assert segmentation.state == pb.SEGMENTATION_STATE_ACTIVE
    assert segmentation.event_type == event_pb2.EVENT_TYPE_PURCHASE_APPROVED
    assert list(segmentation.action.add_tags) == ["purchase-approved"]
    assert list(segmentation.action.remove_tags) == list(STANDARD_TAGS["PURCHASE_APPROVED"][1])
    assert segmentation.display_name
    assert segmentation.create_time == product.create_time

    error = await rpc_error(
        service.GetSegmentation(
            pb.GetSegmentationRequest(name="producers/alice/products/42/segmentations/auto-nothing"),
            metadata=bearer("alice"),
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_product_is_not_found(service):
    for call in (
        service.GetSegmentation(
            pb.GetSegmentationRequest(name="producers/alice/products/404/segmentations/auto-purchase-approved"),
            metadata=bearer("alice"),
        ),
        service.ListSegmentations(
            pb.ListSegmentationsRequest(parent="producers/alice/products/404"), metadata=bearer("alice")
        ),
        service.GetProduct(pb.GetProductRequest(name="producers/alice/products/404"), metadata=bearer("alice")),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_another_producers_product_is_permission_denied(service):
    await register(service, producer="alice")
    name = "producers/alice/products/42/segmentations/auto-purchase-approved"
    for call in (
        service.GetSegmentation(pb.GetSegmentationRequest(name=name), metadata=bearer("bob")),
        service.ListSegmentations(
            pb.ListSegmentationsRequest(parent="producers/alice/products/42"), metadata=bearer("bob")
        ),
        service.GetProduct(pb.GetProductRequest(name="producers/alice/products/42"), metadata=bearer("bob")),
        service.ListProducts(pb.ListProductsRequest(parent="producers/alice"), metadata=bearer("bob")),
        # Not even whether the product exists leaks.
        service.GetSegmentation(
            pb.GetSegmentationRequest(name="producers/alice/products/404/segmentations/auto-purchase-approved"),
            metadata=bearer("bob"),
        ),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_malformed_names_are_invalid_argument(service):
    error = await rpc_error(
        service.GetSegmentation(pb.GetSegmentationRequest(name="segmentations/x"), metadata=bearer("alice"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {"name"}
    error = await rpc_error(
        service.ListSegmentations(pb.ListSegmentationsRequest(parent="producers/alice"), metadata=bearer("alice"))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == {"parent"}
