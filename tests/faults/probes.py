"""What a fault run reads while it waits and checks: the contacts database, the dead letters,
the consumers' backlog, and the contacts process's memory."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import nats
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_tools.suite import Suite

from .load import Triple

DEADLETTER_STREAM = "LISTBOSS_DEADLETTER"
WORK_STREAMS = ("LISTBOSS_EVENTS", "LISTBOSS_CHANGES")


class ContactsProbe:
    """Reads the contacts service's tables directly (a fresh connection each time, so a
    restarted server is no problem)."""

    def __init__(self, url: str):
        # PostgreSQL fails fast while its server is down; SQLite has no such option.
        connect_args = {"connect_timeout": 3} if url.startswith("postgresql") else {}
        self.engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)

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
        except Exception:
            continue
        events = list(batch.events) if kind is event_pb2.EventBatch else [change.event for change in batch.changes]
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
    except Exception:
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
