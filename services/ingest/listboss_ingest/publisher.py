"""Publishing canonical events to JetStream, answering only once they are stored."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError

from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_common.errors import unavailable

PUBLISH_TIMEOUT = 5.0


def event_message_id(event: event_pb2.Event) -> str:
    # Event ids are unique per producer, so the producer is part of the dedup key.
    return f"{event.producer}/{event.id}"


class EventPublisher:
    def __init__(self, js: JetStreamContext):
        self._js = js

    async def _publish(self, producer: str, events: Sequence[event_pb2.Event], msg_id: str) -> bool:
        payload = event_pb2.EventBatch(events=events).SerializeToString()
        try:
            ack = await self._js.publish(
                bus.events_subject(producer), payload, timeout=PUBLISH_TIMEOUT, headers={"Nats-Msg-Id": msg_id}
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, NoStreamResponseError,
                nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError) as error:
            raise unavailable(f"the event bus did not store the event; retry ({type(error).__name__})",
                              "BUS_UNAVAILABLE") from error
        return bool(ack.duplicate)

    async def publish_one(self, event: event_pb2.Event) -> bool:
        """Stores one event; True when JetStream already had it (a duplicate)."""
        return await self._publish(event.producer, [event], event_message_id(event))

    async def publish_many(self, request_id: str, events: Sequence[event_pb2.Event]) -> list[bool]:
        """Stores events packed per producer under ``request_id``; one duplicate flag per event."""
        by_producer: dict[str, list[int]] = defaultdict(list)
        for index, event in enumerate(events):
            by_producer[event.producer].append(index)
        jobs, owners = [], []
        for producer, indexes in by_producer.items():
            for number, group in enumerate(bus.pack(indexes, lambda i: events[i].ByteSize())):
                msg_id = f"{producer}/batch/{request_id}/{number}"
                jobs.append(self._publish(producer, [events[i] for i in group], msg_id))
                owners.append(group)
        duplicates = [False] * len(events)
        for group, duplicate in zip(owners, await asyncio.gather(*jobs)):
            for index in group:
                duplicates[index] = duplicate
        return duplicates
