"""Malformed requests to IngestService (real gRPC) and to the webhook receiver (real HTTP): each is
INVALID_ARGUMENT / 400 naming the wrong field, in the caller's terms (no Python class name, repr
or traceback), bounded in size whatever the request held, and nothing is published."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import aiohttp
import grpc
import pytest

from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss_common import bus
from listboss_ingest.http_api import HOTTOK_HEADER, WebhookReceiver
from listboss_ingest.publisher import EventPublisher
from listboss_ingest.webhook_tokens import WebhookTokens
from listboss_testing import bearer, make_event, rich_status, violated_fields
from listboss_testing.rich_errors import assert_plain_rpc_error, assert_plain_text

REPO = Path(__file__).resolve().parents[3]
APPROVED = (REPO / "tests" / "data" / "hotmart" / "PURCHASE_APPROVED.json").read_bytes()
LONG = "a" * 100_000
TOKENS = {"alice": "alice-hottok-0123456789"}


def _event(change: Callable[[event_pb2.Event], object]) -> event_pb2.Event:
    event = make_event()
    change(event)
    return event


def _webhook(path: tuple[str, ...], value) -> bytes:
    document = json.loads(APPROVED)
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(document).encode()


# (label, request, the field the answer must name)
INGEST_EVENT_CASES: list[tuple[str, event_pb2.Event, str]] = [
    ("over-long event id", _event(lambda e: setattr(e, "id", LONG)), "event.id"),
    ("over-long producer", _event(lambda e: setattr(e, "producer", LONG)), "event.producer"),
    ("over-long product id", _event(lambda e: setattr(e.product, "id", LONG)), "event.product.id"),
    ("unknown event type", _event(lambda e: setattr(e, "type", 999)), "event.type"),
    (
        "price not a number",
        _event(lambda e: setattr(e.purchase.price, "value", math.nan)),
        "event.purchase.price.value",
    ),
    ("price infinite", _event(lambda e: setattr(e.purchase.price, "value", math.inf)), "event.purchase.price.value"),
    (
        "order time past year 9999",
        _event(lambda e: setattr(e.purchase.order_time, "seconds", 2**62)),
        "event.purchase.order_time",
    ),
    (
        "next charge before year 1",
        _event(lambda e: setattr(e.subscription.next_charge_time, "seconds", -(2**62))),
        "event.subscription.next_charge_time",
    ),
]


@pytest.mark.parametrize(("label", "event", "field"), INGEST_EVENT_CASES, ids=[case[0] for case in INGEST_EVENT_CASES])
async def test_malformed_events_are_named_plainly(ingest, js, label, event, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestEvent(pb.IngestEventRequest(event=event), metadata=bearer("alice"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = rich_status(caught.value)
    assert field in violated_fields(bad_request)
    assert_plain_rpc_error(caught.value)
    assert LONG[:1000] not in caught.value.details()


# (label, parent, payload, the field the answer must name)
WEBHOOK_CASES: list[tuple[str, str, bytes, str]] = [
    ("over-long producer in the parent", "producers/" + LONG, APPROVED, "parent"),
    ("over-long parent with a short producer", "producers/alice/" + LONG, APPROVED, "parent"),
    ("not a producer name", "products/alice", APPROVED, "parent"),
    ("payload not JSON", "producers/alice", b"{nope", "payload"),
    ("payload a list", "producers/alice", b"[1, 2]", "payload"),
    (
        "installments 2**80",
        "producers/alice",
        _webhook(("data", "purchase", "payment", "installments_number"), 2**80),
        "purchase.installments",
    ),
    (
        "recurrence 2**80",
        "producers/alice",
        _webhook(("data", "purchase", "recurrence_number"), 2**80),
        "purchase.recurrence_number",
    ),
    ("order date 2**80", "producers/alice", _webhook(("data", "purchase", "order_date"), 2**80), "purchase.order_time"),
    (
        "approved date 1e400",
        "producers/alice",
        APPROVED.replace(b'"approved_date": ', b'"approved_date": 1e400, "x": '),
        "purchase.approved_time",
    ),
    ("event id over-long", "producers/alice", _webhook(("id",), LONG), "id"),
]


@pytest.mark.parametrize(
    ("label", "parent", "payload", "field"), WEBHOOK_CASES, ids=[case[0] for case in WEBHOOK_CASES]
)
async def test_malformed_webhooks_over_grpc_are_named_plainly(ingest, js, label, parent, payload, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestWebhook(pb.IngestWebhookRequest(parent=parent, payload=payload), metadata=bearer(None))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    _, bad_request = rich_status(caught.value)
    assert field in violated_fields(bad_request)
    assert_plain_rpc_error(caught.value)
    assert (await js.stream_info(bus.EVENTS.name)).state.messages == 0


async def test_a_malformed_batch_is_named_plainly(ingest):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.BatchIngestEvents(
            pb.BatchIngestEventsRequest(events=[make_event()], request_id=LONG), metadata=bearer("alice")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(rich_status(caught.value)[1]) == {"request_id"}
    assert_plain_rpc_error(caught.value)


async def test_every_violation_of_a_batch_event_is_plain(ingest):
    bad = [
        _event(lambda e: setattr(e, "id", LONG)),
        _event(lambda e: setattr(e.purchase.price, "value", math.nan)),
        _event(lambda e: setattr(e, "type", 12345)),
    ]
    response = await ingest.BatchIngestEvents(pb.BatchIngestEventsRequest(events=bad), metadata=bearer("alice"))
    assert response.rejected_count == len(bad)
    for result in response.results:
        assert result.field_violations
        for violation in result.field_violations:
            assert_plain_text(violation.description)


# --- the webhook receiver's path ---------------------------------------------------------------


@pytest.fixture
async def http(js):
    receiver = WebhookReceiver(EventPublisher(js), WebhookTokens(TOKENS), publish_timeout=1.0, shutdown_grace=5.0)
    await receiver.start("127.0.0.1:0")
    async with aiohttp.ClientSession(f"http://127.0.0.1:{receiver.port}") as session:
        yield session
    await receiver.stop()


@pytest.mark.parametrize("length", [64, 5_000, 100_000])
async def test_an_over_long_producer_in_the_webhook_path_is_named_without_its_value(http, js, length):
    headers = {HOTTOK_HEADER: TOKENS["alice"], "Content-Type": "application/json"}
    async with http.post("/webhooks/hotmart/" + "a" * length, data=APPROVED, headers=headers) as response:
        status = response.status
        answer = await response.json(content_type=None)
    assert status == 400, answer
    error = answer["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert [v["field"] for v in error["field_violations"]] == ["producer"]
    assert "63" in error["field_violations"][0]["description"]
    assert "a" * 64 not in json.dumps(answer)
    assert_plain_text(error["message"])
    assert (await js.stream_info(bus.EVENTS.name)).state.messages == 0
