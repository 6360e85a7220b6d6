"""NATS JetStream: the streams, publishing with acknowledgement, and durable pull workers.

Streams are file-backed. Publishers wait for JetStream's acknowledgement and set
``Nats-Msg-Id`` so the stream drops repeats inside its duplicate window; workers
ack only after their work is committed, nak with a delay on a passing failure,
and move a message that can never be processed to the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import nats
import structlog
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

log = structlog.get_logger("listboss.bus")


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    # Seconds in which a repeated Nats-Msg-Id is dropped.
    duplicate_window: float = 120.0
    max_msg_size: int = 8 * 1024 * 1024

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window,
            max_msg_size=self.max_msg_size,
        )


# Canonical events, one subject per producer: listboss.events.<producer>.
EVENTS = StreamSpec("LISTBOSS_EVENTS", ("listboss.events.>",))
# Segmentation's decisions, one subject per producer: listboss.changes.<producer>.
CHANGES = StreamSpec("LISTBOSS_CHANGES", ("listboss.changes.>",))
# Messages that could never be processed: listboss.deadletter.<stream>.<consumer>.
DEADLETTER = StreamSpec("LISTBOSS_DEADLETTER", ("listboss.deadletter.>",), duplicate_window=0)
# Committed tag changes for automations, one subject per producer:
# listboss.tagchanges.<producer>. Published from the contacts service's outbox
# with Nats-Msg-Id = tagchange/<outbox id>; consumers deduplicate by that id.
TAG_CHANGES = StreamSpec("LISTBOSS_TAG_CHANGES", ("listboss.tagchanges.>",))


def events_subject(producer: str) -> str:
    return f"listboss.events.{producer}"


def changes_subject(producer: str) -> str:
    return f"listboss.changes.{producer}"


def tag_changes_subject(producer: str) -> str:
    return f"listboss.tagchanges.{producer}"


async def connect(url: str, name: str) -> NatsClient:
    async def on_error(error: Exception) -> None:
        log.warning("nats error", error=str(error))

    return await nats.connect(
        url,
        name=name,
        error_cb=on_error,
        # Keep reconnecting for as long as the process lives: a NATS restart must
        # not take the service down, only pause it.
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
    )


async def ensure_streams(js: JetStreamContext, specs: Sequence[StreamSpec]) -> None:
    """Creates the streams, or brings an existing stream's settings up to date."""
    for spec in specs:
        try:
            await js.add_stream(spec.config())
        except BadRequestError:
            await js.update_stream(spec.config())


class PoisonMessage(Exception):
    """A message that can never be processed (it does not decode, or breaks a rule
    that no retry can fix). It goes straight to the dead-letter stream."""


BatchHandler = Callable[[Sequence[Msg]], Awaitable[None]]


@dataclass(frozen=True)
class WorkerSpec:
    stream: StreamSpec
    durable: str
    # Messages fetched and handled together (one transaction downstream).
    batch_size: int = 500
    # Seconds JetStream waits for an ack before redelivering.
    ack_wait: float = 60.0
    # Deliveries before a failing message is dead-lettered.
    max_deliver: int = 8
    # Cap on unacknowledged messages across this consumer's replicas.
    max_ack_pending: int = 20_000


class PullWorker:
    """A durable pull consumer that hands batches of messages to ``handler``.

    The handler raises to fail the batch; the worker then retries the messages
    one by one so that a single bad message cannot hold back the rest, naks a
    failing message with a growing delay, and dead-letters it after
    ``max_deliver`` attempts (or at once for :class:`PoisonMessage`).
    """

    def __init__(self, js: JetStreamContext, spec: WorkerSpec, handler: BatchHandler):
        self._js = js
        self._spec = spec
        self._handler = handler
        self._subscription: JetStreamContext.PullSubscription | None = None

    async def subscribe(self) -> None:
        await ensure_streams(self._js, [self._spec.stream, DEADLETTER])
        config = ConsumerConfig(
            durable_name=self._spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._spec.ack_wait,
            max_deliver=self._spec.max_deliver + 1,
            max_ack_pending=self._spec.max_ack_pending,
        )
        self._subscription = await self._js.pull_subscribe(
            self._spec.stream.subjects[0],
            durable=self._spec.durable,
            stream=self._spec.stream.name,
            config=config,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Fetches and handles batches until ``stop`` is set; the batch in hand is finished first."""
        if self._subscription is None:
            await self.subscribe()
        assert self._subscription is not None
        try:
            while not stop.is_set():
                try:
                    messages = await self._subscription.fetch(self._spec.batch_size, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
                    return
                except Exception as error:  # NATS reconnecting, JetStream leader change...
                    log.warning("fetch failed", error=repr(error))
                    await asyncio.sleep(0.5)
                    continue
                if messages:  # a fetch can end on a status message with nothing in hand
                    await self.process(messages)
        finally:
            # Drop the inbox so draining the connection does not wait on an expired
            # pull request. The durable consumer stays; anything delivered to the
            # inbox but not handled is redelivered after ack_wait.
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def process(self, messages: Sequence[Msg]) -> None:
        try:
            await self._handler(messages)
        except Exception as error:
            if len(messages) == 1:
                await self._fail(messages[0], error)
                return
            log.warning("batch failed; retrying one by one", size=len(messages), error=repr(error))
            for message in messages:
                try:
                    await self._handler([message])
                except Exception as single_error:
                    await self._fail(message, single_error)
                else:
                    await _ack(message)
            return
        await asyncio.gather(*(_ack(m) for m in messages))

    async def _fail(self, message: Msg, error: Exception) -> None:
        deliveries = message.metadata.num_delivered or 1
        if isinstance(error, PoisonMessage) or deliveries >= self._spec.max_deliver:
            try:
                await self._dead_letter(message, error)
                return
            except Exception as dead_letter_error:
                # NATS unreachable: the worker must not die; keep the message and let
                # its redelivery try the dead-letter path again.
                log.error("dead-lettering failed; will retry", deliveries=deliveries, error=repr(dead_letter_error))
        else:
            log.warning("message failed; will retry", deliveries=deliveries, error=repr(error))
        # Back off so a passing outage (database restart) is not hammered.
        with contextlib.suppress(Exception):  # a lost nak only means a redelivery after ack_wait
            await message.nak(delay=min(30.0, 0.5 * 2**deliveries))

    async def _dead_letter(self, message: Msg, error: Exception) -> None:
        metadata = message.metadata
        headers = {
            "Listboss-Original-Subject": message.subject,
            "Listboss-Stream-Sequence": str(metadata.sequence.stream),
            "Listboss-Deliveries": str(metadata.num_delivered),
            "Listboss-Error": repr(error)[:1000],
        }
        await self._js.publish(
            f"listboss.deadletter.{self._spec.stream.name}.{self._spec.durable}",
            message.data,
            headers=headers,
        )
        log.error(
            "message dead-lettered",
            subject=message.subject,
            stream_sequence=metadata.sequence.stream,
            deliveries=metadata.num_delivered,
            error=repr(error),
        )
        await message.term()


async def _ack(message: Msg) -> None:
    # A lost ack only means a redelivery, which every consumer tolerates.
    with contextlib.suppress(Exception):
        await message.ack()


# Packed messages stay well under nats-server's default 1 MiB max_payload.
MAX_PACKED_BYTES = 512 * 1024


def pack(items: Sequence, size_of: Callable[[object], int], limit: int = MAX_PACKED_BYTES) -> list[list]:
    """Splits ``items`` into consecutive groups whose summed sizes stay under ``limit``
    (a single item larger than ``limit`` travels alone)."""
    groups: list[list] = []
    current: list = []
    total = 0
    for item in items:
        size = size_of(item) + 8  # protobuf framing of a repeated field
        if current and total + size > limit:
            groups.append(current)
            current, total = [], 0
        current.append(item)
        total += size
    if current:
        groups.append(current)
    return groups


def unpack(messages: Sequence[Msg], batch_type: type, field: str) -> list:
    """The items of packed batch messages (e.g. ``EventBatch.events``), in order.
    A message that does not decode can never be processed: :class:`PoisonMessage`."""
    items: list = []
    for message in messages:
        batch = batch_type()
        try:
            batch.ParseFromString(message.data)
        except DecodeError as error:
            raise PoisonMessage(f"not a {batch_type.__name__}: {error}") from error
        items.extend(getattr(batch, field))
    return items


def content_id(*parts: str) -> str:
    """A Nats-Msg-Id derived from what a message carries, so a retry of the same
    content is recognised as a duplicate."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return digest[:32]


# --- Broadcasts on core NATS (rule changes) and replays of a stream (backfills).


async def broadcast(nc: NatsClient, subject: str, payload: bytes) -> None:
    """Publishes on core NATS (every subscriber of every replica receives it, none
    stores it) and waits until the server has it, so a caller that answers
    afterwards knows the others are being told."""
    await nc.publish(subject, payload)
    await nc.flush(timeout=5)


async def listen(nc: NatsClient, subject: str, handler: Callable[[bytes], None]):
    """Calls ``handler(payload)`` for every message on ``subject``; returns the subscription."""

    async def on_message(message: Msg) -> None:
        try:
            handler(message.data)
        except Exception as error:  # a bad broadcast must not stop the others
            log.warning("broadcast handler failed", subject=subject, error=repr(error))

    return await nc.subscribe(subject, cb=on_message)


async def replay(js: JetStreamContext, stream: StreamSpec, subject: str, idle_timeout: float = 5.0):
    """Yields the messages stored on ``subject`` in ``stream``, oldest first, up to
    the last one stored when the replay started, through an ordered ephemeral
    consumer (no ack, nothing left behind)."""
    info = await js.stream_info(stream.name, subjects_filter=subject)
    if not info.state.subjects or not any(info.state.subjects.values()):
        return
    last = info.state.last_seq
    subscription = await js.subscribe(
        subject, stream=stream.name, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    try:
        while True:
            try:
                message = await subscription.next_msg(timeout=idle_timeout)
            except nats.errors.TimeoutError:
                return  # nothing more arrives: the remaining ones were removed meanwhile
            yield message
            if message.metadata.sequence.stream >= last or message.metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
