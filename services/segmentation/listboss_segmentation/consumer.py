"""The bus entrypoint: canonical events in, contact changes out.

:class:`EventProcessor` handles the chunks of decoded events its
:class:`~listboss_common.worker.PullWorker` hands it (the worker bounds them,
isolates a failing event and waits out outages): it records products first seen,
evaluates each event under its product's rules (:mod:`domain`, compiled and
cached by :mod:`rules`), translates the decisions (:mod:`messages`) and
publishes them packed per producer and partition (``listboss.changes.<producer>.<partition>``,
the partition a stable hash of the event's person: :func:`listboss_common.bus.event_partition`),
so each contacts replica receives the changes of the contacts it works on alone. Changes are published as bytes: each is its
event's serialized bytes, the outcome of the rules that fired (encoded once per
product and combination of rules, :class:`~listboss_segmentation.messages.ChangeEncoder`)
and the contact data, so no message is copied field by field.

Persons arrive sealed (:mod:`listboss_common.personal_data`): the rules see the
unsealed person, and the change carries the event with its person still sealed
and the chosen contact data sealed with the same key. A person erased meanwhile
is evaluated as absent and sends no contact data.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter
from sqlalchemy.engine import Engine

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import bus, personal_data, tracing
from listboss_segmentation import domain, handlers
from listboss_segmentation.messages import ChangeEncoder, change_from, clear_contact_data, event_type_name
from listboss_segmentation.rules import RuleCache
from listboss_segmentation.unit_of_work import UnitOfWork

log = structlog.get_logger("listboss.segmentation.consumer")

RULES_EVALUATED = Counter(
    "listboss_segmentation_rules_evaluated_total",
    "Segmentation rules (automatic and custom) evaluated against live events.",
)


def change_for(
    event: event_pb2.Event, index: domain.RuleIndex = domain.AUTOMATIC_INDEX
) -> contact_change_pb2.ContactChange:
    """The change for one event under a product's rules (by default the automatic ones only);
    an event without a product gets none (``domain.NO_PRODUCT_INDEX``)."""
    if not domain.names_a_product(event):
        index = domain.NO_PRODUCT_INDEX
    return change_from(event, domain.evaluate(index, event_type_name(event.type), event))


async def publish_changes(
    js: JetStreamContext,
    producer: str,
    changes: Sequence[contact_change_pb2.ContactChange],
    *id_prefix: str,
    partitions: int | None = None,
) -> None:
    """Publishes a producer's changes packed in ContactChangeBatch messages, each message on
    the subject of its changes' partition (a message never mixes partitions), and waits until
    JetStream has stored every one. The message ids derive from the events, so a retry of the
    same changes is dropped as a duplicate. With tracing on, each message carries the
    ``traceparent`` of the current span (the worker's chunk span). ``partitions`` defaults to
    LISTBOSS_CONTACTS_PARTITIONS."""
    count = partitions or bus.contacts_partitions()
    by_partition: dict[int, list[contact_change_pb2.ContactChange]] = defaultdict(list)
    for change in changes:
        by_partition[bus.event_partition(change.event, count)].append(change)
    publishes = []
    for partition, in_partition in sorted(by_partition.items()):
        for group in bus.pack(in_partition, lambda c: c.ByteSize()):
            payload = contact_change_pb2.ContactChangeBatch(changes=group).SerializeToString()
            msg_id = bus.content_id(*id_prefix, *(c.event.id for c in group))
            headers = {"Nats-Msg-Id": msg_id}
            tracing.inject(headers)
            publishes.append(js.publish(bus.changes_subject(producer, partition), payload, headers=headers))
    await asyncio.gather(*publishes)


async def publish_serialized_changes(
    js: JetStreamContext, producer: str, partition: int, changes: Sequence[tuple[str, bytes]], *id_prefix: str
) -> None:
    """:func:`publish_changes` for changes of one partition already serialized, as (event id,
    ContactChange bytes): packed in as few messages as the size limit allows, published
    together, with the same message ids and headers."""
    publishes = []
    subject = bus.changes_subject(producer, partition)
    for group in bus.pack(changes, lambda change: len(change[1])):
        msg_id = bus.content_id(*id_prefix, *(event_id for event_id, _ in group))
        headers = {"Nats-Msg-Id": msg_id}
        tracing.inject(headers)
        payload = bus.packed_message([change for _, change in group])
        publishes.append(js.publish(subject, payload, headers=headers))
    await asyncio.gather(*publishes)


_EVENT_TYPE_NAMES: dict[int, str] = {}


def _event_type_name(event_type: int) -> str:
    """:func:`event_type_name`, remembered: it runs for every event."""
    name = _EVENT_TYPE_NAMES.get(event_type)
    if name is None:
        name = _EVENT_TYPE_NAMES[event_type] = event_type_name(event_type)
    return name


def decode_events(received: Sequence[Msg]) -> list[event_pb2.Event]:
    """The events of received messages, persons still sealed (see :func:`decide_sealed`)."""
    return bus.unpack(received, bus.EVENT_ITEMS)


def decide_sealed(
    event: event_pb2.Event,
    opened: personal_data.Opened,
    decide: Callable[[event_pb2.Event], contact_change_pb2.ContactChange | None],
) -> contact_change_pb2.ContactChange | None:
    """``decide(event)`` with the event's person unsealed, its change sealed again.

    The clear person is put in ``event`` only for the call and removed afterwards, so
    the event (which a dead letter may carry) stays as it came."""
    if not opened.sealed:
        return decide(event)
    if opened.person is not None:
        event.person.CopyFrom(opened.person)
    try:
        change = decide(event)
    finally:
        event.ClearField("person")
    if change is None:
        return None
    change.event.ClearField("person")
    if opened.key is None:  # erased: nothing of the person to send
        change.ClearField("contact_data")
    elif change.contact_data:
        personal_data.seal_contact_data(change, opened.key)
    return change


class EventProcessor:
    """The worker's callback (``handle``): one chunk of decoded events at a time."""

    def __init__(
        self,
        js: JetStreamContext,
        engine: Engine,
        rules: RuleCache | None = None,
        person_keys: personal_data.PersonKeys | None = None,
        partitions: int | None = None,
    ):
        self._js = js
        # LISTBOSS_CONTACTS_PARTITIONS unless given; a bad value fails the start.
        self._partitions = partitions or bus.contacts_partitions()
        self._engine = engine
        # Opens sealed persons; the service always passes it (tests of clear events need not).
        self._person_keys = person_keys
        # Each product's automatic and ACTIVE custom rules, compiled and kept fresh.
        self.rules = rules or RuleCache(engine)
        # Products known to exist; saves a database round trip per event.
        self._known_products: set[tuple[str, str]] = set()
        # The encoded outcome of each product's combinations of fired rules.
        self._encoder = ChangeEncoder()

    async def handle(self, events: Sequence[event_pb2.Event]) -> None:
        opened = await personal_data.open_events(self._person_keys, events)
        await self._record_new_products(events)
        indexes = await self.rules.rules((event.producer, event.product.id) for event in events)
        # Per (producer, partition): a message carries the changes of one partition only.
        changes: dict[tuple[str, int], list[tuple[str, bytes]]] = defaultdict(list)
        partitions = self._partitions
        evaluated = 0
        nonces = iter(personal_data.nonces(len(events)))
        encoder = self._encoder
        for event, person in zip(events, opened, strict=True):
            product = event.product
            index = indexes[(event.producer, product.id)] if product.id else domain.NO_PRODUCT_INDEX
            rules = index.get(_event_type_name(event.type), domain.NO_RULES)
            evaluated += len(rules.rules)
            sealed = person.sealed
            if sealed and person.person is not None:
                event.person.CopyFrom(person.person)
            try:
                fired = domain.fire(rules, event)
                outcome = encoder.outcome(event.producer, product.id, product.name, fired)
                # An erased person sends nothing of theirs (decide_sealed's rule, without its copies).
                chosen = domain.contact_data(outcome.contact_data, event) if not sealed or person.key else {}
            finally:
                if sealed:
                    event.ClearField("person")  # the event travels on with its person sealed only
            serialized = event.SerializeToString()
            if not sealed:
                change = encoder.change(serialized, outcome, clear_contact_data(chosen))
            elif chosen and person.key is not None:
                sealed_data = personal_data.sealed_contact_data(
                    person.key, chosen, event.producer, event.id, next(nonces)
                )
                change = encoder.change(serialized, outcome, sealed_contact_data=sealed_data)
            else:
                change = encoder.change(serialized, outcome)
            changes[(event.producer, bus.event_partition(event, partitions))].append((event.id, change))
        RULES_EVALUATED.inc(evaluated)
        # Acks come only after every change is stored on JetStream.
        await asyncio.gather(
            *(
                publish_serialized_changes(self._js, producer, partition, group, producer)
                for (producer, partition), group in changes.items()
            )
        )
        log.info("events segmented", events=len(events))

    async def _record_new_products(self, events: Sequence[event_pb2.Event]) -> None:
        new: dict[tuple[str, str], tuple[str, str, str, int]] = {}
        for event in events:
            if not domain.names_a_product(event):
                continue  # nothing to register
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
        await asyncio.to_thread(handlers.record_products_seen, UnitOfWork(self._engine), list(new.values()))
        self._known_products.update(new)
