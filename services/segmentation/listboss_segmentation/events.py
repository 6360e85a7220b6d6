"""Turning canonical events into contact changes: the segmentation consumer's work."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from sqlalchemy.engine import Engine

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import bus, db
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


async def publish_changes(
    js: JetStreamContext, producer: str, changes: Sequence[contact_change_pb2.ContactChange], *id_prefix: str
) -> None:
    """Publishes a producer's changes packed in ContactChangeBatch messages and waits
    until JetStream has stored every one. The message ids derive from the events, so
    a retry of the same changes is dropped as a duplicate."""
    publishes = []
    for group in bus.pack(changes, lambda c: c.ByteSize()):
        payload = contact_change_pb2.ContactChangeBatch(changes=group).SerializeToString()
        msg_id = bus.content_id(*id_prefix, *(c.event.id for c in group))
        publishes.append(js.publish(bus.changes_subject(producer), payload, headers={"Nats-Msg-Id": msg_id}))
    await asyncio.gather(*publishes)


def decode_events(messages: Sequence[Msg]) -> list[event_pb2.Event]:
    return bus.unpack(messages, bus.EVENT_ITEMS)


class EventProcessor:
    """Handles chunks of events (its worker bounds them, isolates a failing event and
    waits out outages): records new products, decides each event's tag operations and
    publishes the changes, packed per producer."""

    def __init__(self, js: JetStreamContext, engine: Engine, rules: RuleCache | None = None):
        self._js = js
        self._engine = engine
        # Each product's automatic and ACTIVE custom rules, compiled and kept fresh.
        self.rules = rules or RuleCache(engine)
        # Products known to exist; saves a database round trip per event.
        self._known_products: set[tuple[str, str]] = set()

    async def handle(self, events: Sequence[event_pb2.Event]) -> None:
        await self._record_new_products(events)
        indexes = await self.rules.rules((event.producer, event.product.id) for event in events)
        changes: dict[str, list[contact_change_pb2.ContactChange]] = defaultdict(list)
        for event in events:
            changes[event.producer].append(change_for(event, indexes[(event.producer, event.product.id)]))
        # Acks come only after every change is stored on JetStream.
        await asyncio.gather(
            *(publish_changes(self._js, producer, group, producer) for producer, group in changes.items())
        )
        log.info("events segmented", events=len(events))

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

        await db.write(self._engine, storage.ensure_products, list(new.values()))
        self._known_products.update(new)
