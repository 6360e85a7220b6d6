"""The gRPC entrypoint: IngestService validates, normalizes and publishes events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from listboss_common import bus
from listboss_common.auth import current_principal, require_producer_access
from listboss_common.errors import FieldViolation, InvalidArgument, invalid_field
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


# --- requests protobuf cannot parse ------------------------------------------------------------

SERVICE = pb.DESCRIPTOR.services_by_name["IngestService"]
# Enough to fix a request; a list of every bad field of 10,000 events would only be noise.
MAX_REPORTED_FIELDS = 100


def add_to_server(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Registers ``servicer`` like the generated ``add_IngestServiceServicer_to_server``, but a
    request that is not valid protobuf is INVALID_ARGUMENT naming each string field that is not
    UTF-8 (``events[3].person.name``: a lone surrogate encoded by a client whose encoder does not
    check, say) instead of grpc's bare UNKNOWN. Nothing of such a request is stored."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            _refusing_undecodable(getattr(servicer, method.name)),
            request_deserializer=_decoder(message_factory.GetMessageClass(method.input_type)),
            response_serializer=message_factory.GetMessageClass(method.output_type).SerializeToString,
        )
        for method in SERVICE.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


class _Undecodable:
    """What the decoder hands the handler in place of a request protobuf refused to parse."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidArgument):
        self.error = error


def _decoder(request_class: type[Message]) -> Callable[[bytes], Message | _Undecodable]:
    parse = request_class.FromString

    def decode(data: bytes) -> Message | _Undecodable:
        try:
            return parse(data)
        except DecodeError:
            # The handler raises it: there the interceptor has authenticated the caller and
            # turns it into a rich status (a decoder's exception would be a bare UNKNOWN).
            return _Undecodable(_undecodable_error(request_class.DESCRIPTOR, data))

    return decode


def _refusing_undecodable(behavior: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: Any) -> Any:
        if type(request) is _Undecodable:
            raise request.error
        return await behavior(request, context)

    return handle


def _undecodable_error(descriptor: Descriptor, data: bytes) -> InvalidArgument:
    paths = invalid_utf8_fields(descriptor, data)
    if not paths:  # broken framing rather than a bad string: nothing to point at
        return InvalidArgument([], message=f"the request is not a valid {descriptor.name} message")
    violations = [
        FieldViolation(path, "must be UTF-8 text: protobuf string fields cannot hold a lone surrogate (U+D800-U+DFFF) "
                             "or bytes that are not UTF-8")
        for path in paths[:MAX_REPORTED_FIELDS]
    ]
    return InvalidArgument(violations)


def invalid_utf8_fields(descriptor: Descriptor, data: bytes | memoryview, prefix: str = "") -> list[str]:
    """The paths of the string fields in ``data``, the wire form of a ``descriptor`` message,
    that are not UTF-8 (``events[3].person.name``). Sub-messages protobuf parses are skipped, so
    a 10,000-event batch costs a walk of its top level plus the bad events. Unknown fields are
    not looked at (protobuf does not check them); malformed framing ends the walk."""
    found: list[str] = []
    seen: dict[int, int] = {}  # field number -> occurrences so far, the index of a repeated field
    data = memoryview(data)
    position, end = 0, len(data)
    try:
        while position < end:
            key, position = _varint(data, position)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                position = _varint(data, position)[1]
                continue
            if wire_type in (1, 5):
                position += 8 if wire_type == 1 else 4
                continue
            if wire_type != 2:  # groups: no proto3 message has them
                break
            length, position = _varint(data, position)
            chunk = data[position : position + length]
            position += length
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            path = prefix + field.name
            if field.is_repeated:  # map entries too: labels[0].value
                index = seen.get(number, 0)
                seen[number] = index + 1
                path = f"{path}[{index}]"
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    str(chunk, "utf-8")
                except UnicodeDecodeError:
                    found.append(path)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                try:
                    message_factory.GetMessageClass(field.message_type).FromString(chunk)  # C: most parts are fine
                except DecodeError:
                    found.extend(invalid_utf8_fields(field.message_type, chunk, path + "."))
    except IndexError:  # a varint or a length that runs past the end
        pass
    return found


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
