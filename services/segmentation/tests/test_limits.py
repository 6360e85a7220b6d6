"""Limits on ACTIVE custom segmentations, and why they are what they are: the largest
ContactChange they allow still fits in one bus message (nats-server's max_payload,
1 MiB) with room. Over real gRPC on SQLite and PostgreSQL: activation past a limit is
FAILED_PRECONDITION, an update of an ACTIVE one cannot break them, and concurrent
activations cannot take the last place twice."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss_common import bus
from listboss_ingest.normalize import MAX_EVENT_BYTES, MAX_ID_LENGTH, MAX_PRODUCT_ID_LENGTH
from listboss_segmentation import domain, storage
from listboss_segmentation.consumer import change_for, publish_changes
from listboss_segmentation.grpc_api import SegmentationServicer
from listboss_testing import bearer

# nats-server's default max_payload: the most a message (headers included) may hold.
MAX_PAYLOAD = 1024 * 1024
# What the worst case must leave free: the bus's headers (Nats-Msg-Id; a dead letter's
# Listboss-* headers, about 2 KiB) with a wide margin.
ROOM = 64 * 1024

ALICE = bearer("alice")
PARENT = "producers/alice/products/42"


# --- the worst case the limits allow ---------------------------------------------------------------

LONGEST_PRODUCER = "p" * 63  # ingest: ^[a-z0-9][a-z0-9_-]{0,62}$
LONGEST_PRODUCT = "x" * MAX_PRODUCT_ID_LENGTH
WIDE = "\U0001f600"  # four bytes in UTF-8


def largest_event() -> event_pb2.Event:
    """An event of exactly MAX_EVENT_BYTES (ingest's limit on a normalized event), shaped for
    the largest change: the longest ids, a product name of four-byte characters, and the rest
    of its bytes in the first and last names, which the contact data carries twice (as
    themselves and in "name"). Only the size rule is assumed: ingest's limits on single
    fields (names at most 500 characters) refuse this event, and can only make the worst
    case smaller."""
    event = event_pb2.Event(
        id="e" * MAX_ID_LENGTH,
        producer=LONGEST_PRODUCER,
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,  # its automatic segmentation has the most operations
        product=event_pb2.Product(id=LONGEST_PRODUCT, name=WIDE * domain.MAX_TAG_PRODUCT_NAME),
        person=event_pb2.Person(email="a" * 64 + "@" + "b" * 180 + ".example"),
    )
    event.occur_time.FromSeconds(1_700_000_000)
    event.person.first_name = "f" * ((MAX_EVENT_BYTES - event.ByteSize()) // 2 - 8)
    event.person.last_name = "l" * (MAX_EVENT_BYTES - event.ByteSize() - 8)
    while event.ByteSize() < MAX_EVENT_BYTES:
        event.person.last_name += "l"
    while event.ByteSize() > MAX_EVENT_BYTES:
        event.person.last_name = event.person.last_name[:-1]
    return event


def largest_rule_set() -> list[domain.CustomSegmentation]:
    """As many ACTIVE custom segmentations of one event type as the limits allow, with the
    longest ids and tag keys, no condition (all fire), every contact data choice, and the
    product's whole budget of tag operations."""
    segmentations: list[domain.CustomSegmentation] = []
    budget = domain.MAX_ACTIVE_TAG_OPERATIONS
    count = min(domain.MAX_ACTIVE_SEGMENTATIONS, budget)  # each one needs at least one operation
    for index in range(count):
        operations = min(2 * domain.MAX_TAGS, budget - (count - index - 1))
        budget -= operations
        keys = [f"t{index:03d}-{n:02d}-".ljust(domain.MAX_TAG_KEY, "k") for n in range(operations)]
        segmentation = domain.CustomSegmentation(
            LONGEST_PRODUCER,
            LONGEST_PRODUCT,
            f"s{index:03d}".ljust(63, "x"),
            "Rule",
            "SEND",
            "PURCHASE_APPROVED",
            None,
            tuple(domain.CONTACT_DATA),
            tuple(keys[: domain.MAX_TAGS]),
            tuple(keys[domain.MAX_TAGS :]),
            state=domain.ACTIVE,
        )
        assert domain.check_segmentation(segmentation) == []
        assert domain.check_active_limits(segmentations, segmentation) is None  # activation would be accepted
        segmentations.append(segmentation)
    assert budget == 0
    return segmentations


def largest_change() -> contact_change_pb2.ContactChange:
    return change_for(largest_event(), domain.rule_index(largest_rule_set()))


def test_the_largest_change_the_limits_allow_fits_in_one_bus_message_with_room():
    event = largest_event()
    assert event.ByteSize() == MAX_EVENT_BYTES
    change = largest_change()
    # It really is the worst case: every rule fired with every operation and all contact data.
    assert len(change.fired_segmentations) == 1 + min(domain.MAX_ACTIVE_SEGMENTATIONS, domain.MAX_ACTIVE_TAG_OPERATIONS)
    assert len(change.tag_operations) == 6 + domain.MAX_ACTIVE_TAG_OPERATIONS
    assert change.contact_data["name"] == f"{event.person.first_name} {event.person.last_name}"
    assert len(change.tag_operations[-1].tag_display_name) == domain.MAX_TAG_KEY + 3 + domain.MAX_TAG_PRODUCT_NAME

    message = contact_change_pb2.ContactChangeBatch(changes=[change]).SerializeToString()
    assert len(message) <= MAX_PAYLOAD - ROOM, f"{len(message):,} bytes"
    # The figures docs/api.md's arithmetic uses (a bound, so at least what is measured).
    assert len(message) <= 4 + (4 + MAX_EVENT_BYTES) + CONTACT_DATA_BOUND + OPERATIONS_BOUND


# docs/api.md "SegmentationService limits": contact data <= twice the event (first and last names
# appear again in "name") + 21 keys with framing; each tag operation <= 1,235 bytes, each fired
# segmentation's name <= 292.
CONTACT_DATA_BOUND = 2 * MAX_EVENT_BYTES + 21 * 30
OPERATIONS_BOUND = (6 + domain.MAX_ACTIVE_TAG_OPERATIONS) * 1_235 + (1 + domain.MAX_ACTIVE_SEGMENTATIONS) * 292


async def test_the_largest_change_is_accepted_by_nats_server_and_so_is_its_dead_letter(js):
    change = largest_change()
    producer = change.event.producer
    await publish_changes(js, producer, [change], producer)  # raises if nats-server refuses it
    stored = await js.get_msg(bus.CHANGES.name, 1)
    assert contact_change_pb2.ContactChangeBatch.FromString(stored.data).changes[0] == change
    # A dead letter carries the same one-change body and about 2 KiB of headers.
    headers = {
        "Listboss-Original-Subject": bus.changes_subject(producer),
        "Listboss-Stream": bus.CHANGES.name,
        "Listboss-Consumer": "contacts",
        "Listboss-Stream-Sequence": "18446744073709551615",
        "Listboss-Deliveries": "1000",
        "Listboss-Error": "E" * 1000,
        "Listboss-Producer": producer,
        "Listboss-Event-Ids": change.event.id,
        "Listboss-Dead-Letter-Time": "2024-06-01T12:00:00.000+00:00",
    }
    await js.publish(f"listboss.deadletter.{bus.CHANGES.name}.contacts", stored.data, headers=headers)


def test_a_long_product_name_is_cut_in_tag_display_names():
    """Every tag operation carries the product's name in the tag's display name, so the
    name is cut there: segmentation does not rely on ingest's field limits for the size of
    what it publishes. (Before the cut, a 200 KB event with the six operations of
    PURCHASE_APPROVED made a 1.4 MB change.)"""
    event = event_pb2.Event(
        id="e1",
        producer="alice",
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id="42", name="n" * 200_000),
        person=event_pb2.Person(email="ana@example.com"),
    )
    event.occur_time.FromSeconds(1_700_000_000)
    change = change_for(event)
    assert contact_change_pb2.ContactChangeBatch(changes=[change]).ByteSize() < event.ByteSize() + 10_000
    cut = "n" * (domain.MAX_TAG_PRODUCT_NAME - 1) + "\u2026"
    assert change.tag_operations[-1].tag_display_name == f"Purchase approved - {cut}"
    # A registered product's name (at most 200 characters) is never cut.
    assert domain.tag_display_name("vip", "c" * 200) == "vip - " + "c" * 200


# --- the limits as rules -----------------------------------------------------------------------------


def custom(
    segmentation_id: str,
    event_type: str = "PURCHASE_APPROVED",
    add: int = 1,
    remove: int = 0,
    state: str = domain.ACTIVE,
) -> domain.CustomSegmentation:
    return domain.CustomSegmentation(
        "alice",
        "42",
        segmentation_id,
        segmentation_id,
        "SEND",
        event_type,
        None,
        (),
        tuple(f"{segmentation_id}-add-{n}" for n in range(add)),
        tuple(f"{segmentation_id}-remove-{n}" for n in range(remove)),
        state=state,
    )


def test_at_most_max_active_segmentations_per_product():
    active = [
        custom(f"s{n}", event_type=("PURCHASE_APPROVED", "PURCHASE_REFUNDED")[n % 2])
        for n in range(domain.MAX_ACTIVE_SEGMENTATIONS - 1)
    ]
    assert domain.check_active_limits(active, custom("last")) is None
    active.append(custom("last"))
    problem = domain.check_active_limits(active, custom("one-more", event_type="CLUB_FIRST_ACCESS"))
    assert problem is not None
    assert (problem.reason, problem.limit, problem.total) == ("ACTIVE_SEGMENTATIONS_LIMIT", 100, 101)
    assert "at most 100 ACTIVE custom segmentations" in problem.message
    # Checking one of them again (an update of an ACTIVE one) does not count it twice.
    assert domain.check_active_limits(active, custom("s3", add=2)) is None


def test_tag_operations_are_limited_per_event_type():
    active = [custom("a", add=20, remove=20), custom("b", add=20, remove=20), custom("c", add=10)]
    assert domain.check_active_limits(active, custom("d", add=10)) is None  # exactly 100
    problem = domain.check_active_limits(active, custom("d", add=10, remove=1))
    assert problem is not None
    assert (problem.reason, problem.limit, problem.total) == ("ACTIVE_TAG_OPERATIONS_LIMIT", 100, 101)
    assert "at most 100 tags" in problem.message and "others already use 90" in problem.message
    # Another event type has a budget of its own: its rules never fire for the same event.
    assert domain.check_active_limits(active, custom("d", event_type="PURCHASE_REFUNDED", add=20, remove=20)) is None
    # Growing an ACTIVE one counts its new operations, not its old ones as well.
    assert domain.check_active_limits(active, custom("c", add=20)) is None
    assert domain.check_active_limits(active, custom("c", add=20, remove=1)).total == 101


# --- over gRPC ---------------------------------------------------------------------------------------


@pytest.fixture
async def service(engine, serve):
    async def notify(producer, product):
        pass

    stub, _ = await serve(SegmentationServicer(engine, notify=notify))
    await stub.RegisterProduct(
        pb.RegisterProductRequest(
            parent="producers/alice", product_id="42", display_name="Course", kind=event_pb2.PRODUCT_KIND_PRODUCT
        ),
        metadata=bearer(None),
    )
    return stub


def segmentation(event_type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED, add=("vip",), remove=()) -> pb.Segmentation:
    return pb.Segmentation(
        display_name="Rule",
        provider=pb.PROVIDER_SEND,
        event_type=event_type,
        action=pb.TagAction(add_tags=list(add), remove_tags=list(remove)),
    )


async def create(service, segmentation_id: str, message: pb.Segmentation | None = None) -> pb.Segmentation:
    return await service.CreateSegmentation(
        pb.CreateSegmentationRequest(
            parent=PARENT, segmentation_id=segmentation_id, segmentation=message or segmentation()
        ),
        metadata=ALICE,
    )


async def activate(service, name: str) -> pb.Segmentation:
    return await service.ActivateSegmentation(pb.ActivateSegmentationRequest(name=name), metadata=ALICE)


async def refused(call) -> tuple[grpc.aio.AioRpcError, error_details_pb2.ErrorInfo]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return error, info


def active_count(engine) -> int:
    with engine.connect() as connection:
        return len(storage.list_segmentations(connection, "alice", "42", state=domain.ACTIVE))


def store_active(engine, count: int) -> None:
    """``count`` ACTIVE custom segmentations of another event type, straight into storage."""
    with engine.begin() as connection:
        for index in range(count):
            stored = storage.create_segmentation(
                connection, custom(f"stored-{index:03d}", event_type="PURCHASE_REFUNDED", state=domain.INACTIVE), None
            )
            storage.save_segmentation(
                connection, custom(stored.segmentation_id, event_type="PURCHASE_REFUNDED"), stored.revision
            )


async def test_activation_past_the_limit_is_failed_precondition(service, engine):
    store_active(engine, domain.MAX_ACTIVE_SEGMENTATIONS)
    extra = await create(service, "one-more")
    error, info = await refused(activate(service, extra.name))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "ACTIVE_SEGMENTATIONS_LIMIT" and info.domain == "listboss.dev"
    assert dict(info.metadata) == {"segmentation": extra.name, "product": PARENT, "limit": "100", "total": "101"}
    assert error.details() == (
        f"cannot activate {extra.name}: a product may have at most 100 ACTIVE custom segmentations and "
        f"{PARENT} already has 100; deactivate or delete one first"
    )
    assert active_count(engine) == 100
    got = await service.GetSegmentation(pb.GetSegmentationRequest(name=extra.name), metadata=ALICE)
    assert got.state == pb.SEGMENTATION_STATE_INACTIVE and got.etag == extra.etag  # nothing saved

    await service.DeactivateSegmentation(
        pb.DeactivateSegmentationRequest(name=f"{PARENT}/segmentations/stored-000"), metadata=ALICE
    )
    assert (await activate(service, extra.name)).state == pb.SEGMENTATION_STATE_ACTIVE


async def test_tag_operations_past_the_limit_are_refused_on_activation_and_update(service, engine):
    forty = segmentation(add=[f"add-{n}" for n in range(20)], remove=[f"remove-{n}" for n in range(20)])
    for name in ("first", "second"):
        await activate(service, (await create(service, name, forty)).name)
    third = await create(service, "third", segmentation(add=[f"more-{n}" for n in range(20)], remove=["less"]))
    error, info = await refused(activate(service, third.name))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (info.reason, info.metadata["limit"], info.metadata["total"]) == (
        "ACTIVE_TAG_OPERATIONS_LIMIT",
        "100",
        "101",
    )
    assert f"for PURCHASE_APPROVED on {PARENT} the others already use 80 and this one has 21" in error.details()

    # The same rule for another event type has a budget of its own.
    other = await create(
        service,
        "other",
        segmentation(event_type=event_pb2.EVENT_TYPE_PURCHASE_REFUNDED, add=[f"more-{n}" for n in range(20)]),
    )
    await activate(service, other.name)

    # An INACTIVE one may be changed freely; an ACTIVE one may not break the limit.
    inactive = await service.UpdateSegmentation(
        pb.UpdateSegmentationRequest(
            segmentation=pb.Segmentation(
                name=third.name, action=pb.TagAction(add_tags=[f"more-{n}" for n in range(20)])
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["action"]),
        ),
        metadata=ALICE,
    )
    assert (await activate(service, inactive.name)).state == pb.SEGMENTATION_STATE_ACTIVE  # 100 exactly
    moved = pb.UpdateSegmentationRequest(
        segmentation=pb.Segmentation(name=other.name, event_type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED),
        update_mask=field_mask_pb2.FieldMask(paths=["event_type"]),
    )
    error, info = await refused(service.UpdateSegmentation(moved, metadata=ALICE))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.reason == "ACTIVE_TAG_OPERATIONS_LIMIT"
    assert error.details().startswith(f"cannot update {other.name}: ")
    got = await service.GetSegmentation(pb.GetSegmentationRequest(name=other.name), metadata=ALICE)
    assert got.event_type == event_pb2.EVENT_TYPE_PURCHASE_REFUNDED  # nothing saved


async def test_concurrent_activations_cannot_pass_the_limit(service, engine, monkeypatch):
    monkeypatch.setattr(domain, "MAX_ACTIVE_SEGMENTATIONS", 3)
    created = [await create(service, f"rule-{n}") for n in range(8)]
    results = await asyncio.gather(*(activate(service, s.name) for s in created), return_exceptions=True)
    activated = [r for r in results if isinstance(r, pb.Segmentation)]
    failures = [r for r in results if not isinstance(r, pb.Segmentation)]
    assert len(activated) == 3
    assert {error.code() for error in failures} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert active_count(engine) == 3
