"""End-to-end benchmark: events per second through the running suite, the lag from sending to
the contacts service committing, and the CPU each process spends per event. Prints figures;
passes or fails on nothing.

    ./dev bench                                   # SQLite, as fast as the suite takes them
    ./dev bench --database postgres               # PostgreSQL at 127.0.0.1:5432 (or a URL prefix)
    ./dev bench --events 50000 --batch 1000 --concurrency 4
    ./dev bench --custom-segmentations 100      # with each product's maximum of ACTIVE ones
    ./dev bench --rate 3000                       # offered load: 3,000 events/s, paced every 20 ms
    ./dev bench --database postgres --contacts-replicas 2
    ./dev bench --json                            # every figure as one JSON object

It starts its own suite (nats-server and the three services as processes) in a temporary folder,
sends generated events through ``BatchIngestEvents`` and watches the contacts database until every
event is in the history. Each event's ``occur_time`` is the moment its batch was sent, and the
history row's ``record_time`` is written in the transaction that applies it, so
``record_time - occur_time`` is the lag from sending to committed tags.

Two ways to send. By default, as fast as the suite acknowledges (``--batch`` events a call,
``--concurrency`` calls in flight): the throughput figures, and a lag that is queueing and grows
with the run. With ``--rate N``, at N events/s: every ``--tick`` seconds one call carries the events
due by then; the lag percentiles are of the events sent after the ``--warmup`` seconds, and the suite
kept up when it both took and committed the events at (at least 95 % of) the offered rate.

The CPU table reads ``/proc/<pid>/stat`` (:mod:`listboss_tools.proc_cpu`) of every process when the
first event is sent and once the last is committed: ingest, segmentation, each contacts replica,
nats-server, the PostgreSQL server (the backends on this run's databases and the server's own
processes; on SQLite the database works inside contacts and segmentation) and this process, the
load generator. CPU time per event holds on a busy machine where the rates do not.

``--custom-segmentations N`` first creates and activates N custom segmentations on each of the 5
products, spread over the event types, without conditions (so each fires on its events) and each
adding its own tag and sending the contact's email and name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import sqlalchemy as sa

from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from listboss.segmentation.v1 import segmentation_service_pb2 as seg_pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as seg_grpc
from listboss_common.db import create_engine
from listboss_tools import proc_cpu
from listboss_tools.databases import DATABASE_NAMES, drop_postgres_database
from listboss_tools.suite import Suite, service_of

# The platform's webhook events: they need no data beyond the person and the product.
EVENT_TYPES = [
    value
    for value in event_pb2.EventType.values()
    if event_pb2.EVENT_TYPE_UNSPECIFIED < value <= event_pb2.EVENT_TYPE_CLUB_MODULE_COMPLETED
]


PRODUCTS = 5
# What --database postgres stands for: the local development server.
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/"
# The offered-load sender gives up on a call after this long, and never has more calls in
# flight than this: a suite that falls that far behind did not keep up.
RATE_CALL_TIMEOUT = 60.0
RATE_MAX_IN_FLIGHT = 64
# Achieved / offered rate at or above which the suite kept up.
KEPT_UP = 0.95


async def activate_custom_segmentations(suite: Suite, per_product: int) -> None:
    """Creates and activates ``per_product`` custom segmentations on every product."""
    producer = (("authorization", f"Bearer {suite.producer_token('bench')}"),)
    internal = (("authorization", f"Bearer {suite.internal_token}"),)
    async with grpc.aio.insecure_channel(suite.segmentation_address) as channel:
        stub = seg_grpc.SegmentationServiceStub(channel)
        for product in range(PRODUCTS):
            await stub.RegisterProduct(
                seg_pb.RegisterProductRequest(
                    parent="producers/bench",
                    product_id=str(product),
                    display_name="Benchmark course",
                    kind=event_pb2.PRODUCT_KIND_PRODUCT,
                ),
                metadata=internal,
            )
            for index in range(per_product):
                created = await stub.CreateSegmentation(
                    seg_pb.CreateSegmentationRequest(
                        parent=f"producers/bench/products/{product}",
                        segmentation_id=f"bench-{index}",
                        segmentation=seg_pb.Segmentation(
                            display_name=f"Benchmark rule {index}",
                            provider=seg_pb.PROVIDER_SEND,
                            event_type=EVENT_TYPES[index % len(EVENT_TYPES)],
                            action=seg_pb.TagAction(add_tags=[f"bench-{index}"]),
                            contact_data=[seg_pb.CONTACT_DATA_EMAIL, seg_pb.CONTACT_DATA_NAME],
                        ),
                    ),
                    metadata=producer,
                )
                await stub.ActivateSegmentation(
                    seg_pb.ActivateSegmentationRequest(name=created.name), metadata=producer
                )


def make_batch(count: int, people: int, rng: random.Random) -> list[event_pb2.Event]:
    now = time.time()
    events = []
    for _ in range(count):
        person = rng.randrange(people)
        event = event_pb2.Event(
            id=uuid.uuid4().hex,
            producer="bench",
            type=rng.choice(EVENT_TYPES),
            product=event_pb2.Product(id=str(rng.randrange(PRODUCTS)), name="Benchmark course"),
            person=event_pb2.Person(email=f"person{person}@example.com", name=f"Person {person}"),
        )
        event.occur_time.FromNanoseconds(int(now * 1e9))
        events.append(event)
    return events


async def send(suite: Suite, total: int, batch: int, concurrency: int, people: int) -> float:
    """Sends ``total`` events; returns the seconds until the last batch was acknowledged."""
    rng = random.Random(7)
    metadata = (("authorization", f"Bearer {suite.internal_token}"),)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for start in range(0, total, batch):
        queue.put_nowait(min(batch, total - start))
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(suite.ingest_address) as channel:
        stub = ingest_service_pb2_grpc.IngestServiceStub(channel)

        async def sender() -> None:
            while not queue.empty():
                count = queue.get_nowait()
                request = ingest_service_pb2.BatchIngestEventsRequest(
                    request_id=uuid.uuid4().hex, events=make_batch(count, people, rng)
                )
                reply = await stub.BatchIngestEvents(request, metadata=metadata, timeout=60)
                if reply.accepted_count != count:
                    raise RuntimeError(f"only {reply.accepted_count} of {count} accepted")

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return time.perf_counter() - started


async def send_at_rate(suite: Suite, total: int, rate: float, tick: float, people: int) -> float:
    """Sends ``total`` events at ``rate`` events/s: every ``tick`` seconds one call with the
    events due by then, without waiting for the earlier calls' answers (a sender that waited
    would slow down with the suite and hide that it falls behind). Returns the seconds until
    the last call was acknowledged."""
    rng = random.Random(7)
    metadata = (("authorization", f"Bearer {suite.internal_token}"),)
    calls: list[asyncio.Task[None]] = []
    in_flight: set[asyncio.Task[None]] = set()
    async with grpc.aio.insecure_channel(suite.ingest_address) as channel:
        stub = ingest_service_pb2_grpc.IngestServiceStub(channel)

        async def call(count: int) -> None:
            request = ingest_service_pb2.BatchIngestEventsRequest(
                request_id=uuid.uuid4().hex, events=make_batch(count, people, rng)
            )
            reply = await stub.BatchIngestEvents(request, metadata=metadata, timeout=RATE_CALL_TIMEOUT)
            if reply.accepted_count != count:
                raise RuntimeError(f"only {reply.accepted_count} of {count} accepted")

        started = time.perf_counter()
        sent = 0
        ticks = 0
        while sent < total:
            due = min(total, int(rate * (time.perf_counter() - started)) + 1)
            if due > sent:
                if len(in_flight) >= RATE_MAX_IN_FLIGHT:
                    # Far behind: wait for an answer rather than pile up calls without bound.
                    await asyncio.wait(set(in_flight), return_when=asyncio.FIRST_COMPLETED)
                    continue
                task = asyncio.create_task(call(due - sent))
                calls.append(task)
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                sent = due
            ticks += 1
            await asyncio.sleep(max(0.0, started + ticks * tick - time.perf_counter()))
        await asyncio.gather(*calls)  # and raise the first call's error, if any
        return time.perf_counter() - started


def wait_until_applied(engine: sa.Engine, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            done = connection.exec_driver_sql("SELECT count(*) FROM history").scalar_one()
        if done >= total:
            return
        time.sleep(0.2)
    raise TimeoutError(f"only {done} of {total} events applied after {timeout}s")


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def figures(engine: sa.Engine, warmup_s: float = 0.0) -> dict[str, float]:
    """Throughput and lag from the history. The lag percentiles are of the events sent
    ``warmup_s`` seconds or more after the first; ``steady_commit_rate`` is how fast those were
    committed (their count over the time from the first of them sent to the last committed)."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT occur_time, record_time FROM history").all()
    first_sent = min(occur for occur, _ in rows)
    last_committed = max(record for _, record in rows)
    steady = sorted((occur, record) for occur, record in rows if occur >= first_sent + warmup_s * 1e6) or sorted(rows)
    lags = sorted((record - occur) / 1000 for occur, record in steady)
    steady_span_s = (max(record for _, record in steady) - steady[0][0]) / 1e6
    tenth = max(1, len(steady) // 10)
    return {
        "span_s": (last_committed - first_sent) / 1e6,
        "lag_events": len(lags),
        "lag_p50_ms": percentile(lags, 0.50),
        "lag_p95_ms": percentile(lags, 0.95),
        "lag_p99_ms": percentile(lags, 0.99),
        "lag_max_ms": lags[-1],
        # Lag growing from the first tenth of the measured events to the last is queueing.
        "lag_first_tenth_p50_ms": sorted((r - o) / 1000 for o, r in steady[:tenth])[tenth // 2],
        "lag_last_tenth_p50_ms": sorted((r - o) / 1000 for o, r in steady[-tenth:])[tenth // 2],
        "steady_commit_rate": len(steady) / steady_span_s if steady_span_s > 0 else 0.0,
    }


# --------------------------------------------------------------------------- where the CPU goes

# The PostgreSQL server's own processes (their title after "postgres: <cluster>:"), as opposed
# to the backends serving connections, whose title names the user and database.
POSTGRES_SERVER_PROCESSES = (
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
    "archiver",
    "stats collector",
)


def postgres_postmaster(engine: sa.Engine) -> int | None:
    """The pid of the PostgreSQL server ``engine`` talks to, from ``<data_directory>/postmaster.pid``,
    when that server runs on this machine and its files are readable; None otherwise."""
    if engine.dialect.name != "postgresql":
        return None
    try:
        with engine.connect() as connection:
            data_directory = connection.exec_driver_sql("SHOW data_directory").scalar_one()
        pid = int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
    except (sa.exc.SQLAlchemyError, OSError, ValueError, IndexError):
        return None
    reading = proc_cpu.process_cpu(pid)
    return pid if reading is not None and reading.name.startswith("postgres") else None


def postgres_process_kind(pid: int, postmaster: int, run_databases: set[str]) -> str:
    """``run`` (a backend or autovacuum worker on one of this run's databases), ``server``
    (the postmaster and its own processes) or ``other`` (other databases' connections)."""
    if pid == postmaster:
        return "server"
    title = proc_cpu.command_line(pid)
    if run_databases & set(title.split()):
        return "run"
    if any(title.endswith(name) or f": {name}" in title for name in POSTGRES_SERVER_PROCESSES):
        return "server"
    return "other"


@dataclass
class CpuRow:
    process: str
    cpu_s: float
    us_per_event: float
    share: float  # of the total
    counted: bool = True  # False: shown, but not part of the total (a sum of rows, or not this run's)


@dataclass
class CpuReport:
    rows: list[CpuRow]
    total_s: float
    window_s: float
    machine_busy_share: float  # of all cores over the window, whoever used them
    note: str


# How often the PostgreSQL server's processes are read during the window: a connection that
# closes meanwhile counts up to its last reading.
POSTGRES_SAMPLE_S = 0.1


class PostgresWatch:
    """The PostgreSQL server's processes through the window: read at its start, every
    POSTGRES_SAMPLE_S seconds (a thread), and at its end, each sorted by :func:`postgres_process_kind`.

    A backend that exits takes its CPU time out of the live processes; the server's reaped time
    still has it, but mixed with every other exited process. The samples keep it attributed:
    a connection of this run that closes during the window counts up to its last reading."""

    def __init__(self, postmaster: int, run_databases: set[str]):
        self._postmaster = postmaster
        self._run_databases = run_databases
        self._kinds: dict[int, str] = {}
        self._last: dict[int, proc_cpu.ProcessCpu] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, name="postgres-cpu", daemon=True)

    def _sample(self) -> proc_cpu.TreeCpu:
        tree = proc_cpu.tree_cpu(self._postmaster)
        for pid, reading in tree.live.items():
            if self._kinds.get(pid, "other") == "other":  # a new backend names its database soon after
                self._kinds[pid] = postgres_process_kind(pid, self._postmaster, self._run_databases)
            self._last[pid] = reading
        return tree

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(POSTGRES_SAMPLE_S):
            self._sample()

    def start(self) -> None:
        self._first = self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._final = self._sample()

    def _used_us(self, kind: str) -> tuple[int, int]:
        """The CPU time of the processes of ``kind`` over the window, and how many of them exited."""
        used = closed = 0
        for pid, pid_kind in self._kinds.items():
            if pid_kind != kind:
                continue
            last = self._final.live.get(pid)
            if last is None:
                last, closed = self._last[pid], closed + 1
            first = self._first.live.get(pid)
            used += last.cpu_us - (first.cpu_us if first is not None else 0)
        return used, closed

    def rows(self) -> tuple[list[tuple[str, int, bool]], str]:
        run, closed = self._used_us("run")
        server, _ = self._used_us("server")
        everything = proc_cpu.tree_cpu_us_between(self._first, self._final)
        note = (
            f"PostgreSQL: {closed} connection(s) of this run closed during the window, counted up to "
            f"their last reading ({POSTGRES_SAMPLE_S * 1000:.0f} ms apart); 'other' is the server's "
            "remaining CPU: other databases' connections, and what the samples missed"
        )
        rows = [
            ("postgres: this run's connections", run, True),
            ("postgres: server processes", server, True),
            ("postgres: other", max(0, everything - run - server), False),
        ]
        return rows, note


class CpuWindow:
    """Readings of the suite's processes at the start and at the end of the measured window."""

    def __init__(self, suite: Suite, engine: sa.Engine):
        self._suite = suite
        self._pids = {name: suite.pid(name) for name in ("nats", *suite.service_parts)}
        self._pids["load generator (this process)"] = os.getpid()
        self._postgres: PostgresWatch | None = None
        self.note = "SQLite: the database works inside the contacts and segmentation processes"
        if suite.database != "sqlite":
            postmaster = postgres_postmaster(engine)
            if postmaster is None:
                self.note = "PostgreSQL: not measured (the server is not on this machine, or its files are unreadable)"
            else:
                run_databases = {sa.make_url(suite.database_url(name)).database or "" for name in DATABASE_NAMES}
                self._postgres = PostgresWatch(postmaster, run_databases)

    def _read(self) -> tuple[float, tuple[int, int], dict[str, proc_cpu.ProcessCpu | None]]:
        readings = {label: proc_cpu.process_cpu(pid) for label, pid in self._pids.items()}
        return time.monotonic(), proc_cpu.machine_busy_us(), readings

    def start(self) -> None:
        if self._postgres is not None:
            self._postgres.start()
        self._start = self._read()

    def stop(self) -> None:
        self._end = self._read()
        if self._postgres is not None:
            self._postgres.stop()

    def report(self, events: int) -> CpuReport:
        (began, machine_start, first), (ended, machine_end, last) = self._start, self._end
        replicated = self._suite.contacts_replicas > 1
        measured: list[tuple[str, int, bool]] = []
        for label in self._pids:
            used = proc_cpu.cpu_us_between(first[label], last[label])
            measured.append(("contacts-1" if replicated and label == "contacts" else label, used, True))
        if replicated:
            replicas = sum(used for label, used, _ in measured if service_of(label) == "contacts")
            measured.insert(len(self._pids) - 1, ("contacts (all replicas)", replicas, False))
        note = self.note
        if self._postgres is not None:
            postgres_rows, note = self._postgres.rows()
            measured[-1:-1] = postgres_rows  # before the load generator
        total_us = sum(used for _, used, counted in measured if counted)
        rows = [
            CpuRow(label, used / 1e6, used / events, used / total_us if total_us else 0.0, counted)
            for label, used, counted in measured
        ]
        rows.append(CpuRow("total", total_us / 1e6, total_us / events, 1.0))
        return CpuReport(
            rows=rows,
            total_s=total_us / 1e6,
            window_s=ended - began,
            machine_busy_share=(machine_end[0] - machine_start[0]) / max(1, machine_end[1] - machine_start[1]),
            note=note,
        )


# --------------------------------------------------------------------------- running


def database_choice(value: str) -> str:
    """``sqlite``, ``postgres`` (the local development server) or a PostgreSQL URL prefix."""
    return LOCAL_POSTGRES if value in ("postgres", "postgresql") else value


@contextlib.contextmanager
def bench_suite(database: str, prefix: str, contacts_replicas: int = 1) -> Iterator[tuple[Suite, sa.Engine]]:
    """A running suite of its own in a temporary folder (``prefix``), on free ports, its
    services logging warnings only, and an engine on contacts' database. On PostgreSQL its
    databases are dropped first: a benchmark starts from nothing."""
    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        suite = Suite.on_free_ports(
            data_dir,
            database=database,
            contacts_replicas=contacts_replicas,
            output=None,
            extra_env={"LISTBOSS_LOG_LEVEL": "WARNING"},
        )
        if database != "sqlite":
            for service in DATABASE_NAMES:
                drop_postgres_database(suite.database_url(service))
        with suite:
            engine = create_engine(suite.database_url("contacts"), application_name="listboss-bench")
            try:
                yield suite, engine
            finally:
                engine.dispose()


def print_report(result: dict) -> None:
    config, figures_, cpu = result["config"], result["figures"], result["cpu"]
    print(f"machine: {result['machine']}")
    print(
        f"store: {config['store']}; {config['events']:,} events about {config['contacts']:,} contacts, "
        f"{config['custom_segmentations']} active custom segmentations per product, "
        f"{config['contacts_replicas']} contacts replica(s)"
    )
    if config["rate"]:
        print(
            f"offered: {config['rate']:,.0f} events/s, one call every {config['tick_s'] * 1000:.0f} ms; "
            f"sent at {figures_['send_rate']:,.0f} events/s, steady state committed at "
            f"{figures_['steady_commit_rate']:,.0f} events/s: "
            + ("kept up" if figures_["kept_up"] else "did NOT keep up")
        )
        print(
            f"lag sent -> committed after a {config['warmup_s']:.1f} s warm-up ({figures_['lag_events']:,} events): "
            f"p50 {figures_['lag_p50_ms']:,.0f} ms, p95 {figures_['lag_p95_ms']:,.0f} ms, "
            f"p99 {figures_['lag_p99_ms']:,.0f} ms, max {figures_['lag_max_ms']:,.0f} ms "
            f"(p50 of the first tenth {figures_['lag_first_tenth_p50_ms']:,.0f} ms, "
            f"of the last {figures_['lag_last_tenth_p50_ms']:,.0f} ms)"
        )
    else:
        print(
            f"batches of {config['batch']}, {config['concurrency']} in flight; "
            f"ingest (acknowledged by JetStream): {figures_['send_rate']:,.0f} events/s"
        )
        print(f"end to end (sent -> tags committed): {figures_['end_to_end_rate']:,.0f} events/s")
        print(
            f"lag sent -> committed: p50 {figures_['lag_p50_ms']:,.0f} ms, p95 {figures_['lag_p95_ms']:,.0f} ms, "
            f"p99 {figures_['lag_p99_ms']:,.0f} ms, max {figures_['lag_max_ms']:,.0f} ms"
        )
    print(
        f"\nCPU over the {cpu['window_s']:.1f} s from the first event sent to the last committed "
        f"(all cores were {cpu['machine_busy_share']:.0%} busy, whoever used them):"
    )
    width = max(len(row["process"]) for row in cpu["rows"])
    print(f"  {'process':<{width}}  {'CPU s':>7}  {'µs/event':>9}  {'share':>6}")
    for row in cpu["rows"]:
        share = f"{row['share']:.1%}" if row["counted"] else "-"
        print(f"  {row['process']:<{width}}  {row['cpu_s']:>7.2f}  {row['us_per_event']:>9,.0f}  {share:>6}")
    print(f"  ('-': not in the total. {cpu['note']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--database",
        type=database_choice,
        default="sqlite",
        help=f"sqlite, postgres ({LOCAL_POSTGRES}), or a PostgreSQL URL prefix",
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000, help="events per BatchIngestEvents call")
    parser.add_argument("--concurrency", type=int, default=4, help="calls in flight")
    parser.add_argument(
        "--contacts",
        "--people",
        dest="contacts",
        type=int,
        default=5_000,
        help="distinct people (contacts) the events are about",
    )
    parser.add_argument(
        "--custom-segmentations",
        type=int,
        default=0,
        metavar="N",
        help="ACTIVE custom segmentations per product (at most the product limit, 100)",
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, metavar="N", help="offered load: send N events/s (default: as fast as taken)"
    )
    parser.add_argument("--tick", type=float, default=0.02, help="seconds between calls at --rate")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of events left out of the lag percentiles at --rate (default: a fifth of the run)",
    )
    parser.add_argument(
        "--contacts-replicas", type=int, default=1, metavar="N", help="contacts processes (more than 1: PostgreSQL)"
    )
    parser.add_argument("--json", action="store_true", help="print every figure as one JSON object")
    args = parser.parse_args()
    if args.contacts_replicas > 1 and args.database == "sqlite":
        parser.error("--contacts-replicas above 1 needs --database postgres (SQLite has one writer)")
    if args.rate < 0 or args.tick <= 0 or args.events <= 0 or args.contacts <= 0:
        parser.error("--rate, --tick, --events and --contacts must be positive")
    warmup = 0.0 if not args.rate else args.warmup if args.warmup is not None else args.events / args.rate / 5

    with bench_suite(args.database, "listboss-bench-", args.contacts_replicas) as (suite, engine):
        if args.custom_segmentations:
            asyncio.run(activate_custom_segmentations(suite, args.custom_segmentations))
        cpu = CpuWindow(suite, engine)
        cpu.start()
        if args.rate:
            send_seconds = asyncio.run(send_at_rate(suite, args.events, args.rate, args.tick, args.contacts))
        else:
            send_seconds = asyncio.run(send(suite, args.events, args.batch, args.concurrency, args.contacts))
        wait_until_applied(engine, args.events, timeout=600)
        cpu.stop()
        measured = figures(engine, warmup)

    measured["send_rate"] = args.events / send_seconds
    measured["end_to_end_rate"] = args.events / measured["span_s"]
    if args.rate:
        measured["kept_up"] = (
            measured["send_rate"] >= KEPT_UP * args.rate and measured["steady_commit_rate"] >= KEPT_UP * args.rate
        )
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "config": {
            "store": "SQLite" if args.database == "sqlite" else "PostgreSQL",
            "events": args.events,
            "contacts": args.contacts,
            "custom_segmentations": args.custom_segmentations,
            "contacts_replicas": args.contacts_replicas,
            "rate": args.rate,
            "tick_s": args.tick,
            "warmup_s": warmup,
            "batch": args.batch,
            "concurrency": args.concurrency,
        },
        "figures": measured,
        "cpu": asdict(cpu.report(args.events)),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
