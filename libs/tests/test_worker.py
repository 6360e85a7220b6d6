"""PullWorker against a real nats-server with JetStream: acks after the work, outages
waited out, one bad item costing only itself, bounded chunks, fast hand-over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_common.readiness import Readiness
from listboss_common.worker import PullWorker, WorkerSpec
from listboss_testing import eventually, free_port

STREAM = bus.EVENTS.name
DEADLETTER = bus.DEADLETTER.name


def spec(durable: str = "worker", **overrides) -> WorkerSpec:
    settings = dict(
        stream=bus.EVENTS,
        durable=durable,
        items=bus.EVENT_ITEMS,
        batch_size=10,
        ack_wait=3.0,
        outage_backoff_min=0.05,
        outage_backoff_max=0.3,
    )
    settings.update(overrides)
    return WorkerSpec(**settings)


def events(*ids: str, producer: str = "alice") -> list[event_pb2.Event]:
    return [event_pb2.Event(id=event_id, producer=producer) for event_id in ids]


async def publish(js, *ids: str, producer: str = "alice"):
    """One packed message holding events ``ids``."""
    return await js.publish(bus.events_subject(producer), bus.EVENT_ITEMS.encode(events(*ids, producer=producer)))


def ids_of(items: Sequence[event_pb2.Event]) -> list[str]:
    return [item.id for item in items]


async def consumer(js, durable: str = "worker"):
    return await js.consumer_info(STREAM, durable)


async def deadletters(js) -> list:
    info = await js.stream_info(DEADLETTER)
    if not info.state.messages:
        return []
    return [await js.get_msg(DEADLETTER, seq=s) for s in range(info.state.first_seq, info.state.last_seq + 1)]


async def settled(js, last_sequence: int, durable: str = "worker") -> bool:
    info = await consumer(js, durable)
    return info.num_ack_pending == 0 and info.num_pending == 0 and info.ack_floor.stream_seq == last_sequence


@pytest.fixture
async def running():
    """Starts workers' run() in tasks; stops and awaits them at the end."""
    started: list[tuple[asyncio.Event, asyncio.Task]] = []

    def start(worker: PullWorker) -> tuple[asyncio.Event, asyncio.Task]:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        started.append((stop, task))
        return stop, task

    yield start
    for stop, _ in started:
        stop.set()
    for _, task in started:
        if task.done():
            continue
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            task.cancel()


def refused_database_error() -> sa.exc.OperationalError:
    """A real connection failure: PostgreSQL's driver on a port where nothing listens."""
    engine = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError("a connection to a closed port succeeded")


async def test_acks_only_after_the_handler_returns(js, running):
    entered, release = asyncio.Event(), asyncio.Event()
    seen: list[str] = []

    async def handler(items):
        seen.extend(ids_of(items))
        entered.set()
        await release.wait()

    worker = PullWorker(js, spec(), handler)
    await worker.subscribe()
    await publish(js, "e1", "e2")
    running(worker)
    await asyncio.wait_for(entered.wait(), 10)

    info = await consumer(js)
    assert info.num_ack_pending == 1 and info.ack_floor.stream_seq == 0

    release.set()
    await eventually(lambda: settled(js, 1))
    assert seen == ["e1", "e2"]


async def test_an_outage_is_waited_out_without_redelivery_or_dead_letter(js, running):
    """A database that refuses connections for a while: the same items are retried in
    the worker (health not ready meanwhile) until it is back; nothing is dead-lettered."""
    outage_error = refused_database_error()
    calls: list[list[str]] = []
    readiness_seen: list[bool] = []
    readiness = Readiness()
    readiness.watch(readiness_seen.append)

    async def handler(items):
        calls.append(ids_of(items))
        if len(calls) <= 6:
            raise outage_error

    worker = PullWorker(js, spec(), handler, readiness)
    await worker.subscribe()
    await publish(js, "e1", "e2", "e3")
    running(worker)
    await eventually(lambda: settled(js, 1))

    assert calls == [["e1", "e2", "e3"]] * 7  # never split: the outage is not the items' fault
    assert readiness_seen == [False, True]
    assert readiness.ready
    assert await deadletters(js) == []
    assert (await consumer(js)).num_redelivered == 0


async def test_an_outage_longer_than_ack_wait_keeps_the_messages(js, running):
    """Progress signals keep the messages in hand: no other worker gets them meanwhile."""
    calls: list[int] = []
    started = time.monotonic()

    async def handler(items):
        calls.append(len(items))
        if time.monotonic() - started < 3 * 1.5:
            raise sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("restarting"))

    worker_a = PullWorker(js, spec(ack_wait=1.5), handler)
    worker_b = PullWorker(js, spec(ack_wait=1.5), handler)
    await worker_a.subscribe()
    await worker_b.subscribe()
    await publish(js, "e1")
    running(worker_a)
    running(worker_b)
    await eventually(lambda: settled(js, 1), timeout=15)

    info = await consumer(js)
    assert info.num_redelivered == 0
    assert info.delivered.consumer_seq == 1  # delivered once, to one worker
    assert await deadletters(js) == []


async def test_one_failing_item_is_dead_lettered_alone_and_the_rest_applied(js, running):
    applied: list[str] = []

    async def handler(items):
        if any(item.person.name == "A\x00B" for item in items):
            raise ValueError("text fields cannot contain NUL (0x00) bytes")
        applied.extend(ids_of(items))

    worker = PullWorker(js, spec(item_attempts=2), handler)
    await worker.subscribe()
    batch = events(*(f"e{i}" for i in range(20)))
    batch[13].person.name = "A\x00B"
    stored = await js.publish(bus.events_subject("alice"), bus.EVENT_ITEMS.encode(batch))
    running(worker)
    await eventually(lambda: settled(js, stored.seq))

    assert sorted(applied) == sorted(f"e{i}" for i in range(20) if i != 13)
    (dead,) = await deadletters(js)
    assert dead.subject == f"listboss.deadletter.{STREAM}.worker"
    assert bus.EVENT_ITEMS.decode(dead.data) == [batch[13]]  # replayable as is
    assert dead.headers["Listboss-Event-Ids"] == "e13"
    assert dead.headers["Listboss-Producer"] == "alice"
    assert dead.headers["Listboss-Original-Subject"] == "listboss.events.alice"
    assert dead.headers["Listboss-Stream"] == STREAM
    assert dead.headers["Listboss-Consumer"] == "worker"
    assert dead.headers["Listboss-Stream-Sequence"] == str(stored.seq)
    assert "NUL" in dead.headers["Listboss-Error"]
    assert dead.headers["Listboss-Dead-Letter-Time"].endswith("+00:00")


async def test_poison_item_is_dead_lettered_without_retries(js, running):
    calls: list[list[str]] = []

    async def handler(items):
        calls.append(ids_of(items))
        if "bad" in ids_of(items):
            raise bus.PoisonMessage("fails validation")

    worker = PullWorker(js, spec(item_attempts=5), handler)
    await worker.subscribe()
    await publish(js, "bad")
    running(worker)
    await eventually(lambda: settled(js, 1))
    assert calls == [["bad"]]
    assert len(await deadletters(js)) == 1


async def test_an_undecodable_message_is_dead_lettered_whole_and_its_neighbours_handled(js, running):
    applied: list[str] = []

    async def handler(items):
        applied.extend(ids_of(items))

    worker = PullWorker(js, spec(), handler)
    await worker.subscribe()
    await publish(js, "e1")
    await js.publish(bus.events_subject("bob"), b"\xff\xff not protobuf")
    await publish(js, "e2")
    running(worker)
    await eventually(lambda: settled(js, 3))

    assert applied == ["e1", "e2"]
    (dead,) = await deadletters(js)
    assert dead.data == b"\xff\xff not protobuf"
    assert dead.headers["Listboss-Producer"] == "bob"
    assert dead.headers["Listboss-Stream-Sequence"] == "2"
    assert "PoisonMessage" in dead.headers["Listboss-Error"]


async def test_work_is_handed_over_in_bounded_chunks(js, running):
    sizes: list[int] = []

    async def handler(items):
        sizes.append(len(items))

    worker = PullWorker(js, spec(max_items=400), handler)
    await worker.subscribe()
    for message in range(3):
        await publish(js, *(f"m{message}-{i}" for i in range(300)))
    running(worker)
    await eventually(lambda: settled(js, 3))
    assert sum(sizes) == 900
    assert max(sizes) <= 400


async def test_messages_of_a_dead_worker_reach_another_within_seconds(js, running):
    """The first worker dies holding a message (its task is cancelled: no ack, no more
    progress signals); the second gets it after ack_wait, not after a minute."""
    holding = asyncio.Event()
    handled_by_b: list[float] = []

    async def hang(items):
        holding.set()
        await asyncio.sleep(3600)

    async def handle(items):
        handled_by_b.append(time.monotonic())

    worker_a = PullWorker(js, spec(ack_wait=3.0), hang)
    await worker_a.subscribe()
    await publish(js, "e1")
    _, task_a = running(worker_a)
    await asyncio.wait_for(holding.wait(), 10)
    task_a.cancel()
    died = time.monotonic()

    worker_b = PullWorker(js, spec(ack_wait=3.0), handle)
    await worker_b.subscribe()
    running(worker_b)
    await eventually(lambda: settled(js, 1), timeout=15)
    assert handled_by_b and handled_by_b[0] - died < 10


async def test_subscribe_brings_an_old_consumer_up_to_date(js):
    """A consumer left by an earlier version (60 s ack_wait, 9 deliveries) is updated."""
    from nats.js.api import AckPolicy, ConsumerConfig

    await js.add_consumer(
        STREAM,
        ConsumerConfig(durable_name="worker", ack_policy=AckPolicy.EXPLICIT, ack_wait=60, max_deliver=9),
    )
    worker = PullWorker(js, spec(ack_wait=4.0), lambda items: asyncio.sleep(0))
    await worker.subscribe()
    config = (await consumer(js)).config
    assert config.ack_wait == pytest.approx(4.0)
    assert config.max_deliver == -1


async def test_stop_ends_run_after_the_batch_in_hand(js):
    entered, release = asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    async def handler(items):
        entered.set()
        await release.wait()
        handled.extend(ids_of(items))

    worker = PullWorker(js, spec(), handler)
    await worker.subscribe()
    await publish(js, "in-hand")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(entered.wait(), 10)
        stop.set()
        # Deliberately lets time pass: run() must not return while the batch is in hand.
        await asyncio.sleep(0.2)
        assert not task.done(), "run() must finish the batch in hand before returning"
        release.set()
        await asyncio.wait_for(task, 5)
    finally:
        release.set()
        if not task.done():
            task.cancel()

    assert handled == ["in-hand"]
    await eventually(lambda: settled(js, 1))
    await publish(js, "after-stop")
    await asyncio.sleep(0.3)  # deliberately lets time pass: a stopped worker must not take it
    assert (await consumer(js)).num_pending == 1


async def test_stop_during_an_outage_gives_the_messages_back(js, running):
    failing = asyncio.Event()

    async def handler(items):
        failing.set()
        raise sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("down"))

    worker = PullWorker(js, spec(ack_wait=2.0), handler)
    await worker.subscribe()
    await publish(js, "e1")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(failing.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 5)  # does not wait for the outage to end

    handled: list[tuple[str, int]] = []

    async def recovered(items):
        handled.extend((item.id, 0) for item in items)

    successor = PullWorker(js, spec(ack_wait=2.0), recovered)
    await successor.subscribe()
    running(successor)
    await eventually(lambda: settled(js, 1), timeout=15)
    assert handled == [("e1", 0)]
    assert (await consumer(js)).delivered.consumer_seq == 2  # delivered again, not lost
    assert await deadletters(js) == []


async def test_run_returns_at_once_when_stop_is_already_set(js):
    calls = []

    async def handler(items):
        calls.append(items)

    worker = PullWorker(js, spec(), handler)
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(worker.run(stop), 5)
    assert calls == []
    assert (await consumer(js)).config.durable_name == "worker"


async def test_dead_letter_waits_for_nats_to_come_back(nats_server):
    """A poison item met while NATS is down: the dead letter is stored once NATS is
    back, and only then is the original acked."""
    nc = await bus.connect(nats_server.url, name="test-worker-outage")
    try:
        js = nc.jetstream(timeout=1.0)
        await bus.ensure_streams(js, [bus.EVENTS, bus.DEADLETTER])
        calls: list[str] = []

        async def handler(items):
            calls.extend(ids_of(items))
            if len(calls) == 1:
                nats_server.stop()  # the outage starts while the message is in hand
            raise bus.PoisonMessage("undecodable")

        worker = PullWorker(js, spec(ack_wait=2.0), handler)
        await worker.subscribe()
        await publish(js, "poison")
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await eventually(lambda: asyncio.sleep(0, bool(calls)))
            # Deliberately lets time pass, past the dead-letter publish's timeout: run() must survive it.
            await asyncio.sleep(2.0)
            assert not task.done(), "run() died during the outage"
            nats_server.start()

            async def dead_lettered():
                try:
                    return bool(await deadletters(js)) and await settled(js, 1)
                except Exception:
                    return False  # still reconnecting

            await eventually(dead_lettered, timeout=30, interval=0.2)
            assert [d.headers["Listboss-Event-Ids"] for d in await deadletters(js)] == ["poison"]
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, 5)
            except Exception:
                task.cancel()
    finally:
        await nc.close()
