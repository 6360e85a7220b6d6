"""A backfill outlives the replica that runs it (real JetStream; SQLite and PostgreSQL).

Two Backfillers stand for two segmentation replicas on one database. The first dies in the
middle of a backfill (its task is cancelled: no progress stored, no lease released); the
second finds the expired lease, claims the backfill and resumes it after the stored stream
sequence. Contacts, fed the live changes and then the backfill's, ends exactly as with one
uninterrupted backfill, and the counts are those of one run.
"""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_contacts import schema
from listboss_contacts.apply import TagIds, apply_changes
from listboss_segmentation import domain, storage
from listboss_segmentation.backfill import Backfiller
from listboss_segmentation.consumer import EventProcessor, decode_events
from listboss_testing import eventually

EVENTS = 1_200
PER_MESSAGE = 4
LEASE = 1.0


class DiesMidway(Backfiller):
    """A replica that hangs once it has read ``after`` events, until it is killed."""

    def __init__(self, *args, after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._after, self._opened = after, 0
        self.hung = asyncio.Event()

    async def _open(self, events):
        self._opened += len(events)
        if self._opened > self._after:
            self.hung.set()
            await asyncio.Event().wait()  # until cancelled
        return await super()._open(events)


def event(number: int) -> event_pb2.Event:
    result = event_pb2.Event(
        id=f"e{number:05d}",
        producer="alice",
        # Every other event is one the segmentation considers.
        type=event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED if number % 2 else event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id="42", name="Course"),
        # Fewer people than events: a person's later event stamps over an earlier one.
        person=event_pb2.Person(email=f"p{number % 300:03d}@example.com", name="Ana"),
        purchase=event_pb2.Purchase(payment_type="BILLET"),
        source=event_pb2.EVENT_SOURCE_GRPC,
    )
    result.occur_time.FromSeconds(1_700_000_000 + number)
    return result


SEGMENTATION = domain.CustomSegmentation(
    producer="alice",
    product="42",
    segmentation_id="billet-buyers",
    display_name="Billet buyers",
    provider="SEND",
    event_type="PURCHASE_BILLET_PRINTED",
    condition=None,
    contact_data=(),
    add_tags=("billet-buyers",),
    remove_tags=(),
)


async def stored_changes(js) -> list[contact_change_pb2.ContactChange]:
    info = await js.stream_info(bus.CHANGES.name)
    found: list[contact_change_pb2.ContactChange] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(bus.CHANGES.name, seq=seq)
        found.extend(contact_change_pb2.ContactChangeBatch.FromString(message.data).changes)
    return found


def apply(engine, changes) -> None:
    tag_ids = TagIds()
    for start in range(0, len(changes), 500):
        with engine.begin() as connection:
            result = apply_changes(connection, changes[start : start + 500], tag_ids)
        tag_ids.commit(result.tag_ids)


def contacts_state(engine):
    with engine.connect() as connection:
        links = connection.execute(
            sa.text(
                "SELECT c.email, t.key, ct.present, ct.stamp_time, ct.stamp_event FROM contact_tags ct "
                "JOIN contacts c ON c.id = ct.contact_id JOIN tags t ON t.id = ct.tag_id ORDER BY 1, 2"
            )
        ).all()
        counts = connection.execute(sa.text("SELECT key, contact_count FROM tags ORDER BY key")).all()
        history = connection.execute(sa.text("SELECT count(*) FROM history")).scalar_one()
    return [tuple(r) for r in links], [tuple(r) for r in counts], history


def backfill_row(engine, record) -> storage.BackfillRecord:
    with engine.connect() as connection:
        found = storage.get_backfill(
            connection, record.producer, record.product_id, record.segmentation_id, record.backfill_id
        )
    assert found is not None
    return found


def new_backfill(engine, backfill_id: str, owner: str) -> storage.BackfillRecord:
    with engine.begin() as connection:
        return storage.create_backfill(connection, "alice", "42", "billet-buyers", backfill_id, owner, LEASE)


@pytest.fixture
def engines(migrated_engine, tmp_path):
    segmentation = migrated_engine(storage.migrate_database)
    resumed = migrated_engine(schema.migrate_database, f"sqlite:///{tmp_path / 'resumed.db'}")
    uninterrupted = migrated_engine(schema.migrate_database, f"sqlite:///{tmp_path / 'uninterrupted.db'}")
    return segmentation, resumed, uninterrupted


async def test_a_backfill_whose_replica_dies_is_resumed_by_another(engines, nats_server):
    segmentation_engine, resumed_contacts, uninterrupted_contacts = engines
    nc = await bus.connect(nats_server.url, name="backfill-takeover")
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.EVENTS, bus.CHANGES, bus.DEADLETTER])
    stop = asyncio.Event()
    survivor_loop: asyncio.Task | None = None
    try:
        events = [event(n) for n in range(EVENTS)]
        for start in range(0, EVENTS, PER_MESSAGE):
            await js.publish(
                bus.events_subject("alice"),
                event_pb2.EventBatch(events=events[start : start + PER_MESSAGE]).SerializeToString(),
            )
        # The live consumer's changes capture every person (a backfill never captures anyone).
        processor = EventProcessor(js, segmentation_engine)
        subscription = await js.pull_subscribe("listboss.events.>", durable="segmentation", stream=bus.EVENTS.name)
        for _ in range(EVENTS // PER_MESSAGE // 100):
            await processor.handle(decode_events(await subscription.fetch(100, timeout=5)))
        live = await stored_changes(js)
        assert len(live) == EVENTS
        with segmentation_engine.begin() as connection:
            storage.create_segmentation(connection, SEGMENTATION, None)

        # Replica A accepts the backfill and dies after two progress points.
        dying = DiesMidway(js, segmentation_engine, after=510, lease_seconds=LEASE, renew_every=0.2)
        record = new_backfill(segmentation_engine, "taken-over", dying.owner)
        task = dying.start(record, SEGMENTATION)
        await asyncio.wait_for(dying.hung.wait(), 20)
        task.cancel()  # killed: nothing released, nothing stored
        await asyncio.gather(task, return_exceptions=True)
        left = backfill_row(segmentation_engine, record)
        assert (left.state, left.owner) == ("RUNNING", dying.owner)
        assert left.events_scanned == 1_000 and left.scanned_sequence == 1_000 // PER_MESSAGE

        # Replica B looks for expired leases; it takes the backfill over once A's lease ends.
        survivor = Backfiller(js, segmentation_engine, lease_seconds=LEASE, renew_every=0.2, claim_every=0.2)
        survivor_loop = asyncio.create_task(survivor.run(stop))

        async def finished():
            row = backfill_row(segmentation_engine, record)
            return row if row.state != "RUNNING" else None

        done = await eventually(finished, timeout=30, message="the backfill was not taken over and finished")
        assert (done.state, done.owner, done.error) == ("SUCCEEDED", survivor.owner, "")
        assert (done.events_scanned, done.events_considered, done.events_matched) == (EVENTS, EVENTS // 2, EVENTS // 2)

        # The same backfill run once, without a fault, for comparison.
        whole = new_backfill(segmentation_engine, "uninterrupted", "one-replica")
        await Backfiller(js, segmentation_engine, owner="one-replica").backfill(whole, SEGMENTATION)
        once = backfill_row(segmentation_engine, whole)
        assert (once.state, once.events_scanned, once.events_considered, once.events_matched) == (
            "SUCCEEDED",
            done.events_scanned,
            done.events_considered,
            done.events_matched,
        )

        every = await stored_changes(js)
        by_backfill = {"": [], "taken-over": [], "uninterrupted": []}
        for change in every:
            by_backfill[change.backfill.rsplit("/", 1)[-1] if change.backfill else ""].append(change)
        # The resumed run published each event at least once (what A published after its last
        # stored progress is published again by B), and applying it all changes nothing twice.
        assert {c.event.id for c in by_backfill["taken-over"]} == {c.event.id for c in by_backfill["uninterrupted"]}
        apply(resumed_contacts, by_backfill[""] + by_backfill["taken-over"])
        apply(uninterrupted_contacts, by_backfill[""] + by_backfill["uninterrupted"])
        resumed, uninterrupted = contacts_state(resumed_contacts), contacts_state(uninterrupted_contacts)
        assert resumed == uninterrupted
        links, counts, history = resumed
        tagged = [link for link in links if link[1] == "billet-buyers"]
        # The considered events are the odd ones: 150 people, each tagged by its latest one.
        assert len(tagged) == 150 and all(present for _, _, present, _, _ in tagged)
        assert all(stamp_event == f"e{EVENTS - 300 + int(email[1:4]):05d}" for email, _, _, _, stamp_event in tagged)
        assert dict(counts)["billet-buyers"] == 150
        assert history == EVENTS  # the live events' entries only: a backfill writes none
    finally:
        stop.set()
        if survivor_loop is not None:
            await asyncio.wait_for(survivor_loop, 10)
        await nc.close()
