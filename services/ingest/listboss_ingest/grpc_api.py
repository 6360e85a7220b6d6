"""The gRPC entrypoint: IngestService validates, normalizes and publishes events."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from listboss_common import bus
from listboss_common.auth import current_principal, require_producer_access
from listboss_common.errors import InvalidArgument, invalid_field
from listboss_common.resources import PRODUCER
from listboss_ingest.normalize import event_from_webhook, normalize_event
from listboss_ingest.publisher import EventPublisher, event_message_id

# Limits of one BatchIngestEvents call (README.md). Larger loads send several batches.
MAX_BATCH_EVENTS = 10_000
MAX_WEBHOOK_BYTES = 1024 * 1024

Outcome = pb.EventResult.Outcome


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _default_producer(event: event_pb2.Event) -> None:
    """A producer's own token implies the producer: callers may leave it empty."""
    principal = current_principal.get(None)
    if not event.producer and principal is not None and principal.producer:
        event.producer = principal.producer


def _accept(event: event_pb2.Event, source: int) -> event_pb2.Event:
    """Validates and normalizes ``event``; checks the caller may ingest for its producer."""
    normalized = normalize_event(event)
    require_producer_access(normalized.producer, PRODUCER.format(normalized.producer))
    normalized.source = source
    normalized.receive_time.CopyFrom(_now())
    return normalized


class IngestServicer(pb_grpc.IngestServiceServicer):
    def __init__(self, publisher: EventPublisher):
        self._publisher = publisher

    async def IngestEvent(self, request: pb.IngestEventRequest, context) -> pb.IngestEventResponse:
        if not request.HasField("event"):
            raise invalid_field("event", "is required")
        event = event_pb2.Event()
        event.CopyFrom(request.event)
        _default_producer(event)
        try:
            accepted = _accept(event, event_pb2.EVENT_SOURCE_GRPC)
        except InvalidArgument as error:
            raise InvalidArgument([v.prefixed("event") for v in error.violations]) from None
        duplicate = await self._publisher.publish_one(accepted)
        return pb.IngestEventResponse(event_id=accepted.id, duplicate=duplicate)

    async def BatchIngestEvents(
        self, request: pb.BatchIngestEventsRequest, context
    ) -> pb.BatchIngestEventsResponse:
        if not request.events:
            raise invalid_field("events", "must hold at least one event")
        if len(request.events) > MAX_BATCH_EVENTS:
            raise invalid_field("events", f"must hold at most {MAX_BATCH_EVENTS} events; send several batches")
        if len(request.request_id) > 128:
            raise invalid_field("request_id", "must be at most 128 characters")
        results = [pb.EventResult(index=i, event_id=e.id) for i, e in enumerate(request.events)]
        accepted: list[event_pb2.Event] = []
        accepted_results: list[pb.EventResult] = []
        for result, original in zip(results, request.events):
            event = event_pb2.Event()
            event.CopyFrom(original)
            _default_producer(event)
            try:
                normalized = normalize_event(event)
            except InvalidArgument as error:
                result.outcome = Outcome.OUTCOME_REJECTED
                prefix = f"events[{result.index}]"
                result.field_violations.extend(
                    pb.FieldViolation(field=v.prefixed(prefix).field, description=v.description)
                    for v in error.violations
                )
                continue
            principal = current_principal.get()
            if not principal.may_access(normalized.producer):
                result.outcome = Outcome.OUTCOME_REJECTED
                result.field_violations.add(
                    field=f"events[{result.index}].producer",
                    description="the caller may not ingest events for this producer",
                )
                continue
            normalized.source = event_pb2.EVENT_SOURCE_GRPC
            accepted.append(normalized)
            accepted_results.append(result)
        if accepted:
            stamp = _now()
            for event in accepted:
                event.receive_time.CopyFrom(stamp)
            request_id = request.request_id or bus.content_id(*(event_message_id(e) for e in accepted))
            duplicates = await self._publisher.publish_many(request_id, accepted)
            for result, event, duplicate in zip(accepted_results, accepted, duplicates):
                result.event_id = event.id
                result.outcome = Outcome.OUTCOME_DUPLICATE if duplicate else Outcome.OUTCOME_ACCEPTED
        response = pb.BatchIngestEventsResponse(results=results)
        response.accepted_count = sum(r.outcome == Outcome.OUTCOME_ACCEPTED for r in results)
        response.duplicate_count = sum(r.outcome == Outcome.OUTCOME_DUPLICATE for r in results)
        response.rejected_count = sum(r.outcome == Outcome.OUTCOME_REJECTED for r in results)
        return response

    async def IngestWebhook(self, request: pb.IngestWebhookRequest, context) -> pb.IngestWebhookResponse:
        (producer,) = PRODUCER.parse(request.parent, "parent")
        require_producer_access(producer, request.parent)
        if len(request.payload.encode()) > MAX_WEBHOOK_BYTES:
            raise invalid_field("payload", f"must be at most {MAX_WEBHOOK_BYTES} bytes")
        event = event_from_webhook(request.payload, producer)
        event.receive_time.CopyFrom(_now())
        duplicate = await self._publisher.publish_one(event)
        return pb.IngestWebhookResponse(event=event, duplicate=duplicate)

