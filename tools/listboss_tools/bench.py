"""End-to-end benchmark: events per second through the running suite, and the lag
from ingest to tags committed. Prints figures; passes or fails on nothing.

    ./dev bench                                   # SQLite
    ./dev bench --database postgresql+psycopg://postgres@127.0.0.1:5432/
    ./dev bench --events 50000 --batch 1000 --concurrency 4
    ./dev bench --custom-segmentations 100      # with each product's maximum of ACTIVE ones

It starts its own suite (nats-server and the three services as processes) in a
temporary folder, sends generated events through ``BatchIngestEvents`` and
watches the contacts database until every event is in the history. Each event's
``occur_time`` is the moment its batch was sent, so ``record_time - occur_time``
in the history is the lag from ingest to committed tags. ``--custom-segmentations N``
first creates and activates N custom segmentations on each of the 5 products, spread
over the event types, without conditions (so each fires on its events) and each adding
its own tag and sending the contact's email and name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import tempfile
import time
import uuid
from collections.abc import Iterator

import grpc
import sqlalchemy as sa

from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from listboss.segmentation.v1 import segmentation_service_pb2 as seg_pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as seg_grpc
from listboss_common.db import create_engine
from listboss_tools.databases import DATABASE_NAMES, drop_postgres_database
from listboss_tools.suite import Suite

# The platform's webhook events: they need no data beyond the person and the product.
EVENT_TYPES = [
    value
    for value in event_pb2.EventType.values()
    if event_pb2.EVENT_TYPE_UNSPECIFIED < value <= event_pb2.EVENT_TYPE_CLUB_MODULE_COMPLETED
]


PRODUCTS = 5


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


def wait_until_applied(engine: sa.Engine, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            done = connection.exec_driver_sql("SELECT count(*) FROM history").scalar_one()
        if done >= total:
            return
        time.sleep(0.2)
    raise TimeoutError(f"only {done} of {total} events applied after {timeout}s")


def figures(engine: sa.Engine) -> dict[str, float]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT occur_time, record_time FROM history").all()
    lags = sorted((record - occur) / 1000 for occur, record in rows)
    first_sent = min(occur for occur, _ in rows)
    last_committed = max(record for _, record in rows)

    def percentile(p: float) -> float:
        return lags[min(len(lags) - 1, int(p * len(lags)))]

    return {
        "span_s": (last_committed - first_sent) / 1e6,
        "lag_p50_ms": percentile(0.50),
        "lag_p99_ms": percentile(0.99),
        "lag_max_ms": lags[-1],
    }


@contextlib.contextmanager
def bench_suite(database: str, prefix: str) -> Iterator[tuple[Suite, sa.Engine]]:
    """A running suite of its own in a temporary folder (``prefix``), on free ports, its
    services logging warnings only, and an engine on contacts' database. On PostgreSQL its
    databases are dropped first: a benchmark starts from nothing."""
    with tempfile.TemporaryDirectory(prefix=prefix) as data_dir:
        suite = Suite.on_free_ports(
            data_dir, database=database, output=None, extra_env={"LISTBOSS_LOG_LEVEL": "WARNING"}
        )
        if database != "sqlite":
            for service in DATABASE_NAMES:
                drop_postgres_database(suite.database_url(service))
        with suite:
            engine = create_engine(suite.database_url("contacts"))
            try:
                yield suite, engine
            finally:
                engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="sqlite", help="sqlite, or a PostgreSQL URL prefix")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000, help="events per BatchIngestEvents call")
    parser.add_argument("--concurrency", type=int, default=4, help="calls in flight")
    parser.add_argument("--people", type=int, default=5_000, help="distinct contacts the events are about")
    parser.add_argument(
        "--custom-segmentations",
        type=int,
        default=0,
        metavar="N",
        help="ACTIVE custom segmentations per product (at most the product limit, 100)",
    )
    args = parser.parse_args()

    with bench_suite(args.database, "listboss-bench-") as (suite, engine):
        if args.custom_segmentations:
            asyncio.run(activate_custom_segmentations(suite, args.custom_segmentations))
        ingest_seconds = asyncio.run(send(suite, args.events, args.batch, args.concurrency, args.people))
        wait_until_applied(engine, args.events, timeout=600)
        result = figures(engine)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"store: {'SQLite' if args.database == 'sqlite' else 'PostgreSQL'}; {args.events} events, "
        f"batches of {args.batch}, {args.concurrency} in flight, {args.people} contacts, "
        f"{args.custom_segmentations} active custom segmentations per product"
    )
    print(f"ingest (acknowledged by JetStream): {args.events / ingest_seconds:,.0f} events/s")
    print(f"end to end (sent -> tags committed): {args.events / result['span_s']:,.0f} events/s")
    print(
        f"lag ingest -> committed: p50 {result['lag_p50_ms']:,.0f} ms, p99 {result['lag_p99_ms']:,.0f} ms, "
        f"max {result['lag_max_ms']:,.0f} ms"
    )


if __name__ == "__main__":
    main()
