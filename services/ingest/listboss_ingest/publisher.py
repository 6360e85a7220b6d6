"""Publishing canonical events to JetStream, answering only once they are stored.

The last step before a publish seals each event's person with the person's data key
(:mod:`listboss_common.personal_data`): the keys of a call's distinct persons come from
the cache, or are fetched or created all at once, before anything is published, so a
call that cannot reach the key store publishes nothing and fails UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError

from listboss.events.v1 import event_pb2
from listboss_common import bus, personal_data, tracing
from listboss_common.errors import ServiceError, unavailable

PUBLISH_TIMEOUT = 5.0

# What a publish (or a person-key lookup) raises while NATS or JetStream is away.
_NATS_FAILURES = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    NoStreamResponseError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
)


def event_message_id(event: event_pb2.Event) -> str:
    # Event ids are unique per producer, so the producer is part of the dedup key.
    return f"{event.producer}/{event.id}"


def _bus_unavailable(cause: str) -> ServiceError:
    return unavailable(f"the event bus did not store the event; retry ({cause})", "BUS_UNAVAILABLE")


class EventPublisher:
    """Publishes to JetStream and waits for its acknowledgement.

    ``timeout`` bounds the wait for the acknowledgement (a publish call may pass a shorter
    one). While the NATS connection is down a publish fails at once with UNAVAILABLE instead
    of queueing in the client's reconnect buffer, so callers learn promptly that they must
    retry.
    """

    def __init__(
        self,
        js: JetStreamContext,
        timeout: float = PUBLISH_TIMEOUT,
        person_keys: personal_data.PersonKeys | None = None,
    ):
        self._js = js
        self._nc = getattr(js, "_nc", None)  # nats-py keeps the connection here; used to fail fast
        self.timeout = timeout
        # The service always passes one; without it persons are published in clear
        # (tests of other concerns).
        self._person_keys = person_keys

    async def _seal(self, events: Sequence[event_pb2.Event]) -> None:
        """Seals the person of every event that has one, in place. Sealed data is ingest's
        own: whatever a caller put in ``sealed_person`` is discarded first."""
        if self._person_keys is None:
            return
        for event in events:
            event.ClearField("sealed_person")
        if self._nc is not None and not self._nc.is_connected:
            raise _bus_unavailable("not connected to NATS")
        with_person = [event for event in events if event.HasField("person")]
        if not with_person:
            return
        try:
            keys = await self._person_keys.for_people((event.producer, event.person.email) for event in with_person)
        except _NATS_FAILURES as error:
            raise _bus_unavailable(type(error).__name__) from error
        except APIError as error:
            raise _bus_unavailable(f"person keys: {error.description}") from error
        for event in with_person:
            personal_data.seal_person(event, keys[(event.producer, event.person.email)])

    async def _publish(self, producer: str, payload: bytes, msg_id: str, timeout: float | None = None) -> bool:
        if self._nc is not None and not self._nc.is_connected:
            raise _bus_unavailable("not connected to NATS")
        subject = bus.events_subject(producer)
        headers = {"Nats-Msg-Id": msg_id}
        try:
            # A producer span per packed message (tracing on): its traceparent rides in the headers.
            with tracing.publishing(subject, headers):
                ack = await self._js.publish(subject, payload, timeout=timeout or self.timeout, headers=headers)
        except _NATS_FAILURES as error:
            raise _bus_unavailable(type(error).__name__) from error
        return bool(ack.duplicate)

    async def publish_one(self, event: event_pb2.Event, timeout: float | None = None) -> bool:
        """Stores one event (sealed: the argument keeps its person); True when JetStream
        already had it (a duplicate)."""
        if self._person_keys is not None and event.HasField("person"):
            sealed = event_pb2.Event()
            sealed.CopyFrom(event)
            await self._seal([sealed])
            event = sealed
        return await self._publish(
            event.producer, pack_events([event.SerializeToString()]), event_message_id(event), timeout
        )

    async def publish_many(self, request_id: str, events: Sequence[event_pb2.Event]) -> list[bool]:
        """Stores events packed per producer under ``request_id``; one duplicate flag per event.

        Each event is serialized once and the packed ``EventBatch`` is built from those bytes
        (no protobuf copies); the packed messages are published concurrently. The events
        are sealed in place: they are the caller's to give away.
        """
        await self._seal(events)
        serialized = [event.SerializeToString() for event in events]
        jobs, owners = [], []
        for producer, group, number in pack_groups(events, serialized):
            msg_id = f"{producer}/batch/{request_id}/{number}"
            jobs.append(self._publish(producer, pack_events([serialized[i] for i in group]), msg_id))
            owners.append(group)
        duplicates = [False] * len(events)
        for group, duplicate in zip(owners, await asyncio.gather(*jobs), strict=True):
            for index in group:
                duplicates[index] = duplicate
        return duplicates


# The most a set receive_time takes in an Event: tag, length, and a Timestamp of at most
# 1 + 10 (seconds) + 1 + 5 (nanos) bytes.
_MAX_RECEIVE_TIME_BYTES = 2 + 17


def _stable_size(event: event_pb2.Event, serialized_size: int) -> int:
    """``event``'s size for packing, the same on every retry of a request.

    receive_time is stamped anew on each attempt and its varints vary in length, so it counts
    at its maximum: a retried request then packs into exactly the same messages as the first
    attempt, which is what makes ``<producer>/batch/<request_id>/<n>`` a safe dedup key.
    """
    if event.HasField("receive_time"):
        serialized_size -= 2 + event.receive_time.ByteSize()
    return serialized_size + _MAX_RECEIVE_TIME_BYTES


def pack_groups(events: Sequence[event_pb2.Event], serialized: Sequence[bytes]) -> list[tuple[str, list[int], int]]:
    """(producer, indexes of the events in one packed message, message number), deterministic
    for a given request whatever the receive times."""
    by_producer: dict[str, list[int]] = defaultdict(list)
    for index, event in enumerate(events):
        by_producer[event.producer].append(index)
    groups = []
    for producer, indexes in by_producer.items():
        for number, group in enumerate(bus.pack(indexes, lambda i: _stable_size(events[i], len(serialized[i])))):
            groups.append((producer, group, number))
    return groups


def pack_events(serialized: Sequence[bytes]) -> bytes:
    """The wire form of ``EventBatch(events=...)`` from already serialized events."""
    return bus.packed_message(serialized)
