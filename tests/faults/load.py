"""The load of a fault run: generated canonical events, what the automatic rules make of
them without a fault, and the paced generator that sends them through ingest."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence

import grpc

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from listboss_segmentation.consumer import change_for

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
        except Exception as error:
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
