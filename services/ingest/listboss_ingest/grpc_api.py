"""The gRPC entrypoint: IngestService translates its requests and calls the use cases
(:mod:`listboss_ingest.handlers`)."""

from __future__ import annotations

from typing import Final

import grpc
from google.protobuf import message_factory

from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from listboss_common.auth import current_principal, require_producer_access
from listboss_common.errors import InvalidArgument, invalid_field
from listboss_common.resources import PRODUCER
from listboss_ingest import handlers
from listboss_ingest.publisher import EventPublisher
from listboss_ingest.sources import hotmart
from listboss_ingest.undecodable import decoder, refusing_undecodable

SERVICE = pb.DESCRIPTOR.services_by_name["IngestService"]

_GRPC: Final = event_pb2.EVENT_SOURCE_GRPC
# Plain ints: reading an enum wrapper's attribute costs a Python call per event.
_OUTCOMES: Final = {
    handlers.ACCEPTED: int(pb.EventResult.Outcome.OUTCOME_ACCEPTED),
    handlers.DUPLICATE: int(pb.EventResult.Outcome.OUTCOME_DUPLICATE),
    handlers.REJECTED: int(pb.EventResult.Outcome.OUTCOME_REJECTED),
}


class IngestServicer(pb_grpc.IngestServiceServicer):
    def __init__(self, publisher: EventPublisher):
        self._publisher = publisher

    async def IngestEvent(self, request: pb.IngestEventRequest, context) -> pb.IngestEventResponse:
        if not request.HasField("event"):
            raise invalid_field("event", "is required")
        try:
            event, duplicate = await handlers.ingest_event(
                self._publisher, request.event, current_principal.get(None), source=_GRPC
            )
        except InvalidArgument as error:
            raise InvalidArgument([v.prefixed("event") for v in error.violations]) from None
        return pb.IngestEventResponse(event_id=event.id, duplicate=duplicate)

    async def BatchIngestEvents(self, request: pb.BatchIngestEventsRequest, context) -> pb.BatchIngestEventsResponse:
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
        event = handlers.webhook_event(hotmart, request.payload, producer)
        duplicate = await handlers.store_webhook_event(self._publisher, event)
        return pb.IngestWebhookResponse(event=event, duplicate=duplicate)


def add_to_server(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Registers ``servicer`` like the generated ``add_IngestServiceServicer_to_server``, but a
    request that is not valid protobuf is INVALID_ARGUMENT naming each string field that is not
    UTF-8 instead of grpc's bare UNKNOWN (:mod:`listboss_ingest.undecodable`)."""
    handlers_by_name = {
        method.name: grpc.unary_unary_rpc_method_handler(
            refusing_undecodable(getattr(servicer, method.name)),
            request_deserializer=decoder(message_factory.GetMessageClass(method.input_type)),
            response_serializer=message_factory.GetMessageClass(method.output_type).SerializeToString,
        )
        for method in SERVICE.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers_by_name),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers_by_name)
