"""Backfills: the product's recorded events replayed through one segmentation.

The recorded events are the file-backed stream LISTBOSS_EVENTS (subject
``listboss.events.<producer>``, EventBatch payloads). A backfill reads the
producer's subject with an ordered ephemeral consumer, keeps the events of the
segmentation's product and event type, evaluates that one segmentation and
publishes a ContactChange for each match, marked with the backfill's name.

Semantics (what makes a second run change nothing):

* a change carries only the segmentation's own tag operations and contact
  data, stamped like the live ones with the event's (occur_time, event id),
  the person unsealed for the rule and sealed again in the change like the live
  consumer does (a person erased since is evaluated as absent);
* contacts applies a backfill change even though the event is already in the
  history, but records no second history entry, and never captures a contact
  that does not exist (an erased person stays erased);
* each tag link keeps the newest stamp, so re-applying a stamp changes nothing
  and an old event never undoes a newer removal: a backfill only fills in what
  the segmentation would have done had it been active when the events arrived.

Progress (events scanned, considered, matched) is stored every few hundred
events and at the end; the Backfill resource is polled with GetBackfill.
A backfill runs in the replica that accepted it; if that replica dies, the
resource stays RUNNING and the backfill can simply be requested again.
"""

from __future__ import annotations

import asyncio

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge
from sqlalchemy.engine import Engine

from listboss.changes.v1 import contact_change_pb2
from listboss_common import bus, db, personal_data
from listboss_common.faults import describe_error
from listboss_segmentation import domain, storage
from listboss_segmentation.consumer import decide_sealed, publish_changes
from listboss_segmentation.messages import backfill_name, change_from, event_type_name

log = structlog.get_logger("listboss.segmentation.backfill")

BACKFILLS_RUNNING = Gauge("listboss_segmentation_backfills_running", "Backfills of custom segmentations running.")
BACKFILLS_FINISHED = Counter(
    "listboss_segmentation_backfills_finished_total", "Backfills finished, by final state.", ["state"]
)

PROGRESS_EVERY = 500


class Backfiller:
    def __init__(self, js: JetStreamContext, engine: Engine, person_keys: personal_data.PersonKeys | None = None):
        self._js = js
        self._engine = engine
        self._person_keys = person_keys
        self._tasks: set[asyncio.Task] = set()

    def start(self, record: storage.BackfillRecord, segmentation: domain.CustomSegmentation) -> asyncio.Task:
        task = asyncio.create_task(self.run(record, segmentation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _update(self, record: storage.BackfillRecord, **values) -> None:
        def update(connection) -> None:
            storage.update_backfill(connection, record, **values)

        await db.write(self._engine, update)

    async def run(self, record: storage.BackfillRecord, segmentation: domain.CustomSegmentation) -> None:
        name = backfill_name(record)
        rule = domain.custom_rule(segmentation)
        rules = domain.rule_set([rule])
        scanned = considered = matched = 0
        pending: list[contact_change_pb2.ContactChange] = []

        async def flush() -> None:
            await publish_changes(self._js, record.producer, pending, "backfill", name)
            pending.clear()

        def decide(event):
            fired = domain.fire(rules, event)
            return change_from(event, domain.decision(fired, event), backfill=name) if fired else None

        BACKFILLS_RUNNING.inc()
        try:
            async for message in bus.replay(self._js, bus.EVENTS, bus.events_subject(record.producer)):
                try:
                    events = bus.EVENT_ITEMS.decode(message.data)
                except bus.PoisonMessage:  # the live consumer dead-letters these
                    continue
                scanned += len(events)
                events = [
                    e
                    for e in events
                    if e.product.id == record.product_id and event_type_name(e.type) == rule.event_type
                ]
                considered += len(events)
                for event, person in zip(events, await self._open(events), strict=True):
                    if person is None:  # does not authenticate: the live consumer dead-letters it
                        continue
                    change = decide_sealed(event, person, decide)
                    if change is not None:
                        matched += 1
                        pending.append(change)
                if len(pending) >= PROGRESS_EVERY or scanned % PROGRESS_EVERY == 0:
                    await flush()
                    await self._update(
                        record, events_scanned=scanned, events_considered=considered, events_matched=matched
                    )
            await flush()
            await self._update(
                record, state="SUCCEEDED", events_scanned=scanned, events_considered=considered, events_matched=matched
            )
            BACKFILLS_FINISHED.labels("SUCCEEDED").inc()
            log.info("backfill done", backfill=name, scanned=scanned, considered=considered, matched=matched)
        except Exception as error:
            BACKFILLS_FINISHED.labels("FAILED").inc()
            log.exception("backfill failed", backfill=name)
            await self._update(
                record,
                state="FAILED",
                error=describe_error(error)[:1000],
                events_scanned=scanned,
                events_considered=considered,
                events_matched=matched,
            )
        finally:
            BACKFILLS_RUNNING.dec()

    async def _open(self, events: list) -> list[personal_data.Opened | None]:
        """The events' persons; None for one whose sealed person does not authenticate."""
        try:
            return list(await personal_data.open_events(self._person_keys, events))
        except bus.PoisonMessage:
            opened: list[personal_data.Opened | None] = []
            for event in events:
                try:
                    opened.extend(await personal_data.open_events(self._person_keys, [event]))
                except bus.PoisonMessage:
                    opened.append(None)
            return opened

    async def wait(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
