"""``listboss-ops status``, ``backfills`` and ``migrations`` against the real suite (nats-server
and the three services as processes, SQLite), the CLI run as a subprocess: the figures in
``--json`` are JetStream's and the databases' own, a dead service, a dead letter and a stuck
backfill each make the exit status 1, and a stuck backfill is resumed over gRPC."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from listboss.events.v1 import event_pb2
from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as pb_grpc
from listboss_common import bus
from listboss_contacts.schema import ALEMBIC as CONTACTS_ALEMBIC
from listboss_segmentation.schema import ALEMBIC as SEGMENTATION_ALEMBIC

pytestmark = pytest.mark.e2e

OPS_SCRIPT = Path(sys.executable).parent / "listboss-ops"
PRODUCT = "producers/demo/products/42"
SEGMENTATION = f"{PRODUCT}/segmentations/billet-buyers"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)

    def json_lines(self) -> list:
        return [json.loads(line) for line in self.out.splitlines()]


def ops(*args: str, timeout: float = 60.0) -> Run:
    command = [str(OPS_SCRIPT)] if OPS_SCRIPT.exists() else [sys.executable, "-m", "listboss_tools.ops"]
    # Nothing from the test's environment decides where the CLI looks: only the arguments.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTBOSS_")}
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, env=env)
    return Run(done.returncode, done.stdout, done.stderr)


def status(suite, *extra: str) -> Run:
    return ops(
        "status",
        "--suite-file",
        str(suite.suite_file),
        "--json",
        "--contacts-database",
        suite.database_url("contacts"),
        "--segmentation-database",
        suite.database_url("segmentation"),
        *extra,
    )


def wait_for(condition, what: str, timeout: float = 30.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s")


def billet_event(event_id: str, email: str) -> event_pb2.Event:
    event = event_pb2.Event(
        id=event_id,
        producer="demo",
        type=event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED,
        product=event_pb2.Product(id="42", name="Course"),
        person=event_pb2.Person(email=email, name=email.split("@")[0].title()),
        purchase=event_pb2.Purchase(payment_type="BILLET"),
    )
    event.occur_time.FromSeconds(1_700_000_000)
    return event


async def publish_events(suite, prefix: str, count: int) -> None:
    """``count`` events, one message each, as ingest would put them on the bus."""
    nc = await bus.connect(suite.nats_url, name="test-ops-status")
    try:
        js = nc.jetstream()
        for i in range(count):
            event = billet_event(f"{prefix}-{i}", f"{prefix}{i}@example.com")
            await js.publish(
                bus.events_subject("demo"),
                event_pb2.EventBatch(events=[event]).SerializeToString(),
                headers={"Nats-Msg-Id": f"demo/{event.id}"},
            )
    finally:
        await nc.close()


# The durable consumers of a suite: segmentation's, and contacts' (one per partition of the
# changes, and one for the changes from before partitions).
CONSUMERS = [(bus.EVENTS.name, "segmentation"), (bus.CHANGES.name, "contacts")] + [
    (bus.CHANGES.name, f"contacts-p{k}") for k in range(bus.DEFAULT_PARTITIONS)
]


async def consumer_figures(suite) -> dict:
    nc = await bus.connect(suite.nats_url, name="test-ops-status")
    try:
        js = nc.jetstream()
        found = {}
        for stream, durable in CONSUMERS:
            info = await js.consumer_info(stream, durable)
            found[(stream, durable)] = (info.num_pending, info.num_ack_pending, info.num_redelivered)
        return found
    finally:
        await nc.close()


def figures_of(report: dict) -> dict:
    return {
        (c["stream"], c["consumer"]): (c["pending"], c["ack_pending"], c["redelivered"]) for c in report["consumers"]
    }


def settled(suite) -> dict | None:
    run = status(suite)
    report = run.json()
    quiet = all(c["pending"] == 0 and c["ack_pending"] == 0 for c in report["consumers"])
    return report if run.code == 0 and quiet and report["outbox"]["rows"] == 0 else None


# --- status ----------------------------------------------------------------------------------------


def test_status_of_a_healthy_suite_and_of_a_dead_contacts(suite):
    asyncio.run(publish_events(suite, "first", 5))
    report = wait_for(lambda: settled(suite), "the suite settled")
    assert report["ok"] is True and report["problems"] == []
    assert {name: s["health"] for name, s in report["services"].items()} == {
        "ingest": "SERVING",
        "segmentation": "SERVING",
        "contacts": "SERVING",
    }
    assert report["services"]["contacts"]["address"] == suite.contacts_address
    assert set(figures_of(report)) == set(CONSUMERS)
    # One contacts replica: it owns every partition, and each partition's consumer names it.
    owners = report["partitions"]["owners"]
    assert sorted(owners, key=int) == [str(k) for k in range(bus.DEFAULT_PARTITIONS)]
    assert set(owners.values()) == set(report["partitions"]["members"]) and len(report["partitions"]["members"]) == 1
    assert {c["owner"] for c in report["consumers"] if c["consumer"].startswith("contacts-p")} == set(owners.values())
    assert report["dead_letters"] == {"total": 0, "by_consumer": []}
    assert report["outbox"]["rows"] == 0 and report["outbox"]["oldest_age_seconds"] is None
    assert (report["backfills"]["running"], report["backfills"]["stuck"]) == (0, [])

    text = ops("status", "--suite-file", str(suite.suite_file))
    assert text.code == 0, text
    assert "SERVING" in text.out and "all healthy" in text.out
    assert "tag-change outbox: not checked (give --contacts-database)" in text.out

    # Contacts dies: its consumer's backlog grows while segmentation goes on.
    suite.kill("contacts")
    try:
        asyncio.run(publish_events(suite, "second", 7))

        def backlog():
            run = status(suite)
            figures = figures_of(run.json())
            pending = sum(f[0] + f[1] for (stream, _), f in figures.items() if stream == "LISTBOSS_CHANGES")
            segmentation = figures[("LISTBOSS_EVENTS", "segmentation")]
            return run if pending > 0 and segmentation[:2] == (0, 0) else None

        run = wait_for(backlog, "the contacts consumer's backlog")
        assert run.code == 1, run
        report = run.json()
        assert report["ok"] is False
        assert report["services"]["contacts"]["health"] == "UNAVAILABLE"
        assert f"contacts at {suite.contacts_address} is UNAVAILABLE" in report["problems"]
        # The figures are JetStream's: the same as consumer_info now (nothing moves meanwhile).
        assert figures_of(report) == asyncio.run(consumer_figures(suite))
        text = ops("status", "--suite-file", str(suite.suite_file))
        assert text.code == 1 and "UNAVAILABLE" in text.out and "problems:" in text.out
    finally:
        suite.restart("contacts")
    wait_for(lambda: settled(suite), "contacts drained its backlog after the restart")


def test_dead_letters_are_counted_per_consumer(suite):
    async def dead_letter() -> None:
        nc = await bus.connect(suite.nats_url, name="test-ops-status")
        try:
            await nc.jetstream().publish(
                "listboss.deadletter.LISTBOSS_CHANGES.contacts",
                b"\xff",
                headers={"Listboss-Original-Subject": "listboss.changes.demo", "Listboss-Error": "Poison('x')"},
            )
        finally:
            await nc.close()

    asyncio.run(dead_letter())
    run = status(suite)
    assert run.code == 1, run
    report = run.json()
    assert report["dead_letters"] == {
        "total": 1,
        "by_consumer": [{"stream": "LISTBOSS_CHANGES", "consumer": "contacts", "count": 1}],
    }
    assert "1 dead letter(s): listboss-ops deadletters list" in report["problems"]

    purged = ops("deadletters", "purge", "--all", "--suite-file", str(suite.suite_file))
    assert purged.code == 0, purged
    assert status(suite).code == 0


# --- backfills -------------------------------------------------------------------------------------


def segmentation_stub(suite):
    channel = grpc.insecure_channel(suite.segmentation_address)
    return channel, pb_grpc.SegmentationServiceStub(channel)


def set_backfill(suite, name: str, *, state: str, age_seconds: float) -> None:
    """What a replica that hangs in the middle of a backfill leaves: RUNNING, its lease still
    held (so no other replica takes it over), no more progress."""
    backfill_id = name.rsplit("/", 1)[1]
    engine = sa.create_engine(suite.database_url("segmentation"), connect_args={"timeout": 30})
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE backfills SET state = :state, update_time = :time, owner = 'hung-replica', "
                    "lease_expire_time = :lease WHERE backfill_id = :id"
                ),
                {
                    "state": state,
                    "time": int((time.time() - age_seconds) * 1_000_000),
                    "lease": int((time.time() + 3600) * 1_000_000),
                    "id": backfill_id,
                },
            )
    finally:
        engine.dispose()


def backfills(suite, *extra: str) -> list[dict]:
    run = ops("backfills", "list", "--json", "--segmentation-database", suite.database_url("segmentation"), *extra)
    assert run.code == 0, run
    return run.json_lines()


def test_backfills_list_and_resume_a_stuck_one(suite):
    asyncio.run(publish_events(suite, "past", 4))
    wait_for(lambda: settled(suite), "the past events applied")
    channel, stub = segmentation_stub(suite)
    demo = [("authorization", f"Bearer {suite.demo_token}")]
    with channel:
        # The product exists: segmentation recorded it from the events.
        stub.CreateSegmentation(
            pb.CreateSegmentationRequest(
                parent=PRODUCT,
                segmentation_id="billet-buyers",
                segmentation=pb.Segmentation(
                    display_name="Billet buyers",
                    provider=pb.PROVIDER_SEND,
                    event_type=event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED,
                    condition=pb.Condition(
                        clause=pb.Clause(
                            field="payment_type", operator=pb.OPERATOR_EQUALS, value=pb.Value(string_value="BILLET")
                        )
                    ),
                    action=pb.TagAction(add_tags=["billet-buyers"]),
                ),
            ),
            metadata=demo,
        )
        started = stub.BackfillSegmentation(pb.BackfillSegmentationRequest(name=SEGMENTATION), metadata=demo)

    [listed] = backfills(suite)
    assert listed["name"] == started.name and listed["segmentation"] == SEGMENTATION
    assert listed["owner"]  # the replica that accepted it
    assert listed["state"] in ("RUNNING", "SUCCEEDED") and listed["stuck"] is False

    done = wait_for(lambda: [b for b in backfills(suite) if b["state"] == "SUCCEEDED"], "the backfill finished")
    scanned = done[0]["events_scanned"]
    assert scanned >= 4 and done[0]["events_considered"] == done[0]["events_matched"] == scanned
    assert backfills(suite, "--state", "failed") == []
    text = ops("backfills", "list", "--segmentation-database", suite.database_url("segmentation"))
    assert text.code == 0 and started.name in text.out and "SUCCEEDED" in text.out

    # Its replica hangs half-way: RUNNING, not updated for an hour.
    set_backfill(suite, started.name, state="RUNNING", age_seconds=3600)
    run = status(suite)
    assert run.code == 1, run
    report = run.json()
    assert [b["name"] for b in report["backfills"]["stuck"]] == [started.name]
    assert "1 stuck backfill(s): listboss-ops backfills resume --stuck" in report["problems"]
    assert [b["name"] for b in backfills(suite, "--state", "stuck")] == [started.name]

    # Still alive (updated a few seconds ago): not resumed without --force.
    set_backfill(suite, started.name, state="RUNNING", age_seconds=5)
    alive = ops("backfills", "resume", started.name, "--suite-file", str(suite.suite_file))
    assert alive.code == 1, alive
    assert "still running" in alive.err and "--force" in alive.err
    assert len(backfills(suite)) == 1

    set_backfill(suite, started.name, state="RUNNING", age_seconds=3600)
    resumed = ops(
        "backfills",
        "resume",
        "--stuck",
        "--json",
        "--suite-file",
        str(suite.suite_file),
        "--segmentation-database",
        suite.database_url("segmentation"),
    )
    assert resumed.code == 0, resumed
    [outcome] = resumed.json_lines()
    assert outcome["name"] == started.name and outcome["resumed"] is True
    new_name = outcome["backfill"]["name"]
    assert new_name.startswith(SEGMENTATION + "/backfills/") and new_name != started.name

    def finished():
        found = {b["name"]: b for b in backfills(suite)}
        return found if found.get(new_name, {}).get("state") == "SUCCEEDED" else None

    found = wait_for(finished, "the resumed backfill finished")
    assert found[new_name]["events_scanned"] == scanned
    # The old row stays RUNNING, but it was requested again: superseded, not stuck.
    assert found[started.name]["superseded_by"] == new_name and found[started.name]["stuck"] is False
    assert status(suite).code == 0


# --- migrations ------------------------------------------------------------------------------------


def test_migrations_status(suite, tmp_path):
    run = ops(
        "migrations",
        "status",
        "--json",
        "--segmentation-database",
        suite.database_url("segmentation"),
        "--contacts-database",
        suite.database_url("contacts"),
    )
    assert run.code == 0, run
    report = run.json()
    assert report["ok"] is True
    assert [(d["service"], d["state"], d["current"], d["pending"]) for d in report["databases"]] == [
        ("segmentation", "at-head", SEGMENTATION_ALEMBIC.head(), []),
        ("contacts", "at-head", CONTACTS_ALEMBIC.head(), []),
    ]
    assert all(d["head"] == d["current"] for d in report["databases"])

    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")  # an SQLite database no service has started on
    behind = ops("migrations", "status", "--json", "--contacts-database", f"sqlite:///{empty}")
    assert behind.code == 1, behind
    [database] = behind.json()["databases"]
    assert database["state"] == "not-migrated" and database["current"] is None
    assert database["pending"][0] == "0001" and database["pending"][-1] == CONTACTS_ALEMBIC.head()

    missing = ops("migrations", "status", "--segmentation-database", f"sqlite:///{tmp_path / 'nope.db'}")
    assert missing.code == 1 and "no SQLite database at" in missing.out
    assert not (tmp_path / "nope.db").exists()  # read, never created


# --- usage -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "--stuck-after", "0"], "minutes must be more than 0"),
        (["backfills", "resume", "producers/demo"], "not a backfill name"),
        (["backfills", "resume"], "give backfill names, or --stuck"),
        (["backfills", "resume", f"{SEGMENTATION}/backfills/x"], "give --token"),
        (["backfills", "list"], "give --segmentation-database"),
        (["migrations", "status"], "give --segmentation-database and/or --contacts-database"),
        (["status", "--suite-file", "/nonexistent/suite.json"], "cannot read the suite file"),
    ],
)
def test_usage_errors_exit_2(args, message):
    run = ops(*args)
    assert run.code == 2, run
    assert message in run.err
