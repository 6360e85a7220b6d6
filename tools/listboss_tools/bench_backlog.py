"""Catch-up benchmark: contacts meets a backlog. Prints figures; passes or fails on nothing.

    .venv/bin/python -m listboss_tools.bench_backlog                     # SQLite, 100,000 events
    .venv/bin/python -m listboss_tools.bench_backlog --database postgresql+psycopg://postgres@127.0.0.1:5432/

It starts its own suite, stops the contacts service, ingests ``--events`` events
(segmentation turns them into changes meanwhile), starts contacts again and samples,
every 250 ms until the history holds them all: the history's size (does it grow
steadily, or in one jump?), contacts' resident memory (VmRSS from /proc) and the
tag-change outbox (does the relay keep pace?).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import time

import sqlalchemy as sa

from listboss_common.processes import resident_mib
from listboss_tools.bench import bench_suite, send
from listboss_tools.suite import Suite


def counts(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        history = connection.exec_driver_sql("SELECT count(*) FROM history").scalar_one()
        outbox = connection.exec_driver_sql("SELECT count(*) FROM tag_change_outbox").scalar_one()
    return history, outbox


async def changes_pending(suite: Suite) -> int:
    """Events segmentation has not yet turned into stored changes."""
    import nats

    nc = await nats.connect(suite.nats_url)
    try:
        info = await nc.jetstream().consumer_info("LISTBOSS_EVENTS", "segmentation")
        return info.num_pending + info.num_ack_pending
    finally:
        await nc.close()


def wait_for_segmentation(suite: Suite, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while asyncio.run(changes_pending(suite)) and time.monotonic() < deadline:
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="sqlite", help="sqlite, or a PostgreSQL URL prefix")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--people", type=int, default=5_000, help="distinct contacts the events are about")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the catch-up")
    args = parser.parse_args()

    with bench_suite(args.database, "listboss-backlog-") as (suite, engine):
        suite.kill("contacts")
        asyncio.run(send(suite, args.events, 1_000, 4, args.people))
        wait_for_segmentation(suite, timeout=args.timeout)

        started = time.monotonic()
        suite.restart("contacts")
        pid = suite.pid("contacts")
        samples: list[tuple[float, int, int, float]] = []
        while time.monotonic() - started < args.timeout:
            history, outbox = counts(engine)
            samples.append((time.monotonic() - started, history, outbox, resident_mib(pid)))
            if history >= args.events and outbox == 0:
                break
            time.sleep(0.25)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"store: {'SQLite' if args.database == 'sqlite' else 'PostgreSQL'}; backlog of {args.events:,} events "
        f"over {args.people:,} contacts"
    )
    caught_up = next((t for t, history, _, _ in samples if history >= args.events), None)
    first = next((t for t, history, _, _ in samples if history > 0), None)
    if caught_up is None or first is None:
        print(f"not caught up within {args.timeout:.0f} s: {samples[-1][1]:,} events in the history")
        return
    print(
        f"restart to first committed events: {first:.1f} s; to the whole backlog: {caught_up:.1f} s "
        f"({args.events / caught_up:,.0f} events/s)"
    )
    steps = [b[1] - a[1] for a, b in itertools.pairwise(samples) if a[0] < caught_up]
    print(
        f"history growth per 250 ms sample while catching up: max {max(steps):,} events "
        f"({max(steps) / args.events:.1%} of the backlog); {sum(1 for s in steps if s > 0)} samples grew"
    )
    print(f"contacts VmRSS: start {samples[0][3]:.0f} MiB, peak {max(s[3] for s in samples):.0f} MiB")
    print(
        f"tag-change outbox: peak {max(s[2] for s in samples):,} rows waiting; empty "
        f"{samples[-1][0] - caught_up:.1f} s after the history caught up"
    )


if __name__ == "__main__":
    main()
