"""Benchmark (not a test): the CPU the contacts write path spends per change, in process.

    python -m listboss_tools.bench_apply [--database sqlite|postgresql+psycopg://...] [--changes 20000]
        [--people 5000] [--chunk 5000] [--custom 0.5] [--purchases 1.0] [--audiences 10] [--profile]

It builds ``--changes`` ContactChange messages as segmentation publishes them (the automatic
tags of five purchase event types over 20 products, one producer, ``--people`` distinct
persons), where a ``--custom`` share of them also carry a custom segmentation's tag operation
and its chosen contact data (name, phone), and a ``--purchases`` share (default all, as the
platform's purchase events do) name a purchase (one of the person's three transactions, with a
price), then applies them with the service's
:class:`~listboss_contacts.consumer.ChangeApplier` in transactions of ``--chunk`` changes on a
fresh contacts database (SQLite in a temporary directory, or the PostgreSQL database
``listboss_bench_apply``, dropped and created anew). It prints the process CPU per change
(``time.process_time``: decoding, decisions, SQLAlchemy, the driver and, on SQLite, the
database engine itself) and, on PostgreSQL, the CPU of the server backends serving the
benchmark's connections (read from ``/proc`` before and after). ``--audiences`` creates that many
audiences of the producer first (filters over tags, products, traits and contact data, cycled from
``AUDIENCE_FILTERS``), which every batch then re-evaluates for its contacts. ``--profile`` adds a
cProfile.

``--relay`` then starts a nats-server and publishes the outbox the changes left with the service's
:class:`~listboss_contacts.tag_changes.OutboxRelay` (one JetStream message and PubAck per tag
change, each row deleted after it), and prints the process CPU per tag change relayed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import tempfile
import time
from pathlib import Path

import nats
import sqlalchemy as sa

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common.db import create_engine, is_postgres
from listboss_common.processes import NatsServer
from listboss_contacts.audiences import AudienceStore
from listboss_contacts.consumer import ChangeApplier
from listboss_contacts.schema import migrate_database, tag_change_outbox
from listboss_contacts.tag_changes import OutboxRelay
from listboss_segmentation.consumer import change_for
from listboss_testing.events import make_event
from listboss_tools import proc_cpu
from listboss_tools.databases import drop_postgres_database, ensure_postgres_database, postgres_url

PG_DATABASE = "listboss_bench_apply"
BASE_TIME = 1_700_000_000_000_000  # microseconds
EVENT_TYPES = [
    event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
    event_pb2.EVENT_TYPE_PURCHASE_COMPLETE,
    event_pb2.EVENT_TYPE_PURCHASE_OUT_OF_SHOPPING_CART,
    event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED,
    event_pb2.EVENT_TYPE_PURCHASE_CANCELED,
]


def make_changes(
    count: int, people: int, custom: float, seed: int = 1, purchases: float = 1.0
) -> list[contact_change_pb2.ContactChange]:
    rnd = random.Random(seed)
    changes = []
    for number in range(count):
        person = rnd.randrange(people)
        event = make_event(
            f"e{number}", producer="p1", email=f"person{person}@example.com", type=rnd.choice(EVENT_TYPES)
        )
        event.product.id = f"prod{rnd.randrange(20)}"
        event.occur_time.FromMicroseconds(BASE_TIME + number * 1000)
        if rnd.random() < purchases:
            # As the platform sends them: each person's few transactions, each with its price.
            event.purchase.transaction = f"HP{person:06d}{rnd.randrange(3)}"
            event.purchase.price.currency_code = "BRL"
            event.purchase.price.value = rnd.choice((97.0, 197.0, 497.0))
        change = change_for(event)
        if rnd.random() < custom:
            added = rnd.random() < 0.7
            change.tag_operations.add(
                action=contact_change_pb2.TagOperation.ACTION_ADD
                if added
                else contact_change_pb2.TagOperation.ACTION_REMOVE,
                tag_key=f"custom-{rnd.randrange(10)}",
                tag_display_name="Custom",
                automatic=False,
                segmentation=f"seg-{rnd.randrange(10)}",
            )
            change.fired_segmentations.append(f"seg-{rnd.randrange(10)}")
            change.contact_data.update({"name": f"Person {person}", "phone": f"+55 11 {person:05d}"})
        changes.append(change)
    return changes


async def _relay_all(engine: sa.Engine, store_dir: Path) -> tuple[int, float]:
    """Relays the whole outbox to a fresh nats-server; returns (rows, process CPU seconds)."""
    server = NatsServer(store_dir, port=0)
    server.start()
    try:
        nc = await nats.connect(server.url)
        try:
            relay = OutboxRelay(engine, nc.jetstream())
            await relay.subscribe()
            relayed = 0
            start = time.process_time()
            while count := await relay.relay_once():
                relayed += count
            return relayed, time.process_time() - start
        finally:
            await nc.close()
    finally:
        server.stop()


# Audiences as producers write them: tags, products, traits and contact data, some relative.
AUDIENCE_FILTERS = (
    'tag = "purchase-approved" AND NOT tag = "purchase-refunded"',
    'product = "prod{n}"',
    "purchases >= 2",
    "spent.BRL > 500",
    "last_purchase_time >= now - 30d",
    'tag = "cart-abandoned" AND NOT tag = "purchase-approved"',
    'country = "PT"',
    'tag = "billet-printed" OR tag = "purchase-delayed"',
    'purchases.prod{n} >= 1 AND NOT tag = "purchase-canceled"',
    'email : "example"',
)


def _create_audiences(engine: sa.Engine, count: int) -> None:
    """``count`` audiences of the benchmark's producer, cycling through :data:`AUDIENCE_FILTERS`."""
    with engine.begin() as connection:
        store = AudienceStore(connection)
        for number in range(count):
            text = AUDIENCE_FILTERS[number % len(AUDIENCE_FILTERS)].format(n=number % 20)
            store.create("p1", f"a{number}", f"Audience {number}", text, False, BASE_TIME)


def _backend_pids(engine: sa.Engine) -> list[int]:
    """The server processes of the benchmark database's connections (the applier's pool)."""
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))
        return [row.pid for row in rows]


def _backends_cpu_us(pids: list[int]) -> int:
    return sum(reading.cpu_us for pid in pids if (reading := proc_cpu.process_cpu(pid)) is not None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="sqlite", help='"sqlite" or a PostgreSQL SQLAlchemy URL')
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--people", type=int, default=5_000)
    parser.add_argument("--chunk", type=int, default=5_000, help="changes per transaction")
    parser.add_argument("--custom", type=float, default=0.0, help="share of changes with custom tags and data")
    parser.add_argument(
        "--purchases",
        type=float,
        default=1.0,
        help="share of changes whose event names a purchase (transaction, price)",
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the apply calls")
    parser.add_argument("--relay", action="store_true", help="then relay the outbox to a nats-server")
    parser.add_argument("--audiences", type=int, default=0, help="audiences of the producer, evaluated per batch")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="listboss-bench-apply-") as directory:
        if args.database == "sqlite":
            url = f"sqlite:///{Path(directory) / 'contacts.db'}"
        else:
            url = postgres_url(args.database, PG_DATABASE)
            drop_postgres_database(url)
            if warning := ensure_postgres_database(url):
                raise SystemExit(warning)
        engine = create_engine(url)
        try:
            migrate_database(engine)
            _create_audiences(engine, args.audiences)
            changes = make_changes(args.changes, args.people, args.custom, purchases=args.purchases)
            applier = ChangeApplier(engine)
            applier.apply(changes[:1])  # opens the pool's connection; the event is applied again below (skipped)
            backends = _backend_pids(engine) if is_postgres(engine) else []
            server_before = _backends_cpu_us(backends)
            profile = cProfile.Profile() if args.profile else None
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            if profile:
                profile.enable()
            for start in range(0, len(changes), args.chunk):
                applier.apply(changes[start : start + args.chunk])
            if profile:
                profile.disable()
            cpu = time.process_time() - cpu_start
            wall = time.perf_counter() - wall_start
            server = (_backends_cpu_us(backends) - server_before) / 1e6
            with engine.connect() as connection:
                audience_changes = connection.execute(
                    sa.select(sa.func.count()).select_from(tag_change_outbox).where(tag_change_outbox.c.audience != "")
                ).scalar_one()
            relayed = asyncio.run(_relay_all(engine, Path(directory) / "nats")) if args.relay else None
        finally:
            engine.dispose()
            if args.database != "sqlite":
                drop_postgres_database(url)

    count = len(changes)
    kind = "sqlite" if args.database == "sqlite" else "postgresql"
    print(
        f"{kind} changes={count} people={args.people} chunk={args.chunk} custom={args.custom} "
        f"audiences={args.audiences}: "
        f"{cpu / count * 1e6:.1f} µs CPU/change in process"
        + (
            f" + {server / count * 1e6:.1f} in the server = {(cpu + server) / count * 1e6:.1f}"
            if kind != "sqlite"
            else ""
        )
        + f"; wall {wall / count * 1e6:.1f} µs/change, {count / wall:,.0f} changes/s"
    )
    if args.audiences:
        print(f"audience entries and exits written: {audience_changes}")
    if relayed is not None:
        rows, relay_cpu = relayed
        print(f"relay: {rows} tag changes, {relay_cpu / max(rows, 1) * 1e6:.1f} µs CPU per tag change in process")
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    main()
