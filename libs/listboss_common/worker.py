"""Durable pull workers: nothing accepted is lost, whatever fails.

A worker fetches a few packed messages, splits them into their items (events or
contact changes) and hands the handler bounded chunks of items, one transaction
each. Then:

- **A passing failure of the infrastructure** (see :mod:`listboss_common.faults`:
  database down or restarting, a deadlock, NATS disconnected, a publish timing out)
  never counts against a message. The worker keeps the messages (telling JetStream
  they are in progress), stops fetching, reports the dependency missing on its
  health, retries the same chunk with capped, jittered back-off for as long as the
  outage lasts, and resumes by itself.
- **A failure of the work itself** costs only the item that causes it: the chunk is
  split in halves until the failing item stands alone, every other item is handled,
  and the item is retried a few times, then published alone to
  ``LISTBOSS_DEADLETTER`` (a one-item packed message, ready to be replayed to its
  original subject) with the error, its producer, its event id and the original
  subject and sequence in headers. A message that does not decode is dead-lettered
  whole.
- **Traces** (when ``LISTBOSS_TRACES_EXPORTER`` turns them on): each chunk is handled
  in a consumer span linked to the ``traceparent`` of every message its items came
  from (:func:`listboss_common.tracing.processing`); what the handler publishes
  carries that span's context.
- **Acks follow the commit**: a message is acked once every one of its items is
  handled or dead-lettered. The consumer's ``ack_wait`` is short and the worker
  signals progress while it works, so the messages of a worker that dies are
  redelivered to another (or to the restarted one) within seconds. JetStream never
  gives up on a message by itself (unlimited deliveries): only the worker decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import nats
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError

from listboss_common import tracing
from listboss_common.bus import DEADLETTER, PackedItems, PoisonMessage, StreamSpec, ensure_streams
from listboss_common.faults import dependency_of, describe_error, is_transient
from listboss_common.metrics import (
    CONSUMER_ACK_PENDING,
    CONSUMER_BATCH_ITEMS,
    CONSUMER_BATCH_SECONDS,
    CONSUMER_DEAD_LETTERS,
    CONSUMER_ITEMS,
    CONSUMER_MESSAGES,
    CONSUMER_OUTAGE_WAITS,
    CONSUMER_PENDING,
    CONSUMER_REDELIVERIES,
)
from listboss_common.readiness import Readiness

log = structlog.get_logger("listboss.worker")


ItemHandler = Callable[[Sequence], Awaitable[None]]

# Seconds between two reads of the consumer's pending and ack-pending counts (for metrics).
CONSUMER_INFO_INTERVAL = 5.0


@dataclass(frozen=True)
class WorkerSpec:
    stream: StreamSpec
    durable: str
    # How the stream's messages carry items (events, contact changes).
    items: PackedItems
    # Messages fetched at a time: bounds the memory a backlog can take.
    batch_size: int = 100
    # Items handed to the handler at once, at most (one transaction downstream).
    max_items: int = 5_000
    # Seconds JetStream waits for an ack (or a progress signal) before redelivering.
    ack_wait: float = 6.0
    # Attempts at an item failing on its own before it is dead-lettered.
    item_attempts: int = 3
    # Cap on unacknowledged messages across this consumer's replicas.
    max_ack_pending: int = 20_000
    # Back-off while a dependency is down: doubles from ``min`` up to ``max`` seconds.
    outage_backoff_min: float = 0.25
    outage_backoff_max: float = 10.0
    # The subjects this consumer takes (default: all the stream's), e.g. one partition's.
    filter_subject: str | None = None

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            filter_subject=self.filter_subject or self.stream.subjects[0],
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            # Unlimited: dead-lettering is the worker's decision, never a silent stop.
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
        )


class _Stopped(Exception):
    """The worker is asked to stop while it waits out an outage."""


class PullWorker:
    """A durable pull consumer handing bounded chunks of items to ``handler``.

    The handler takes a sequence of decoded items and raises to fail them; see the
    module docstring for what happens then.
    """

    def __init__(
        self,
        js: JetStreamContext,
        spec: WorkerSpec,
        handler: ItemHandler,
        readiness: Readiness | None = None,
    ):
        self._js = js
        self._spec = spec
        self._handler = handler
        self._readiness = readiness or Readiness()
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._outages = 0
        self._stop = asyncio.Event()
        consumer = spec.durable
        self._messages_handled = CONSUMER_MESSAGES.labels(consumer)
        self._items_handled = CONSUMER_ITEMS.labels(consumer)
        self._batch_items = CONSUMER_BATCH_ITEMS.labels(consumer)
        self._batch_seconds = CONSUMER_BATCH_SECONDS.labels(consumer)
        self._redeliveries = CONSUMER_REDELIVERIES.labels(consumer)
        self._dead_letters = CONSUMER_DEAD_LETTERS.labels(consumer)

    @property
    def readiness(self) -> Readiness:
        return self._readiness

    async def subscribe(self) -> None:
        await self.ensure_consumer()
        self._subscription = await self._js.pull_subscribe_bind(
            durable=self._spec.durable, stream=self._spec.stream.name
        )

    async def ensure_consumer(self) -> None:
        """Creates the stream and the durable consumer, or brings an existing one's settings up
        to date, without consuming (a partition's consumer exists before a replica works it)."""
        await ensure_streams(self._js, [self._spec.stream, DEADLETTER])
        try:
            # Creates the durable consumer, or brings an existing one's settings up to
            # date (ack_wait, deliveries) so a deployment picks up new values.
            await self._js.add_consumer(self._spec.stream.name, self._spec.consumer_config())
        except BadRequestError as error:
            log.warning("consumer settings not updated", durable=self._spec.durable, error=str(error))

    async def run(self, stop: asyncio.Event) -> None:
        """Fetches and handles batches until ``stop`` is set; the batch in hand is
        finished first (unless it waits on an outage: then it is left for redelivery)."""
        self._stop = stop
        if self._subscription is None:
            await self.subscribe()
        assert self._subscription is not None
        observer = asyncio.create_task(self._observe_consumer(stop))
        try:
            while not stop.is_set():
                try:
                    messages = await self._subscription.fetch(self._spec.batch_size, timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    # Nothing arrived in time (nats-py raises either, depending on where its wait
                    # ended): an idle consumer, not a failure.
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                    return
                except Exception as error:  # NATS reconnecting, JetStream leader change...
                    log.warning("fetch failed", durable=self._spec.durable, error=describe_error(error))
                    await _sleep_unless(stop, 0.5)
                    continue
                if messages:  # a fetch can end on a status message with nothing in hand
                    await self.process(messages)
        finally:
            # Drop the inbox so draining the connection does not wait on an expired
            # pull request. The durable consumer stays; anything delivered to the
            # inbox but not handled is redelivered after ack_wait.
            observer.cancel()
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _observe_consumer(self, stop: asyncio.Event) -> None:
        """Keeps the pending and ack-pending gauges fresh: one consumer_info every few seconds,
        whatever the scrape rate."""
        pending = CONSUMER_PENDING.labels(self._spec.durable)
        ack_pending = CONSUMER_ACK_PENDING.labels(self._spec.durable)
        while not stop.is_set():
            try:
                info = await self._js.consumer_info(self._spec.stream.name, self._spec.durable, timeout=2.0)
                pending.set(info.num_pending or 0)
                ack_pending.set(info.num_ack_pending or 0)
            except Exception:  # NATS away: the gauges keep their last values
                pass
            if await _sleep_unless(stop, CONSUMER_INFO_INTERVAL):
                return

    async def process(self, messages: Sequence[Msg]) -> None:
        """Handles fetched messages: every item applied or dead-lettered, then acked."""
        unacked = list(messages)
        heartbeat = asyncio.create_task(self._signal_progress(unacked))
        try:
            await self._process(messages, unacked)
        except _Stopped:
            # Asked to stop while a dependency is down: give the messages back now
            # rather than after ack_wait, with a delay so they are not hammered.
            await asyncio.gather(*(_quietly(m.nak(delay=self._spec.ack_wait)) for m in unacked))
        finally:
            heartbeat.cancel()

    async def _process(self, messages: Sequence[Msg], unacked: list[Msg]) -> None:
        # Each item with the index of the message it came from.
        items: list = []
        owners: list[int] = []
        last_item: dict[int, int] = {}
        started = time.perf_counter()
        # The trace context each message carries; only looked at while tracing is on.
        traced = tracing.enabled()
        upstream = [tracing.message_context(m.headers) for m in messages] if traced else ()
        for index, message in enumerate(messages):
            with contextlib.suppress(Exception):  # a message that is not from JetStream has none
                if message.metadata.num_delivered > 1:
                    self._redeliveries.inc()
            try:
                decoded = self._spec.items.decode(message.data)
            except PoisonMessage as error:
                await self._dead_letter_message(message, error)
                await self._ack([message], unacked)
                continue
            if not decoded:
                await self._ack([message], unacked)
                continue
            items.extend(decoded)
            owners.extend([index] * len(decoded))
            last_item[index] = len(items) - 1
        # Chunks of equal size, none above max_items: 5,001 items make two of 2,501, not
        # one of 5,000 and one of 1 (each chunk costs a transaction's fixed work).
        chunks = -(-len(items) // self._spec.max_items)
        size = -(-len(items) // chunks) if chunks else 0
        for start in range(0, len(items), size or 1):
            end = min(start + size, len(items))
            if traced:
                # Owners ascend: the chunk's messages are those from its first item's to its last's.
                chunk_upstream = [upstream[i] for i in range(owners[start], owners[end - 1] + 1) if i in last_item]
                with tracing.processing(
                    f"process {self._spec.durable}",
                    chunk_upstream,
                    {
                        "messaging.system": "nats",
                        "messaging.destination.name": self._spec.stream.name,
                        "messaging.consumer.group.name": self._spec.durable,
                        "messaging.batch.message_count": len(chunk_upstream),
                        "listboss.items": end - start,
                    },
                ):
                    await self._settle(items[start:end], messages, owners[start:end])
            else:
                await self._settle(items[start:end], messages, owners[start:end])
            done = [messages[i] for i, last in last_item.items() if start <= last < end]
            await self._ack(done, unacked)
        if items:
            self._batch_items.observe(len(items))
            self._batch_seconds.observe(time.perf_counter() - started)
            log.info(
                "batch handled",
                durable=self._spec.durable,
                messages=len(messages),
                items=len(items),
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )

    async def _settle(self, items: Sequence, messages: Sequence[Msg], owners: Sequence[int]) -> None:
        """Handles ``items``; returns once each is handled or dead-lettered."""
        attempts = 0
        while True:
            try:
                await self._handler(items)
            except Exception as error:
                if is_transient(error):
                    await self._wait_out(error)
                    continue
                if len(items) > 1:
                    # Split until the failing items stand alone; the others go through.
                    half = len(items) // 2
                    log.warning(
                        "chunk failed; splitting",
                        durable=self._spec.durable,
                        size=len(items),
                        error=describe_error(error),
                    )
                    await self._settle(items[:half], messages, owners[:half])
                    await self._settle(items[half:], messages, owners[half:])
                    return
                attempts += 1
                if isinstance(error, PoisonMessage) or attempts >= self._spec.item_attempts:
                    await self._dead_letter_item(items[0], messages[owners[0]], error)
                    return
                log.warning(
                    "item failed; will retry",
                    durable=self._spec.durable,
                    attempts=attempts,
                    error=describe_error(error),
                )
                await _sleep_unless(self._stop, 0.2 * attempts)
                continue
            self._items_handled.inc(len(items))
            self._recovered()
            return

    async def _wait_out(self, error: BaseException) -> None:
        """Backs off while a dependency is down; raises :class:`_Stopped` on shutdown."""
        dependency = dependency_of(error)
        self._readiness.down(f"{dependency} ({self._spec.durable} worker)", describe_error(error)[:300])
        self._outages += 1
        CONSUMER_OUTAGE_WAITS.labels(self._spec.durable, dependency).inc()
        ceiling = min(self._spec.outage_backoff_max, self._spec.outage_backoff_min * 2 ** min(self._outages, 16))
        delay = ceiling * random.uniform(0.5, 1.0)
        log.warning(
            "dependency unavailable; waiting",
            durable=self._spec.durable,
            dependency=dependency,
            retry_in_s=round(delay, 2),
            error=describe_error(error)[:300],
        )
        if await _sleep_unless(self._stop, delay):
            raise _Stopped()

    def _recovered(self) -> None:
        if self._outages:
            self._outages = 0
            for dependency in list(self._readiness.missing):
                if dependency.endswith(f"({self._spec.durable} worker)"):
                    self._readiness.up(dependency)

    async def _dead_letter_item(self, item, message: Msg, error: BaseException) -> None:
        producer, event_id = self._spec.items.describe(item)
        await self._publish_dead_letter(
            message, self._spec.items.encode([item]), error, producer=producer, event_ids=event_id
        )

    async def _dead_letter_message(self, message: Msg, error: BaseException) -> None:
        # listboss.<events|changes>.<producer>[.<partition>]
        parts = message.subject.split(".")
        producer = parts[2] if len(parts) > 2 else ""
        await self._publish_dead_letter(message, message.data, error, producer=producer, event_ids="")

    async def _publish_dead_letter(
        self, message: Msg, body: bytes, error: BaseException, *, producer: str, event_ids: str
    ) -> None:
        metadata = message.metadata
        headers = {
            "Nats-Msg-Id": f"deadletter/{self._spec.stream.name}/{metadata.sequence.stream}/{event_ids}",
            "Listboss-Original-Subject": message.subject,
            "Listboss-Stream": self._spec.stream.name,
            "Listboss-Consumer": self._spec.durable,
            "Listboss-Stream-Sequence": str(metadata.sequence.stream),
            "Listboss-Deliveries": str(metadata.num_delivered),
            "Listboss-Error": describe_error(error)[:1000],
            "Listboss-Producer": producer,
            "Listboss-Event-Ids": event_ids,
            "Listboss-Dead-Letter-Time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        tracing.inject(headers)  # the chunk span's context, when tracing is on
        subject = f"listboss.deadletter.{self._spec.stream.name}.{self._spec.durable}"
        while True:
            try:
                await self._js.publish(subject, body, headers=headers)
                self._recovered()
                break
            except Exception as publish_error:
                # The dead letter must be stored before the original is acked.
                await self._wait_out(publish_error)
        self._dead_letters.inc()
        log.error(
            "dead-lettered",
            durable=self._spec.durable,
            subject=message.subject,
            stream_sequence=metadata.sequence.stream,
            producer=producer,
            event_ids=event_ids,
            error=describe_error(error)[:1000],
        )

    async def _ack(self, done: Sequence[Msg], unacked: list[Msg]) -> None:
        for message in done:
            unacked.remove(message)
        self._messages_handled.inc(len(done))
        # A lost ack only means a redelivery, which every consumer tolerates.
        await asyncio.gather(*(_quietly(m.ack()) for m in done))

    async def _signal_progress(self, unacked: list[Msg]) -> None:
        """Keeps the messages in hand ours while the work (or an outage) lasts."""
        interval = self._spec.ack_wait / 3
        while True:
            await asyncio.sleep(interval)
            await asyncio.gather(*(_quietly(m.in_progress()) for m in list(unacked)))


async def _quietly(call: Awaitable) -> None:
    with contextlib.suppress(Exception):
        await call


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleeps ``seconds``; returns True at once if ``stop`` is (or becomes) set."""
    if stop.is_set():
        return True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
