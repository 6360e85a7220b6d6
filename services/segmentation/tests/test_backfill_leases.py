"""Backfill leases in the database (SQLite and PostgreSQL): who may claim a backfill, and
that of replicas claiming together exactly one wins."""

from __future__ import annotations

import asyncio
import time

from listboss_segmentation import storage


def create(engine, backfill_id: str, owner: str, lease_seconds: float) -> storage.BackfillRecord:
    with engine.begin() as connection:
        return storage.create_backfill(connection, "alice", "42", "seg", backfill_id, owner, lease_seconds)


def claim(engine, record, owner: str) -> storage.BackfillRecord | None:
    with engine.begin() as connection:
        return storage.claim_backfill(connection, record, owner, 30.0)


def expired(engine) -> list[str]:
    with engine.connect() as connection:
        return [record.backfill_id for record in storage.expired_backfills(connection, 10)]


def test_only_an_expired_running_backfill_is_claimed(engine):
    held = create(engine, "held", "replica-a", 30.0)
    lapsed = create(engine, "lapsed", "replica-a", 0.0)
    finished = create(engine, "finished", "replica-a", 0.0)
    with engine.begin() as connection:
        assert storage.update_backfill(connection, finished, "replica-a", state="SUCCEEDED")
    time.sleep(0.01)

    assert expired(engine) == ["lapsed"]
    assert claim(engine, held, "replica-b") is None
    assert claim(engine, finished, "replica-b") is None
    taken = claim(engine, lapsed, "replica-b")
    assert taken is not None and taken.owner == "replica-b" and taken.lease_expire_time > time.time() * 1e6
    assert expired(engine) == []
    # The old owner can neither renew nor store progress any more.
    with engine.begin() as connection:
        assert not storage.renew_backfill_lease(connection, lapsed, "replica-a", 30.0)
        assert not storage.update_backfill(connection, lapsed, "replica-a", events_scanned=10)
        assert storage.update_backfill(connection, lapsed, "replica-b", events_scanned=10)


def test_a_released_lease_is_claimable_at_once(engine):
    record = create(engine, "released", "replica-a", 30.0)
    assert expired(engine) == []
    with engine.begin() as connection:
        storage.release_backfill(connection, record, "replica-a")
    assert expired(engine) == ["released"]


async def test_of_replicas_claiming_together_exactly_one_wins(engine):
    records = [create(engine, f"b{n}", "gone", 0.0) for n in range(5)]
    time.sleep(0.01)
    for record in records:
        outcomes = await asyncio.gather(*(asyncio.to_thread(claim, engine, record, f"replica-{n}") for n in range(4)))
        winners = [outcome.owner for outcome in outcomes if outcome is not None]
        assert len(winners) == 1, winners
