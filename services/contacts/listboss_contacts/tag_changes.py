"""Tag changes for automations: the outbox relay and the WatchTagChanges reader.

Applying changes (apply.py) writes one ``tag_change_outbox`` row for every tag link whose present
state changed, in the same transaction as the link. :class:`OutboxRelay` (a task
of the contacts process) publishes those rows in id order to the JetStream
stream ``LISTBOSS_TAG_CHANGES`` (subject ``listboss.tagchanges.<producer>``,
``Nats-Msg-Id = tagchange/<id>``) and deletes each row only after its PubAck.
So a change is published only once committed, and never lost if the process
dies in between: at worst it is published again (at-least-once; the stream's
duplicate window drops most repeats and consumers deduplicate by ``id``).

Order. Rows go out in id order, and a row only once no smaller id can still
appear, so the stream never shows a smaller id after a larger one. SQLite has
one writer at a time: ids are drawn in commit order. On PostgreSQL ids are
drawn at insert, and a transaction that drew a smaller id may commit after one
that drew a larger id; the relay therefore publishes only up to a *barrier*: it
reads the last id drawn from the outbox sequence, then the writing transactions
running in this database (each holds the lock on its own transaction id), and
releases the ids up to that last one once every one of those transactions has
ended. A transaction writes its tag links before its outbox rows, so it is a
writer before it draws an outbox id: any id drawn but not yet committed belongs
to one of them. Two changes of one tag link are ordered by the link's row lock,
so for a link, and for a producer's stream as a whole, the order published is
the order committed. Read-only work (a backup with pg_dump, a report) and other
databases on the server never hold the relay back; a long writing transaction
in this database delays it by as long as it runs (statement timeouts bound the
services' own).

Failover. On PostgreSQL one replica at a time relays: the one holding a session
advisory lock, on a connection of its own that every poll also reads through
(so a broken connection, and with it a lost lock, is noticed at once). The lock
dies with that session: a replica that exits or is killed frees it at once and
another replica takes over at its next poll (``poll_interval``); for a replica
whose machine vanishes, the session's TCP keepalives (:data:`LEADER_KEEPALIVES`)
end it within about ten seconds.

:func:`watch` reads the stream for one producer after the client's cursor (the
stream sequence, opaque to clients) through a pull consumer of its own, one
bounded batch at a time and the next only once the last is written to the gRPC
stream: gRPC flow control is the backpressure, memory per watcher is bounded,
and nothing is ever dropped (a delivery lost in transit shows as a gap in the
consumer's sequence and is read again).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Collection, Sequence

import nats
import sqlalchemy as sa
import structlog
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.engine import Connection, Engine

from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss_common import bus
from listboss_common.db import advisory_lock_key, is_postgres
from listboss_common.errors import ServiceError, failed_precondition, invalid_field
from listboss_common.faults import describe_error
from listboss_common.metrics import LATENCY_BUCKETS
from listboss_contacts.messages import tag_change_message
from listboss_contacts.schema import tag_change_outbox

log = structlog.get_logger("listboss.contacts.tag_changes")

_LOCK_KEY = advisory_lock_key("listboss_contacts.outbox_relay")

OUTBOX_PUBLISHED = Counter("listboss_contacts_outbox_published_total", "Tag changes the outbox relay published.")
OUTBOX_BACKLOG = Gauge(
    "listboss_contacts_outbox_backlog_rows", "Outbox rows waiting to be published, as the relay last saw them."
)
OUTBOX_RELAY_DELAY = Histogram(
    "listboss_contacts_outbox_relay_delay_seconds",
    "Time from a tag change's commit to its publication's acknowledgement.",
    buckets=LATENCY_BUCKETS,
)
WATCHERS_OPEN = Gauge("listboss_contacts_tag_change_watchers", "WatchTagChanges streams open.")


def pending_changes(connection: Connection, limit: int, up_to: int | None = None) -> Sequence[sa.Row]:
    """The oldest outbox rows, in id order; with ``up_to``, none with a larger id."""
    query = sa.select(tag_change_outbox)
    if up_to is not None:
        query = query.where(tag_change_outbox.c.id <= up_to)
    return connection.execute(query.order_by(tag_change_outbox.c.id).limit(limit)).all()


# PostgreSQL: the last outbox id drawn (0 before the first); not transactional, so it is
# read before the writers below.
_LAST_DRAWN = sa.text("SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('tag_change_outbox', 'id')), 0)")
# The other sessions of this database inside a writing transaction: each holds the lock on its
# own transaction id until it commits or rolls back (pg_locks is readable by every role).
_WRITERS = sa.text(
    "SELECT l.pid, l.transactionid::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted "
    "AND a.datname = current_database() AND l.pid <> pg_backend_pid()"
)

# The relay lock's session ends this soon after its host vanishes (no FIN, no RST): idle
# 5 s, then 3 probes 2 s apart; unacknowledged data is given up after 10 s.
LEADER_KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "10000",
}


def outbox_horizon(connection: Connection) -> tuple[int, frozenset[tuple[int, str]]]:
    """(last outbox id drawn, the (pid, transaction id) of every writing transaction running
    in this database): once all of those have ended, no id up to the first can still appear."""
    last_drawn = int(connection.execute(_LAST_DRAWN).scalar_one())
    writers = frozenset((int(pid), str(xid)) for pid, xid in connection.execute(_WRITERS))
    return last_drawn, writers


def outbox_size(connection: Connection) -> int:
    return connection.execute(sa.select(sa.func.count()).select_from(tag_change_outbox)).scalar_one()


def delete_relayed(connection: Connection, ids: Sequence[int]) -> None:
    for start in range(0, len(ids), 500):
        connection.execute(tag_change_outbox.delete().where(tag_change_outbox.c.id.in_(ids[start : start + 500])))


class OutboxRelay:
    """Publishes the outbox in order. Shaped like a bus worker (``subscribe`` and
    ``run(stop)``) so the service runs and stops it with the others."""

    def __init__(
        self,
        engine: Engine,
        js: JetStreamContext,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        ack_timeout: float = 10.0,
    ) -> None:
        self._engine = engine
        self._js = js
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._ack_timeout = ack_timeout
        self._wake = asyncio.Event()
        # The JetStream context's connection (the client has no public handle on it).
        self._publisher = AckedPublisher(js._nc)
        # PostgreSQL: the connection holding the relay lock while this replica relays.
        self._leader: Connection | None = None
        # PostgreSQL: every outbox id up to here is committed or never will be; and the
        # barrier (last id drawn, transaction id all older ones must end before) that moves it.
        self._released = 0
        self._barrier: tuple[int, frozenset[tuple[int, str]]] | None = None

    def notify(self) -> None:
        """Something was committed to the outbox: relay now rather than at the next poll."""
        self._wake.set()

    async def subscribe(self) -> None:
        await bus.ensure_streams(self._js, [bus.TAG_CHANGES])

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    relayed = await self.relay_once()
                    failures = 0
                except Exception as error:  # NATS or the database away: try again, more slowly
                    failures += 1
                    relayed = 0
                    log.warning("outbox relay failed; will retry", error=describe_error(error), failures=failures)
                    await asyncio.to_thread(self._resign)
                    await _wait_any(stop, None, min(10.0, 0.2 * 2 ** min(failures, 6)))
                    continue
                if relayed < self._batch_size:
                    # Rows waiting for older transactions are looked at again soon.
                    wait = self._poll_interval if self._barrier is None else min(self._poll_interval, 0.05)
                    await _wait_any(stop, self._wake, wait)
        finally:
            await asyncio.to_thread(self._resign)

    async def relay_once(self) -> int:
        """Publishes one batch of the outbox; returns how many rows went out."""
        rows = await asyncio.to_thread(self._pending)
        if not rows:
            OUTBOX_BACKLOG.set(0)
            return 0
        replies = await self._publisher.publish(
            [
                (
                    bus.tag_changes_subject(row.producer),
                    outbox_message(row).SerializeToString(),
                    f"tagchange/{row.id}",
                )
                for row in rows
            ],
            self._ack_timeout,
        )
        acked: list[int] = []
        error: Exception | None = None
        for row, reply in zip(rows, replies, strict=True):
            error = publication_error(row.id, reply, self._ack_timeout)
            if error is not None:
                # Stop at the first failure: what follows it is published again, in order.
                break
            acked.append(row.id)
        if acked:
            await asyncio.to_thread(self._delete, acked)
            published = time.time()
            commit_times = {row.id: row.commit_time for row in rows}
            for row_id in acked:
                OUTBOX_RELAY_DELAY.observe(max(0.0, published - commit_times[row_id] / 1_000_000))
            OUTBOX_PUBLISHED.inc(len(acked))
            log.info("tag changes relayed", count=len(acked), last_id=acked[-1])
        # A batch short of full was the whole outbox; a full one may leave more: count them.
        if len(rows) < self._batch_size:
            OUTBOX_BACKLOG.set(len(rows) - len(acked))
        else:
            with contextlib.suppress(Exception):
                OUTBOX_BACKLOG.set(await asyncio.to_thread(self._size))
        if error is not None:
            raise error
        return len(acked)

    def _pending(self) -> Sequence[sa.Row]:
        if not is_postgres(self._engine):
            with self._engine.connect() as connection:
                return pending_changes(connection, self._batch_size)
        if not self._lead():
            return []
        assert self._leader is not None
        try:
            self._advance(*outbox_horizon(self._leader))
            return pending_changes(self._leader, self._batch_size, up_to=self._released)
        finally:
            self._leader.rollback()  # hold no snapshot between polls

    def _advance(self, last_drawn: int, writers: frozenset[tuple[int, str]]) -> None:
        """Moves the released ids forward: a barrier is passed once every writing transaction
        that was running when it was noted has ended; with none running, every id drawn is final."""
        if self._barrier is not None and not self._barrier[1] & writers:
            self._released = max(self._released, self._barrier[0])
            self._barrier = None
        if self._barrier is None:
            if not writers:
                self._released = max(self._released, last_drawn)
            elif last_drawn > self._released:
                self._barrier = (last_drawn, writers)

    def _size(self) -> int:
        with self._engine.connect() as connection:
            return outbox_size(connection)

    def _delete(self, ids: Sequence[int]) -> None:
        with self._engine.begin() as connection:
            delete_relayed(connection, ids)

    def _lead(self) -> bool:
        """True while this replica holds the relay lock (taken on first success, kept)."""
        if self._leader is not None:
            return True
        connection = self._engine.connect()
        try:
            held = connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": _LOCK_KEY}).scalar()
            connection.commit()
        except Exception:
            connection.close()
            raise
        if not held:
            connection.close()
            return False
        try:  # (ignored by PostgreSQL on a Unix socket)
            for name, value in LEADER_KEEPALIVES.items():
                connection.execute(sa.text("SELECT set_config(:name, :value, false)"), {"name": name, "value": value})
            connection.commit()
        except Exception as error:  # relays all the same; only a vanished host is noticed later
            connection.rollback()
            log.warning("relay connection keepalives not set", error=describe_error(error))
        self._leader = connection
        self._barrier = None
        return True

    def _resign(self) -> None:
        if self._leader is not None:
            with contextlib.suppress(Exception):
                self._leader.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
                self._leader.commit()
            with contextlib.suppress(Exception):
                self._leader.close()
            self._leader = None


def outbox_message(row) -> pb.TagChange:
    """An outbox row as the ``TagChange`` the relay publishes: a tag change, or an audience's
    entry (``added``) or exit."""
    if not row.audience:
        change = tag_change_message(row)
        change.kind = pb.TagChange.KIND_TAG
        return change
    producer = row.producer
    change = pb.TagChange(
        id=str(row.id),
        kind=pb.TagChange.KIND_AUDIENCE_ENTERED if row.added else pb.TagChange.KIND_AUDIENCE_EXITED,
        contact=f"producers/{producer}/contacts/{row.contact_id}",
        audience=f"producers/{producer}/audiences/{row.audience}",
    )
    if row.event_id:
        change.event = f"producers/{producer}/products/{row.product}/events/{row.event_id}"
    change.occur_time.FromMicroseconds(row.occur_time)
    change.commit_time.FromMicroseconds(row.commit_time)
    return change


class AckedPublisher:
    """Publishes a batch of messages to JetStream and collects each one's PubAck.

    The client's ``publish_async`` costs about 20 µs of CPU a message (a future, a semaphore
    wait, a timer and a JSON-decoded ``PubAck`` object each), several times the publish itself,
    and the relay sends one message per tag change. Here every message of a batch is published
    with a reply subject of its own under one inbox subscription, whose handler only stores
    the reply; the batch then waits once for all of them.
    """

    def __init__(self, nc: nats.NATS) -> None:
        self._nc = nc
        self._subscription: Subscription | None = None
        self._prefix = ""
        self._batch = 0
        self._replies: dict[str, bytes | None] = {}
        self._missing = 0
        self._all_in = asyncio.Event()

    async def publish(self, messages: Sequence[tuple[str, bytes, str]], timeout: float) -> list[bytes | None]:
        """Publishes (subject, payload, message id) messages in order; returns each one's reply,
        None when none came within ``timeout`` seconds."""
        if self._subscription is None:
            self._prefix = self._nc.new_inbox()
            self._subscription = await self._nc.subscribe(f"{self._prefix}.>", cb=self._reply)
        # A batch number in the reply subject: a late reply to an earlier batch is ignored.
        self._batch += 1
        subjects = [f"{self._prefix}.{self._batch}.{number}" for number in range(len(messages))]
        self._replies = dict.fromkeys(subjects)
        self._missing = len(subjects)
        self._all_in.clear()
        for (subject, payload, message_id), reply in zip(messages, subjects, strict=True):
            await self._nc.publish(subject, payload, reply=reply, headers={"Nats-Msg-Id": message_id})
        if self._missing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_in.wait(), timeout)
        return [self._replies[subject] for subject in subjects]

    async def _reply(self, message: Msg) -> None:
        if message.subject in self._replies and self._replies[message.subject] is None:
            # A status message (no stream answered: 503) carries no PubAck: kept as empty.
            self._replies[message.subject] = b"" if message.headers and "Status" in message.headers else message.data
            self._missing -= 1
            if not self._missing:
                self._all_in.set()


class PublishRefused(Exception):
    """JetStream answered a publication with an error, or with no stream."""


def publication_error(row_id: int, reply: bytes | None, timeout: float) -> Exception | None:
    """Why the publication of outbox row ``row_id`` is not known to be stored; None when it is."""
    if reply is None:
        return TimeoutError(f"no PubAck for tag change {row_id} within {timeout} s")
    try:
        answer = json.loads(reply) if reply else {}
    except ValueError:
        answer = {}
    if "error" in answer:
        return PublishRefused(f"JetStream refused tag change {row_id}: {answer['error'].get('description', '')}")
    if "seq" not in answer:
        return PublishRefused(f"no stream stored tag change {row_id}")
    return None


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    waiters = [asyncio.create_task(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.create_task(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


# --------------------------------------------------------------------------- watching

_CURSOR_PREFIX = "tc1:"
# Changes one watcher fetches from NATS at a time. It asks for the next batch only once
# this one is written to its gRPC stream, so it never holds more than this many, and a
# client that reads slowly (gRPC flow control) slows its own stream and nobody else's.
WATCH_BATCH = 256
# Seconds one fetch waits for new changes: how long a quiet watcher takes to see shutdown.
WATCH_POLL = 1.0
# Seconds nats-server keeps a watcher's consumer that nobody asks for messages (the
# process died, or its client stopped reading that long; a watcher that comes back after
# that makes a new one).
WATCH_INACTIVE_THRESHOLD = 60.0


def encode_cursor(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{sequence}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The stream sequence a cursor stands for; 0 for an empty cursor (from the start)."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith(_CURSOR_PREFIX) and text[len(_CURSOR_PREFIX) :].isdigit():
            return int(text[len(_CURSOR_PREFIX) :])
    except ValueError:
        pass
    raise invalid_field("cursor", "is not a cursor issued by WatchTagChanges")


def cursor_expired() -> ServiceError:
    return failed_precondition(
        "the tag changes after this cursor are no longer kept: read the contacts' tags as they are "
        "(ListContacts) and watch again from an empty cursor",
        "CURSOR_EXPIRED",
    )


class TagSelector:
    """Which changes a watcher wants: tags by key and/or resource name, audiences by id and/or
    resource name ("-": every audience). A change either selects is wanted; with neither
    given, every change is."""

    def __init__(self, wanted: Collection[str], audiences: Collection[str] = ()):
        self._names = {value for value in wanted if value.startswith("producers/")}
        self._keys = {value for value in wanted if not value.startswith("producers/")}
        self._all = not wanted and not audiences
        self._every_audience = "-" in audiences
        self._audiences = {value.rpartition("/")[2] for value in audiences}

    def __call__(self, change: pb.TagChange) -> bool:
        if self._all:
            return True
        if change.audience:
            return self._every_audience or change.audience.rpartition("/")[2] in self._audiences
        return change.tag_key in self._keys or change.tag in self._names


class ChangeReader:
    """One watcher's reader of a producer's changes after stream sequence ``position``:
    a pull consumer of its own (ephemeral, in memory, no acks, filtered to the producer's
    subject) asked for one bounded batch at a time.

    The consumer is disposable. Whenever it may have lost a delivery (a gap in its
    consumer sequence, a NATS reconnection, an error, deletion by the server), it is
    dropped and the next fetch makes a new one that starts right after the last change
    handed out: nothing skipped, nothing repeated.
    """

    def __init__(self, js: JetStreamContext, producer: str, after: int, batch: int = WATCH_BATCH):
        self._js = js
        self._subject = bus.tag_changes_subject(producer)
        self._batch = batch
        self.position = after  # the stream sequence of the last change handed out
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._consumer = ""
        self._delivered = 0  # the consumer sequence of the last message received
        self._reconnects = 0

    async def fetch(self, timeout: float) -> list[tuple[int, bytes]]:
        """The next changes as (stream sequence, encoded ``TagChange``), at most one batch;
        empty when none arrived within ``timeout`` seconds. Raises when NATS cannot be
        asked, or :func:`cursor_expired` when the changes after ``position`` were removed."""
        if self._subscription is not None and self._reconnections() != self._reconnects:
            await self._drop()  # what was in flight when the connection broke may be lost
        if self._subscription is None:
            await self._open()
        assert self._subscription is not None
        try:
            messages = await self._subscription.fetch(self._batch, timeout=timeout)
        except TimeoutError:
            return []
        except nats.js.errors.ServiceUnavailableError:
            # No consumer answers: the server deleted it (its client read nothing for
            # WATCH_INACTIVE_THRESHOLD) or lost it in a restart. A new one, from the position.
            log.info("tag-change consumer gone; making a new one", after=self.position)
            await self._drop()
            return []
        except Exception:
            await self._drop()  # NATS away: a new consumer once it is back
            raise
        changes = []
        for message in messages:
            sequences = message.metadata.sequence
            if sequences.consumer != self._delivered + 1:
                log.warning("tag-change delivery lost; reading again", after=self.position, got=sequences.stream)
                await self._drop()
                break
            self._delivered = sequences.consumer
            self.position = sequences.stream
            # Only the payload is kept (decoded when sent), not the message around it.
            changes.append((sequences.stream, message.data))
        return changes

    async def close(self) -> None:
        await self._drop()

    def _reconnections(self) -> int:
        # The connection's reconnect count, so deliveries in flight during a reconnection
        # are never trusted (the client has no public handle on it from a JetStream context).
        return self._js._nc.stats["reconnects"]

    async def _open(self) -> None:
        if self.position:
            info = await self._js.stream_info(bus.TAG_CHANGES.name)
            if info.state.first_seq > self.position + 1:
                raise cursor_expired()
        self._reconnects = self._reconnections()
        config = ConsumerConfig(
            description="WatchTagChanges",
            filter_subject=self._subject,
            ack_policy=AckPolicy.NONE,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if self.position else DeliverPolicy.ALL,
            opt_start_seq=self.position + 1 if self.position else None,
            inactive_threshold=WATCH_INACTIVE_THRESHOLD,
            mem_storage=True,
            num_replicas=1,
        )
        consumer = await self._js.add_consumer(bus.TAG_CHANGES.name, config=config)
        self._consumer, self._delivered = consumer.name, 0
        self._subscription = await self._js.pull_subscribe_bind(consumer.name, stream=bus.TAG_CHANGES.name)

    async def _drop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is None:
            return
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
        # Best effort: a consumer left behind is deleted by the server once inactive.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._js.delete_consumer(bus.TAG_CHANGES.name, self._consumer), 2.0)


async def watch(
    js: JetStreamContext,
    producer: str,
    after: int,
    wanted: TagSelector,
    stopping: asyncio.Event,
    idle: float = 1.0,
    *,
    batch: int = WATCH_BATCH,
    poll: float = WATCH_POLL,
) -> AsyncGenerator[tuple[pb.TagChange | None, int], None]:
    """The producer's tag changes after stream sequence ``after``, with their
    sequences, until ``stopping`` is set (or the caller stops iterating).

    Reads through a :class:`ChangeReader`, one batch at a time and the next only once
    the caller has taken the last one, so memory per watcher is bounded and a slow
    caller slows only its own reading. While NATS is away it keeps trying.

    Changes that ``wanted`` filters out are not sent, but once the stream has been
    quiet for ``idle`` seconds after skipping some, ``(None, sequence)`` moves the
    client's cursor past them, so resuming does not read them again.
    """
    reader = ChangeReader(js, producer, after, batch)
    WATCHERS_OPEN.inc()
    clock = asyncio.get_running_loop().time
    skipped: int | None = None  # the last sequence read but not sent
    quiet_since = clock()
    failures = 0
    try:
        while not stopping.is_set():
            wait = poll if skipped is None else min(poll, max(0.05, quiet_since + idle - clock()))
            try:
                changes = await reader.fetch(wait)
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                return  # the process is stopping
            except ServiceError:
                raise
            except Exception as error:  # NATS away or restarting: try again, more slowly
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("tag-change fetch failed; will retry", error=describe_error(error), failures=failures)
                await _wait_any(stopping, None, min(5.0, 0.1 * 2 ** min(failures, 6)))
                continue
            failures = 0
            if not changes:
                if skipped is not None and clock() - quiet_since >= idle:
                    yield None, skipped
                    skipped = None
                continue
            quiet_since = clock()
            for sequence, data in changes:
                if stopping.is_set():
                    return
                try:
                    change = pb.TagChange.FromString(data)
                except DecodeError as error:  # not a change: nothing to send
                    log.error("undecodable tag change skipped", sequence=sequence, error=str(error))
                    skipped = sequence
                    continue
                if wanted(change):
                    skipped = None
                    yield change, sequence
                else:
                    skipped = sequence
    finally:
        WATCHERS_OPEN.dec()
        await reader.close()
