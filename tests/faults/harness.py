"""The fault-injection harness: a paced load through ingest, a fault in the middle of it,
and the checks that follow.

A :class:`FaultRun` sends at least 10,000 generated events through
``IngestService.BatchIngestEvents`` in paced batches (a background thread that keeps
retrying a batch the suite refuses, with the same ``request_id``, so a retry stores only
what was missing). The test injects its fault once part of the load is accepted
(:meth:`FaultRun.fault` marks when it started and ended), then :meth:`FaultRun.finish`
waits, bounded in time, until the contacts history holds every stored event or the
pipeline has nothing left to deliver, and checks:

a. every stored event id is in the contacts history exactly once (and nothing else is);
b. every tag's ``contact_count`` equals its present links;
c. the final (email, product, tag) set equals the one the automatic rules give for the
   same events without a fault, computed here in-process: each event through
   segmentation's ``change_for``, and per (email, product, tag) the operation with the
   greatest (occur_time, event id) stamp wins (contacts' ``domain.py``);
d. ``LISTBOSS_DEADLETTER`` holds nothing (or, in the poison run, exactly the poison).

"Stored" is every event ingest answered ACCEPTED, plus every event a retried batch
answered DUPLICATE (all ids are unique, so DUPLICATE can only mean that an earlier attempt
of the same request was stored before its answer got lost), plus events the test published
on the bus itself.

It also records recovery figures (how long after the fault the backlog drained and at how
many events/s, when the history caught up with the load, the contacts process's peak RSS;
see :meth:`FaultRun._recovery`) and writes them to a JSON file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import nats
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from listboss_segmentation.consumer import change_for
from listboss_tools.suite import Suite

ADD = contact_change_pb2.TagOperation.ACTION_ADD
ACCEPTED = ingest_pb.EventResult.Outcome.OUTCOME_ACCEPTED
DUPLICATE = ingest_pb.EventResult.Outcome.OUTCOME_DUPLICATE

# The platform's webhook events, weighted towards the purchase flow so that additions and
# removals of the same tags race each other (approved removes cart-abandoned, refunded
# removes approved, ...). They need no data beyond the person and the product.
EVENT_WEIGHTS = {
    event_pb2.EVENT_TYPE_PURCHASE_OUT_OF_SHOPPING_CART: 12,
    event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED: 10,
    event_pb2.EVENT_TYPE_PURCHASE_APPROVED: 16,
    event_pb2.EVENT_TYPE_PURCHASE_COMPLETE: 6,
    event_pb2.EVENT_TYPE_PURCHASE_CANCELED: 6,
    event_pb2.EVENT_TYPE_PURCHASE_EXPIRED: 5,
    event_pb2.EVENT_TYPE_PURCHASE_DELAYED: 4,
    event_pb2.EVENT_TYPE_PURCHASE_PROTEST: 4,
    event_pb2.EVENT_TYPE_PURCHASE_REFUNDED: 8,
    event_pb2.EVENT_TYPE_PURCHASE_CHARGEBACK: 3,
    event_pb2.EVENT_TYPE_SUBSCRIPTION_CANCELLATION: 4,
    event_pb2.EVENT_TYPE_SWITCH_PLAN: 2,
    event_pb2.EVENT_TYPE_UPDATE_SUBSCRIPTION_CHARGE_DATE: 2,
    event_pb2.EVENT_TYPE_CLUB_FIRST_ACCESS: 5,
    event_pb2.EVENT_TYPE_CLUB_MODULE_COMPLETED: 3,
}

# Answers after which the same request is sent again: the suite (or a part of it) is down,
# or pushes back. Anything else is a bug in the generator or the suite and stops the load.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}

CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    # Reconnect quickly once a killed ingest is back (the default back-off grows to minutes).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

DEADLETTER_STREAM = "LISTBOSS_DEADLETTER"
WORK_STREAMS = ("LISTBOSS_EVENTS", "LISTBOSS_CHANGES")
Triple = tuple[str, str, str]  # (email, product, tag key)


def micros(timestamp) -> int:
    return timestamp.seconds * 1_000_000 + timestamp.nanos // 1000


# ---------------------------------------------------------------------------
# Events.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadShape:
    """What the load looks like: how many events, in which batches, at what pace, about whom."""

    events: int = 10_000
    batch: int = 200
    interval: float = 0.3  # seconds between the starts of two batches: 15 s of load
    emails: int = 300
    products: int = 5
    seed: int = 20240601


class EventFactory:
    """Valid, already normalized canonical events (ingest leaves them as they are), the same
    for the same seed. Occurrence times spread over 20 days with microseconds, and about one
    event in 20 takes the exact occurrence time of an earlier event of the same person and
    product, so that ties are broken by event id."""

    def __init__(self, producer: str, shape: LoadShape):
        self.producer = producer
        self.shape = shape
        self._rng = random.Random(shape.seed)
        self._types = list(EVENT_WEIGHTS)
        self._weights = list(EVENT_WEIGHTS.values())
        self._base = int(time.time()) - 21 * 86_400
        self._times: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._count = 0

    def event(self, *, email: str | None = None, name: str | None = None, newest: bool = False) -> event_pb2.Event:
        rng = self._rng
        self._count += 1
        person = rng.randrange(self.shape.emails)
        product = rng.randrange(self.shape.products)
        earlier = self._times.setdefault((person, product), [])
        if newest:
            seconds, nanos = int(time.time()), 0
        elif earlier and rng.random() < 0.05:
            seconds, nanos = rng.choice(earlier)
        else:
            seconds, nanos = self._base + rng.randrange(20 * 86_400), rng.randrange(1_000_000) * 1000
            earlier.append((seconds, nanos))
        event = event_pb2.Event(
            id=f"{rng.getrandbits(48):012x}-{self._count}",
            producer=self.producer,
            type=rng.choices(self._types, self._weights)[0],
            product=event_pb2.Product(id=str(101 + product), name=f"Course {101 + product}"),
            person=event_pb2.Person(
                email=email or f"person{person}@example.com", name=name if name is not None else f"Person {person}"
            ),
        )
        event.occur_time.seconds = seconds
        event.occur_time.nanos = nanos
        return event

    def batches(self) -> list[list[event_pb2.Event]]:
        shape = self.shape
        sizes = [min(shape.batch, shape.events - start) for start in range(0, shape.events, shape.batch)]
        return [[self.event() for _ in range(size)] for size in sizes]


def expected_tags(events: Sequence[event_pb2.Event]) -> set[Triple]:
    """The present (email, product, tag) triples the automatic rules give for ``events``,
    whatever their order: per triple the operation with the greatest stamp wins."""
    newest: dict[Triple, tuple[tuple[int, str], bool]] = {}
    for event in events:
        stamp = (micros(event.occur_time), event.id)
        for operation in change_for(event).tag_operations:
            key = (event.person.email, event.product.id, operation.tag_key)
            if key not in newest or stamp > newest[key][0]:
                newest[key] = (stamp, operation.action == ADD)
    return {key for key, (_, present) in newest.items() if present}


# ---------------------------------------------------------------------------
# The load.
# ---------------------------------------------------------------------------


class LoadGenerator(threading.Thread):
    """Sends the batches through BatchIngestEvents at a steady pace, one call at a time.

    A batch the suite refuses (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) is sent
    again, same request and ``request_id``, for up to ``retry_for`` seconds.
    """

    def __init__(
        self,
        address: str,
        token: str,
        batches: Sequence[Sequence[event_pb2.Event]],
        interval: float,
        request_prefix: str,
        retry_for: float = 240.0,
    ):
        super().__init__(name="fault-load", daemon=True)
        self._address = address
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._batches = batches
        self._interval = interval
        self._prefix = request_prefix
        self._retry_for = retry_for
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self.total = sum(len(b) for b in batches)
        self.accepted: set[str] = set()  # answered ACCEPTED
        self.stored: list[event_pb2.Event] = []  # ACCEPTED, or DUPLICATE on a retry
        self.answers: list[tuple[float, list[str]]] = []  # (when, ids stored) per answered batch
        self.answered = 0  # events in batches that got an answer
        self.duplicates_on_retry = 0
        self.refusals: Counter[str] = Counter()  # status code -> calls refused
        self.refused_seconds = 0.0  # time spent retrying refused batches
        self.error: str | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def halt(self) -> None:
        self._halt.set()

    def run(self) -> None:
        self.started_at = time.time()
        start = time.monotonic()
        try:
            with grpc.insecure_channel(self._address, options=CHANNEL_OPTIONS) as channel:
                stub = ingest_grpc.IngestServiceStub(channel)
                for number, batch in enumerate(self._batches):
                    delay = start + number * self._interval - time.monotonic()
                    if delay > 0 and self._halt.wait(delay):
                        return
                    if self._halt.is_set() or not self._send(stub, number, batch):
                        return
        except Exception as error:  # noqa: BLE001 - reported by the run's checks
            self.error = f"load generator crashed: {error!r}"
        finally:
            self.finished_at = time.time()
            with self._progress:
                self._progress.notify_all()

    def _send(self, stub, number: int, batch: Sequence[event_pb2.Event]) -> bool:
        request = ingest_pb.BatchIngestEventsRequest(request_id=f"{self._prefix}-{number}", events=batch)
        first_try = time.monotonic()
        retried = False
        pause = 0.2
        while True:
            try:
                reply = stub.BatchIngestEvents(request, metadata=self._metadata, timeout=30)
                break
            except grpc.RpcError as error:
                code = error.code()
                if code not in RETRYABLE:
                    self.error = f"batch {number}: {code.name} {error.details()}"
                    return False
                self.refusals[code.name] += 1
                retried = True
                if time.monotonic() - first_try > self._retry_for:
                    self.error = f"batch {number} still refused after {self._retry_for:.0f} s ({code.name})"
                    return False
                if self._halt.wait(pause):
                    return False
                pause = min(2.0, pause * 1.5)
        if retried:
            self.refused_seconds += time.monotonic() - first_try
        by_id = {event.id: event for event in batch}
        answered_at = time.time()
        with self._progress:
            ids: list[str] = []
            self.answers.append((answered_at, ids))
            for result in reply.results:
                if result.outcome == ACCEPTED:
                    self.accepted.add(result.event_id)
                    self.stored.append(by_id[result.event_id])
                    ids.append(result.event_id)
                elif result.outcome == DUPLICATE:
                    self.duplicates_on_retry += 1
                    self.stored.append(by_id[result.event_id])
                    ids.append(result.event_id)
                else:
                    self.error = f"batch {number}: event {result.event_id} rejected: {list(result.field_violations)}"
                    return False
            self.answered += len(batch)
            self._progress.notify_all()
        return True

    def wait_answered(self, count: int, timeout: float) -> bool:
        """Waits until ``count`` events got an answer (or the load ended); True if they did."""
        deadline = time.monotonic() + timeout
        with self._progress:
            while self.answered < count and self.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._progress.wait(min(remaining, 0.5))
            return self.answered >= count


# ---------------------------------------------------------------------------
# What the contacts database and the bus hold.
# ---------------------------------------------------------------------------


class ContactsProbe:
    """Reads the contacts service's tables directly (a fresh connection each time, so a
    restarted server is no problem)."""

    def __init__(self, url: str):
        self.engine = sa.create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})

    def close(self) -> None:
        self.engine.dispose()

    def _rows(self, sql: str, **params) -> list[sa.Row]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.text(sql), params))

    def history_count(self, producer: str) -> int | None:
        """The producer's history entries, or None while the database cannot be read."""
        try:
            return self._rows("SELECT count(*) FROM history WHERE producer = :p", p=producer)[0][0]
        except sa.exc.SQLAlchemyError:
            return None

    def history(self, producer: str) -> dict[str, tuple[int, float]]:
        """Each event id in the producer's history: (entries, time of the last commit, epoch s)."""
        rows = self._rows(
            "SELECT event_id, count(*), max(record_time) FROM history WHERE producer = :p GROUP BY event_id",
            p=producer,
        )
        return {row[0]: (row[1], row[2] / 1e6) for row in rows}

    def present_tags(self, producer: str) -> set[Triple]:
        rows = self._rows(
            "SELECT c.email, t.product, t.key FROM contact_tags ct"
            " JOIN contacts c ON c.id = ct.contact_id JOIN tags t ON t.id = ct.tag_id"
            " WHERE ct.present AND c.producer = :p",
            p=producer,
        )
        return {(row[0], row[1], row[2]) for row in rows}

    def count_mismatches(self, producer: str) -> list[tuple[str, str, int, int]]:
        """(product, key, kept contact_count, present links) of every tag whose count is off."""
        rows = self._rows(
            "SELECT t.product, t.key, t.contact_count,"
            " (SELECT count(*) FROM contact_tags ct WHERE ct.tag_id = t.id AND ct.present) AS links"
            " FROM tags t WHERE t.producer = :p",
            p=producer,
        )
        return [(row[0], row[1], row[2], row[3]) for row in rows if row[2] != row[3]]

    def contact_emails(self, producer: str) -> Counter[str]:
        rows = self._rows("SELECT email, count(*) FROM contacts WHERE producer = :p GROUP BY email", p=producer)
        return Counter({row[0]: row[1] for row in rows})


@dataclasses.dataclass
class DeadLetter:
    sequence: int
    subject: str
    headers: dict[str, str]
    event_ids: list[str]


def _decode_items(subject: str, headers: dict[str, str], data: bytes) -> list[event_pb2.Event]:
    """The events a dead letter carries: a packed EventBatch or ContactChangeBatch
    (told by the stream in the subject, else by whichever decodes)."""
    original = headers.get("Listboss-Original-Subject", "")
    kinds = [event_pb2.EventBatch, contact_change_pb2.ContactChangeBatch]
    if "LISTBOSS_CHANGES" in subject or original.startswith("listboss.changes."):
        kinds.reverse()
    for kind in kinds:
        batch = kind()
        try:
            batch.ParseFromString(data)
        except Exception:  # noqa: BLE001 - try the other kind
            continue
        if kind is event_pb2.EventBatch:
            events = list(batch.events)
        else:
            events = [change.event for change in batch.changes]
        if all(event.id for event in events):
            return events
    return []


async def _read_dead_letters(url: str) -> list[DeadLetter]:
    nc = await nats.connect(url, connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=5)
        try:
            info = await js.stream_info(DEADLETTER_STREAM)
        except nats.js.errors.NotFoundError:
            return []
        letters = []
        if info.state.messages:
            for sequence in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    message = await js.get_msg(DEADLETTER_STREAM, sequence)
                except nats.js.errors.NotFoundError:
                    continue
                headers = {k: str(v) for k, v in (message.headers or {}).items()}
                events = _decode_items(message.subject or "", headers, message.data or b"")
                letters.append(
                    DeadLetter(
                        sequence=sequence,
                        subject=message.subject or "",
                        headers=headers,
                        event_ids=[event.id for event in events],
                    )
                )
        return letters
    finally:
        await nc.close()


def dead_letters(url: str) -> list[DeadLetter]:
    return asyncio.run(_read_dead_letters(url))


async def _backlog(url: str) -> int:
    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=3)
        total = 0
        for stream in WORK_STREAMS:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                for consumer in await js.consumers_info(stream):
                    total += consumer.num_pending + consumer.num_ack_pending
        return total
    finally:
        await nc.close()


def backlog(url: str) -> int | None:
    """Messages the durable consumers have still to deliver or to see acknowledged; None
    while NATS cannot be asked."""
    try:
        return asyncio.run(_backlog(url))
    except Exception:  # noqa: BLE001 - NATS down or restarting
        return None


async def _publish(url: str, subject: str, payload: bytes, msg_id: str) -> None:
    nc = await nats.connect(url, connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0)
    try:
        await nc.jetstream(timeout=10).publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
    finally:
        await nc.close()


async def _wait_in_flight(url: str, stream: str, durable: str, timeout: float) -> int:
    nc = await nats.connect(url, connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=3)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                info = await js.consumer_info(stream, durable)
            except nats.js.errors.NotFoundError:
                return 0
            if info.num_ack_pending:
                return info.num_ack_pending
            await asyncio.sleep(0.005)
        return 0
    finally:
        await nc.close()


def publish_event_batch(url: str, producer: str, events: Sequence[event_pb2.Event], msg_id: str) -> None:
    """Publishes ``events`` as one packed EventBatch on ``listboss.events.<producer>``, as
    ingest would but without its validation; returns once JetStream stored it."""
    payload = event_pb2.EventBatch(events=events).SerializeToString()
    asyncio.run(_publish(url, f"listboss.events.{producer}", payload, msg_id))


class RssSampler(threading.Thread):
    """Samples the contacts process's resident memory (VmRSS, and VmHWM, the kernel's own
    peak) twice a second, following it across restarts."""

    def __init__(self, suite: Suite, name: str = "contacts", period: float = 0.5):
        super().__init__(name=f"rss-{name}", daemon=True)
        self._suite = suite
        self._name = name
        self._period = period
        self._halt = threading.Event()
        self.peak_kib = 0

    def _sample(self) -> None:
        try:
            status = Path(f"/proc/{self._suite.pid(self._name)}/status").read_text()
        except (OSError, KeyError):
            return
        for line in status.splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                self.peak_kib = max(self.peak_kib, int(line.split()[1]))

    def run(self) -> None:
        while not self._halt.is_set():
            self._sample()
            self._halt.wait(self._period)

    def stop(self) -> int:
        self._sample()
        self._halt.set()
        self.join(timeout=5)
        return self.peak_kib


# ---------------------------------------------------------------------------
# One run: load, fault, wait, check, figures.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    figures: dict
    failures: list[str]

    def assert_ok(self) -> None:
        assert not self.failures, "\n".join(self.failures)


class FaultRun:
    """The load against one suite, a fault in its middle, and the checks after it."""

    def __init__(
        self,
        scenario: str,
        suite: Suite,
        figures_file: Path,
        *,
        producer: str = "faults",
        shape: LoadShape = LoadShape(),
        say: Callable[[str], None] = print,
    ):
        self.scenario = scenario
        self.suite = suite
        self.producer = producer
        self.shape = shape
        self.figures_file = figures_file
        self.say = say
        self.factory = EventFactory(producer, shape)
        self.load = LoadGenerator(
            suite.ingest_address,
            suite.internal_token,
            self.factory.batches(),
            shape.interval,
            request_prefix=f"{scenario}-{shape.seed}",
        )
        self.probe = ContactsProbe(suite.database_url("contacts"))
        self.rss = RssSampler(suite)
        self.published: list[event_pb2.Event] = []  # put on the bus by the test itself
        self.poison: list[event_pb2.Event] = []  # never to be applied: expected in the dead letters
        self.published_at: list[tuple[float, list[str]]] = []
        self.faults: list[dict] = []
        self.started = time.time()

    def start_load(self) -> None:
        self.started = time.time()
        self.rss.start()
        self.load.start()

    def wait_answered(self, fraction: float, timeout: float = 120.0) -> None:
        """Waits until ``fraction`` of the load got an answer; fails the run if it does not."""
        count = int(self.load.total * fraction)
        if not self.load.wait_answered(count, timeout):
            raise AssertionError(
                f"only {self.load.answered} of {count} events answered after {timeout:.0f} s ({self.load.error})"
            )

    @contextlib.contextmanager
    def fault(self, description: str) -> Iterator[dict]:
        """Marks the fault's start and end (the end is when the part is back); the dict
        yielded takes figures of the fault's own."""
        record: dict = {"fault": description, "start": time.time()}
        self.say(f"[{self.scenario}] fault: {description} at +{record['start'] - self.started:.1f} s "
                 f"({self.load.answered} of {self.load.total} events answered)")
        yield record
        record["end"] = time.time()
        self.faults.append(record)
        self.say(f"[{self.scenario}] fault over after {record['end'] - record['start']:.1f} s "
                 f"({self.load.answered} events answered)")

    def wait_in_flight(self, stream: str, durable: str, timeout: float = 5.0) -> int:
        """Waits (bounded) until the durable consumer holds delivered, unacknowledged messages,
        so that a kill lands on work in progress; returns how many it held (0: none seen)."""
        return asyncio.run(_wait_in_flight(self.suite.nats_url, stream, durable, timeout))

    def close(self) -> None:
        """Stops the load and the sampler (after a failure, too); idempotent."""
        self.load.halt()
        if self.load.is_alive():
            self.load.join(timeout=35)
        if self.rss.is_alive():
            self.rss.stop()
        self.probe.close()

    def publish(self, events: Sequence[event_pb2.Event], poison: Sequence[event_pb2.Event] = ()) -> None:
        """Puts one packed batch straight on the bus (bypassing ingest's validation)."""
        msg_id = f"{self.producer}/batch/direct-{self.scenario}-{len(self.published)}/0"
        publish_event_batch(self.suite.nats_url, self.producer, events, msg_id)
        poisoned = {event.id for event in poison}
        good = [event for event in events if event.id not in poisoned]
        self.published.extend(good)
        self.published_at.append((time.time(), [event.id for event in good]))
        self.poison.extend(poison)

    # -- after the load ----------------------------------------------------------

    def _wait_for_history(self, expected: int, timeout: float, stall: float) -> str:
        """Waits until the history holds ``expected`` entries (and, in a poison run, a dead
        letter names the poison): "complete"; or until nothing is left to deliver and the
        history has stopped growing: "idle"; or ``timeout``."""
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        idle_polls = 0
        while True:
            count = self.probe.history_count(self.producer)
            now = time.monotonic()
            if count is not None and count >= expected and self._poison_dead_lettered():
                return "complete"
            if count != last_count:
                last_count, last_change = count, now
                idle_polls = 0
            elif now - last_change > stall:
                idle_polls = idle_polls + 1 if backlog(self.suite.nats_url) == 0 else 0
                if idle_polls >= 3:
                    return "idle"
            if now > deadline:
                return "timeout"
            time.sleep(1.0)

    def _poison_dead_lettered(self) -> bool:
        if not self.poison:
            return True
        poison_ids = {event.id for event in self.poison}
        try:
            letters = dead_letters(self.suite.nats_url)
        except Exception:  # noqa: BLE001 - NATS down: not yet
            return False
        return any(poison_ids & (set(letter.event_ids) | set(_header_ids(letter.headers))) for letter in letters)

    def finish(self, *, catch_up_timeout: float = 150.0, stall: float = 15.0) -> Outcome:
        """Lets the load end, waits for the history (bounded), checks, records the figures."""
        load = self.load
        load.join(timeout=max(60.0, load.total / 50))  # the pacing ends long before
        if load.is_alive():
            load.halt()
            load.join(timeout=35)
        stored = [*load.stored, *self.published]
        stored_ids = Counter(event.id for event in stored)
        wait_from = time.time()
        waited = self._wait_for_history(len(stored_ids), catch_up_timeout, stall)
        self.say(f"[{self.scenario}] history wait ended: {waited} after {time.time() - wait_from:.1f} s")
        peak_kib = self.rss.stop()

        failures: list[str] = []
        if load.error:
            failures.append(f"load: {load.error}")
        if load.answered < load.total:
            failures.append(f"load: only {load.answered} of {load.total} events got an answer")

        # (a) every stored event exactly once in the history, and nothing else.
        entries = self.probe.history(self.producer)
        history = Counter({event_id: n for event_id, (n, _) in entries.items()})
        missing = [event_id for event_id in stored_ids if event_id not in history]
        twice = {event_id: n for event_id, n in history.items() if n > 1}
        unknown = [event_id for event_id in history if event_id not in stored_ids]
        poison_ids = {event.id for event in self.poison}
        poison_applied = [event_id for event_id in poison_ids if event_id in history]
        unknown = [event_id for event_id in unknown if event_id not in poison_ids]
        if missing:
            failures.append(f"(a) {len(missing)} of {len(stored_ids)} stored events are not in the history "
                            f"(e.g. {missing[:3]})")
        if twice:
            failures.append(f"(a) {len(twice)} events are in the history more than once (e.g. {list(twice)[:3]})")
        if unknown:
            failures.append(f"(a) {len(unknown)} history entries are of events never stored (e.g. {unknown[:3]})")
        if poison_applied:
            failures.append(f"(a) the poison event {poison_applied} is in the history")

        # (b) kept counts equal the links.
        mismatches = self.probe.count_mismatches(self.producer)
        if mismatches:
            failures.append(f"(b) {len(mismatches)} tags' contact_count differ from their present links "
                            f"(product, key, count, links: {mismatches[:5]})")

        # (c) the same tags as without the fault; each person captured once.
        expected = expected_tags(stored)
        actual = self.probe.present_tags(self.producer)
        tags_missing, tags_extra = sorted(expected - actual), sorted(actual - expected)
        if tags_missing or tags_extra:
            failures.append(f"(c) tags differ from the fault-free result: {len(tags_missing)} missing "
                            f"(e.g. {tags_missing[:3]}), {len(tags_extra)} extra (e.g. {tags_extra[:3]})")
        emails = self.probe.contact_emails(self.producer)
        expected_emails = {event.person.email for event in stored}
        if set(emails) != expected_emails or any(n > 1 for n in emails.values()):
            failures.append(f"(c) contacts differ: {len(expected_emails - set(emails))} missing, "
                            f"{len(set(emails) - expected_emails)} unexpected, "
                            f"{sum(1 for n in emails.values() if n > 1)} twice")

        # (d) dead letters: none, or exactly the poison.
        letters = dead_letters(self.suite.nats_url)
        dead_event_ids = [event_id for letter in letters for event_id in letter.event_ids]
        failures.extend(self._check_dead_letters(letters, poison_ids))

        recovery = self._recovery({event_id: at for event_id, (_, at) in entries.items()}, caught_up=not missing)
        figures = {
            "scenario": self.scenario,
            "result": "pass" if not failures else "fail",
            "events_sent": load.total + len(self.published) + len(self.poison),
            "events_stored": len(stored_ids),
            "accepted_by_ingest": len(load.accepted),
            "duplicate_on_retry": load.duplicates_on_retry,
            "published_directly": len(self.published) + len(self.poison),
            "ingest_refusals": dict(load.refusals),
            "ingest_refused_s": round(load.refused_seconds, 1),
            "faults": [
                {"at_s": round(f["start"] - self.started, 1), "lasted_s": round(f["end"] - f["start"], 1),
                 **{k: v for k, v in f.items() if k not in ("start", "end")}}
                for f in self.faults
            ],
            "load_s": round((load.finished_at or time.time()) - self.started, 1),
            "history_wait": waited,
            "history_entries": sum(history.values()),
            "events_lost": len(missing),
            "events_twice": len(twice),
            "dead_letters": len(letters),
            "dead_lettered_events": len(dead_event_ids),
            "dead_letter_subjects": sorted({letter.subject for letter in letters}),
            "tag_count_mismatches": len(mismatches),
            "tags_expected": len(expected),
            "tags_missing": len(tags_missing),
            "tags_extra": len(tags_extra),
            **recovery,
            "contacts_rss_peak_mib": round(peak_kib / 1024, 1),
            "duration_s": round(time.time() - self.started, 1),
            "failures": failures,
        }
        self._record(figures)
        self.probe.close()
        return Outcome(figures, failures)

    def _recovery(self, committed_at: dict[str, float], caught_up: bool) -> dict:
        """How the suite came back, from the history's commit times (``record_time``):

        - ``backlog_drained_after_fault_s``: from the fault's end until every event stored
          before that end was committed: the recovery proper;
        - ``drain_events_per_s``: the history's commits per second over that time;
        - ``caught_up_after_fault_s`` / ``caught_up_after_load_s``: from the fault's end / the
          load's last answer until the last commit (the rest of the load included);
        - ``end_to_end_events_per_s``: every commit over the whole run.
        """
        times = sorted(committed_at.values())
        figures: dict = {"end_to_end_events_per_s": None, "backlog_drained_after_fault_s": None,
                         "drain_events_per_s": None, "caught_up_after_fault_s": None, "caught_up_after_load_s": None}
        if not times:
            return figures
        last = times[-1]
        if last > self.started:
            figures["end_to_end_events_per_s"] = round(len(times) / (last - self.started))
        if not caught_up:
            return figures
        if self.load.finished_at:
            figures["caught_up_after_load_s"] = round(max(0.0, last - self.load.finished_at), 1)
        if not self.faults:
            return figures
        fault_end = max(f["end"] for f in self.faults)
        figures["caught_up_after_fault_s"] = round(max(0.0, last - fault_end), 1)
        before = [i for when, ids in [*self.load.answers, *self.published_at] if when <= fault_end for i in ids]
        if before:
            drained = max(committed_at[i] for i in before)
            figures["backlog_drained_after_fault_s"] = round(max(0.0, drained - fault_end), 1)
            if drained - fault_end >= 0.5:
                commits = sum(1 for t in times if fault_end <= t <= drained)
                figures["drain_events_per_s"] = round(commits / (drained - fault_end))
        return figures

    def _check_dead_letters(self, letters: list[DeadLetter], poison_ids: set[str]) -> list[str]:
        if not poison_ids:
            if letters:
                events = sum(len(letter.event_ids) for letter in letters)
                return [f"(d) {len(letters)} dead letters holding {events} events "
                        f"(subjects {sorted({letter.subject for letter in letters})}; first error: "
                        f"{letters[0].headers.get('Listboss-Error', '?')[:200]})"]
            return []
        failures = []
        naming = [letter for letter in letters if poison_ids & set(letter.event_ids)
                  or poison_ids & set(_header_ids(letter.headers))]
        if len(letters) != 1 or len(naming) != 1:
            events = sum(len(letter.event_ids) for letter in letters)
            failures.append(f"(d) expected exactly one dead letter, for the poison; found {len(letters)} holding "
                            f"{events} events ({len(naming)} of them naming the poison)")
        for letter in naming[:1]:
            headers = letter.headers
            named = set(_header_ids(headers))
            if named != poison_ids:
                failures.append(
                    f"(d) Listboss-Event-Ids names {sorted(named)}, not only the poison {sorted(poison_ids)}"
                )
            if set(letter.event_ids) - poison_ids:
                failures.append(f"(d) the dead letter carries {len(letter.event_ids)} events, not only the poison")
            if headers.get("Listboss-Producer") != self.producer:
                failures.append(f"(d) Listboss-Producer is {headers.get('Listboss-Producer')!r}, not {self.producer!r}")
            original = headers.get("Listboss-Original-Subject", "")
            if not re.fullmatch(rf"listboss\.(events|changes)\.{re.escape(self.producer)}", original):
                failures.append(f"(d) Listboss-Original-Subject is {original!r}")
            if not headers.get("Listboss-Stream-Sequence", "").isdigit():
                failures.append(f"(d) Listboss-Stream-Sequence is {headers.get('Listboss-Stream-Sequence')!r}")
            if not headers.get("Listboss-Error"):
                failures.append("(d) Listboss-Error is missing")
        return failures

    def _record(self, figures: dict) -> None:
        try:
            recorded = json.loads(self.figures_file.read_text())
        except (OSError, ValueError):
            recorded = {}
        recorded[self.scenario] = figures
        self.figures_file.write_text(json.dumps(recorded, indent=2) + "\n")
        self.say(f"\n[{self.scenario}] {summary(figures)}")
        for failure in figures["failures"]:
            self.say(f"[{self.scenario}] FAILED {failure}")
        self.say(f"[{self.scenario}] figures written to {self.figures_file}")


def summary(figures: dict) -> str:
    """One line of a run's figures, for people."""

    def seconds(key: str) -> str:
        return "-" if figures.get(key) is None else f"{figures[key]} s"

    return (
        f"{figures['result'].upper()}: {figures['events_stored']} events stored, {figures['history_entries']} in the "
        f"history, {figures['events_lost']} lost, {figures['dead_lettered_events']} dead-lettered "
        f"({figures['dead_letters']} letters), {figures['tag_count_mismatches']} counts off, "
        f"{figures['tags_missing']} tags missing / {figures['tags_extra']} extra; backlog drained "
        f"{seconds('backlog_drained_after_fault_s')} after the fault at "
        f"{figures['drain_events_per_s'] or '-'} events/s, "
        f"caught up {seconds('caught_up_after_load_s')} after the load; contacts RSS peak "
        f"{figures['contacts_rss_peak_mib']} MiB; {figures['duration_s']} s"
    )


def _header_ids(headers: dict[str, str]) -> list[str]:
    return [part for part in re.split(r"[,\s]+", headers.get("Listboss-Event-Ids", "")) if part]
