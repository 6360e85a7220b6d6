"""Fault injection: WatchTagChanges under load, with the suite running as processes.

One producer gets more than 2,000 tag changes (adds and removes); then 200 watchers open
the stream from an empty cursor at once (grpc.aio, a few channels). Some read slowly, one
disconnects part-way and resumes from its last cursor. Every watcher must get every change,
in order, exactly once. A client that stops reading holds back only its own stream: the
server has read one batch for it, not the whole stream, while another client reads
everything. No process may report a slow consumer (a NATS client or server dropping
messages it could not deliver in time), and no watcher's consumer outlives its call.

Figures (time to deliver, changes per second, the contacts process's peak RSS and CPU) are
printed with ``-s``; the tests pass or fail on correctness only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import grpc
import nats
import pytest

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from listboss_common import bus
from listboss_tools.suite import GRPC_CHANNEL_OPTIONS, Suite

pytestmark = pytest.mark.e2e

PRODUCER = "loadtest"
PEOPLE = 420
# Per person, in time order: cart abandoned (+cart-abandoned), purchase approved
# (-cart-abandoned +purchase-approved), refunded (-purchase-approved +purchase-refunded).
LIFE = (
    event_pb2.EVENT_TYPE_PURCHASE_OUT_OF_SHOPPING_CART,
    event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
    event_pb2.EVENT_TYPE_PURCHASE_REFUNDED,
)
CHANGES_PER_STEP = (1, 2, 2)
EXPECTED_CHANGES = PEOPLE * sum(CHANGES_PER_STEP)  # 2,100

WATCHERS = 200
SLOW_EVERY = 10  # every tenth watcher reads slowly
CHANNELS = 4
RESUME_AFTER = 700
STALL_AFTER = 100
# Every wait below is bounded by these.
RELAY_TIMEOUT = 90.0
WATCH_TIMEOUT = 120.0

# A slow client's stream: no BDP probing and a small receive window, so what it does not
# read pushes back on the server after a few dozen messages rather than a few megabytes.
SLOW_CHANNEL_OPTIONS = [*GRPC_CHANNEL_OPTIONS, ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]


@pytest.fixture(scope="module")
def logged_suite(tmp_path_factory):
    """The suite as processes, with every line each process prints kept in a file
    (the suite itself keeps only the last few)."""
    folder = tmp_path_factory.mktemp("suite")
    output_path = folder / "output.log"
    with output_path.open("w") as output:
        suite = Suite(
            folder, nats_port=0, ingest_port=0, segmentation_port=0, contacts_port=0, http_port=0, output=output
        )
        suite.start()
        try:
            yield suite, output_path
        finally:
            codes = suite.stop()
    assert codes == {"ingest": 0, "segmentation": 0, "contacts": 0, "nats": 0}


def auth(suite: Suite):
    return (("authorization", f"Bearer {suite.producer_token(PRODUCER)}"),)


def step_events(step: int) -> list[event_pb2.Event]:
    """Everybody's ``step``-th event (see LIFE)."""
    start = int(time.time()) - 86_400
    made = []
    for person in range(PEOPLE):
        event = event_pb2.Event(
            id=f"load-{person}-{step}",
            producer=PRODUCER,
            type=LIFE[step],
            product=event_pb2.Product(id="7", name="Load course"),
            person=event_pb2.Person(email=f"person{person}@example.com", name=f"Person {person}"),
        )
        event.occur_time.FromSeconds(start + person * 10 + step)
        made.append(event)
    return made


async def relayed_count(js, subject: str) -> int:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        info = await js.stream_info(bus.TAG_CHANGES.name, subjects_filter=subject)
        return (info.state.subjects or {}).get(subject, 0)
    return 0


async def ingest_and_relay(suite: Suite) -> list[contacts_pb.TagChange]:
    """Ingests the events step by step, each step once the previous one's changes are in the
    tag-change stream (contacts stores a contact's net change per transaction, so steps
    applied together would make fewer changes); returns every change as stored."""
    subject = bus.tag_changes_subject(PRODUCER)
    nc = await nats.connect(suite.nats_url, name="load-test")
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + RELAY_TIMEOUT
        expected = 0
        async with grpc.aio.insecure_channel(suite.ingest_address, options=GRPC_CHANNEL_OPTIONS) as channel:
            stub = ingest_grpc.IngestServiceStub(channel)
            for step, per_person in enumerate(CHANGES_PER_STEP):
                reply = await stub.BatchIngestEvents(
                    ingest_pb.BatchIngestEventsRequest(request_id=f"load-{step}", events=step_events(step)),
                    metadata=auth(suite),
                    timeout=60,
                )
                assert reply.accepted_count == PEOPLE
                expected += PEOPLE * per_person
                while (count := await relayed_count(js, subject)) < expected and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert count == expected, f"step {step}: {count} of {expected} tag changes relayed"
        stored = [contacts_pb.TagChange.FromString(m.data) async for m in bus.replay(js, bus.TAG_CHANGES, subject)]
    finally:
        await nc.close()
    assert len(stored) == EXPECTED_CHANGES
    assert {c.action for c in stored} == {contacts_pb.TagChange.ACTION_ADDED, contacts_pb.TagChange.ACTION_REMOVED}
    return stored


class Watcher:
    """One WatchTagChanges client: reads until it has ``want`` changes (or its time is up)."""

    def __init__(self, stub, suite: Suite, want: int, deadline: float):
        self.stub, self.suite, self.want, self.deadline = stub, suite, want, deadline
        self.ids: list[str] = []
        self.cursor = ""
        self.error: str | None = None
        self.finished_at: float | None = None

    async def read(
        self, cursor: str = "", *, until: int | None = None, pause_every: int = 0, pause: float = 0.0
    ) -> None:
        until = self.want if until is None else until
        timeout = self.deadline - time.monotonic()
        if timeout <= 0:
            self.error = "no time left"
            return
        call = self.stub.WatchTagChanges(
            contacts_pb.WatchTagChangesRequest(parent=f"producers/{PRODUCER}", cursor=cursor),
            metadata=auth(self.suite),
            timeout=timeout,
        )
        try:
            async for response in call:
                self.cursor = response.cursor
                if not response.HasField("change"):
                    continue
                self.ids.append(response.change.id)
                if len(self.ids) >= until:
                    break
                if pause_every and len(self.ids) % pause_every == 0:
                    await asyncio.sleep(pause)
        except grpc.aio.AioRpcError as error:
            self.error = f"{error.code().name}: {error.details()}"
        finally:
            call.cancel()
        if len(self.ids) >= self.want:
            self.finished_at = time.monotonic()


async def watch_consumers(suite: Suite) -> list:
    """The tag-change stream's consumers: the watchers' (nothing else consumes it)."""
    nc = await nats.connect(suite.nats_url, name="load-test")
    try:
        return await nc.jetstream().consumers_info(bus.TAG_CHANGES.name)
    finally:
        await nc.close()


async def watch_consumers_left(suite: Suite, timeout: float = 15.0) -> int:
    """How many watchers' consumers remain after waiting (bounded) for them to go."""
    deadline = time.monotonic() + timeout
    while (left := len(await watch_consumers(suite))) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return left


def assert_no_slow_consumer(output_path: Path) -> None:
    """Nobody dropped messages: neither a NATS client (the services) nor nats-server."""
    slow_lines = [line for line in output_path.read_text().splitlines() if "slow consumer" in line.lower()]
    assert not slow_lines, slow_lines[:5]


async def peak_rss(pid: int, stop: asyncio.Event) -> int:
    """The largest VmRSS (KiB) of ``pid`` seen until ``stop``, sampled every 0.1 s."""
    peak = 0
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        with contextlib.suppress(OSError, ValueError):
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)
    return peak


def cpu_seconds(pid: int) -> float:
    """User and system CPU time ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
async def expected(logged_suite) -> list[str]:
    """The ids of every change, in stream order (ingested and relayed once per module)."""
    stored = await ingest_and_relay(logged_suite[0])
    ids = [change.id for change in stored]
    assert [int(i) for i in ids] == sorted({int(i) for i in ids})
    return ids


async def test_two_hundred_watchers_each_get_every_change_in_order(logged_suite, expected):
    suite, output_path = logged_suite

    contacts_pid = suite.pid("contacts")
    rss_before = rss(contacts_pid)
    cpu_before, own_cpu_before = cpu_seconds(contacts_pid), time.process_time()
    stop_sampling = asyncio.Event()
    sampling = asyncio.create_task(peak_rss(contacts_pid, stop_sampling))

    channels = [
        grpc.aio.insecure_channel(suite.contacts_address, options=GRPC_CHANNEL_OPTIONS) for _ in range(CHANNELS)
    ]
    slow_channel = grpc.aio.insecure_channel(suite.contacts_address, options=SLOW_CHANNEL_OPTIONS)
    stubs = [contacts_grpc.ContactsServiceStub(channel) for channel in channels]
    slow_stub = contacts_grpc.ContactsServiceStub(slow_channel)
    started = time.monotonic()
    deadline = started + WATCH_TIMEOUT
    watchers: list[Watcher] = []
    runs = []
    try:
        for index in range(WATCHERS):
            slow = index % SLOW_EVERY == SLOW_EVERY - 1
            watcher = Watcher(slow_stub if slow else stubs[index % CHANNELS], suite, len(expected), deadline)
            watchers.append(watcher)
            if index == 0:  # disconnects part-way, then resumes from its last cursor

                async def resume(w=watcher):
                    await w.read(until=RESUME_AFTER)
                    assert len(w.ids) == RESUME_AFTER, (len(w.ids), w.error)
                    w.error = None
                    await w.read(w.cursor)

                runs.append(resume())
            elif slow:
                runs.append(watcher.read(pause_every=25, pause=0.05))
            else:
                runs.append(watcher.read())
        await asyncio.wait_for(asyncio.gather(*runs), WATCH_TIMEOUT + 15)
    finally:
        for channel in [*channels, slow_channel]:
            await channel.close()
        stop_sampling.set()
    peak = await sampling
    contacts_cpu, own_cpu = cpu_seconds(contacts_pid) - cpu_before, time.process_time() - own_cpu_before
    elapsed = max((w.finished_at or deadline) for w in watchers) - started
    received = sorted(len(w.ids) for w in watchers)
    fast_done = [
        w.finished_at - started
        for i, w in enumerate(watchers)
        if w.finished_at and i > 0 and i % SLOW_EVERY != SLOW_EVERY - 1
    ]
    print(
        f"\n{WATCHERS} watchers x {len(expected)} changes: received min {received[0]}, max {received[-1]}, "
        f"complete {sum(1 for w in watchers if w.finished_at)}; all delivered in {elapsed:.1f} s "
        f"({sum(received) / elapsed:,.0f} changes/s); fast watchers done by "
        f"{max(fast_done, default=float('nan')):.1f} s; contacts RSS {rss_before / 1024:.0f} MiB before, "
        f"peak {peak / 1024:.0f} MiB; CPU contacts {contacts_cpu:.1f} s, watchers {own_cpu:.1f} s"
    )

    incomplete = {i: (len(w.ids), w.error) for i, w in enumerate(watchers) if w.ids != expected}
    assert not incomplete, (
        f"{len(incomplete)} watchers did not get every change in order: {dict(list(incomplete.items())[:5])}"
    )
    # Every watcher's NATS consumer went with its call.
    assert await watch_consumers_left(suite) == 0
    assert_no_slow_consumer(output_path)


async def test_a_client_that_stops_reading_holds_back_its_own_stream_only(logged_suite, expected):
    suite, output_path = logged_suite
    request = contacts_pb.WatchTagChangesRequest(parent=f"producers/{PRODUCER}")
    async with (
        grpc.aio.insecure_channel(suite.contacts_address, options=SLOW_CHANNEL_OPTIONS) as slow_channel,
        grpc.aio.insecure_channel(suite.contacts_address, options=GRPC_CHANNEL_OPTIONS) as channel,
    ):
        stalled = contacts_grpc.ContactsServiceStub(slow_channel).WatchTagChanges(
            request, metadata=auth(suite), timeout=WATCH_TIMEOUT
        )
        try:
            ids = [(await stalled.read()).change.id for _ in range(STALL_AFTER)]
            # It reads nothing more for a while: the server stops reading the stream for
            # it once gRPC flow control pushes back (it holds at most a batch, not all).
            # Deliberately lets time pass: the server must not read on in that time.
            await asyncio.sleep(2.0)
            [held] = await watch_consumers(suite)
            assert held.delivered.consumer_seq < len(expected) and held.num_pending > 0, held

            # Meanwhile another client reads everything at full speed.
            other = Watcher(
                contacts_grpc.ContactsServiceStub(channel), suite, len(expected), time.monotonic() + WATCH_TIMEOUT
            )
            await other.read()
            assert other.ids == expected, (len(other.ids), other.error)
            [still_held] = [c for c in await watch_consumers(suite) if c.name == held.name]
            assert still_held.delivered.consumer_seq == held.delivered.consumer_seq

            # The stalled client carries on where it stopped.
            deadline = time.monotonic() + WATCH_TIMEOUT
            while len(ids) < len(expected) and time.monotonic() < deadline:
                ids.append((await stalled.read()).change.id)
        finally:
            stalled.cancel()
    print(
        f"\nstalled client: the server had read {held.delivered.consumer_seq} of {len(expected)} changes "
        f"for it after it read {STALL_AFTER}"
    )
    assert ids == expected
    assert await watch_consumers_left(suite) == 0
    assert_no_slow_consumer(output_path)
