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
from listboss_segmentation import domain, storage
from listboss_segmentation.rules import RuleCache

log = structlog.get_logger("listboss.segmentation.events")

_ACTIONS = {
    domain.TagAction.ADD: contact_change_pb2.TagOperation.ACTION_ADD,
    domain.TagAction.REMOVE: contact_change_pb2.TagOperation.ACTION_REMOVE,
}
_TYPE_PREFIX = "EVENT_TYPE_"


def event_type_name(event_type: int) -> str:
    """EVENT_TYPE_PURCHASE_APPROVED -> PURCHASE_APPROVED (the webhook's name)."""
    return event_pb2.EventType.Name(event_type).removeprefix(_TYPE_PREFIX)


def change_for(
    event: event_pb2.Event, index: domain.RuleIndex = domain.AUTOMATIC_INDEX
) -> contact_change_pb2.ContactChange:
    """The change for one event under a product's rules (by default the automatic ones only)."""
    return change_from(event, domain.evaluate(index, event_type_name(event.type), event))


def change_from(event: event_pb2.Event, decision: domain.Decision, backfill: str = "") -> contact_change_pb2.ContactChange:
    product_name = event.product.name
    # SEGMENTATION.format, spelled out: this runs for every operation of every event.
    base = f"producers/{event.producer}/products/{event.product.id}/segmentations/"
    automatic = {rule.segmentation_id for rule in decision.fired if rule.automatic}
    operations = [
        contact_change_pb2.TagOperation(
            action=_ACTIONS[operation.action],
            tag_key=operation.tag_key,
            tag_display_name=domain.tag_display_name(operation.tag_key, product_name),
            automatic=operation.segmentation_id in automatic,
            segmentation=base + operation.segmentation_id,
        )
        for operation in decision.operations
    ]
    return contact_change_pb2.ContactChange(
        event=event,
        tag_operations=operations,
        fired_segmentations=[base + rule.segmentation_id for rule in decision.fired],
        contact_data=decision.contact_data,
        backfill=backfill,
    )


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

    def __init__(self, js: JetStreamContext, engine: Engine, rules: RuleCache | None = None):
        self._js = js
        self._engine = engine
        # Each product's automatic and ACTIVE custom rules, compiled and kept fresh.
        self.rules = rules or RuleCache(engine)
        # Products known to exist; saves a database round trip per event.
        self._known_products: set[tuple[str, str]] = set()

    async def handle(self, messages: Sequence[Msg]) -> None:
        events = decode_events(messages)
        await self._record_new_products(events)
        indexes = await self.rules.rules((event.producer, event.product.id) for event in events)
        changes: dict[str, list[contact_change_pb2.ContactChange]] = defaultdict(list)
        for event in events:
            changes[event.producer].append(change_for(event, indexes[(event.producer, event.product.id)]))
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
