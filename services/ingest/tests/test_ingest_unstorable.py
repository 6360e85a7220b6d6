"""IngestService refuses, over real gRPC, what a store downstream cannot hold: control
characters, lone surrogates (also undecodable on the wire) and over-long strings, each named
by its field; nothing of a refused event is stored."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss_testing import bearer, make_event, refused_fields, rich_status, stored_events, violated_fields

REPO = Path(__file__).resolve().parents[3]
FIXTURES = sorted((REPO / "tests" / "data" / "hotmart").glob("*.json"))
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IngestService"].full_name
Outcome = pb.EventResult.Outcome


# Three ASCII bytes stand in for the three bytes of an encoded lone surrogate (U+D800 through
# "surrogatepass"): swapping them keeps every length prefix right. Python's protobuf refuses to
# encode a surrogate; other clients' encoders may not check.
STAND_IN, SURROGATE_BYTES = b"Q7Z", "\ud800".encode("utf-8", "surrogatepass")


def with_surrogate(message) -> bytes:
    data = message.SerializeToString()
    assert data.count(STAND_IN) == 1
    return data.replace(STAND_IN, SURROGATE_BYTES)


async def call_raw(ingest_port: int, method: str, data: bytes, metadata=None) -> bytes:
    """One IngestService call with a request already in its wire form."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ingest_port}") as channel:
        call = channel.unary_unary(f"/{SERVICE_NAME}/{method}")
        return await call(data, metadata=bearer("alice") if metadata is None else metadata)


def description_of(bad_request, field: str) -> str:
    return next(v.description for v in bad_request.field_violations if v.field == field)


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("person.name", "A\x00B", "found U+0000 at position 1"),
        ("person.name", "Ana\tMaria", "found U+0009 at position 3"),
        ("product.name", "Curso\nAvançado", "found U+000A at position 5"),
        ("person.address.city", "S\x7fo Paulo", "found U+007F at position 1"),
        ("purchase.offer_code", "OFF\x85ER", "found U+0085 at position 3"),
        ("person.name", "x" * 501, "must be at most 500 characters"),
        ("product.id", "p" * 129, "must be at most 128 characters"),
        ("subscription.plan.name", "y" * 501, "must be at most 500 characters"),
    ],
)
async def test_ingest_event_refuses_what_a_store_cannot_hold(ingest, js, path, value, expected):
    event = make_event("unstorable")
    *parents, name = path.split(".")
    message = event
    for parent in parents:
        message = getattr(message, parent)
    setattr(message, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestEvent(pb.IngestEventRequest(event=event), metadata=bearer("alice"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad_request = rich_status(caught.value)
    assert info.reason == "INVALID_ARGUMENT"
    assert violated_fields(bad_request) == {f"event.{path}"}
    assert description_of(bad_request, f"event.{path}").endswith(expected)
    assert await stored_events(js) == []


async def test_batch_refuses_each_unstorable_event_by_index_and_stores_its_neighbours(ingest, js):
    nul = make_event("nul")
    nul.person.name = "A\x00B"
    long = make_event("long")
    long.product.name = "x" * 501
    c1 = make_event("c1")
    c1.person.address.street = "Rua 1\x9f"
    response = await ingest.BatchIngestEvents(
        pb.BatchIngestEventsRequest(events=[make_event("ok-0"), nul, make_event("ok-2"), long, c1]),
        metadata=bearer("alice"),
    )
    assert [r.outcome for r in response.results] == [
        Outcome.OUTCOME_ACCEPTED,
        Outcome.OUTCOME_REJECTED,
        Outcome.OUTCOME_ACCEPTED,
        Outcome.OUTCOME_REJECTED,
        Outcome.OUTCOME_REJECTED,
    ]
    assert [[v.field for v in r.field_violations] for r in response.results] == [
        [],
        ["events[1].person.name"],
        [],
        ["events[3].product.name"],
        ["events[4].person.address.street"],
    ]
    assert "U+0000" in response.results[1].field_violations[0].description
    assert (response.accepted_count, response.rejected_count) == (2, 3)
    assert [e.id for e in await stored_events(js)] == ["ok-0", "ok-2"]


async def test_a_lone_surrogate_on_the_wire_is_invalid_argument_naming_the_field(ingest_port, js):
    """protobuf refuses a string field that is not UTF-8 while parsing; grpc would answer UNKNOWN."""
    event = make_event("surrogate", email="ana@example.com")
    event.person.name = STAND_IN.decode()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raw(ingest_port, "IngestEvent", with_surrogate(pb.IngestEventRequest(event=event)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = rich_status(caught.value)
    assert violated_fields(bad_request) == {"event.person.name"}
    assert "lone surrogate" in description_of(bad_request, "event.person.name")

    bad = make_event("b-2")
    bad.purchase.offer_code = STAND_IN.decode()
    request = pb.BatchIngestEventsRequest(events=[make_event("b-0"), make_event("b-1"), bad, make_event("b-3")])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raw(ingest_port, "BatchIngestEvents", with_surrogate(request))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = rich_status(caught.value)
    # Not valid protobuf: the request as a whole is refused (nothing stored), naming the field.
    assert violated_fields(bad_request) == {"events[2].purchase.offer_code"}

    webhook = pb.IngestWebhookRequest(parent="producers/alice", payload=FIXTURES[0].read_text() + " Q7Z")
    assert await refused_fields(call_raw(ingest_port, "IngestWebhook", with_surrogate(webhook))) == {"payload"}
    assert await stored_events(js) == []


async def test_an_undecodable_request_still_needs_a_token(ingest_port, js):
    event = make_event("surrogate")
    event.person.name = STAND_IN.decode()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raw(ingest_port, "IngestEvent", with_surrogate(pb.IngestEventRequest(event=event)), metadata=())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_request_with_broken_framing_is_invalid_argument(ingest_port, js):
    data = pb.IngestEventRequest(event=make_event("cut")).SerializeToString()[:-3]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_raw(ingest_port, "IngestEvent", data)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid IngestEventRequest" in caught.value.details()
    assert await stored_events(js) == []


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("name", "A\x00B", "person.name"),
        ("name", "Ana \ud800", "person.name"),
        ("name", "A\x85B", "person.name"),
        ("name", "x" * 501, "person.name"),
        ("email", "ana@example.com\udfff", "person.email"),
    ],
)
async def test_ingest_webhook_refuses_what_a_store_cannot_hold(ingest, js, key, value, field):
    document = json.loads((REPO / "tests" / "data" / "hotmart" / "PURCHASE_APPROVED.json").read_text())
    document["data"]["buyer"][key] = value
    payload = json.dumps(document)  # a control or a lone surrogate travels as a \u escape
    assert payload.isascii()
    assert await refused_fields(
        ingest.IngestWebhook(pb.IngestWebhookRequest(parent="producers/acme", payload=payload), metadata=bearer("acme"))
    ) == {field}
    assert await stored_events(js) == []
