"""Custom segmentations on the bus (real nats-server with JetStream, SQLite and
PostgreSQL): activation and deactivation mid-stream, two replicas on one durable
consumer, and a rule change reaching the other replica within a second."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss_common import bus
from listboss_common.worker import PullWorker, WorkerSpec
from listboss_segmentation.backfill import Backfiller
from listboss_segmentation.consumer import EventProcessor
from listboss_segmentation.grpc_api import SegmentationServicer
from listboss_segmentation.rules import RULES_CHANGED_SUBJECT, RuleCache, change_message
from listboss_testing import bearer, eventually

ALICE = bearer("alice")
PARENT = "producers/alice/products/42"
NAME = f"{PARENT}/segmentations/billet-buyers"
CUSTOM = NAME


class Replica:
    """One segmentation replica: its own NATS connection, rule cache (listening for
    broadcasts), event processor and pull worker on the shared durable consumer."""

    def __init__(self, nc, engine, batch_size=5):
        self.nc = nc
        self.js = nc.jetstream()
        self.rules = RuleCache(engine)
        self.processor = EventProcessor(self.js, engine, self.rules)
        self.handled: Counter[str] = Counter()
        spec = WorkerSpec(stream=bus.EVENTS, durable="segmentation", items=bus.EVENT_ITEMS, batch_size=batch_size)
        self.worker = PullWorker(self.js, spec, self.handle)
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def handle(self, events):
        await self.processor.handle(events)
        for event in events:
            self.handled[event.id] += 1

    async def notify(self, producer, product):
        self.rules.invalidate(producer, product)
        await bus.broadcast(self.nc, RULES_CHANGED_SUBJECT, change_message(producer, product))

    async def start(self):
        await bus.listen(self.nc, RULES_CHANGED_SUBJECT, self.rules.on_broadcast)
        await self.worker.subscribe()
        self.task = asyncio.create_task(self.worker.run(self.stop))

    async def close(self):
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
        await self.nc.close()


@pytest.fixture
async def replicas(nats_server, engine):
    made = []

    async def make(**kwargs):
        nc = await bus.connect(nats_server.url, name=f"replica-{len(made)}")
        await bus.ensure_streams(nc.jetstream(), [bus.EVENTS, bus.CHANGES, bus.DEADLETTER])
        replica = Replica(nc, engine, **kwargs)
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.close()


@pytest.fixture
async def api(engine, replicas, serve):
    """SegmentationService served by the first replica (its notify broadcasts on NATS)."""
    first = await replicas()
    stub, _ = await serve(SegmentationServicer(engine, notify=first.notify, backfiller=Backfiller(first.js, engine)))
    await stub.RegisterProduct(
        pb.RegisterProductRequest(
            parent="producers/alice", product_id="42", display_name="Course", kind=event_pb2.PRODUCT_KIND_PRODUCT
        ),
        metadata=bearer(None),
    )
    await stub.CreateSegmentation(
        pb.CreateSegmentationRequest(
            parent=PARENT,
            segmentation_id="billet-buyers",
            segmentation=pb.Segmentation(
                display_name="Billet buyers",
                provider=pb.PROVIDER_SEND,
                event_type=event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED,
                condition=pb.Condition(
                    clause=pb.Clause(
                        field="payment_type", operator=pb.OPERATOR_EQUALS, value=pb.Value(string_value="BILLET")
                    )
                ),
                contact_data=[pb.CONTACT_DATA_PHONE],
                action=pb.TagAction(add_tags=["billet-buyers"]),
            ),
        ),
        metadata=ALICE,
    )
    return stub, first


def billet(event_id: str, payment_type: str = "BILLET", email: str | None = None) -> event_pb2.Event:
    event = event_pb2.Event(
        id=event_id,
        producer="alice",
        type=event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED,
        product=event_pb2.Product(id="42", name="Course"),
        person=event_pb2.Person(email=email or f"{event_id}@example.com", name="Ana", phone="+55 11 9999"),
        purchase=event_pb2.Purchase(payment_type=payment_type),
        source=event_pb2.EVENT_SOURCE_GRPC,
    )
    event.occur_time.FromSeconds(1_700_000_000)
    return event


async def publish(js, *events):
    for event in events:
        await js.publish(
            bus.events_subject(event.producer),
            event_pb2.EventBatch(events=[event]).SerializeToString(),
            headers={"Nats-Msg-Id": f"{event.producer}/{event.id}"},
        )


async def changes(js) -> dict[str, list[contact_change_pb2.ContactChange]]:
    info = await js.stream_info(bus.CHANGES.name)
    found: dict[str, list[contact_change_pb2.ContactChange]] = {}
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(bus.CHANGES.name, seq=seq)
        for change in contact_change_pb2.ContactChangeBatch.FromString(message.data).changes:
            found.setdefault(change.event.id, []).append(change)
    return found


async def processed(js, count):
    async def check():
        info = await js.consumer_info(bus.EVENTS.name, "segmentation")
        return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq >= count

    await eventually(check)


def fired(change) -> list[str]:
    return [name.rsplit("/", 1)[1] for name in change.fired_segmentations]


async def test_activation_and_deactivation_take_effect_mid_stream(api):
    stub, replica = api
    await replica.start()
    js = replica.js
    await publish(js, billet("e1"))
    await processed(js, 1)
    await stub.ActivateSegmentation(pb.ActivateSegmentationRequest(name=CUSTOM), metadata=ALICE)
    await publish(js, billet("e2"), billet("e3", payment_type="PIX"))
    await processed(js, 3)
    await stub.DeactivateSegmentation(pb.DeactivateSegmentationRequest(name=CUSTOM), metadata=ALICE)
    await publish(js, billet("e4"))
    await processed(js, 4)

    found = await changes(js)
    assert {k: len(v) for k, v in found.items()} == {"e1": 1, "e2": 1, "e3": 1, "e4": 1}
    assert fired(found["e1"][0]) == ["auto-billet-printed"]
    assert fired(found["e2"][0]) == ["auto-billet-printed", "billet-buyers"]
    assert fired(found["e3"][0]) == ["auto-billet-printed"]  # active, but PIX does not match
    assert fired(found["e4"][0]) == ["auto-billet-printed"]
    e2 = found["e2"][0]
    assert [(o.tag_key, o.automatic, o.segmentation) for o in e2.tag_operations][-1] == ("billet-buyers", False, CUSTOM)
    assert dict(e2.contact_data) == {"email": "e2@example.com", "name": "Ana", "phone": "+55 11 9999"}
    assert "phone" not in found["e1"][0].contact_data  # chosen only by the custom segmentation
    # Loaded on demand, once per change: not per event.
    assert replica.rules.loads <= 3


async def test_a_rule_change_reaches_another_replica_within_a_second(api, replicas):
    stub, _first = api
    other = await replicas()
    await other.start()
    key = ("alice", "42")
    before = await other.rules.rules([key])
    assert [r.segmentation_id for r in before[key]["PURCHASE_BILLET_PRINTED"].rules] == ["auto-billet-printed"]

    started = time.monotonic()
    await stub.ActivateSegmentation(pb.ActivateSegmentationRequest(name=CUSTOM), metadata=ALICE)

    async def dropped():
        return other.rules.cached(*key) is None

    await eventually(dropped, timeout=1.0)
    seen_after = time.monotonic() - started
    after = await other.rules.rules([key])
    assert [r.segmentation_id for r in after[key]["PURCHASE_BILLET_PRINTED"].rules] == [
        "auto-billet-printed",
        "billet-buyers",
    ]
    assert seen_after < 1.0


async def test_two_replicas_share_the_stream_with_no_lost_or_duplicated_effect(api, replicas):
    stub, first = api
    second = await replicas()
    await stub.ActivateSegmentation(pb.ActivateSegmentationRequest(name=CUSTOM), metadata=ALICE)
    await first.start()
    await second.start()
    events = [billet(f"e{i:03d}", payment_type="BILLET" if i % 2 else "PIX") for i in range(200)]
    await publish(first.js, *events)
    await processed(first.js, 200)

    handled = first.handled + second.handled
    assert set(handled) == {e.id for e in events}
    assert first.handled and second.handled, "both replicas should have taken a share"
    found = await changes(first.js)
    assert set(found) == {e.id for e in events}
    assert all(len(v) == 1 for v in found.values())  # one change per event
    for index, event in enumerate(events):
        expected = ["auto-billet-printed", "billet-buyers"] if index % 2 else ["auto-billet-printed"]
        assert fired(found[event.id][0]) == expected, event.id


async def test_safety_refresh_reloads_stale_rules(engine):
    now = [0.0]
    cache = RuleCache(engine, max_age=30, clock=lambda: now[0])
    await cache.rules([("alice", "42")])
    assert cache.loads == 1
    await cache.rules([("alice", "42")])
    assert cache.loads == 1
    now[0] = 31
    await cache.rules([("alice", "42")])
    assert cache.loads == 2


async def test_an_invalidation_during_a_load_is_not_lost(engine):
    cache = RuleCache(engine)
    original = cache._load

    def slow_load(keys):
        result = original(keys)
        if cache.loads == 0:
            cache.invalidate("alice", "42")  # a change committed while we read
        return result

    cache._load = slow_load
    await cache.rules([("alice", "42")])
    assert cache.loads == 2  # the racing load was not kept; the second one was
    assert cache.cached("alice", "42") is not None


async def test_replay_reads_a_subject_to_its_end(nats_server):
    nc = await bus.connect(nats_server.url, name="replay")
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.EVENTS])
    assert [m async for m in bus.replay(js, bus.EVENTS, bus.events_subject("nobody"))] == []
    await publish(js, billet("a"), billet("b"))
    await js.publish(bus.events_subject("bob"), b"other producer")
    await publish(js, billet("c"))
    read = [
        event_pb2.EventBatch.FromString(m.data).events[0].id
        async for m in bus.replay(js, bus.EVENTS, bus.events_subject("alice"))
    ]
    assert read == ["a", "b", "c"]
    await nc.close()


async def test_a_replica_that_missed_the_broadcast_applies_the_change_after_its_safety_refresh(api, replicas, engine):
    stub, _first = api
    # A replica that hears no broadcast (as while its NATS connection was away), with rules
    # refreshed after one second instead of thirty.
    deaf = await replicas()
    deaf.rules = deaf.processor.rules = RuleCache(engine, max_age=1.0)
    await deaf.worker.subscribe()
    deaf.task = asyncio.create_task(deaf.worker.run(deaf.stop))
    key = ("alice", "42")
    await deaf.rules.rules([key])

    await stub.ActivateSegmentation(pb.ActivateSegmentationRequest(name=CUSTOM), metadata=ALICE)
    await eventually(lambda: deaf.rules.cached(*key) is None, timeout=3.0, message="the rules never went stale")
    await publish(deaf.js, billet("after-refresh"))
    await processed(deaf.js, 1)

    found = await changes(deaf.js)
    assert fired(found["after-refresh"][0]) == ["auto-billet-printed", "billet-buyers"]
