"""The gRPC entrypoint: IngestService translates its requests and calls the use cases
(:mod:`listboss_ingest.handlers`)."""

from __future__ import annotations

from typing import Final

import grpc

from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from listboss_common.auth import WRITE, current_principal, require_producer_access
from listboss_common.errors import InvalidArgument, invalid_field
from listboss_common.rate_limit import RateLimiter, admit
from listboss_common.resources import PRODUCER
from listboss_ingest import handlers
from listboss_ingest.publisher import EventPublisher
from listboss_ingest.sources import hotmart

SERVICE = pb.DESCRIPTOR.services_by_name["IngestService"]

# The token scope each RPC needs, checked before the handler runs; an RPC missing here is refused.
# Every ingest RPC stores events: none is open to a read token.
METHOD_SCOPES: Final = {
    "IngestEvent": WRITE,
    "BatchIngestEvents": WRITE,
    "IngestWebhook": WRITE,
}

_GRPC: Final = event_pb2.EVENT_SOURCE_GRPC
# Plain ints: reading an enum wrapper's attribute costs a Python call per event.
_OUTCOMES: Final = {
    handlers.ACCEPTED: int(pb.EventResult.Outcome.OUTCOME_ACCEPTED),
    handlers.DUPLICATE: int(pb.EventResult.Outcome.OUTCOME_DUPLICATE),
    handlers.REJECTED: int(pb.EventResult.Outcome.OUTCOME_REJECTED),
}


class IngestServicer(pb_grpc.IngestServiceServicer):
    """Each RPC passes its producer's rate limit (``rate_limiter``; None: no limit) first, before
    normalizing or publishing anything, so a refused request costs next to nothing."""

    def __init__(self, publisher: EventPublisher, rate_limiter: RateLimiter | None = None):
        self._publisher = publisher
        self._rate_limiter = rate_limiter

    def _admit(self, costs: dict[str, int], field: str) -> None:
        admit(self._rate_limiter, costs, transport="grpc", field=field)

    async def IngestEvent(self, request: pb.IngestEventRequest, context) -> pb.IngestEventResponse:
        if not request.HasField("event"):
            raise invalid_field("event", "is required")
        principal = current_principal.get(None)
        # A producer's token sends its own events; the internal role names the producer.
        producer = (principal.producer if principal is not None else None) or request.event.producer
        if producer:  # none: the event is refused by validation, which needs no limit
            self._admit({producer: 1}, "event")
        try:
            event, duplicate = await handlers.ingest_event(
                self._publisher, request.event, current_principal.get(None), source=_GRPC
            )
        except InvalidArgument as error:
            raise InvalidArgument([v.prefixed("event") for v in error.violations]) from None
        return pb.IngestEventResponse(event_id=event.id, duplicate=duplicate)

    async def BatchIngestEvents(self, request: pb.BatchIngestEventsRequest, context) -> pb.BatchIngestEventsResponse:
        self._admit(_batch_costs(request.events, current_principal.get().producer), "events")
        # The request is ours alone: the use case normalizes its events in place.
        outcome = await handlers.ingest_batch(
            self._publisher, request.events, request.request_id, current_principal.get(), source=_GRPC
        )
        response = pb.BatchIngestEventsResponse(
            accepted_count=outcome.accepted, duplicate_count=outcome.duplicates, rejected_count=outcome.rejected
        )
        add_result = response.results.add
        outcomes = _OUTCOMES
        for index, (event_id, result, violations) in enumerate(outcome.results):
            if not violations:
                add_result(index=index, event_id=event_id, outcome=outcomes[result])
                continue
            prefix = f"events[{index}]"
            add_result(
                index=index,
                event_id=event_id,
                outcome=outcomes[result],
                field_violations=[
                    pb.FieldViolation(field=v.prefixed(prefix).field, description=v.description) for v in violations
                ],
            )
        return response

    async def IngestWebhook(self, request: pb.IngestWebhookRequest, context) -> pb.IngestWebhookResponse:
        (producer,) = PRODUCER.parse(request.parent, "parent")
        require_producer_access(producer, request.parent)
        self._admit({producer: 1}, "payload")
        event = handlers.webhook_event(hotmart, request.payload, producer)
        duplicate = await handlers.store_webhook_event(self._publisher, event)
        return pb.IngestWebhookResponse(event=event, duplicate=duplicate)


def _batch_costs(events, own_producer: str | None) -> dict[str, int]:
    """What a batch costs, per producer: one token per event, whatever the batch size. Events
    are what costs the service and everything downstream (normalizing, publishing, segmenting,
    applying), so a batch of 500 spends 500; counting requests would let one batch carry ten
    thousand times a webhook's load through the same limit."""
    if own_producer:
        # A producer's token can only store its own events: the batch is the producer's, even
        # the events it will see rejected for naming another.
        return {own_producer: len(events)}
    costs: dict[str, int] = {}
    for event in events:  # the internal role: each event's producer pays for it
        if event.producer:
            costs[event.producer] = costs.get(event.producer, 0) + 1
    return costs


def add_to_server(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Registers ``servicer``. A request protobuf cannot read (a string that is not UTF-8, say)
    answers INVALID_ARGUMENT naming the field: the shared interceptor does that for every
    service (:mod:`listboss_common.decoding`)."""
    pb_grpc.add_IngestServiceServicer_to_server(servicer, server)
