"""The contacts replicas' share of the changes: one partition at a time per replica.

Segmentation publishes each change on ``listboss.changes.<producer>.<partition>``, the partition
a stable hash of the contact's person (:func:`listboss_common.bus.event_partition`), so all the
changes of one contact travel in one partition. Each partition has a durable consumer of its own,
``contacts-p<partition>``, created by every replica at start; a replica runs a worker only for the
partitions it owns (:class:`~listboss_common.partitions.PartitionOwnership`, group ``contacts``),
so two replicas never apply changes of one contact at the same time. The owner of partition 0
also works the consumer ``contacts``, of the changes published before partitions
(``listboss.changes.<producer>``): a deployment's older messages are applied as before.

Inside one replica the partitions it owns are applied side by side, each with an applier of its
own, a few transactions at once on PostgreSQL and one at a time on SQLite (a single writer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from nats.js import JetStreamContext
from sqlalchemy.engine import Engine

from listboss_common import bus
from listboss_common.config import env_int
from listboss_common.partitions import PartitionOwnership
from listboss_common.readiness import Readiness
from listboss_common.worker import PullWorker, WorkerSpec
from listboss_contacts.consumer import ChangeApplier

# The ownership group of the contacts replicas in the partitions bucket.
GROUP = "contacts"
# Partitions a replica applies at once on PostgreSQL: the pool keeps connections for the RPCs.
CONCURRENT_APPLIES_POSTGRES = 4


def changes_worker(partition: int | None = None) -> WorkerSpec:
    """Contacts' consumer of one partition (without one: of the changes published before
    partitions): a few packed messages a fetch (each at most 512 KiB, about a thousand
    changes), applied in transactions of LISTBOSS_APPLY_BATCH changes, so a backlog is worked
    through in bounded steps and bounded memory."""
    return WorkerSpec(
        stream=bus.CHANGES,
        durable="contacts" if partition is None else f"contacts-p{partition}",
        items=bus.CHANGE_ITEMS,
        batch_size=8,
        max_items=env_int("LISTBOSS_APPLY_BATCH", 5000),
        filter_subject=bus.UNPARTITIONED_CHANGES if partition is None else bus.changes_partition_filter(partition),
    )


def partition_workers(
    js: JetStreamContext, engine: Engine, readiness: Readiness, make_applier: Callable[[], ChangeApplier]
) -> Callable[[int], list[PullWorker]]:
    """The workers of a partition when it is claimed: its own consumer's, and for partition 0 also
    the one of the changes from before partitions."""
    at_once = asyncio.Semaphore(1 if engine.dialect.name == "sqlite" else CONCURRENT_APPLIES_POSTGRES)
    appliers: dict[int, ChangeApplier] = {}

    def make(partition: int) -> list[PullWorker]:
        applier = appliers.setdefault(partition, make_applier())

        async def handle(changes: Sequence) -> None:
            async with at_once:
                await applier.handle(changes)

        workers = [PullWorker(js, changes_worker(partition), handle, readiness)]
        if partition == 0:
            workers.append(PullWorker(js, changes_worker(), handle, readiness))
        return workers

    return make


class PartitionConsumers:
    """Creates every partition's durable consumer at start (each exists, its backlog counted,
    before any replica works it), then runs the ownership. Shaped like a bus worker."""

    def __init__(self, js: JetStreamContext, ownership: PartitionOwnership, readiness: Readiness):
        self._js = js
        self._ownership = ownership
        self._readiness = readiness

    async def subscribe(self) -> None:
        for partition in [None, *range(self._ownership.partitions)]:
            await PullWorker(self._js, changes_worker(partition), _never_called, self._readiness).ensure_consumer()
        await self._ownership.subscribe()

    async def run(self, stop: asyncio.Event) -> None:
        await self._ownership.run(stop)


async def _never_called(_changes: Sequence) -> None:
    raise AssertionError("a worker built only to create its consumer never handles anything")
