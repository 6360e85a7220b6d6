"""PullWorker, publishing and packing against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from nats.js.api import StorageType

from listboss_common import bus

STREAM = bus.EVENTS.name
DEADLETTER = bus.DEADLETTER.name


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Polls ``check`` until it is true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def spec(durable: str = "worker", **overrides) -> bus.WorkerSpec:
    settings = dict(stream=bus.EVENTS, durable=durable, batch_size=10, ack_wait=5.0, max_deliver=3)
    settings.update(overrides)
    return bus.WorkerSpec(**settings)


async def publish(js, payload: bytes, producer: str = "alice", msg_id: str | None = None):
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    return await js.publish(bus.events_subject(producer), payload, headers=headers)


async def consumer(js, durable: str = "worker"):
    return await js.consumer_info(STREAM, durable)


async def deadletters(js) -> list:
    info = await js.stream_info(DEADLETTER)
    return [await js.get_msg(DEADLETTER, seq=s) for s in range(info.state.first_seq, info.state.last_seq + 1)] if info.state.messages else []


class Running:
    """A worker's run() in a task, stopped and awaited at the end."""

    def __init__(self, worker: bus.PullWorker):
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(worker.run(self.stop))

    async def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout)


@pytest.fixture
async def running():
    started: list[Running] = []

    def start(worker: bus.PullWorker) -> Running:
        run = Running(worker)
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop.set()
    for run in started:
        try:
            await asyncio.wait_for(run.task, 5)
        except Exception:
            run.task.cancel()


async def test_acks_only_after_the_handler_returns(js, running):
    entered, release = asyncio.Event(), asyncio.Event()
    seen: list[bytes] = []

    async def handler(messages):
        seen.extend(m.data for m in messages)
        entered.set()
        await release.wait()

    worker = bus.PullWorker(js, spec(), handler)
    await worker.subscribe()
    await publish(js, b"one")
    running(worker)
    await asyncio.wait_for(entered.wait(), 10)

    # While the handler works the message is delivered but not acknowledged.
    info = await consumer(js)
    assert info.num_ack_pending == 1
    assert info.delivered.stream_seq == 1
    assert info.ack_floor.stream_seq == 0

    release.set()

    async def acked():
        info = await consumer(js)
        return info.num_ack_pending == 0 and info.ack_floor.stream_seq == 1

    await eventually(acked)
    assert seen == [b"one"]
    assert (await consumer(js)).num_pending == 0


async def test_failing_handler_is_redelivered_until_it_succeeds(js, running):
    deliveries: list[int] = []
    done = asyncio.Event()

    async def handler(messages):
        (message,) = messages
        deliveries.append(message.metadata.num_delivered)
        if len(deliveries) == 1:
            raise RuntimeError("database restarting")
        done.set()

    worker = bus.PullWorker(js, spec(), handler)
    await worker.subscribe()
    await publish(js, b"retry-me")
    running(worker)
    await asyncio.wait_for(done.wait(), 10)

    async def acked():
        info = await consumer(js)
        return info.num_ack_pending == 0 and info.ack_floor.stream_seq == 1

    await eventually(acked)
    assert deliveries == [1, 2]
    assert (await consumer(js)).num_redelivered == 0  # nothing left waiting for redelivery
    assert await deadletters(js) == []


async def test_poison_message_in_a_batch_is_dead_lettered_and_the_rest_acked(js, running):
    batches: list[list[bytes]] = []
    processed: list[bytes] = []

    async def handler(messages):
        batches.append([m.data for m in messages])
        if any(m.data == b"poison" for m in messages):
            raise bus.PoisonMessage("not an EventBatch")
        processed.extend(m.data for m in messages)

    worker = bus.PullWorker(js, spec(), handler)
    await worker.subscribe()
    await publish(js, b"good-1")
    await publish(js, b"poison", producer="bob")
    await publish(js, b"good-2")
    running(worker)

    async def settled():
        info = await consumer(js)
        return info.num_ack_pending == 0 and info.num_pending == 0 and info.ack_floor.stream_seq == 3

    await eventually(settled)
    # The whole batch was tried first, then each message on its own.
    assert batches[0] == [b"good-1", b"poison", b"good-2"]
    assert sorted(batches[1:]) == [[b"good-1"], [b"good-2"], [b"poison"]]
    assert sorted(processed) == [b"good-1", b"good-2"]

    (dead,) = await deadletters(js)
    assert dead.subject == f"listboss.deadletter.{STREAM}.worker"
    assert dead.data == b"poison"
    assert dead.headers["Listboss-Original-Subject"] == "listboss.events.bob"
    assert dead.headers["Listboss-Stream-Sequence"] == "2"
    assert dead.headers["Listboss-Deliveries"] == "1"
    assert "PoisonMessage" in dead.headers["Listboss-Error"]
    assert "not an EventBatch" in dead.headers["Listboss-Error"]


async def test_message_failing_every_time_is_dead_lettered_after_max_deliver(js, running):
    deliveries: list[int] = []

    async def handler(messages):
        deliveries.extend(m.metadata.num_delivered for m in messages)
        raise RuntimeError("always broken")

    worker = bus.PullWorker(js, spec(ack_wait=1.0, max_deliver=2), handler)
    await worker.subscribe()
    await publish(js, b"doomed")
    running(worker)

    async def dead_lettered():
        return len(await deadletters(js)) == 1

    await eventually(dead_lettered, timeout=15)
    (dead,) = await deadletters(js)
    assert dead.data == b"doomed"
    assert dead.headers["Listboss-Deliveries"] == "2"
    assert dead.headers["Listboss-Original-Subject"] == "listboss.events.alice"
    assert dead.headers["Listboss-Stream-Sequence"] == "1"
    assert "always broken" in dead.headers["Listboss-Error"]

    async def terminated():
        info = await consumer(js)
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually(terminated)
    # Terminated: no further delivery after the dead-lettering (wait past ack_wait to be sure).
    await asyncio.sleep(1.5)
    assert deliveries == [1, 2]
    assert len(await deadletters(js)) == 1


async def test_handler_that_hangs_past_ack_wait_is_redelivered(js, running):
    deliveries: list[int] = []

    async def handler(messages):
        (message,) = messages
        deliveries.append(message.metadata.num_delivered)
        if len(deliveries) == 1:
            await asyncio.sleep(2.5)  # longer than ack_wait: JetStream redelivers meanwhile

    worker_a = bus.PullWorker(js, spec(ack_wait=1.0, max_deliver=3), handler)
    worker_b = bus.PullWorker(js, spec(ack_wait=1.0, max_deliver=3), handler)
    await worker_a.subscribe()
    await worker_b.subscribe()
    await publish(js, b"slow")
    running(worker_a)
    running(worker_b)

    async def redelivered_and_acked():
        info = await consumer(js)
        return len(deliveries) >= 2 and info.num_ack_pending == 0 and info.ack_floor.stream_seq == 1

    await eventually(redelivered_and_acked, timeout=15)
    assert deliveries[:2] == [1, 2]
    assert await deadletters(js) == []


async def test_nats_msg_id_deduplicates(js):
    first = await publish(js, b"event", msg_id="alice/e-1")
    second = await publish(js, b"event again", msg_id="alice/e-1")
    other = await publish(js, b"other", msg_id="alice/e-2")

    assert first.duplicate is not True
    assert second.duplicate is True
    assert second.seq == first.seq
    assert other.duplicate is not True
    info = await js.stream_info(STREAM)
    assert info.state.messages == 2
    stored = await js.get_msg(STREAM, seq=first.seq)
    assert stored.data == b"event"


async def test_ensure_streams_is_idempotent_and_file_backed(js):
    await bus.ensure_streams(js, [bus.EVENTS, bus.CHANGES, bus.DEADLETTER])
    await bus.ensure_streams(js, [bus.EVENTS, bus.CHANGES, bus.DEADLETTER])
    info = await js.stream_info(bus.CHANGES.name)
    assert info.config.subjects == ["listboss.changes.>"]
    assert info.config.storage in (StorageType.FILE, "file")
    assert info.config.duplicate_window == pytest.approx(120.0)


async def test_ensure_streams_brings_settings_up_to_date(js):
    changed = bus.EVENTS.config()
    changed.duplicate_window = 10.0
    await js.update_stream(changed)
    assert (await js.stream_info(STREAM)).config.duplicate_window == pytest.approx(10.0)
    await bus.ensure_streams(js, [bus.EVENTS])
    assert (await js.stream_info(STREAM)).config.duplicate_window == pytest.approx(120.0)


async def test_stop_ends_run_after_the_batch_in_hand(js):
    entered, release = asyncio.Event(), asyncio.Event()
    handled: list[bytes] = []

    async def handler(messages):
        entered.set()
        await release.wait()
        handled.extend(m.data for m in messages)

    worker = bus.PullWorker(js, spec(), handler)
    await worker.subscribe()
    await publish(js, b"in-hand")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(entered.wait(), 10)
        stop.set()
        await asyncio.sleep(0.2)
        assert not task.done(), "run() must finish the batch in hand before returning"

        release.set()
        await asyncio.wait_for(task, 5)
    finally:
        release.set()
        if not task.done():
            task.cancel()

    assert handled == [b"in-hand"]

    async def acked():
        return (await consumer(js)).num_ack_pending == 0

    await eventually(acked)
    # Nothing is consumed any more once run() has returned.
    await publish(js, b"after-stop")
    await asyncio.sleep(0.3)
    info = await consumer(js)
    assert info.num_pending == 1
    assert handled == [b"in-hand"]


async def test_run_returns_at_once_when_stop_is_already_set(js):
    calls = []

    async def handler(messages):
        calls.append(messages)

    worker = bus.PullWorker(js, spec(), handler)
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(worker.run(stop), 5)
    assert calls == []
    # run() subscribed (creating the durable consumer) even though it had nothing to do.
    assert (await consumer(js)).config.durable_name == "worker"


# --- pack and content_id: pure functions --------------------------------------------------------


def test_pack_splits_by_size():
    items = list(range(10))
    groups = bus.pack(items, lambda _: 100, limit=250)  # 108 per item with framing: two per group
    assert groups == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_pack_keeps_order_and_every_item():
    sizes = {i: (i * 37) % 300 for i in range(200)}
    groups = bus.pack(list(sizes), sizes.__getitem__, limit=1000)
    assert [i for group in groups for i in group] == list(sizes)
    for group in groups:
        assert sum(sizes[i] + 8 for i in group) <= 1000
    # Greedy: a group closes only when the next item would not fit.
    for group, following in zip(groups, groups[1:]):
        assert sum(sizes[i] + 8 for i in group) + sizes[following[0]] + 8 > 1000


def test_pack_oversized_item_travels_alone():
    sizes = {"a": 10, "big": 5000, "b": 10, "c": 10}
    assert bus.pack(list(sizes), sizes.__getitem__, limit=100) == [["a"], ["big"], ["b", "c"]]


def test_pack_empty_and_default_limit():
    assert bus.pack([], len) == []
    items = [b"x" * 1000] * 1000  # ~1 MB in total: more than one default-limit group
    groups = bus.pack(items, len)
    assert len(groups) == 2
    assert all(sum(len(i) + 8 for i in g) <= bus.MAX_PACKED_BYTES for g in groups)


def test_content_id_is_stable_and_separates_parts():
    assert bus.content_id("alice", "e1", "e2") == bus.content_id("alice", "e1", "e2")
    assert len(bus.content_id("x")) == 32
    assert bus.content_id("alice", "e1") != bus.content_id("alice", "e2")
    assert bus.content_id("ab", "c") != bus.content_id("a", "bc")


async def test_worker_survives_a_dead_letter_publish_failing_during_an_outage(nats_server):
    """A poison message met while NATS is down: the dead-letter publish fails, the worker
    must keep running and dead-letter the message once NATS is back."""
    nc = await bus.connect(nats_server.url, name="test-bus-outage")
    try:
        # A short JetStream timeout so the dead-letter publish fails fast during the outage.
        js = nc.jetstream(timeout=1.0)
        await bus.ensure_streams(js, [bus.EVENTS, bus.DEADLETTER])
        calls: list[int] = []

        async def handler(messages):
            calls.append(messages[0].metadata.num_delivered)
            if len(calls) == 1:
                nats_server.stop()  # the outage starts while the message is in hand
            raise bus.PoisonMessage("undecodable")

        worker = bus.PullWorker(js, spec(ack_wait=1.0, max_deliver=3), handler)
        await worker.subscribe()
        await publish(js, b"poison")
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            async def handled():
                return bool(calls)

            await eventually(handled)
            await asyncio.sleep(2.0)  # past the dead-letter publish's timeout
            assert not task.done() or task.exception() is None, f"run() died: {task.exception()!r}"
            nats_server.start()

            async def dead_lettered():
                try:
                    info = await consumer(js)
                    return bool(await deadletters(js)) and info.num_ack_pending == 0 and info.num_pending == 0
                except Exception:
                    return False  # still reconnecting

            await eventually(dead_lettered, timeout=20, interval=0.2)
            assert not task.done(), "run() must keep consuming after a failed dead-letter publish"
            dead = await deadletters(js)
            assert {d.data for d in dead} == {b"poison"}
        finally:
            stop.set()
            try:
                await asyncio.wait_for(task, 5)
            except Exception:
                pass
    finally:
        await nc.close()
