"""Exactly one effect per event, across ingest, segmentation and contacts.

Real parts: nats-server with JetStream (the nats_server fixture), ingest's publisher and
webhook receiver on a free port, segmentation's EventProcessor and contacts' ChangeApplier as
durable pull workers on SQLite files. The outcome checked is what contacts stores (history,
tags, tag links, counts), compared with applying each distinct event exactly once.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_common.db import create_engine
from listboss_common.worker import PullWorker, WorkerSpec
from listboss_contacts import schema
from listboss_contacts.apply import TagIds, apply_changes
from listboss_contacts.consumer import ChangeApplier
from listboss_ingest.http_api import HOTTOK_HEADER, WebhookReceiver
from listboss_ingest.publisher import EventPublisher, event_message_id, pack_events
from listboss_ingest.sources.hotmart import event_from_webhook
from listboss_ingest.webhook_tokens import WebhookTokens
from listboss_segmentation import storage
from listboss_segmentation.consumer import EventProcessor, change_for

FIXTURES = sorted((Path(__file__).parent / "data" / "hotmart").glob("*.json"))
HOTTOK = "alice-webhook-token-42"
# Short ack wait: a message delivered just before the outage comes back quickly.
SEGMENTATION = WorkerSpec(stream=bus.EVENTS, durable="segmentation", items=bus.EVENT_ITEMS, ack_wait=5.0)
CONTACTS = WorkerSpec(stream=bus.CHANGES, durable="contacts", items=bus.CHANGE_ITEMS, batch_size=8, ack_wait=5.0)


class Pipeline:
    """Segmentation and contacts workers on their own NATS connection and SQLite files."""

    def __init__(self, nats_url: str, folder: Path):
        self._url = nats_url
        self.segmentation_engine = create_engine(f"sqlite:///{folder / 'segmentation.db'}")
        self.contacts_engine = create_engine(f"sqlite:///{folder / 'contacts.db'}")
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        storage.migrate_database(self.segmentation_engine)
        schema.migrate_database(self.contacts_engine)
        self.nc = await bus.connect(self._url, name="test-pipeline")
        self.js = self.nc.jetstream()
        await bus.ensure_streams(self.js, [bus.EVENTS, bus.CHANGES, bus.DEADLETTER])
        workers = [
            PullWorker(self.js, SEGMENTATION, EventProcessor(self.js, self.segmentation_engine).handle),
            PullWorker(self.js, CONTACTS, ChangeApplier(self.contacts_engine).handle),
        ]
        for worker in workers:
            await worker.subscribe()
            self._tasks.append(asyncio.create_task(worker.run(self._stop)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait(self._tasks, timeout=10)
        await self.nc.close()
        self.segmentation_engine.dispose()
        self.contacts_engine.dispose()

    async def settle(self, attempts: int = 600) -> None:
        """Waits (bounded; not a timing assertion) until both consumers have handled and
        acknowledged everything in their streams."""
        for _ in range(attempts):
            try:
                infos = [
                    await self.js.consumer_info(spec.stream.name, spec.durable) for spec in (SEGMENTATION, CONTACTS)
                ]
            except Exception:  # NATS still coming back
                infos = None
            if infos and all(info.num_pending == 0 and info.num_ack_pending == 0 for info in infos):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the pipeline did not settle: {infos}")

    def state(self) -> dict:
        return contacts_state(self.contacts_engine)


def contacts_state(engine: sa.Engine) -> dict:
    """What Send would see, without clocks: history, tags with counts, tag links."""
    with engine.connect() as connection:
        run = connection.exec_driver_sql
        return {
            "history": run(
                "SELECT producer, product, event_id, email, added_tags, removed_tags FROM history"
                " ORDER BY producer, product, event_id"
            ).all(),
            "tags": run("SELECT producer, product, key, contact_count FROM tags ORDER BY producer, product, key").all(),
            "links": run(
                "SELECT c.email, t.product, t.key FROM contact_tags ct JOIN contacts c ON c.id = ct.contact_id"
                " JOIN tags t ON t.id = ct.tag_id WHERE ct.present ORDER BY 1, 2, 3"
            ).all(),
            "contacts": run("SELECT producer, email FROM contacts ORDER BY 1, 2").all(),
        }


def applied_once(events: list[event_pb2.Event]) -> dict:
    """The state of applying each distinct event exactly once (the reference)."""
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    schema.migrate_database(engine)
    tag_ids = TagIds()
    seen = set()
    for event in events:
        if (event.producer, event.id) in seen:
            continue
        seen.add((event.producer, event.id))
        with engine.begin() as connection:
            result = apply_changes(connection, [change_for(event)], tag_ids)
        tag_ids.commit(result.tag_ids)
    state = contacts_state(engine)
    engine.dispose()
    return state


async def stream_events(js) -> list[event_pb2.Event]:
    info = await js.stream_info(bus.EVENTS.name)
    events: list[event_pb2.Event] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(bus.EVENTS.name, seq=seq)
        events.extend(event_pb2.EventBatch.FromString(message.data).events)
    return events


@pytest.fixture
async def pipeline(nats_server, tmp_path):
    pipeline = Pipeline(nats_server.url, tmp_path)
    await pipeline.start()
    yield pipeline
    await pipeline.stop()


@pytest.fixture
async def ingest_js(nats_server):
    client = await bus.connect(nats_server.url, name="test-ingest")
    js = client.jetstream()
    await bus.ensure_streams(js, [bus.EVENTS])
    yield js
    await client.close()


def webhook_event(path: Path, producer: str = "alice") -> event_pb2.Event:
    return event_from_webhook(path.read_bytes(), producer)


async def test_a_redelivery_after_the_duplicate_window_changes_nothing_downstream(pipeline, ingest_js):
    publisher = EventPublisher(ingest_js)
    first, second, marker = (webhook_event(FIXTURES[i]) for i in (0, 1, 2))
    assert await publisher.publish_one(first) is False
    assert await publisher.publish_one(second) is False
    await pipeline.settle()
    before = pipeline.state()
    assert [row.event_id for row in before["history"]] == sorted([first.id, second.id])

    # The window has passed (simulated by new Nats-Msg-Ids, which JetStream cannot dedup):
    # the platform redelivers one event alone, and a relay replays both in a new batch.
    subject = bus.events_subject(first.producer)
    ack = await ingest_js.publish(
        subject,
        pack_events([first.SerializeToString()]),
        headers={"Nats-Msg-Id": event_message_id(first) + "#after-the-window"},
    )
    assert not ack.duplicate
    assert await publisher.publish_many("replay-after-the-window", [second, first]) == [False, False]
    assert await publisher.publish_one(marker) is False
    await pipeline.settle()

    stored = await stream_events(ingest_js)
    assert sorted(e.id for e in stored).count(first.id) == 3  # the repeats really went downstream
    after = pipeline.state()
    assert [row.event_id for row in after["history"]] == sorted([first.id, second.id, marker.id])
    for key in ("history", "links"):
        assert [row for row in after[key] if row not in before[key]] == [row for row in applied_once([marker])[key]], (
            key
        )
    assert after == applied_once([first, second, marker])


async def test_nats_outage_503_then_retries_give_exactly_one_effect(pipeline, ingest_js, nats_server):
    receiver = WebhookReceiver(EventPublisher(ingest_js), WebhookTokens({"alice": HOTTOK}), publish_timeout=1.0)
    port = await receiver.start("127.0.0.1:0")
    headers = {"Content-Type": "application/json", HOTTOK_HEADER: HOTTOK}
    bodies = [path.read_bytes() for path in FIXTURES]
    ids = [json.loads(body)["id"] for body in bodies]
    assert len(set(ids)) == len(FIXTURES)

    async def deliver(session, body) -> tuple[int, dict]:
        async with session.post("/webhooks/hotmart/alice", data=body, headers=headers) as response:
            return response.status, await response.json()

    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", timeout=aiohttp.ClientTimeout(total=15)) as http:
            before_outage, during_outage = bodies[:5], bodies[5:]
            for body in before_outage:
                assert (await deliver(http, body))[0] == 200

            nats_server.stop()
            answers = [await deliver(http, body) for body in during_outage]
            assert {status for status, _ in answers} == {503}
            assert {answer["error"]["reason"] for _, answer in answers} == {"BUS_UNAVAILABLE"}

            nats_server.start()
            # The platform retries each 503 until it gets a 200 (bounded here).
            for body in during_outage:
                for _ in range(300):
                    status, answer = await deliver(http, body)
                    if status == 200:
                        break
                    assert status == 503, answer
                    await asyncio.sleep(0.1)
                assert status == 200, answer
            # A late extra retry of everything is a duplicate, not a second event.
            for body, event_id in zip(bodies, ids, strict=True):
                assert await deliver(http, body) == (200, {"event_id": event_id, "duplicate": True})
    finally:
        await receiver.stop()

    await pipeline.settle()
    stored = await stream_events(ingest_js)
    assert sorted({e.id for e in stored}) == sorted(ids)
    state = pipeline.state()
    assert sorted(row.event_id for row in state["history"]) == sorted(ids)  # one history entry each
    assert state == applied_once(stored)
