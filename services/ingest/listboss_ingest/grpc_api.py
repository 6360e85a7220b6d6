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
from listboss_ingest.normalize import event_from_webhook, normalize_event, normalize_in_place
from listboss_ingest.publisher import EventPublisher, event_message_id

# Limits of one BatchIngestEvents call (README.md). Larger loads send several batches.
MAX_BATCH_EVENTS = 10_000
MAX_WEBHOOK_BYTES = 1024 * 1024

Outcome = pb.EventResult.Outcome
# Plain ints: reading an enum wrapper's attribute costs a Python call per event.
_ACCEPTED: int = Outcome.OUTCOME_ACCEPTED
_DUPLICATE: int = Outcome.OUTCOME_DUPLICATE
_REJECTED: int = Outcome.OUTCOME_REJECTED


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
        principal = current_principal.get()
        own_producer = principal.producer  # None for the internal role
        response = pb.BatchIngestEventsResponse()
        add_result = response.results.add
        accepted: list[event_pb2.Event] = []
        accepted_results: list[pb.EventResult] = []
        seen: set[tuple[str, str]] = set()
        rejected = duplicates_in_request = 0
        # The request is ours alone: its events are normalized in place, without copies.
        for index, event in enumerate(request.events):
            original_id = event.id
            if not event.producer and own_producer:
                event.producer = own_producer
            try:
                normalize_in_place(event)
            except InvalidArgument as error:
                rejected += 1
                prefix = f"events[{index}]"
                add_result(
                    index=index,
                    event_id=original_id,
                    outcome=_REJECTED,
                    field_violations=[
                        pb.FieldViolation(field=v.prefixed(prefix).field, description=v.description)
                        for v in error.violations
                    ],
                )
                continue
            if own_producer is not None and event.producer != own_producer:
                rejected += 1
                add_result(index=index, event_id=original_id, outcome=_REJECTED).field_violations.add(
                    field=f"events[{index}].producer",
                    description="the caller may not ingest events for this producer",
                )
                continue
            key = (event.producer, event.id)
            if key in seen:
                # The same event twice in one request: stored once, the repeat is a duplicate.
                duplicates_in_request += 1
                add_result(index=index, event_id=event.id, outcome=_DUPLICATE)
                continue
            seen.add(key)
            event.source = event_pb2.EVENT_SOURCE_GRPC
            accepted.append(event)
            accepted_results.append(add_result(index=index, event_id=event.id))
        duplicates_stored = 0
        if accepted:
            stamp = _now()
            seconds, nanos = stamp.seconds, stamp.nanos
            for event in accepted:
                receive_time = event.receive_time
                receive_time.seconds = seconds
                receive_time.nanos = nanos
            request_id = request.request_id or bus.content_id(*(event_message_id(e) for e in accepted))
            duplicates = await self._publisher.publish_many(request_id, accepted)
            for result, duplicate in zip(accepted_results, duplicates):
                result.outcome = _DUPLICATE if duplicate else _ACCEPTED
            duplicates_stored = sum(duplicates)
        response.accepted_count = len(accepted) - duplicates_stored
        response.duplicate_count = duplicates_stored + duplicates_in_request
        response.rejected_count = rejected
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

