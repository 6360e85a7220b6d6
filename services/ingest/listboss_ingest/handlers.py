"""Ingest's use cases: plain functions over canonical events and a publisher.

Each takes the publisher first (:class:`~listboss_ingest.publisher.EventPublisher`, or a fake
with its ``publish_one`` and ``publish_many``), validates and normalizes what it is given
(:mod:`listboss_ingest.normalize`, or a source adapter for a platform's webhook,
:mod:`listboss_ingest.sources`), stamps the receive time and returns once JetStream has stored
the events. Bad input raises ``InvalidArgument`` with field paths relative to the argument
(``person.email``, ``payload``); the entrypoint prefixes them with its request's
(``event.person.email``). A caller who may not ingest for an event's producer is refused:
PERMISSION_DENIED for one event, a rejected result for an event of a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from google.protobuf import timestamp_pb2
from prometheus_client import Counter

from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_common.auth import Principal
from listboss_common.errors import (
    FieldViolation,
    InvalidArgument,
    ServiceError,
    invalid_field,
    permission_denied,
    unauthenticated,
)
from listboss_common.resources import PRODUCER
from listboss_ingest.normalize import normalize_in_place
from listboss_ingest.publisher import event_message_id

if TYPE_CHECKING:
    from listboss_ingest.publisher import EventPublisher
    from listboss_ingest.sources import WebhookSource

# Limits of one call (docs/api.md). Larger loads send several batches.
MAX_BATCH_EVENTS: Final = 10_000
MAX_REQUEST_ID_LENGTH: Final = 128
MAX_WEBHOOK_BYTES: Final = 1024 * 1024

# What became of each event of a batch.
ACCEPTED: Final = 1
DUPLICATE: Final = 2
REJECTED: Final = 3

# By source (EventSource name: GRPC, WEBHOOK). A batch's repeat of one of its events is a duplicate.
EVENTS_ACCEPTED = Counter("listboss_ingest_events_accepted_total", "Events stored on the events stream.", ["source"])
EVENTS_DUPLICATE = Counter(
    "listboss_ingest_events_duplicate_total", "Events already stored (same producer and event id).", ["source"]
)
EVENTS_REJECTED = Counter(
    "listboss_ingest_events_rejected_total", "Events refused: invalid, or not the caller's producer.", ["source"]
)


def _source_label(source: int) -> str:
    name = event_pb2.EventSource.Name(source) if source in event_pb2.EventSource.values() else "UNKNOWN"
    return name.removeprefix("EVENT_SOURCE_")


def _count_stored(source: int, duplicate: bool) -> None:
    (EVENTS_DUPLICATE if duplicate else EVENTS_ACCEPTED).labels(_source_label(source)).inc()


_NOT_THE_CALLERS: Final = (FieldViolation("producer", "the caller may not ingest events for this producer"),)


async def ingest_event(
    publisher: EventPublisher, event: event_pb2.Event, caller: Principal | None, *, source: event_pb2.EventSource
) -> tuple[event_pb2.Event, bool]:
    """Stores one canonical ``event`` (the argument is not changed) sent by ``caller``, whose
    own producer it is when it names none; ``source`` is its ``EventSource``.

    Returns the stored, normalized event and whether JetStream already had it (a duplicate).
    """
    accepted = event_pb2.Event()
    accepted.CopyFrom(event)
    if not accepted.producer and caller is not None and caller.producer:
        accepted.producer = caller.producer
    try:
        normalize_in_place(accepted)
        _authorize(caller, accepted.producer)
    except ServiceError:  # invalid, or not the caller's to send
        EVENTS_REJECTED.labels(_source_label(source)).inc()
        raise
    accepted.source = source
    accepted.receive_time.GetCurrentTime()
    duplicate = await publisher.publish_one(accepted)
    _count_stored(source, duplicate)
    return accepted, duplicate


@dataclass(frozen=True)
class BatchOutcome:
    """What :func:`ingest_batch` did: per event, in the order given, ``(event id, ACCEPTED |
    DUPLICATE | REJECTED, violations)`` (violations only for a rejected one), and the counts."""

    results: list[tuple[str, int, Sequence[FieldViolation]]]
    accepted: int
    duplicates: int
    rejected: int


async def ingest_batch(
    publisher: EventPublisher,
    events: Sequence[event_pb2.Event],
    request_id: str,
    caller: Principal,
    *,
    source: event_pb2.EventSource,
) -> BatchOutcome:
    """Stores the valid ones of ``events``, each judged on its own: an invalid event, or one of
    another producer than the caller's, is rejected; the same event twice is stored once.

    The events are the caller's to give away: they are normalized in place, without copies.
    ``request_id`` names the batch for JetStream's dedup, so that a retry stores only what was
    missing (when empty, one is derived from the events' ids).
    """
    if not events:
        raise invalid_field("events", "must hold at least one event")
    if len(events) > MAX_BATCH_EVENTS:
        raise invalid_field("events", f"must hold at most {MAX_BATCH_EVENTS} events; send several batches")
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise invalid_field("request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} characters")
    own_producer = caller.producer  # None for the internal role
    results: list[tuple[str, int, Sequence[FieldViolation]]] = []
    accepted: list[event_pb2.Event] = []
    accepted_at: list[int] = []  # their positions in results
    seen: set[tuple[str, str]] = set()
    rejected = repeated = 0
    for event in events:
        original_id = event.id
        if not event.producer and own_producer:
            event.producer = own_producer
        try:
            normalize_in_place(event)
        except InvalidArgument as error:
            rejected += 1
            results.append((original_id, REJECTED, error.violations))
            continue
        if own_producer is not None and event.producer != own_producer:
            rejected += 1
            results.append((original_id, REJECTED, _NOT_THE_CALLERS))
            continue
        key = (event.producer, event.id)
        if key in seen:
            # The same event twice in one request: stored once, the repeat is a duplicate.
            repeated += 1
            results.append((event.id, DUPLICATE, ()))
            continue
        seen.add(key)
        event.source = source
        accepted_at.append(len(results))
        results.append((event.id, ACCEPTED, ()))
        accepted.append(event)
    stored_before = 0
    if accepted:
        stamp = timestamp_pb2.Timestamp()
        stamp.GetCurrentTime()
        seconds, nanos = stamp.seconds, stamp.nanos
        for event in accepted:
            receive_time = event.receive_time
            receive_time.seconds = seconds
            receive_time.nanos = nanos
        request_id = request_id or bus.content_id(*(event_message_id(e) for e in accepted))
        duplicates = await publisher.publish_many(request_id, accepted)
        for position, duplicate in zip(accepted_at, duplicates, strict=True):
            if duplicate:
                results[position] = (results[position][0], DUPLICATE, ())
        stored_before = sum(duplicates)
    outcome = BatchOutcome(results, len(accepted) - stored_before, stored_before + repeated, rejected)
    label = _source_label(source)
    EVENTS_ACCEPTED.labels(label).inc(outcome.accepted)
    EVENTS_DUPLICATE.labels(label).inc(outcome.duplicates)
    EVENTS_REJECTED.labels(label).inc(outcome.rejected)
    return outcome


def webhook_event(source: WebhookSource, payload: bytes | str, producer: str) -> event_pb2.Event:
    """The canonical event one webhook ``payload`` of platform ``source`` describes, for
    ``producer`` (the caller has proved it may: a token of the producer's), stamped as received
    now; :func:`store_webhook_event` stores it."""
    try:
        size = len(payload.encode(errors="surrogatepass") if isinstance(payload, str) else payload)
        if size > MAX_WEBHOOK_BYTES:
            raise invalid_field("payload", f"must be at most {MAX_WEBHOOK_BYTES} bytes")
        return source.event_from_webhook(payload, producer, receive_time=datetime.now(UTC))
    except InvalidArgument:
        EVENTS_REJECTED.labels(_source_label(event_pb2.EVENT_SOURCE_WEBHOOK)).inc()
        raise


async def store_webhook_event(
    publisher: EventPublisher, event: event_pb2.Event, *, timeout: float | None = None
) -> bool:
    """Stores the event :func:`webhook_event` made; True when JetStream already had it (a
    duplicate). ``timeout`` bounds the wait for JetStream (default: the publisher's)."""
    duplicate = await publisher.publish_one(event, timeout=timeout)
    _count_stored(event.source, duplicate)
    return duplicate


def _authorize(caller: Principal | None, producer: str) -> None:
    """Another producer's event answers PERMISSION_DENIED naming only that producer."""
    if caller is None:
        raise unauthenticated("no authenticated caller")
    if not caller.may_access(producer):
        raise permission_denied(PRODUCER.format(producer))
