"""NATS JetStream: the streams, what their messages carry, packing, and publishing.

Streams are file-backed and keep messages for a limited time (and, if set, size):
defaults in the specs below, overridden by ``<STREAM>_MAX_AGE`` / ``<STREAM>_MAX_BYTES``
variables. Each is stored on ``LISTBOSS_STREAM_REPLICAS`` NATS nodes (``<STREAM>_REPLICAS``
for one stream): 1 on a single server, 3 in a cluster, where a stream keeps taking writes
while a majority of its replicas lives. :func:`ensure_streams` creates them, and on an
existing stream changes only the settings ListBoss owns and never weakens it (fewer
replicas, fewer subjects), warning about every difference it finds. Publishers wait for
JetStream's acknowledgement and set
``Nats-Msg-Id`` so the stream drops repeats inside its duplicate window. Events and
contact changes travel packed, several to a message (:class:`PackedItems`). The
durable workers that consume the streams are in :mod:`listboss_common.worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import structlog
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import config
from listboss_common.readiness import Readiness

log = structlog.get_logger("listboss.bus")


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    # Seconds in which a repeated Nats-Msg-Id is dropped.
    duplicate_window: float = 120.0
    max_msg_size: int = 8 * 1024 * 1024
    # Messages kept per subject (-1: no limit); 1 makes each subject a single record.
    max_msgs_per_subject: int = -1
    # Whether any replica answers direct gets (reads of one message without a consumer).
    allow_direct: bool = False
    # Retention: messages older than max_age seconds, and the oldest beyond max_bytes, are
    # removed (0: no limit). Defaults here; an operator overrides them through
    # <settings_prefix>_MAX_AGE and <settings_prefix>_MAX_BYTES (docs/operations.md,
    # "Retention and sizing"). Without a prefix the stream's limits are fixed.
    max_age: float = 0.0
    max_bytes: int = 0
    settings_prefix: str = ""
    # NATS nodes holding a copy (JetStream allows 1 to 5). Every stream, prefixed or not, takes
    # LISTBOSS_STREAM_REPLICAS, or <settings_prefix or name>_REPLICAS for itself alone.
    replicas: int = 1

    def with_settings(self) -> StreamSpec:
        """This spec with the limits and replica count the environment sets; ConfigError names
        a bad variable."""
        default_replicas = config.env_int_between(REPLICAS_SETTING, self.replicas, 1, MAX_REPLICAS)
        replicas = config.env_int_between(
            f"{self.settings_prefix or self.name}_REPLICAS", default_replicas, 1, MAX_REPLICAS
        )
        spec = self if replicas == self.replicas else dataclasses.replace(self, replicas=replicas)
        if not self.settings_prefix:
            return spec
        return dataclasses.replace(
            spec,
            max_age=config.env_duration(f"{self.settings_prefix}_MAX_AGE", self.max_age),
            max_bytes=config.env_size(f"{self.settings_prefix}_MAX_BYTES", self.max_bytes),
        )

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            storage=StorageType.FILE,
            duplicate_window=self.duplicate_window,
            max_msg_size=self.max_msg_size,
            max_msgs_per_subject=self.max_msgs_per_subject,
            allow_direct=self.allow_direct,
            # JetStream: 0 seconds and -1 bytes mean no limit.
            max_age=self.max_age,
            max_bytes=self.max_bytes or -1,
            num_replicas=self.replicas,
        )


# The replica count of every stream (docs/operations.md, "Running a cluster").
REPLICAS_SETTING = "LISTBOSS_STREAM_REPLICAS"
MAX_REPLICAS = 5  # JetStream's own limit

DAY = 86_400.0

# Canonical events, one subject per producer: listboss.events.<producer>.
EVENTS = StreamSpec("LISTBOSS_EVENTS", ("listboss.events.>",), max_age=30 * DAY, settings_prefix="LISTBOSS_EVENTS")
# Segmentation's decisions, one subject per producer and partition of its contacts:
# listboss.changes.<producer>.<partition> (see changes_subject; listboss.changes.<producer>
# before partitions, still read).
CHANGES = StreamSpec("LISTBOSS_CHANGES", ("listboss.changes.>",), max_age=7 * DAY, settings_prefix="LISTBOSS_CHANGES")
# Messages and items that could never be processed: listboss.deadletter.<stream>.<consumer>.
# Nats-Msg-Id names the original (stream, sequence, event), so a dead letter whose
# publish is retried after a timeout is stored once.
DEADLETTER = StreamSpec(
    "LISTBOSS_DEADLETTER", ("listboss.deadletter.>",), max_age=30 * DAY, settings_prefix="LISTBOSS_DEADLETTER"
)
# Committed tag changes for automations, one subject per producer:
# listboss.tagchanges.<producer>. Published from the contacts service's outbox
# with Nats-Msg-Id = tagchange/<outbox id>; consumers deduplicate by that id.
TAG_CHANGES = StreamSpec(
    "LISTBOSS_TAG_CHANGES", ("listboss.tagchanges.>",), max_age=7 * DAY, settings_prefix="LISTBOSS_TAG_CHANGES"
)
# One wrapped data key per (producer, person), never expiring:
# listboss.personkeys.<producer>.<key id>. Created only where none exists
# (Nats-Expected-Last-Subject-Sequence: 0) and erased when the person is
# (:mod:`listboss_common.personal_data`).
PERSON_KEYS = StreamSpec("LISTBOSS_PERSON_KEYS", ("listboss.personkeys.>",), max_msgs_per_subject=1, allow_direct=True)


def events_subject(producer: str) -> str:
    return f"listboss.events.{producer}"


def changes_subject(producer: str, partition: int | None = None) -> str:
    """Where a producer's contact changes travel: ``listboss.changes.<producer>.<partition>``
    (without a partition, the subject used before partitions, which contacts still reads)."""
    if partition is None:
        return f"listboss.changes.{producer}"
    return f"listboss.changes.{producer}.{partition}"


# --- Partitions of the contact changes.
#
# Every change goes to one of LISTBOSS_CONTACTS_PARTITIONS partitions, chosen by a stable hash of
# its person, so all the changes of one contact travel in one partition and are applied by the one
# contacts replica that works that partition at the time (listboss_common.partitions). Every
# segmentation and contacts process must use the same count: changing it is an operation
# (docs/operations.md, "Partitions of the contact changes").

PARTITIONS_SETTING = "LISTBOSS_CONTACTS_PARTITIONS"
DEFAULT_PARTITIONS = 8
MAX_PARTITIONS = 256
# The subjects of the changes published before partitions: listboss.changes.<producer>.
UNPARTITIONED_CHANGES = "listboss.changes.*"


def contacts_partitions() -> int:
    """The partition count the environment sets; ConfigError names a bad value."""
    return config.env_int_between(PARTITIONS_SETTING, DEFAULT_PARTITIONS, 1, MAX_PARTITIONS)


def changes_partition_filter(partition: int) -> str:
    """The changes of every producer in one partition."""
    return f"listboss.changes.*.{partition}"


def partition_of(person: str, partitions: int) -> int:
    """The partition of a person named by ``person`` (a stable hash: the same in every process,
    on every machine, in every release)."""
    digest = hashlib.blake2b(person.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def event_partition(event: event_pb2.Event, partitions: int) -> int:
    """The partition of the changes an event makes: by its sealed person's key id (a keyed hash of
    producer and email, the same in every event about that person), by the normalized email of a
    clear person, and 0 for an event about nobody."""
    if partitions <= 1:
        return 0
    key_id = event.sealed_person.key_id
    if key_id:
        return partition_of(key_id, partitions)
    email = event.person.email.strip().lower()
    if email:
        return partition_of(email, partitions)
    return 0


def tag_changes_subject(producer: str) -> str:
    return f"listboss.tagchanges.{producer}"


async def connect(url: str | Sequence[str], name: str, readiness: Readiness | None = None) -> NatsClient:
    """Connects for the life of the process; ``readiness`` hears when NATS goes away and comes back.

    ``url`` is one URL, or the nodes of a cluster (a list, or URLs separated by commas): the
    first that answers will do, and when it goes away the client moves to another node (and
    to the nodes the cluster announces)."""
    servers = config.nats_servers(url) if isinstance(url, str) else list(url)

    async def on_error(error: Exception) -> None:
        log.warning("nats error", error=str(error))

    client: NatsClient | None = None

    async def on_disconnected() -> None:
        # Draining at shutdown disconnects too: that is no outage.
        if readiness is not None and client is not None and not (client.is_draining or client.is_closed):
            readiness.down("nats", "disconnected")

    async def on_reconnected() -> None:
        if readiness is not None:
            readiness.up("nats")

    client = await nats.connect(
        servers,
        name=name,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
        # Keep reconnecting for as long as the process lives: a NATS restart must
        # not take the service down, only pause it.
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
    )
    return client


async def ensure_streams(js: JetStreamContext, specs: Sequence[StreamSpec]) -> None:
    """Creates the streams, or brings an existing stream's settings up to date, with the
    limits and replica counts the environment sets (a bad value raises ConfigError before any
    change). An existing stream keeps what ListBoss does not own (its placement, sources, an
    operator's description...), keeps a higher replica count and the subjects it has beyond
    ours, and every difference from our settings is logged as a warning."""
    configured = [spec.with_settings() for spec in specs]
    for spec in configured:
        name = spec.name
        try:
            stored = (await _patiently(js.stream_info, name)).config
        except NotFoundError:
            try:
                await _patiently(js.add_stream, spec.config())
                continue
            except BadRequestError as error:
                # Another process created it meanwhile; anything else (more replicas than
                # nodes, a subject another stream holds) is the server's answer to pass on.
                try:
                    stored = (await _patiently(js.stream_info, name)).config
                except NotFoundError:
                    raise error from None
        merged, differences = reconcile_stream(stored, spec.config())
        for difference in differences:
            log.warning("stream configuration differs from this service's", stream=name, **difference)
        if merged != stored:
            await _patiently(js.update_stream, merged)


# How long setting up a stream waits for JetStream to answer: a cluster that has just started,
# or has just lost a node, elects its leaders within seconds and answers with a timeout or
# "temporarily unavailable" meanwhile.
STREAM_SETUP_PATIENCE = 30.0

_Answer = TypeVar("_Answer")


async def _patiently(call: Callable[..., Awaitable[_Answer]], *args: Any) -> _Answer:
    """``await call(*args)``, again while JetStream is not ready, for STREAM_SETUP_PATIENCE seconds."""
    deadline = time.monotonic() + STREAM_SETUP_PATIENCE
    while True:
        try:
            return await call(*args)
        except (nats.errors.TimeoutError, ServiceUnavailableError) as error:
            if time.monotonic() > deadline:
                raise
            log.info("jetstream not ready yet: retrying", error=str(error) or type(error).__name__)
            await asyncio.sleep(0.5)


# The settings of a stream that ListBoss owns; whatever else an operator sets is kept.
_OWNED_SETTINGS = (
    "subjects",
    "num_replicas",
    "duplicate_window",
    "max_msg_size",
    "max_msgs_per_subject",
    "allow_direct",
    "max_age",
    "max_bytes",
)
# How JetStream reports "not set" for each (nats-py leaves some of them None).
_UNSET = {"num_replicas": 1, "max_msg_size": -1, "max_msgs_per_subject": -1, "max_bytes": -1, "max_age": 0.0}


def _setting(stream: StreamConfig, name: str) -> Any:
    value = getattr(stream, name)
    if value is None:
        return _UNSET.get(name, False if name == "allow_direct" else value)
    return value


def _same(stored: Any, wanted: Any) -> bool:
    if isinstance(stored, float) or isinstance(wanted, float):
        return math.isclose(float(stored), float(wanted), rel_tol=1e-9, abs_tol=1e-6)
    return bool(stored == wanted)


def reconcile_stream(stored: StreamConfig, wanted: StreamConfig) -> tuple[StreamConfig, list[dict[str, Any]]]:
    """The configuration to update ``stored`` to so that it has ``wanted``'s settings without
    losing strength, and each difference found: ``{setting, stored, configured, kept}``.

    Only the settings ListBoss owns are changed. The replica count never goes down and no
    stored subject is dropped (an operator who raised or widened them meant it); the other
    owned settings take the configured value."""
    changes: dict[str, Any] = {}
    differences: list[dict[str, Any]] = []
    for name in _OWNED_SETTINGS:
        before, after = _setting(stored, name), _setting(wanted, name)
        if name == "subjects":
            before, after = list(before or []), list(after or [])
            if set(before) == set(after):
                continue
            kept = before + [subject for subject in after if subject not in before]
        elif _same(before, after):
            continue
        else:
            kept = max(before, after) if name == "num_replicas" else after
        differences.append({"setting": name, "stored": before, "configured": after, "kept": kept})
        if not _same(before, kept):
            changes[name] = kept
    storage_before, storage_after = stored.storage, wanted.storage
    if storage_before is not None and str(getattr(storage_before, "value", storage_before)) != str(
        getattr(storage_after, "value", storage_after)
    ):
        # JetStream cannot change a stream's storage in place.
        differences.append(
            {
                "setting": "storage",
                "stored": str(storage_before),
                "configured": str(storage_after),
                "kept": str(storage_before),
            }
        )
    return dataclasses.replace(stored, **changes), differences


class PoisonMessage(Exception):
    """A message or item that can never be processed (it does not decode, or breaks a
    rule that no retry can fix). It goes to the dead-letter stream without retries."""


@dataclass(frozen=True)
class PackedItems:
    """How a stream's messages carry items: a batch message with one repeated field."""

    batch_type: type
    field: str
    # (producer, event id) of an item: what a dead letter is labelled with.
    describe: Callable[[Any], tuple[str, str]]  # an item of batch_type's field

    def decode(self, data: bytes) -> list:
        batch = self.batch_type()
        try:
            batch.ParseFromString(data)
        except DecodeError as error:
            raise PoisonMessage(f"not a {self.batch_type.__name__}: {error}") from error
        return list(getattr(batch, self.field))

    def encode(self, items: Sequence) -> bytes:
        return self.batch_type(**{self.field: items}).SerializeToString()


# What LISTBOSS_EVENTS and LISTBOSS_CHANGES carry.
EVENT_ITEMS = PackedItems(event_pb2.EventBatch, "events", lambda event: (event.producer, event.id))
CHANGE_ITEMS = PackedItems(
    contact_change_pb2.ContactChangeBatch, "changes", lambda change: (change.event.producer, change.event.id)
)


# Packed messages stay well under nats-server's default 1 MiB max_payload.
MAX_PACKED_BYTES = 512 * 1024


_Item = TypeVar("_Item")


def pack(items: Sequence[_Item], size_of: Callable[[_Item], int], limit: int = MAX_PACKED_BYTES) -> list[list[_Item]]:
    """Splits ``items`` into consecutive groups whose summed sizes stay under ``limit``
    (a single item larger than ``limit`` travels alone)."""
    groups: list[list[_Item]] = []
    current: list[_Item] = []
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


def varint(value: int) -> bytes:
    """A non-negative int as a protobuf varint."""
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [bytes((value,)) for value in range(0x80)]


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    """One length-delimited protobuf field: ``tag``, the length, ``payload``."""
    return tag + varint(len(payload)) + payload


# The repeated field of EventBatch (events) and ContactChangeBatch (changes): field 1, length-delimited.
_ITEMS_FIELD_TAG = b"\x0a"


def packed_message(serialized: Sequence[bytes]) -> bytes:
    """The wire form of a packed batch message (an ``EventBatch`` or a ``ContactChangeBatch``)
    built from its items' serialized bytes: no protobuf copies of the items."""
    return b"".join([_ITEMS_FIELD_TAG + varint(len(item)) + item for item in serialized])


def unpack(messages: Sequence[Msg], items: PackedItems) -> list:
    """The items of packed batch messages, in order; :class:`PoisonMessage` if one does not decode."""
    return [item for message in messages for item in items.decode(message.data)]


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


async def replay(js: JetStreamContext, stream: StreamSpec, subject: str, idle_timeout: float = 5.0, *, after: int = 0):
    """Yields the messages stored on ``subject`` in ``stream`` after stream sequence
    ``after`` (0: from the oldest), oldest first, up to the last one stored when the
    replay started, through an ordered ephemeral consumer (no ack, nothing left behind)."""
    info = await js.stream_info(stream.name, subjects_filter=subject)
    if not info.state.subjects or not any(info.state.subjects.values()) or info.state.last_seq <= after:
        return
    last = info.state.last_seq
    start = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1) if after else None
    subscription = await js.subscribe(
        subject,
        stream=stream.name,
        ordered_consumer=True,
        config=start,
        deliver_policy=None if after else DeliverPolicy.ALL,
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
