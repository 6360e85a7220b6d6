"""Partitions of a service's work, each worked by one replica at a time, rebalanced as replicas come and go.

A stream's work is split into N partitions (contacts: the changes' subjects
``listboss.changes.<producer>.<partition>``, each partition with a durable consumer of its own).
:class:`PartitionOwnership` decides which replica works which partition, with a JetStream
key-value bucket (``LISTBOSS_PARTITIONS``) whose TTL is the lease:

- **Presence.** Each replica puts ``<group>.members.<member>`` every ``lease / 5`` seconds; a
  replica that stops renewing disappears when its key expires (a clean stop deletes it at once).
- **Ownership.** ``<group>.owners.<partition>`` holds the owning member. A replica claims a free
  partition with a create (stored only if the key does not exist) and renews each claim with an
  update conditional on the revision it last wrote (compare-and-set): of two replicas racing for
  a partition exactly one wins, and a claim the replica no longer holds is never renewed.
- **Fair share.** A replica owns at most ``ceil(N / live members)`` partitions. It claims free
  partitions up to its share and hands over its surplus when a replica joins: the surplus
  partition's work finishes the chunk in hand and stops, then the claim is deleted and another
  replica claims it on its next round. A dead replica's claims expire with the lease and the
  others take them over: a partition waits at most the lease plus one round.
- **Never two at once.** A replica stops a partition's work once its claim has gone unrenewed for
  half the lease (it cannot reach NATS, or it was paused), measured from when it *sent* the last
  renewal, so the work stops before the key can expire and another replica can claim it. That
  holds as long as the chunk in hand finishes within the other half of the lease. A renewal
  refused because the key changed (the replica was paused past the lease) stops the work at once.

The work itself is a :class:`PartitionWork`: :class:`PartitionedWorkers` runs pull workers for each
partition owned. Ownership is read by ``listboss-ops status`` (:func:`read_owners`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from listboss_common import bus, config
from listboss_common.faults import describe_error

log = structlog.get_logger("listboss.partitions")

# One bucket for every group of partitions; its TTL is the lease.
BUCKET = "LISTBOSS_PARTITIONS"
LEASE_SECONDS = 10.0

PARTITIONS_OWNED = Gauge(
    "listboss_partitions_owned", "Partitions this replica works (claimed and not being handed over).", ["group"]
)
PARTITION_HANDOVERS = Counter(
    "listboss_partition_handovers_total",
    "Partitions this replica stopped working, by reason: surplus (handed to a replica that joined), "
    "expired (its claim could not be renewed), lost (the claim was taken), leaving (shutdown).",
    ["group", "reason"],
)


class PartitionWork(Protocol):
    """What runs for each partition owned."""

    async def start(self, partition: int) -> None:
        """Starts working ``partition``; raising leaves it unclaimed."""

    async def stop(self, partition: int) -> None:
        """Stops working ``partition``; returns once the work in hand is finished."""


def member_name() -> str:
    """A name for this process among the replicas: host, pid and a random part (a restarted
    container may have the same host name and pid)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def owner_key(group: str, partition: int) -> str:
    return f"{group}.owners.{partition}"


def member_key(group: str, member: str) -> str:
    return f"{group}.members.{member}"


async def open_bucket(
    js: JetStreamContext, bucket: str = BUCKET, lease: float = LEASE_SECONDS, replicas: int | None = None
) -> KeyValue:
    """The ownership bucket, created with ``lease`` as its TTL and LISTBOSS_STREAM_REPLICAS copies
    if it does not exist. An existing bucket is used as it is (an operator may have given it more
    replicas; its TTL stays the lease every replica agreed on when it was created)."""
    copies = replicas or config.env_int_between(bus.REPLICAS_SETTING, 1, 1, bus.MAX_REPLICAS)
    try:
        return await js.key_value(bucket)
    except NotFoundError:
        pass
    try:
        return await js.create_key_value(
            KeyValueConfig(bucket=bucket, ttl=lease, history=1, replicas=copies, storage=StorageType.FILE)
        )
    except BadRequestError:
        return await js.key_value(bucket)  # another replica created it meanwhile


async def read_owners(js: JetStreamContext, group: str, partitions: int, bucket: str = BUCKET) -> dict[int, str | None]:
    """Each partition's owner (None: unclaimed) as the bucket says now."""
    kv = await js.key_value(bucket)
    owners: dict[int, str | None] = {}
    for partition in range(partitions):
        try:
            owners[partition] = ((await kv.get(owner_key(group, partition))).value or b"").decode() or None
        except KeyNotFoundError:
            owners[partition] = None
    return owners


async def read_members(js: JetStreamContext, group: str, bucket: str = BUCKET, kv: KeyValue | None = None) -> list[str]:
    """The members whose presence has not expired, in name order."""
    kv = kv or await js.key_value(bucket)
    prefix = f"$KV.{bucket}.{group}.members."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    members = []
    for subject in sorted(info.state.subjects or {}):
        member = subject.removeprefix(prefix)
        with contextlib.suppress(KeyNotFoundError):
            await kv.get(member_key(group, member))  # a deleted member still has a marker
            members.append(member)
    return members


@dataclass
class _Claim:
    revision: int
    # time.monotonic() when the last renewal that succeeded was sent
    renewed: float
    stopping: asyncio.Task | None = None
    reason: str = ""


class PartitionOwnership:
    """Claims, renews and hands over partitions of ``group`` for ``work``; shaped like a bus
    worker (``subscribe``, then ``run(stop)``). See the module docstring."""

    def __init__(
        self,
        js: JetStreamContext,
        group: str,
        partitions: int,
        work: PartitionWork,
        *,
        member: str | None = None,
        bucket: str = BUCKET,
        lease: float = LEASE_SECONDS,
    ):
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self._js = js
        self.group = group
        self.partitions = partitions
        self._work = work
        self.member = member or member_name()
        self._bucket = bucket
        self.lease = lease
        self.renew_every = lease / 5
        # Work stops once a claim has gone this long unrenewed: before the key can expire.
        self.stop_after = lease / 2
        self._kv: KeyValue | None = None
        self._claims: dict[int, _Claim] = {}
        self._owned_gauge = PARTITIONS_OWNED.labels(group)
        # Where this member starts looking for free partitions: spreads racing claims.
        self._offset = int.from_bytes(self.member.encode()[-4:], "big") % partitions

    @property
    def owned(self) -> frozenset[int]:
        """Partitions claimed and worked (not being handed over)."""
        return frozenset(k for k, claim in self._claims.items() if claim.stopping is None)

    async def subscribe(self) -> None:
        # A bucket just created on a cluster answers only once its replicas have elected a
        # leader: its first writes are retried for as long as setting up a stream may take.
        self._kv = await open_bucket(self._js, self._bucket, self.lease)
        deadline = time.monotonic() + bus.STREAM_SETUP_PATIENCE
        while True:
            try:
                await self._announce()
                return
            except Exception as error:
                if time.monotonic() > deadline:
                    raise
                log.info("partitions bucket not ready yet: retrying", error=describe_error(error))
                await asyncio.sleep(0.5)

    async def run(self, stop: asyncio.Event) -> None:
        if self._kv is None:
            await self.subscribe()
        watchdog = asyncio.create_task(self._watch_claims(stop))
        try:
            while not stop.is_set():
                try:
                    await self._round()
                except Exception as error:  # NATS away, a leader election: the next round tries again
                    log.warning("partition round failed", group=self.group, error=describe_error(error))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.renew_every)
        finally:
            watchdog.cancel()
            await self._leave()

    # -- one round ----------------------------------------------------------------------

    async def _round(self) -> None:
        await self._announce()
        await self._renew()
        members = await read_members(self._js, self.group, self._bucket, self._kv)
        live = len(set(members) | {self.member})
        share = math.ceil(self.partitions / live)
        owned = sorted(self.owned)
        if len(owned) > share:
            # Which ones matters not: the highest numbers.
            for partition in owned[share:]:
                self._stop(partition, "surplus")
        elif len(owned) < share:
            await self._claim(share - len(owned))
        self._owned_gauge.set(len(self.owned))

    async def _announce(self) -> None:
        assert self._kv is not None
        presence = json.dumps({"member": self.member, "host": socket.gethostname(), "pid": os.getpid()})
        await self._kv.put(member_key(self.group, self.member), presence.encode())

    async def _renew(self) -> None:
        assert self._kv is not None
        for partition, claim in list(self._claims.items()):
            key = owner_key(self.group, partition)
            if claim.stopping is not None:
                if claim.stopping.done():
                    # The work has stopped: free the partition now rather than at expiry (only if
                    # the claim is still this replica's revision).
                    with contextlib.suppress(Exception):
                        await self._kv.delete(key, last=claim.revision)
                    del self._claims[partition]
                    log.info("partition released", group=self.group, partition=partition, reason=claim.reason)
                    continue
                if claim.reason in ("expired", "lost"):
                    continue  # no longer ours to renew
            sent = time.monotonic()
            try:
                claim.revision = await self._kv.update(key, self.member.encode(), last=claim.revision)
                claim.renewed = sent
            except KeyWrongLastSequenceError:
                self._stop(partition, "lost")
            except Exception as error:
                log.warning("partition claim not renewed", group=self.group, partition=partition, error=str(error))

    async def _claim(self, wanted: int) -> None:
        assert self._kv is not None
        for step in range(self.partitions):
            if wanted <= 0:
                return
            partition = (self._offset + step) % self.partitions
            if partition in self._claims:
                continue
            sent = time.monotonic()
            try:
                revision = await self._kv.create(owner_key(self.group, partition), self.member.encode())
            except KeyWrongLastSequenceError:
                continue  # owned by another replica
            self._claims[partition] = _Claim(revision, sent)
            try:
                await self._work.start(partition)
            except Exception as error:
                log.warning("partition work did not start", group=self.group, partition=partition, error=str(error))
                self._stop(partition, "failed")
                continue
            log.info("partition claimed", group=self.group, partition=partition, member=self.member)
            wanted -= 1

    def _stop(self, partition: int, reason: str) -> None:
        claim = self._claims[partition]
        if claim.stopping is not None:
            claim.reason = reason if reason in ("expired", "lost") else claim.reason
            return
        claim.reason = reason
        claim.stopping = asyncio.create_task(self._work.stop(partition))
        PARTITION_HANDOVERS.labels(self.group, reason).inc()
        log.info("partition handed over", group=self.group, partition=partition, reason=reason)
        self._owned_gauge.set(len(self.owned))

    async def _watch_claims(self, stop: asyncio.Event) -> None:
        """Stops the work of a claim unrenewed for half the lease, whatever a round is waiting on."""
        while not stop.is_set():
            now = time.monotonic()
            for partition, claim in list(self._claims.items()):
                if claim.stopping is None and now - claim.renewed > self.stop_after:
                    log.warning("partition claim expiring: stopping its work", group=self.group, partition=partition)
                    self._stop(partition, "expired")
            await asyncio.sleep(min(0.25, self.stop_after / 4))

    async def _leave(self) -> None:
        """At shutdown: every partition's work finished and its claim and presence deleted, so
        the others take over at once (bounded by the lease: past it the claims expire anyway)."""
        for partition in list(self._claims):
            self._stop(partition, "leaving")
        stopping = [claim.stopping for claim in self._claims.values() if claim.stopping is not None]
        if stopping:
            await asyncio.wait(stopping, timeout=self.lease)
        if self._kv is None:
            return
        for partition, claim in list(self._claims.items()):
            with contextlib.suppress(Exception):
                await self._kv.delete(owner_key(self.group, partition), last=claim.revision)
        self._claims.clear()
        with contextlib.suppress(Exception):
            await self._kv.delete(member_key(self.group, self.member))
        self._owned_gauge.set(0)


class _Worker(Protocol):
    async def subscribe(self) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...


class PartitionedWorkers:
    """:class:`PartitionWork` running bus workers (``subscribe``, ``run(stop)``) for each partition:
    ``make_workers(partition)`` builds them when the partition is claimed; stopping it sets their
    stop event and waits until each has finished the batch in hand."""

    def __init__(self, make_workers: Callable[[int], Sequence[_Worker]]):
        self._make_workers = make_workers
        self._running: dict[int, tuple[asyncio.Event, list[asyncio.Task]]] = {}

    @property
    def partitions(self) -> frozenset[int]:
        """The partitions whose workers run now."""
        return frozenset(self._running)

    async def start(self, partition: int) -> None:
        workers = list(self._make_workers(partition))
        for worker in workers:
            await worker.subscribe()
        stop = asyncio.Event()
        self._running[partition] = (stop, [asyncio.create_task(worker.run(stop)) for worker in workers])

    async def stop(self, partition: int) -> None:
        stop, tasks = self._running.get(partition, (None, []))
        if stop is None:
            return
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        del self._running[partition]
