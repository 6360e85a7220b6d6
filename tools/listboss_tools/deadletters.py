"""Reading, replaying and purging the dead-letter stream (``listboss-ops deadletters``).

A bus worker moves what it can never process to ``LISTBOSS_DEADLETTER``, subject
``listboss.deadletter.<stream>.<consumer>``:

- the body is, for one failing item of a packed message, a one-item packed batch of the
  type the original subject carries (``EventBatch`` on ``listboss.events.<producer>``,
  ``ContactChangeBatch`` on ``listboss.changes.<producer>``), so it can be published to
  that subject again as it is; for a message that does not decode, the original bytes;
- the headers name where it came from and why it failed (the ``Listboss-*`` constants
  below). Dead letters written before some of these headers existed lack them: every
  reader here falls back to the subject and the body.

A replay publishes the body to its original subject with ``Nats-Msg-Id =
deadletter-replay/<seq>`` (a second replay inside the stream's duplicate window is
stored once), waits for JetStream's acknowledgement, then deletes the dead letter.
Replaying is safe because contacts skips an event already in its history.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import bus

STREAM = bus.DEADLETTER.name
SUBJECT_PREFIX = "listboss.deadletter."

ORIGINAL_SUBJECT = "Listboss-Original-Subject"
ORIGINAL_STREAM = "Listboss-Stream"
CONSUMER = "Listboss-Consumer"
STREAM_SEQUENCE = "Listboss-Stream-Sequence"
DELIVERIES = "Listboss-Deliveries"
ERROR = "Listboss-Error"
PRODUCER = "Listboss-Producer"
EVENT_IDS = "Listboss-Event-Ids"
DEAD_LETTER_TIME = "Listboss-Dead-Letter-Time"
REPLAYED_FROM = "Listboss-Replayed-From"

# What each original stream's messages carry: (subject prefix, packed batch type, its repeated field).
PACKED = {
    bus.EVENTS.name: ("listboss.events.", event_pb2.EventBatch, "events"),
    bus.CHANGES.name: ("listboss.changes.", contact_change_pb2.ContactChangeBatch, "changes"),
}
PUBLISH_TIMEOUT = 5.0


def replay_message_id(seq: int) -> str:
    return f"deadletter-replay/{seq}"


def stream_name(value: str) -> str:
    """An original stream given as LISTBOSS_CHANGES, changes or CHANGES."""
    upper = value.strip().upper()
    return upper if upper.startswith("LISTBOSS_") else f"LISTBOSS_{upper}"


def subject_filter(stream: str | None = None) -> str:
    """The dead-letter subjects of one original stream, or all of them."""
    return f"{SUBJECT_PREFIX}{stream}.>" if stream else f"{SUBJECT_PREFIX}>"


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    # listboss.deadletter.<stream>.<consumer>
    subject: str
    data: bytes
    headers: Mapping[str, str]
    # When the dead-letter stream stored it.
    stored: dt.datetime | None

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    def _subject_part(self, index: int) -> str:
        parts = self.subject.removeprefix(SUBJECT_PREFIX).split(".", 1)
        return parts[index] if len(parts) > index else ""

    @property
    def original_subject(self) -> str:
        return self.header(ORIGINAL_SUBJECT)

    @property
    def original_stream(self) -> str:
        return self.header(ORIGINAL_STREAM) or self._subject_part(0)

    @property
    def consumer(self) -> str:
        return self.header(CONSUMER) or self._subject_part(1)

    @property
    def error(self) -> str:
        return self.header(ERROR)

    @property
    def time(self) -> dt.datetime | None:
        """When it was dead-lettered (the header), else when the stream stored it."""
        written = self.header(DEAD_LETTER_TIME)
        if written:
            try:
                moment = dt.datetime.fromisoformat(written)
            except ValueError:
                moment = None
            if moment is not None:
                return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        return self.stored

    def _packed(self):
        """(subject prefix, batch type, field) of the body, from the original subject or stream."""
        for prefix, batch_type, field in PACKED.values():
            if self.original_subject.startswith(prefix):
                return prefix, batch_type, field
        return PACKED.get(self.original_stream)

    def decode(self) -> tuple[Message | None, str]:
        """The body as its packed batch, or (None, why not)."""
        packed = self._packed()
        if packed is None:
            return None, f"unknown original subject {self.original_subject or '(none)'}"
        _, batch_type, field = packed
        batch = batch_type()
        try:
            batch.ParseFromString(self.data)
        except DecodeError as error:
            return None, f"not a {batch_type.__name__}: {error}"
        if not getattr(batch, field):
            return None, f"a {batch_type.__name__} with no {field}"
        return batch, ""

    def _events(self) -> list[event_pb2.Event]:
        batch, _ = self.decode()
        if batch is None:
            return []
        if isinstance(batch, event_pb2.EventBatch):
            return list(batch.events)
        return [change.event for change in batch.changes]

    @property
    def event_ids(self) -> list[str]:
        listed = self.header(EVENT_IDS)
        if listed:
            return [part.strip() for part in listed.split(",") if part.strip()]
        return [event.id for event in self._events()]

    @property
    def producer(self) -> str:
        """The header, else the body's events', else the original subject's last part."""
        named = self.header(PRODUCER)
        if named:
            return named
        producers = {event.producer for event in self._events()}
        if len(producers) == 1:
            return producers.pop()
        # listboss.<events|changes>.<producer>[.<partition>]
        if self.original_subject.count(".") >= 2:
            return self.original_subject.split(".")[2]
        return ""

    def body_json(self) -> object | None:
        batch, _ = self.decode()
        if batch is None:
            return None
        return json_format.MessageToDict(batch, preserving_proto_field_name=True)

    def summary(self, now: dt.datetime) -> dict:
        """What ``list --json`` prints: everything but the body."""
        moment = self.time
        return {
            "seq": self.seq,
            "subject": self.subject,
            "dead_letter_time": rfc3339(moment) if moment else None,
            "age_seconds": round((now - moment).total_seconds(), 3) if moment else None,
            "original_subject": self.original_subject or None,
            "stream": self.original_stream or None,
            "consumer": self.consumer or None,
            "stream_sequence": _number(self.header(STREAM_SEQUENCE)),
            "deliveries": _number(self.header(DELIVERIES)),
            "producer": self.producer or None,
            "event_ids": self.event_ids,
            "error": self.error or None,
            "replayed_from": _number(self.header(REPLAYED_FROM)),
            "size": len(self.data),
        }


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _headers(raw: Mapping | None) -> dict[str, str]:
    return {str(key): str(value) for key, value in (raw or {}).items()}


async def exists(js: JetStreamContext) -> bool:
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        return False
    return True


async def read(js: JetStreamContext, stream: str | None = None) -> AsyncIterator[DeadLetter]:
    """The dead letters (of one original stream, or all), oldest first: those stored when
    the read started (an empty or missing stream yields nothing)."""
    if not await exists(js):
        return
    async for message in bus.replay(js, bus.DEADLETTER, subject_filter(stream), idle_timeout=2.0):
        metadata = message.metadata
        yield DeadLetter(
            metadata.sequence.stream,
            message.subject,
            message.data or b"",
            _headers(message.headers),
            metadata.timestamp,
        )


async def get(js: JetStreamContext, seq: int) -> DeadLetter | None:
    """The dead letter with sequence ``seq``, or None when there is none (or no stream)."""
    try:
        raw = await js.get_msg(STREAM, seq)
    except NotFoundError:
        return None
    except APIError as error:
        if error.err_code in _NO_MESSAGE:
            return None
        raise
    return DeadLetter(raw.seq or seq, raw.subject or "", raw.data or b"", _headers(raw.headers), raw.time)


# "no message found" (10037) and "delete failed: no message found" (10057).
_NO_MESSAGE = {10037, 10057}


async def delete(js: JetStreamContext, seq: int) -> bool:
    """Deletes a dead letter; False when it was not there (already deleted, or no stream)."""
    try:
        return bool(await js.delete_msg(STREAM, seq))
    except NotFoundError:
        return False
    except APIError as error:
        if error.err_code in _NO_MESSAGE:
            return False
        raise


class ReplayRefused(Exception):
    """A dead letter that cannot be replayed as it is (left in place)."""


@dataclass(frozen=True)
class Replayed:
    seq: int
    subject: str
    stream: str
    stream_seq: int
    # JetStream already held it: an earlier replay of this dead letter published it.
    duplicate: bool
    # False when the dead letter was gone by the time it was to be deleted.
    deleted: bool


async def replay(js: JetStreamContext, letter: DeadLetter) -> Replayed:
    """Publishes the body to its original subject, waits for the PubAck, then deletes
    the dead letter. Raises :class:`ReplayRefused` for one that would only fail again."""
    if not letter.original_subject:
        raise ReplayRefused(f"it has no {ORIGINAL_SUBJECT} header, so where it came from is unknown; purge it")
    batch, problem = letter.decode()
    if batch is None:
        raise ReplayRefused(f"its body does not decode ({problem}): it would be dead-lettered again; purge it")
    ack = await js.publish(
        letter.original_subject,
        letter.data,
        timeout=PUBLISH_TIMEOUT,
        headers={"Nats-Msg-Id": replay_message_id(letter.seq), REPLAYED_FROM: str(letter.seq)},
    )
    deleted = await delete(js, letter.seq)
    return Replayed(letter.seq, letter.original_subject, ack.stream, ack.seq, bool(ack.duplicate), deleted)
