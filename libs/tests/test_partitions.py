"""Partition ownership against a real nats-server: fair split, hand-over when a replica joins,
take-over when one dies or is cut off, and never two replicas working one partition."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_common.partitions import PartitionOwnership, read_members, read_owners
from listboss_testing import eventually

PARTITIONS = 8
# Short, so that expiries happen within a test: renewals every 0.4 s, work stopped after 1 s unrenewed.
LEASE = 2.0


class Board:
    """Who works which partition, for every member; records any moment two members work one."""

    def __init__(self) -> None:
        self.working: dict[int, str] = {}
        self.overlaps: list[str] = []
        self.started: list[tuple[str, int]] = []

    def check(self, members: list[Member]) -> None:
        seen: dict[int, str] = {}
        for member in members:
            for partition in member.work.running:
                if partition in seen:
                    self.overlaps.append(f"partition {partition}: {seen[partition]} and {member.name}")
                seen[partition] = member.name


class Work:
    """A partition's work as the ownership sees it: started, then stopped after a chunk in hand."""

    def __init__(self, name: str, board: Board):
        self.name = name
        self.board = board
        self.running: set[int] = set()

    async def start(self, partition: int) -> None:
        holder = self.board.working.get(partition)
        if holder is not None:
            self.board.overlaps.append(f"{self.name} started partition {partition} while {holder} works it")
        self.board.working[partition] = self.name
        self.board.started.append((self.name, partition))
        self.running.add(partition)

    async def stop(self, partition: int) -> None:
        await asyncio.sleep(0.05)  # the chunk in hand
        self.running.discard(partition)
        if self.board.working.get(partition) == self.name:
            del self.board.working[partition]


class Member:
    """One replica: its own connection, its ownership running until stopped or cut off."""

    def __init__(self, name: str, nc, ownership: PartitionOwnership, work: Work):
        self.name, self.nc, self.ownership, self.work = name, nc, ownership, work
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    @property
    def owned(self) -> frozenset[int]:
        return self.ownership.owned


@pytest.fixture
async def group(nats_server):
    """Starts members on a bucket of the test's own; every member is stopped at the end."""
    bucket = f"TEST_{uuid.uuid4().hex[:8]}"
    board = Board()
    members: list[Member] = []

    async def start(name: str) -> Member:
        nc = await bus.connect(nats_server.url, name=name)
        work = Work(name, board)
        ownership = PartitionOwnership(
            nc.jetstream(), "contacts", PARTITIONS, work, member=name, bucket=bucket, lease=LEASE
        )
        member = Member(name, nc, ownership, work)
        await ownership.subscribe()
        member.task = asyncio.create_task(ownership.run(member.stop))
        members.append(member)
        return member

    sampler_stop = asyncio.Event()

    async def sample() -> None:
        # Bounded: at most 3,000 samples, every 20 ms.
        for _ in range(3000):
            board.check(members)
            if sampler_stop.is_set():
                return
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    start.board = board  # type: ignore[attr-defined]
    start.members = members  # type: ignore[attr-defined]
    start.bucket = bucket  # type: ignore[attr-defined]
    yield start
    sampler_stop.set()
    await sampler
    for member in members:
        member.stop.set()
    await asyncio.wait_for(asyncio.gather(*(m.task for m in members if m.task), return_exceptions=True), 15)
    for member in members:
        with contextlib.suppress(Exception):
            await member.nc.close()
    assert board.overlaps == []


def split(members: list[Member]) -> list[int]:
    return sorted(len(member.owned) for member in members)


def covers_all(members: list[Member]) -> bool:
    owned = [partition for member in members for partition in member.owned]
    return sorted(owned) == list(range(PARTITIONS))


async def test_three_replicas_converge_to_a_fair_split(group, js):
    members = [await group(f"replica-{n}") for n in range(3)]
    await eventually(lambda: covers_all(members) and split(members) == [2, 3, 3], timeout=20)
    # The bucket says the same as the replicas.
    owners = await read_owners(js, "contacts", PARTITIONS, bucket=group.bucket)
    assert owners == {partition: m.name for m in members for partition in m.owned}
    assert sorted(await read_members(js, "contacts", bucket=group.bucket)) == [m.name for m in members]


async def test_a_replica_that_joins_is_handed_its_share(group):
    first = await group("replica-a")
    await eventually(lambda: len(first.owned) == PARTITIONS, timeout=10)
    second = await group("replica-b")
    await eventually(lambda: covers_all([first, second]) and split([first, second]) == [4, 4], timeout=20)
    # The hand-over went through the work: the second replica started only partitions the first stopped.
    assert {partition for name, partition in group.board.started if name == "replica-b"} == second.owned


async def test_a_dead_replicas_partitions_are_taken_after_the_lease(group):
    first, second = await group("replica-a"), await group("replica-b")
    await eventually(lambda: covers_all([first, second]) and split([first, second]) == [4, 4], timeout=20)
    lost = set(second.owned)
    # Cut off from NATS (as a crash or a network partition would): it can renew nothing.
    await second.nc.close()
    # It stops its own work before its claims can expire...
    await eventually(lambda: not second.work.running, timeout=LEASE)
    # ...and the survivor takes them once they have.
    await eventually(lambda: first.owned == frozenset(range(PARTITIONS)), timeout=LEASE * 4)
    assert lost <= first.work.running


async def test_a_clean_stop_releases_its_partitions(group):
    first, second = await group("replica-a"), await group("replica-b")
    await eventually(lambda: covers_all([first, second]) and split([first, second]) == [4, 4], timeout=20)
    second.stop.set()
    await asyncio.wait_for(second.task, 10)
    assert not second.work.running
    await eventually(lambda: first.owned == frozenset(range(PARTITIONS)), timeout=LEASE * 4)


async def test_partitions_must_be_positive(js):
    with pytest.raises(ValueError, match="partitions"):
        PartitionOwnership(js, "contacts", 0, Work("x", Board()))


def test_partition_of_a_person_is_stable_and_in_range():
    event = event_pb2.Event(id="e", producer="alice")
    event.sealed_person.key_id = "0123456789abcdef0123456789abcdef"
    partitions = {bus.event_partition(event, 8) for _ in range(3)}
    assert len(partitions) == 1 and 0 <= partitions.pop() < 8
    # A fixed value: the hash must never change between releases (partitions would move).
    assert bus.partition_of("0123456789abcdef0123456789abcdef", 8) == 3
    assert bus.partition_of("ana@example.com", 16) == 13
    assert bus.event_partition(event_pb2.Event(id="nobody"), 8) == 0
    assert bus.event_partition(event, 1) == 0
    assert bus.changes_subject("alice", 3) == "listboss.changes.alice.3"
    assert bus.changes_subject("alice") == "listboss.changes.alice"
