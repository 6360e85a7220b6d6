"""Malformed requests to SegmentationService over real gRPC: wrong and over-long resource names,
bad filters, page tokens and enum values, conditions nested or sized past the limits (also past
what protobuf reads: 100 and 10,000 levels, sent as raw bytes). Each is INVALID_ARGUMENT naming
the field, in the caller's terms and bounded in size."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest

from listboss.events.v1 import event_pb2
from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss_segmentation import conditions as cond
from listboss_segmentation.grpc_api import SegmentationServicer
from listboss_testing import bearer, rich_status, violated_fields
from listboss_testing.rich_errors import assert_plain_rpc_error

ALICE = bearer("alice")
INTERNAL = bearer(None)
PARENT = "producers/alice/products/42"
LONG = "a" * 100_000
METHOD = "/listboss.segmentation.v1.SegmentationService/"


@pytest.fixture
async def served(engine, serve):
    return await serve(SegmentationServicer(engine))


@pytest.fixture
async def served_channel(served):
    """A channel of its own to the server, for requests sent as raw bytes."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served[1]}") as channel:
        yield channel


@pytest.fixture
async def stub(served):
    service = served[0]
    await service.RegisterProduct(
        pb.RegisterProductRequest(
            parent="producers/alice", product_id="42", display_name="Course", kind=event_pb2.PRODUCT_KIND_PRODUCT
        ),
        metadata=INTERNAL,
    )
    return service


def _clause() -> pb.Condition:
    return pb.Condition(clause=pb.Clause(field="payment_type", operator=pb.OPERATOR_EXISTS))


def _segmentation(condition: pb.Condition | None = None) -> pb.Segmentation:
    segmentation = pb.Segmentation(
        display_name="Billet buyers",
        provider=pb.PROVIDER_SEND,
        event_type=event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED,
        condition=condition,
    )
    segmentation.action.add_tags.append("billet-buyer")
    return segmentation


def _negations(levels: int) -> pb.Condition:
    condition = _clause()
    for _ in range(levels):
        condition = pb.Condition(negate=condition)
    return condition


async def _refused(call: Awaitable[object]) -> set[str]:
    """The fields an INVALID_ARGUMENT answer names, after checking the answer is plain."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert_plain_rpc_error(caught.value)
    return violated_fields(rich_status(caught.value)[1])


# (label, call on the stub, the field the answer must name)
CASES: list[tuple[str, Callable[[object], Awaitable[object]], str]] = [
    (
        "over-long producer in a product name",
        lambda s: s.GetProduct(pb.GetProductRequest(name=f"producers/{LONG}/products/42"), metadata=INTERNAL),
        "name",
    ),
    (
        "over-long product id",
        lambda s: s.GetProduct(pb.GetProductRequest(name=f"producers/alice/products/{'p' * 129}"), metadata=ALICE),
        "name",
    ),
    (
        "over-long parent of ListProducts",
        lambda s: s.ListProducts(pb.ListProductsRequest(parent="producers/" + LONG), metadata=INTERNAL),
        "parent",
    ),
    (
        "wrong kind of name",
        lambda s: s.GetSegmentation(pb.GetSegmentationRequest(name=PARENT), metadata=ALICE),
        "name",
    ),
    (
        "over-long segmentation name",
        lambda s: s.DeleteSegmentation(
            pb.DeleteSegmentationRequest(name=f"{PARENT}/segmentations/{LONG}"), metadata=ALICE
        ),
        "name",
    ),
    (
        "over-long backfill name",
        lambda s: s.GetBackfill(
            pb.GetBackfillRequest(name=f"{PARENT}/segmentations/s/backfills/{LONG}"), metadata=ALICE
        ),
        "name",
    ),
    (
        "over-long register parent",
        lambda s: s.RegisterProduct(
            pb.RegisterProductRequest(parent="producers/" + LONG, product_id="1", display_name="x", kind=1),
            metadata=INTERNAL,
        ),
        "parent",
    ),
    (
        "over-long product id to register",
        lambda s: s.RegisterProduct(
            pb.RegisterProductRequest(parent="producers/alice", product_id=LONG, display_name="x", kind=1),
            metadata=INTERNAL,
        ),
        "product_id",
    ),
    (
        "unknown product kind",
        lambda s: s.RegisterProduct(
            pb.RegisterProductRequest(parent="producers/alice", product_id="1", display_name="x", kind=77),
            metadata=INTERNAL,
        ),
        "kind",
    ),
    (
        "bad page token",
        lambda s: s.ListProducts(pb.ListProductsRequest(parent="producers/alice", page_token=LONG), metadata=ALICE),
        "page_token",
    ),
    (
        "bad filter",
        lambda s: s.ListSegmentations(pb.ListSegmentationsRequest(parent=PARENT, filter="kind = = ("), metadata=ALICE),
        "filter",
    ),
    (
        "over-long filter",
        lambda s: s.ListSegmentations(pb.ListSegmentationsRequest(parent=PARENT, filter=LONG), metadata=ALICE),
        "filter",
    ),
    (
        "over-long segmentation id",
        lambda s: s.CreateSegmentation(
            pb.CreateSegmentationRequest(parent=PARENT, segmentation_id=LONG, segmentation=_segmentation()),
            metadata=ALICE,
        ),
        "segmentation_id",
    ),
    (
        "unknown operator",
        lambda s: s.CreateSegmentation(
            pb.CreateSegmentationRequest(
                parent=PARENT,
                segmentation=_segmentation(pb.Condition(clause=pb.Clause(field="payment_type", operator=99))),
            ),
            metadata=ALICE,
        ),
        "segmentation.condition.clause.operator",
    ),
    (
        "unknown event type",
        lambda s: s.CreateSegmentation(
            pb.CreateSegmentationRequest(parent=PARENT, segmentation=pb.Segmentation(display_name="x", event_type=999)),
            metadata=ALICE,
        ),
        "segmentation.event_type",
    ),
    (
        "condition nested one level too deep",
        lambda s: s.CreateSegmentation(
            pb.CreateSegmentationRequest(parent=PARENT, segmentation=_segmentation(_negations(cond.MAX_DEPTH + 1))),
            metadata=ALICE,
        ),
        "segmentation.condition",
    ),
    (
        "condition with too many conditions",
        lambda s: s.CreateSegmentation(
            pb.CreateSegmentationRequest(
                parent=PARENT,
                segmentation=_segmentation(
                    pb.Condition(all=pb.ConditionList(conditions=[_clause()] * (cond.MAX_NODES + 1)))
                ),
            ),
            metadata=ALICE,
        ),
        "segmentation.condition",
    ),
    (
        "inline test segmentation nested too deep",
        lambda s: s.TestSegmentation(
            pb.TestSegmentationRequest(
                parent=PARENT, segmentation=_segmentation(_negations(50)), event=event_pb2.Event(type=3)
            ),
            metadata=ALICE,
        ),
        "segmentation.condition",
    ),
]


@pytest.mark.parametrize(("label", "call", "field"), CASES, ids=[case[0] for case in CASES])
async def test_malformed_requests_are_named_plainly(stub, label, call, field):
    assert field in await _refused(call(stub))


async def test_condition_limits_are_named_with_the_limit(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateSegmentation(
            pb.CreateSegmentationRequest(parent=PARENT, segmentation=_segmentation(_negations(cond.MAX_DEPTH + 1))),
            metadata=ALICE,
        )
    assert f"nested deeper than {cond.MAX_DEPTH} levels" in caught.value.details()
    created = await stub.CreateSegmentation(
        pb.CreateSegmentationRequest(parent=PARENT, segmentation=_segmentation(_negations(cond.MAX_DEPTH))),
        metadata=ALICE,
    )
    assert created.condition.HasField("negate")


# --- past what protobuf reads: the request cannot be built by the client, so it is sent as bytes ---


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _deep_create_request(levels: int) -> bytes:
    condition = _clause().SerializeToString()
    for _ in range(levels):
        condition = _length_delimited(4, condition)  # Condition.negate
    segmentation = _segmentation().SerializeToString() + _length_delimited(11, condition)  # Segmentation.condition
    return _length_delimited(1, PARENT.encode()) + _length_delimited(2, segmentation)


@pytest.mark.parametrize("levels", [100, 10_000])
async def test_a_condition_nested_past_what_protobuf_reads_is_named(stub, served_channel, levels):
    create = served_channel.unary_unary(METHOD + "CreateSegmentation")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(_deep_create_request(levels), metadata=ALICE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(rich_status(caught.value)[1]) == {"segmentation.condition"}
    assert f"nested deeper than {cond.MAX_DEPTH} levels" in caught.value.details()
    assert_plain_rpc_error(caught.value)


async def test_bytes_that_are_no_request_are_named_plainly(stub, served_channel):
    get = served_channel.unary_unary(METHOD + "GetProduct")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get(b"\x0a\xff\xff\xff", metadata=ALICE)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_plain_rpc_error(caught.value)
