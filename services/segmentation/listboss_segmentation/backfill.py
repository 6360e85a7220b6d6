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

Progress (events scanned, considered, matched, and the stream sequence of the
last message counted) is stored every few hundred events, after that part's
changes are published, and at the end; the Backfill resource is polled with
GetBackfill.

No backfill is tied to one replica. The replica that accepts it holds a lease
on it (``owner``, ``lease_expire_time``), renewed every ``renew_every`` seconds
while it runs. Every replica looks every ``claim_every`` seconds for RUNNING
backfills whose lease has expired (their replica died, or stopped and released
it) and claims one with a single conditional UPDATE, so exactly one replica
wins; the winner resumes after the stored sequence with the stored counts. What
the dead replica published after its last stored progress is published again:
contacts applies a backfill change idempotently (the newest stamp wins, no
second history entry), so nothing takes effect twice, and the counts come out
as in one uninterrupted run. A replica that finds its lease taken (it was
paused longer than the lease) stops that backfill without writing anything.
Leases compare wall clocks: replicas' clocks must agree to well within the
lease. A resumed backfill evaluates the segmentation as stored when it is
claimed; one deleted meanwhile ends the backfill FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid

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
# A lease lasts LEASE_SECONDS and is renewed every RENEW_SECONDS: a replica that dies is
# replaced within LEASE_SECONDS + CLAIM_SECONDS, and two missed renewals are survived.
LEASE_SECONDS = 20.0
RENEW_SECONDS = 5.0
CLAIM_SECONDS = 5.0
CLAIMS_PER_LOOK = 10


class LeaseLost(Exception):
    """Another replica has taken the backfill over: this one stops without writing."""


def replica_id() -> str:
    """A name for this process that no other replica shares: host, process id, random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Backfiller:
    """Runs backfills, renews their leases and takes over the ones other replicas left.

    Shaped like a bus worker (``subscribe``, ``run(stop)``): ``run`` looks for expired leases
    until ``stop`` is set, then stops this replica's backfills and releases their leases."""

    def __init__(
        self,
        js: JetStreamContext,
        engine: Engine,
        person_keys: personal_data.PersonKeys | None = None,
        *,
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        renew_every: float = RENEW_SECONDS,
        claim_every: float = CLAIM_SECONDS,
    ):
        self._js = js
        self._engine = engine
        self._person_keys = person_keys
        self.owner = owner or replica_id()
        self.lease_seconds = lease_seconds
        self._renew_every = renew_every
        self._claim_every = claim_every
        self._tasks: dict[asyncio.Task, storage.BackfillRecord] = {}

    def start(self, record: storage.BackfillRecord, segmentation: domain.CustomSegmentation) -> asyncio.Task:
        """Runs ``record`` (created or claimed with this replica as its owner)."""
        task = asyncio.create_task(self._hold(record, segmentation))
        self._tasks[task] = record
        task.add_done_callback(lambda done: self._tasks.pop(done, None))
        return task

    # ------------------------------------------------------------------ taking over

    async def subscribe(self) -> None:
        """Nothing to subscribe to: expired leases are found in the database."""

    async def run(self, stop: asyncio.Event) -> None:
        """Claims expired backfills every ``claim_every`` seconds until ``stop`` is set."""
        try:
            while not stop.is_set():
                try:
                    await self.claim_expired()
                except Exception as error:  # the database away: look again later
                    log.warning("looking for backfills to take over failed", error=describe_error(error))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._claim_every)
        finally:
            await self._stop_and_release()

    async def claim_expired(self) -> list[asyncio.Task]:
        """Claims the RUNNING backfills whose lease has expired and starts them here."""

        def claim() -> list[tuple[storage.BackfillRecord, domain.CustomSegmentation | None]]:
            with self._engine.connect() as connection:
                expired = storage.expired_backfills(connection, CLAIMS_PER_LOOK)
            claimed = []
            for candidate in expired:
                with self._engine.begin() as connection:
                    record = storage.claim_backfill(connection, candidate, self.owner, self.lease_seconds)
                    if record is not None:
                        found = storage.get_segmentation(
                            connection, record.producer, record.product_id, record.segmentation_id
                        )
                        claimed.append((record, found))
            return claimed

        started = []
        for record, segmentation in await asyncio.to_thread(claim):
            name = backfill_name(record)
            if segmentation is None:
                await self._update(
                    record, self.owner, state="FAILED", error="the segmentation was deleted before it finished"
                )
                BACKFILLS_FINISHED.labels("FAILED").inc()
                log.warning("backfill ended: its segmentation was deleted", backfill=name)
                continue
            log.info("backfill taken over", backfill=name, owner=self.owner, after_sequence=record.scanned_sequence)
            started.append(self.start(record, segmentation))
        return started

    async def _stop_and_release(self) -> None:
        """Stops this replica's backfills and ends their leases, so another replica goes on at once."""
        running = dict(self._tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

        def release(connection) -> None:
            for record in running.values():
                storage.release_backfill(connection, record, self.owner)

        if running:
            with contextlib.suppress(Exception):
                await db.write(self._engine, release)
                log.info("backfills released", count=len(running))

    # ------------------------------------------------------------------ running one

    async def _hold(self, record: storage.BackfillRecord, segmentation: domain.CustomSegmentation) -> None:
        """Runs the backfill while a side task renews its lease (both end together)."""
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(record, lost))
        try:
            await self.backfill(record, segmentation, lost)
        finally:
            renewer.cancel()

    async def _renew(self, record: storage.BackfillRecord, lost: asyncio.Event) -> None:
        def renew(connection) -> bool:
            return storage.renew_backfill_lease(connection, record, self.owner, self.lease_seconds)

        while True:
            await asyncio.sleep(self._renew_every)
            try:
                held = await db.write(self._engine, renew)
            except Exception as error:  # the database away: the lease may run out meanwhile
                log.warning("backfill lease not renewed", backfill=backfill_name(record), error=describe_error(error))
                continue
            if not held:
                lost.set()
                return

    async def _update(self, record: storage.BackfillRecord, owner: str | None = None, **values) -> bool:
        def update(connection) -> bool:
            return storage.update_backfill(connection, record, owner, **values)

        return await db.write(self._engine, update)

    async def backfill(
        self,
        record: storage.BackfillRecord,
        segmentation: domain.CustomSegmentation,
        lost: asyncio.Event | None = None,
    ) -> None:
        """Runs ``record`` to its end, from its stored progress."""
        name = backfill_name(record)
        rule = domain.custom_rule(segmentation)
        rules = domain.rule_set([rule])
        scanned, considered, matched = record.events_scanned, record.events_considered, record.events_matched
        sequence = record.scanned_sequence
        pending: list[contact_change_pb2.ContactChange] = []

        async def flush() -> None:
            await publish_changes(self._js, record.producer, pending, "backfill", name)
            pending.clear()

        async def store(**values) -> None:
            progress = dict(
                events_scanned=scanned, events_considered=considered, events_matched=matched, scanned_sequence=sequence
            )
            if not await self._update(record, self.owner, **progress, **values):
                raise LeaseLost(name)

        def decide(event):
            fired = domain.fire(rules, event)
            return change_from(event, domain.decision(fired, event), backfill=name) if fired else None

        BACKFILLS_RUNNING.inc()
        try:
            subject = bus.events_subject(record.producer)
            async for message in bus.replay(self._js, bus.EVENTS, subject, after=record.scanned_sequence):
                if lost is not None and lost.is_set():
                    raise LeaseLost(name)
                sequence = message.metadata.sequence.stream
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
                    await store()
            await flush()
            await store(state="SUCCEEDED")
            BACKFILLS_FINISHED.labels("SUCCEEDED").inc()
            log.info("backfill done", backfill=name, scanned=scanned, considered=considered, matched=matched)
        except LeaseLost:
            log.warning("backfill taken over by another replica; stopping here", backfill=name, owner=self.owner)
        except Exception as error:
            BACKFILLS_FINISHED.labels("FAILED").inc()
            log.exception("backfill failed", backfill=name)
            await self._update(
                record,
                self.owner,
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
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
