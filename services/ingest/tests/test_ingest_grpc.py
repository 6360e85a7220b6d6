"""IngestService over real gRPC (grpc.aio on port 0) with a real nats-server and JetStream."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from listboss_common import bus
from listboss_common.auth import issue_token
from listboss_common.grpc_server import MAX_MESSAGE_BYTES
from listboss_common.keys import SigningKey
from listboss_ingest import normalize
from listboss_ingest.handlers import MAX_BATCH_EVENTS
from listboss_testing import (
    bearer,
    event_messages,
    make_event,
    refused_fields,
    rich_status,
    stored_events,
    token,
    violated_fields,
)

REPO = Path(__file__).resolve().parents[3]
FIXTURES = sorted((REPO / "tests" / "data" / "hotmart").glob("*.json"))
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IngestService"].full_name
STREAM = bus.EVENTS.name
Outcome = pb.EventResult.Outcome


# --- fixtures (conftest.py: ``ingest_port``, ``ingest``) and helpers ------------------------------


def expected_webhook_email(document) -> str:
    """The fixture's only email (every fixture names exactly one person), normalized."""
    emails = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "email" and isinstance(value, str):
                    emails.append(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document["data"])
    assert len(emails) == 1
    return emails[0].strip().lower()


# --- IngestEvent -------------------------------------------------------------------------------


async def test_ingest_event_stores_a_normalized_event(ingest, js):
    before = int(time.time()) - 1
    response = await ingest.IngestEvent(pb.IngestEventRequest(event=make_event()), metadata=bearer("alice"))
    assert response.event_id == "evt-1"
    assert response.duplicate is False

    ((subject, msg_id, events),) = await event_messages(js)
    assert subject == "listboss.events.alice"
    assert msg_id == "alice/evt-1"
    (event,) = events
    assert event.id == "evt-1"
    assert event.producer == "alice"
    assert event.type == event_pb2.EVENT_TYPE_PURCHASE_APPROVED
    assert event.person.email == "ana.silva@example.com"
    assert event.product.id == "42"
    assert event.product.name == "Course"
    assert event.source == event_pb2.EVENT_SOURCE_GRPC
    assert event.HasField("receive_time")
    assert before <= event.receive_time.seconds <= int(time.time()) + 1


async def test_ingest_event_again_is_a_duplicate_and_stored_once(ingest, js):
    first = await ingest.IngestEvent(pb.IngestEventRequest(event=make_event()), metadata=bearer("alice"))
    # Same id, even with other content: the id is the dedup key.
    again = make_event(email="other@example.com")
    second = await ingest.IngestEvent(pb.IngestEventRequest(event=again), metadata=bearer("alice"))
    assert first.duplicate is False
    assert second.duplicate is True
    assert second.event_id == "evt-1"
    (event,) = await stored_events(js)
    assert event.person.email == "ana.silva@example.com"

    # The same id for another producer is another event.
    third = await ingest.IngestEvent(pb.IngestEventRequest(event=make_event(producer="bob")), metadata=bearer("bob"))
    assert third.duplicate is False
    assert [e.producer for e in await stored_events(js)] == ["alice", "bob"]


async def test_ingest_event_defaults_the_producer_to_the_token(ingest, js):
    response = await ingest.IngestEvent(pb.IngestEventRequest(event=make_event(producer="")), metadata=bearer("carol"))
    assert response.duplicate is False
    ((subject, _, (event,)),) = await event_messages(js)
    assert subject == "listboss.events.carol"
    assert event.producer == "carol"


async def test_internal_caller_must_name_the_producer(ingest, js):
    unnamed = pb.IngestEventRequest(event=make_event(producer=""))
    assert "event.producer" in await refused_fields(ingest.IngestEvent(unnamed, metadata=bearer(None)))

    # With a producer named, the internal role may ingest for anyone.
    response = await ingest.IngestEvent(pb.IngestEventRequest(event=make_event(producer="dave")), metadata=bearer(None))
    assert response.duplicate is False
    assert [e.producer for e in await stored_events(js)] == ["dave"]


async def test_invalid_event_is_invalid_argument_with_rich_details(ingest, js):
    event = make_event(email="not-an-email")
    event.ClearField("occur_time")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestEvent(pb.IngestEventRequest(event=event), metadata=bearer("alice"))
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad_request = rich_status(error)
    assert info.reason == "INVALID_ARGUMENT"
    assert bad_request is not None
    assert violated_fields(bad_request) == {"event.person.email", "event.occur_time"}
    assert all(v.description for v in bad_request.field_violations)
    assert "event.person.email" in info.metadata["fields"]
    assert "event.person.email" in error.details()
    assert await stored_events(js) == []


async def test_missing_event_is_invalid_argument(ingest, js):
    assert await refused_fields(ingest.IngestEvent(pb.IngestEventRequest(), metadata=bearer("alice"))) == {"event"}


async def test_rich_details_reach_a_sync_client(ingest_port, js):
    """grpc_status.rpc_status.from_call on a plain (sync) channel, as other clients would see it."""
    port = ingest_port

    def call():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.IngestServiceStub(channel)
            try:
                stub.IngestEvent(
                    pb.IngestEventRequest(event=make_event(email="bad")), metadata=bearer("alice"), timeout=10
                )
            except grpc.RpcError as error:
                return error
        return None

    error = await asyncio.to_thread(call)
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad_request) for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR))
    assert violated_fields(bad_request) == {"event.person.email"}


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param((), id="no-token"),
        pytest.param((("authorization", "Bearer " + issue_token(SigningKey.generate(), "alice")),), id="unknown-key"),
        pytest.param((("authorization", "Bearer garbage"),), id="malformed"),
        pytest.param((("authorization", "Basic " + token("alice")),), id="not-bearer"),
    ],
)
async def test_missing_or_bad_token_is_unauthenticated(ingest, js, metadata):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestEvent(pb.IngestEventRequest(event=make_event()), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info, _ = rich_status(caught.value)
    assert info.reason == "UNAUTHENTICATED"
    assert await stored_events(js) == []


async def test_other_producers_event_is_permission_denied_and_not_published(ingest, js):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestEvent(pb.IngestEventRequest(event=make_event(producer="bob")), metadata=bearer("alice"))
    error = caught.value
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info, _ = rich_status(error)
    assert info.reason == "PERMISSION_DENIED"
    assert info.metadata["resource"] == "producers/bob"
    assert await stored_events(js) == []


# --- BatchIngestEvents -------------------------------------------------------------------------


async def test_batch_reports_each_event_and_stores_the_valid_ones(ingest, js):
    request = pb.BatchIngestEventsRequest(
        request_id="req-1",
        events=[
            make_event("b-0", email="ONE@example.com"),
            make_event("b-1", email="no-at-sign"),
            make_event("b-2", email="Two@Example.com ", producer=""),
        ],
    )
    response = await ingest.BatchIngestEvents(request, metadata=bearer("alice"))
    assert [r.index for r in response.results] == [0, 1, 2]
    assert [r.event_id for r in response.results] == ["b-0", "b-1", "b-2"]
    assert [r.outcome for r in response.results] == [
        Outcome.OUTCOME_ACCEPTED,
        Outcome.OUTCOME_REJECTED,
        Outcome.OUTCOME_ACCEPTED,
    ]
    assert [v.field for v in response.results[1].field_violations] == ["events[1].person.email"]
    assert not response.results[0].field_violations and not response.results[2].field_violations
    assert (response.accepted_count, response.duplicate_count, response.rejected_count) == (2, 0, 1)

    stored = await stored_events(js)
    assert [(e.id, e.producer, e.person.email, e.source) for e in stored] == [
        ("b-0", "alice", "one@example.com", event_pb2.EVENT_SOURCE_GRPC),
        ("b-2", "alice", "two@example.com", event_pb2.EVENT_SOURCE_GRPC),
    ]
    assert all(e.HasField("receive_time") for e in stored)

    # A retry of the same request is reported as duplicates and stores nothing more.
    retry = await ingest.BatchIngestEvents(request, metadata=bearer("alice"))
    assert [r.outcome for r in retry.results] == [
        Outcome.OUTCOME_DUPLICATE,
        Outcome.OUTCOME_REJECTED,
        Outcome.OUTCOME_DUPLICATE,
    ]
    assert (retry.accepted_count, retry.duplicate_count, retry.rejected_count) == (0, 2, 1)
    assert len(await stored_events(js)) == 2


async def test_batch_without_request_id_is_deduplicated_by_content(ingest, js):
    request = pb.BatchIngestEventsRequest(events=[make_event("c-0"), make_event("c-1")])
    first = await ingest.BatchIngestEvents(request, metadata=bearer("alice"))
    second = await ingest.BatchIngestEvents(request, metadata=bearer("alice"))
    assert first.accepted_count == 2 and first.duplicate_count == 0
    assert second.accepted_count == 0 and second.duplicate_count == 2
    assert [e.id for e in await stored_events(js)] == ["c-0", "c-1"]


async def test_batch_rejects_other_producers_events_per_item(ingest, js):
    request = pb.BatchIngestEventsRequest(
        request_id="req-mixed", events=[make_event("m-0"), make_event("m-1", producer="bob")]
    )
    response = await ingest.BatchIngestEvents(request, metadata=bearer("alice"))
    assert [r.outcome for r in response.results] == [Outcome.OUTCOME_ACCEPTED, Outcome.OUTCOME_REJECTED]
    assert [v.field for v in response.results[1].field_violations] == ["events[1].producer"]
    assert [(e.id, e.producer) for e in await stored_events(js)] == [("m-0", "alice")]


async def test_internal_batch_is_packed_per_producer(ingest, js):
    request = pb.BatchIngestEventsRequest(
        request_id="req-multi",
        events=[make_event("p-0"), make_event("p-1", producer="bob"), make_event("p-2")],
    )
    response = await ingest.BatchIngestEvents(request, metadata=bearer(None))
    assert response.accepted_count == 3
    by_subject = {subject: [e.id for e in events] for subject, _, events in await event_messages(js)}
    assert by_subject == {"listboss.events.alice": ["p-0", "p-2"], "listboss.events.bob": ["p-1"]}


async def test_empty_batch_is_invalid_argument(ingest, js):
    empty = pb.BatchIngestEventsRequest()
    assert await refused_fields(ingest.BatchIngestEvents(empty, metadata=bearer("alice"))) == {"events"}


async def test_the_same_event_twice_in_one_batch_is_stored_once(ingest, js):
    request = pb.BatchIngestEventsRequest(
        request_id="req-twice",
        events=[make_event("t-0"), make_event("t-1"), make_event(" t-0 ", email="other@example.com")],
    )
    response = await ingest.BatchIngestEvents(request, metadata=bearer("alice"))
    assert [(r.event_id, r.outcome) for r in response.results] == [
        ("t-0", Outcome.OUTCOME_ACCEPTED),
        ("t-1", Outcome.OUTCOME_ACCEPTED),
        ("t-0", Outcome.OUTCOME_DUPLICATE),
    ]
    assert (response.accepted_count, response.duplicate_count, response.rejected_count) == (2, 1, 0)
    assert [(e.id, e.person.email) for e in await stored_events(js)] == [
        ("t-0", "ana.silva@example.com"),
        ("t-1", "ana.silva@example.com"),
    ]


async def test_an_event_repeated_in_another_batch_is_accepted_again_and_left_to_downstream(ingest, js):
    """Documented: a packed batch is deduplicated by request id, not per event across requests;
    contacts skips an event id already in its history (tests/test_ingest_exactly_once.py)."""
    first = await ingest.BatchIngestEvents(
        pb.BatchIngestEventsRequest(request_id="req-a", events=[make_event("x-0")]), metadata=bearer("alice")
    )
    second = await ingest.BatchIngestEvents(
        pb.BatchIngestEventsRequest(request_id="req-b", events=[make_event("x-0"), make_event("x-1")]),
        metadata=bearer("alice"),
    )
    assert first.accepted_count == 1
    assert second.accepted_count == 2
    assert [e.id for e in await stored_events(js)] == ["x-0", "x-0", "x-1"]


async def test_a_batch_of_the_maximum_size_is_accepted_and_packed(ingest, js):
    events = [make_event(f"max-{i:05d}", email=f"person{i}@example.com") for i in range(MAX_BATCH_EVENTS)]
    response = await ingest.BatchIngestEvents(
        pb.BatchIngestEventsRequest(request_id="req-max", events=events), metadata=bearer("alice"), timeout=60
    )
    assert response.accepted_count == MAX_BATCH_EVENTS
    messages = await event_messages(js)
    assert len(messages) > 1  # packed: no message above bus.MAX_PACKED_BYTES
    assert [e.id for _, _, batch in messages for e in batch] == [e.id for e in events]
    assert all(msg_id.startswith("alice/batch/req-max/") for _, msg_id, _ in messages)


async def test_a_batch_over_the_maximum_count_is_invalid_argument(ingest, js):
    events = [make_event(f"over-{i}") for i in range(MAX_BATCH_EVENTS + 1)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.BatchIngestEvents(pb.BatchIngestEventsRequest(events=events), metadata=bearer("alice"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, bad_request = rich_status(caught.value)
    assert violated_fields(bad_request) == {"events"}
    assert "10000" in bad_request.field_violations[0].description
    assert await stored_events(js) == []


async def test_a_request_over_the_message_limit_is_refused_by_the_transport(ingest, js):
    """Past 16 MiB gRPC itself answers RESOURCE_EXHAUSTED before any handler runs (docs/api.md)."""
    big = make_event("big")
    big.product.name = "x" * (MAX_MESSAGE_BYTES // 4)
    request = pb.BatchIngestEventsRequest(events=[big] * 5)
    assert request.ByteSize() > MAX_MESSAGE_BYTES
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.BatchIngestEvents(request, metadata=bearer("alice"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await stored_events(js) == []


async def test_an_event_too_large_for_the_bus_is_invalid_argument(ingest, js, monkeypatch):
    # Every string has a limit now, so today's Event stays far below 256 KiB: a lower cap shows
    # that the whole-event backstop still answers on each path.
    monkeypatch.setattr(normalize, "MAX_EVENT_BYTES", 2048)
    big = make_event("huge")
    for name in ("name", "first_name", "last_name"):
        setattr(big.person, name, "x" * 500)
    big.product.name = "x" * 500
    assert big.ByteSize() > 2048
    request = pb.IngestEventRequest(event=big)
    assert await refused_fields(ingest.IngestEvent(request, metadata=bearer("alice"))) == {"event"}
    response = await ingest.BatchIngestEvents(
        pb.BatchIngestEventsRequest(events=[make_event("small"), big]), metadata=bearer("alice")
    )
    assert [r.outcome for r in response.results] == [Outcome.OUTCOME_ACCEPTED, Outcome.OUTCOME_REJECTED]
    assert [v.field for v in response.results[1].field_violations] == ["events[1]"]
    assert [e.id for e in await stored_events(js)] == ["small"]


async def test_canonical_events_beyond_webhooks_are_validated_and_stored(ingest, js):
    progress = make_event("cp-1", type=event_pb2.EVENT_TYPE_CONTENT_PROGRESS)
    progress.content_progress.percentage = 42.5
    progress.content_progress.completed_lessons = 3
    progress.content_progress.total_lessons = 8
    webinar = make_event("wb-1", type=event_pb2.EVENT_TYPE_WEBINAR_ATTENDANCE)
    webinar.webinar.id = " live-7 "
    webinar.webinar.attended_minutes = 55
    bad = make_event("wb-2", type=event_pb2.EVENT_TYPE_WEBINAR_REGISTRATION)
    response = await ingest.BatchIngestEvents(
        pb.BatchIngestEventsRequest(events=[progress, webinar, bad]), metadata=bearer("alice")
    )
    assert [r.outcome for r in response.results] == [
        Outcome.OUTCOME_ACCEPTED,
        Outcome.OUTCOME_ACCEPTED,
        Outcome.OUTCOME_REJECTED,
    ]
    assert [v.field for v in response.results[2].field_violations] == ["events[2].webinar.id"]
    stored = {e.id: e for e in await stored_events(js)}
    assert stored["cp-1"].content_progress.percentage == 42.5
    assert stored["wb-1"].webinar.id == "live-7"


# --- IngestWebhook -----------------------------------------------------------------------------


def test_the_webhook_fixtures_cover_the_platforms_events():
    names = {path.stem for path in FIXTURES}
    known = {n.removeprefix("EVENT_TYPE_") for n in event_pb2.EventType.keys()}  # noqa: SIM118 - an enum wrapper, not a dict - {"UNSPECIFIED"}
    assert len(names) == 15
    assert names <= known
    for path in FIXTURES:
        assert json.loads(path.read_text())["event"] == path.stem


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
async def test_webhook_fixture_becomes_a_stored_event(ingest, js, path):
    payload = path.read_text()
    document = json.loads(payload)
    response = await ingest.IngestWebhook(
        pb.IngestWebhookRequest(parent="producers/acme", payload=payload), metadata=bearer("acme")
    )
    event = response.event
    assert response.duplicate is False
    assert event.id == document["id"]
    assert event.producer == "acme"
    assert event.type == event_pb2.EventType.Value(f"EVENT_TYPE_{document['event']}")
    assert event.person.email == expected_webhook_email(document)
    assert event.source == event_pb2.EVENT_SOURCE_WEBHOOK
    assert event.HasField("occur_time") and event.HasField("receive_time")
    assert event.product.id
    assert "hottok" not in str(event).lower()

    ((subject, msg_id, (stored,)),) = await event_messages(js)
    assert subject == "listboss.events.acme"
    assert msg_id == f"acme/{document['id']}"
    assert stored == event

    again = await ingest.IngestWebhook(
        pb.IngestWebhookRequest(parent="producers/acme", payload=payload), metadata=bearer("acme")
    )
    assert again.duplicate is True
    assert len(await event_messages(js)) == 1


async def test_webhook_with_bad_json_is_invalid_argument_on_payload(ingest, js):
    assert await refused_fields(
        ingest.IngestWebhook(
            pb.IngestWebhookRequest(parent="producers/acme", payload='{"id": "x", '), metadata=bearer("acme")
        )
    ) == {"payload"}
    assert await stored_events(js) == []


async def test_webhook_for_another_producer_is_permission_denied(ingest, js):
    payload = FIXTURES[0].read_text()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestWebhook(
            pb.IngestWebhookRequest(parent="producers/acme", payload=payload), metadata=bearer("other")
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await stored_events(js) == []


async def test_webhook_with_bad_parent_is_invalid_argument(ingest, js):
    assert await refused_fields(
        ingest.IngestWebhook(
            pb.IngestWebhookRequest(parent="acme", payload=FIXTURES[0].read_text()), metadata=bearer("acme")
        )
    ) == {"parent"}


# --- NATS outage -------------------------------------------------------------------------------


async def test_ingest_answers_unavailable_while_nats_is_down_and_recovers(ingest, js, nc, nats_server):
    nats_server.stop()
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.IngestEvent(
            pb.IngestEventRequest(event=make_event("outage-1")), metadata=bearer("alice"), timeout=20
        )
    elapsed = time.monotonic() - started
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    assert elapsed < 10, f"the call hung for {elapsed:.1f}s"
    info, _ = rich_status(caught.value)
    assert info.reason == "BUS_UNAVAILABLE"

    nats_server.start()
    # A client retries UNAVAILABLE; the client reconnects on its own within a few seconds.
    deadline = time.monotonic() + 30
    while True:
        try:
            response = await ingest.IngestEvent(
                pb.IngestEventRequest(event=make_event("outage-1")), metadata=bearer("alice"), timeout=20
            )
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
            assert time.monotonic() < deadline, "ingest did not recover after NATS came back"
            await asyncio.sleep(0.2)
    assert response.event_id == "outage-1"
    # Stored exactly once, whether the retry or a publish buffered during the outage got there first.
    assert [e.id for e in await stored_events(js)] == ["outage-1"]


# --- health and reflection ---------------------------------------------------------------------


async def test_health_serves_without_a_token(ingest_port):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ingest_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        overall = await health.Check(health_pb2.HealthCheckRequest())
        service = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert overall.status == health_pb2.HealthCheckResponse.SERVING
        assert service.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "reflection_service", ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
)
async def test_reflection_lists_the_ingest_service(ingest_port, reflection_service):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ingest_port}") as channel:
        # v1 and v1alpha messages are the same on the wire: the v1alpha classes serve for both.
        info = channel.stream_stream(
            f"/{reflection_service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
        ]
        responses = [response async for response in info(iter(requests))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
    assert SERVICE_NAME == "listboss.ingest.v1.IngestService"
    # The service's descriptor is served, so grpcurl needs no .proto files.
    assert responses[1].file_descriptor_response.file_descriptor_proto
