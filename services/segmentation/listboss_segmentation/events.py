"""Turning canonical events into contact changes: the segmentation consumer's work."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import structlog
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlalchemy.engine import Engine

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_common.resources import SEGMENTATION
from listboss_segmentation import domain, storage

log = structlog.get_logger("listboss.segmentation.events")

_ACTIONS = {
    domain.TagAction.ADD: contact_change_pb2.TagOperation.ACTION_ADD,
    domain.TagAction.REMOVE: contact_change_pb2.TagOperation.ACTION_REMOVE,
}
_TYPE_PREFIX = "EVENT_TYPE_"


def event_type_name(event_type: int) -> str:
    """EVENT_TYPE_PURCHASE_APPROVED -> PURCHASE_APPROVED (the webhook's name)."""
    return event_pb2.EventType.Name(event_type).removeprefix(_TYPE_PREFIX)


def change_for(event: event_pb2.Event) -> contact_change_pb2.ContactChange:
    operations, fired = domain.decide(event_type_name(event.type))
    product_name = event.product.name
    change = contact_change_pb2.ContactChange(event=event)
    for operation in operations:
        change.tag_operations.add(
            action=_ACTIONS[operation.action],
            tag_key=operation.tag_key,
            tag_display_name=domain.tag_display_name(operation.tag_key, product_name),
            automatic=True,
            segmentation=SEGMENTATION.format(event.producer, event.product.id, operation.segmentation_id),
        )
    change.fired_segmentations.extend(
        SEGMENTATION.format(event.producer, event.product.id, segmentation_id) for segmentation_id in fired
    )
    return change


def decode_events(messages: Sequence[Msg]) -> list[event_pb2.Event]:
    events: list[event_pb2.Event] = []
    for message in messages:
        batch = event_pb2.EventBatch()
        try:
            batch.ParseFromString(message.data)
        except DecodeError as error:
            raise bus.PoisonMessage(f"not an EventBatch: {error}") from error
        events.extend(batch.events)
    return events


class EventProcessor:
    """Handles batches of event messages: records new products, decides each
    event's tag operations and publishes the changes, packed per producer."""

    def __init__(self, js: JetStreamContext, engine: Engine):
        self._js = js
        self._engine = engine
        # Products known to exist; saves a database round trip per event.
        self._known_products: set[tuple[str, str]] = set()

    async def handle(self, messages: Sequence[Msg]) -> None:
        events = decode_events(messages)
        await self._record_new_products(events)
        changes: dict[str, list[contact_change_pb2.ContactChange]] = defaultdict(list)
        for event in events:
            changes[event.producer].append(change_for(event))
        publishes = []
        for producer, producer_changes in changes.items():
            for group in bus.pack(producer_changes, lambda c: c.ByteSize()):
                payload = contact_change_pb2.ContactChangeBatch(changes=group).SerializeToString()
                msg_id = bus.content_id(producer, *(c.event.id for c in group))
                publishes.append(
                    self._js.publish(bus.changes_subject(producer), payload, headers={"Nats-Msg-Id": msg_id})
                )
        # Acks come only after every change is stored on JetStream.
        await asyncio.gather(*publishes)
        log.info("events segmented", events=len(events), messages=len(messages))

    async def _record_new_products(self, events: Sequence[event_pb2.Event]) -> None:
        new: dict[tuple[str, str], tuple[str, str, str, int]] = {}
        for event in events:
            key = (event.producer, event.product.id)
            if key not in self._known_products and key not in new:
                new[key] = (
                    event.producer,
                    event.product.id,
                    event.product.name,
                    event.product.kind or event_pb2.PRODUCT_KIND_PRODUCT,
                )
        if not new:
            return

        def write() -> None:
            with self._engine.begin() as connection:
                storage.ensure_products(connection, list(new.values()))

        await asyncio.to_thread(write)
        self._known_products.update(new)
