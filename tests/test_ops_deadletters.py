"""``listboss-ops deadletters``: list, show, replay and purge against a real nats-server,
running the CLI as a subprocess; and the round trip an operator makes: a change is
dead-lettered for a real cause (a trigger in the contacts database refusing one email),
the cause is removed, ``replay --all`` sends it again, and it is applied exactly once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_common.db import is_postgres
from listboss_tools import deadletters

OPS_SCRIPT = Path(sys.executable).parent / "listboss-ops"
DEADLETTER_SUBJECT = "listboss.deadletter.{stream}.{consumer}"


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


async def ops(url: str, *args: str, timeout: float = 60.0) -> Run:
    """Runs ``listboss-ops --nats-url URL ARGS...`` as a subprocess (without blocking the loop)."""
    command = [str(OPS_SCRIPT)] if OPS_SCRIPT.exists() else [sys.executable, "-m", "listboss_tools.ops"]
    process = await asyncio.create_subprocess_exec(
        *command, "--nats-url", url, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return Run(process.returncode, out.decode(), err.decode())


def make_event(event_id: str, producer: str, email: str, product: str = "42") -> event_pb2.Event:
    event = event_pb2.Event(
        id=event_id,
        producer=producer,
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id=product, name="Course"),
        person=event_pb2.Person(email=email, name=email.split("@")[0].title()),
    )
    event.occur_time.FromDatetime(dt.datetime.now(dt.UTC).replace(microsecond=0))
    return event


def headers_for(
    stream: str,
    consumer: str,
    subject: str,
    producer: str,
    event_ids: list[str],
    error: str = "IntegrityError('refused')",
) -> dict[str, str]:
    """The headers the bus worker writes (libs/listboss_common/worker.py)."""
    return {
        "Listboss-Original-Subject": subject,
        "Listboss-Stream": stream,
        "Listboss-Consumer": consumer,
        "Listboss-Stream-Sequence": "17",
        "Listboss-Deliveries": "3",
        "Listboss-Error": error,
        "Listboss-Producer": producer,
        "Listboss-Event-Ids": ",".join(event_ids),
        "Listboss-Dead-Letter-Time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }


async def dead_letter_change(js, event: event_pb2.Event) -> int:
    """A dead-lettered contact change (one-item ContactChangeBatch); returns its sequence."""
    body = contact_change_pb2.ContactChangeBatch(changes=[contact_change_pb2.ContactChange(event=event)])
    ack = await js.publish(
        DEADLETTER_SUBJECT.format(stream=bus.CHANGES.name, consumer="contacts"),
        body.SerializeToString(),
        headers=headers_for(
            bus.CHANGES.name, "contacts", bus.changes_subject(event.producer), event.producer, [event.id]
        ),
    )
    return ack.seq


async def dead_letter_event(js, event: event_pb2.Event, **header_overrides: str) -> int:
    """A dead-lettered event (one-item EventBatch); returns its sequence."""
    headers = headers_for(
        bus.EVENTS.name, "segmentation", bus.events_subject(event.producer), event.producer, [event.id]
    )
    headers.update(header_overrides)
    ack = await js.publish(
        DEADLETTER_SUBJECT.format(stream=bus.EVENTS.name, consumer="segmentation"),
        event_pb2.EventBatch(events=[event]).SerializeToString(),
        headers=headers,
    )
    return ack.seq


async def stored_sequences(js, stream: str = deadletters.STREAM) -> list[int]:
    info = await js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            await js.get_msg(stream, seq)
        except Exception:  # deleted
            continue
        found.append(seq)
    return found


# --- an empty or missing stream, usage errors, no NATS -------------------------------------------


async def test_a_missing_dead_letter_stream_is_an_empty_one(nats_server):
    # No ListBoss stream exists on this server yet.
    listed = await ops(nats_server.url, "deadletters", "list")
    assert (listed.code, listed.out) == (0, "")
    assert "no dead letters" in listed.err
    assert (await ops(nats_server.url, "deadletters", "list", "--json")).out == ""
    for action in ("replay", "purge"):
        run = await ops(nats_server.url, "deadletters", action, "--all")
        assert run.code == 0, run
        assert f"no dead letters to {action}" in run.err
    missing = await ops(nats_server.url, "deadletters", "show", "1")
    assert missing.code == 1
    assert "no dead letter 1 in LISTBOSS_DEADLETTER" in missing.err


async def test_an_empty_stream(nats_server, js):
    listed = await ops(nats_server.url, "deadletters", "list", "--producer", "alice")
    assert (listed.code, listed.out) == (0, "")
    assert "no dead letters (for producer alice)" in listed.err
    replayed = await ops(nats_server.url, "deadletters", "replay", "--all")
    assert replayed.code == 0 and "no dead letters to replay" in replayed.err
    gone = await ops(nats_server.url, "deadletters", "replay", "3")
    assert gone.code == 1 and "dead letter 3: not found" in gone.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deadletters", "replay"], "give the sequences of the dead letters, or --all"),
        (["deadletters", "purge"], "give the sequences of the dead letters, or --all"),
        (["deadletters", "purge", "3", "--all"], "give sequences or --all, not both"),
        (["deadletters", "replay", "3", "--producer", "alice"], "--producer and --stream narrow --all"),
        (["deadletters", "show"], "the following arguments are required: SEQ"),
        (["deadletters", "show", "0"], "sequence numbers start at 1"),
        (["deadletters", "purge", "x"], "not a sequence number: 'x'"),
        (["deadletters", "explode"], "invalid choice: 'explode'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
async def test_usage_errors_exit_2_before_connecting(args, message):
    run = await ops("nats://127.0.0.1:1", *args)  # nothing listens there: no connection is tried
    assert run.code == 2, run
    assert message in run.err
    assert "usage: listboss-ops" in run.err


async def test_no_nats_is_a_clear_error():
    run = await ops("nats://127.0.0.1:1", "deadletters", "list")
    assert run.code == 1
    assert "cannot connect to NATS at nats://127.0.0.1:1" in run.err
    assert "--nats-url" in run.err


# --- list, show ------------------------------------------------------------------------------------


async def test_list_and_show(nats_server, js):
    bob = make_event("evt-bob", "alice", "bob@example.com")
    carol = make_event("evt-carol", "carol", "carol@example.com")
    first = await dead_letter_change(js, bob)
    second = await dead_letter_event(js, carol, **{"Listboss-Error": "ValueError('" + "x" * 900 + "')"})
    # Written before the headers named the producer and the events (the whole packed
    # message, a few headers): the producer and the ids come from the body.
    many = [make_event(f"evt-old-{i}", "dave", f"p{i}@example.com") for i in range(5)]
    old = (
        await js.publish(
            DEADLETTER_SUBJECT.format(stream=bus.EVENTS.name, consumer="segmentation"),
            event_pb2.EventBatch(events=many).SerializeToString(),
            headers={
                "Listboss-Original-Subject": "listboss.events.dave",
                "Listboss-Stream-Sequence": "3",
                "Listboss-Deliveries": "8",
                "Listboss-Error": "RuntimeError('boom')",
            },
        )
    ).seq
    # A message that never decoded: its original bytes.
    garbage = (
        await js.publish(
            DEADLETTER_SUBJECT.format(stream=bus.CHANGES.name, consumer="contacts"),
            b"\xff\xff not protobuf",
            headers={
                "Listboss-Original-Subject": "listboss.changes.erin",
                "Listboss-Producer": "erin",
                "Listboss-Event-Ids": "",
                "Listboss-Error": "PoisonMessage('not a ContactChangeBatch')",
            },
        )
    ).seq

    listed = await ops(nats_server.url, "deadletters", "list")
    assert listed.code == 0, listed
    header, *rows = listed.lines
    assert header.split() == ["SEQ", "AGE", "ORIGINAL", "SUBJECT", "PRODUCER", "EVENT", "IDS", "ERROR"]
    assert [int(row.split()[0]) for row in rows] == [first, second, old, garbage]
    assert rows[0].split()[2:6] == ["listboss.changes.alice", "alice", "evt-bob", "IntegrityError('refused')"]
    assert rows[0].split()[1].endswith("s")  # an age in seconds
    assert "listboss.events.carol" in rows[1] and "ValueError('xxx" in rows[1]
    assert rows[1].endswith("\u2026") and len(rows[1]) < 250  # a long error is shortened
    assert "dave" in rows[2] and "evt-old-0,evt-old-1 +3 more" in rows[2]
    assert "erin" in rows[3] and "PoisonMessage" in rows[3]

    as_json = [json.loads(line) for line in (await ops(nats_server.url, "deadletters", "list", "--json")).lines]
    assert [item["seq"] for item in as_json] == [first, second, old, garbage]
    assert as_json[0] | {"age_seconds": None, "dead_letter_time": None} == {
        "seq": first,
        "subject": "listboss.deadletter.LISTBOSS_CHANGES.contacts",
        "dead_letter_time": None,
        "age_seconds": None,
        "original_subject": "listboss.changes.alice",
        "stream": "LISTBOSS_CHANGES",
        "consumer": "contacts",
        "stream_sequence": 17,
        "deliveries": 3,
        "producer": "alice",
        "event_ids": ["evt-bob"],
        "error": "IntegrityError('refused')",
        "replayed_from": None,
        "size": len(
            contact_change_pb2.ContactChangeBatch(
                changes=[contact_change_pb2.ContactChange(event=bob)]
            ).SerializeToString()
        ),
    }
    assert 0 <= as_json[0]["age_seconds"] < 60 and as_json[0]["dead_letter_time"].endswith("Z")
    assert len(as_json[1]["error"]) == len("ValueError('')") + 900  # JSON keeps the whole error
    assert as_json[2]["producer"] == "dave" and as_json[2]["event_ids"] == [e.id for e in many]
    assert as_json[2]["stream"] == "LISTBOSS_EVENTS" and as_json[2]["consumer"] == "segmentation"
    assert as_json[3]["event_ids"] == []

    by_producer = await ops(nats_server.url, "deadletters", "list", "--json", "--producer", "dave")
    assert [json.loads(line)["seq"] for line in by_producer.lines] == [old]
    by_stream = await ops(nats_server.url, "deadletters", "list", "--json", "--stream", "changes")
    assert [json.loads(line)["seq"] for line in by_stream.lines] == [first, garbage]
    both = await ops(nats_server.url, "deadletters", "list", "--producer", "dave", "--stream", "LISTBOSS_CHANGES")
    assert both.out == "" and "no dead letters (for producer dave, stream LISTBOSS_CHANGES)" in both.err

    shown = await ops(nats_server.url, "deadletters", "show", str(first))
    assert shown.code == 0, shown
    assert f"dead letter {first} on listboss.deadletter.LISTBOSS_CHANGES.contacts" in shown.out
    for line in (
        "Listboss-Original-Subject: listboss.changes.alice",
        "Listboss-Event-Ids: evt-bob",
        "Listboss-Error: IntegrityError('refused')",
        "body: ContactChangeBatch",
    ):
        assert line in shown.out
    body = json.loads(shown.out[shown.out.index("\n{") :])
    assert body["changes"][0]["event"]["person"]["email"] == "bob@example.com"

    shown_json = json.loads((await ops(nats_server.url, "deadletters", "show", str(old), "--json")).out)
    assert shown_json["body_type"] == "EventBatch"
    assert [e["id"] for e in shown_json["body"]["events"]] == [e.id for e in many]
    assert shown_json["headers"]["Listboss-Deliveries"] == "8"

    undecodable = await ops(nats_server.url, "deadletters", "show", str(garbage))
    assert undecodable.code == 0
    assert "do not decode (not a ContactChangeBatch" in undecodable.out and "not protobuf" in undecodable.out
    assert (
        json.loads((await ops(nats_server.url, "deadletters", "show", str(garbage), "--json")).out)["body_hex"]
        == b"\xff\xff not protobuf".hex()
    )


# --- purge, replay ---------------------------------------------------------------------------------


async def test_purge(nats_server, js):
    seqs = [
        await dead_letter_change(js, make_event(f"evt-{i}", "alice" if i < 3 else "bob", f"p{i}@example.com"))
        for i in range(5)
    ]
    purged = await ops(nats_server.url, "deadletters", "purge", str(seqs[0]), str(seqs[1]))
    assert purged.code == 0, purged
    assert purged.lines == [f"purged {seqs[0]}", f"purged {seqs[1]}", "2 purged, 0 failed"]
    assert await stored_sequences(js) == seqs[2:]

    again = await ops(nats_server.url, "deadletters", "purge", str(seqs[0]), str(seqs[2]))
    assert again.code == 1
    assert f"dead letter {seqs[0]}: not found" in again.err
    assert await stored_sequences(js) == seqs[3:]  # the one that existed went; the missing one is reported

    only_bob = await ops(nats_server.url, "deadletters", "purge", "--all", "--producer", "bob")
    assert only_bob.code == 0 and only_bob.lines[-1] == "2 purged, 0 failed"
    assert await stored_sequences(js) == []
    assert (await js.stream_info(bus.CHANGES.name)).state.messages == 0  # purging publishes nothing


async def test_replay(nats_server, js):
    bob = make_event("evt-bob", "alice", "bob@example.com")
    carol = make_event("evt-carol", "carol", "carol@example.com")
    change_seq = await dead_letter_change(js, bob)
    event_seq = await dead_letter_event(js, carol)
    garbage = (
        await js.publish(
            DEADLETTER_SUBJECT.format(stream=bus.EVENTS.name, consumer="segmentation"),
            b"\xff\xff",
            headers={"Listboss-Original-Subject": "listboss.events.erin", "Listboss-Error": "PoisonMessage('x')"},
        )
    ).seq

    replayed = await ops(nats_server.url, "deadletters", "replay", str(change_seq))
    assert replayed.code == 0, replayed
    assert replayed.lines[0].startswith(
        f"replayed {change_seq} -> listboss.changes.alice (LISTBOSS_CHANGES sequence 1)"
    )
    stored = await js.get_msg(bus.CHANGES.name, 1)
    assert stored.subject == "listboss.changes.alice"
    assert stored.headers["Nats-Msg-Id"] == f"deadletter-replay/{change_seq}"
    assert stored.headers["Listboss-Replayed-From"] == str(change_seq)
    assert contact_change_pb2.ContactChangeBatch.FromString(stored.data).changes[0].event == bob
    assert await stored_sequences(js) == [event_seq, garbage]

    # A body that does not decode would be dead-lettered again: it stays, and says why.
    refused = await ops(nats_server.url, "deadletters", "replay", "--all")
    assert refused.code == 1
    assert f"dead letter {garbage} not replayed: its body does not decode" in refused.err
    assert "purge it" in refused.err
    assert refused.lines[-1] == "1 replayed, 1 failed"
    assert await stored_sequences(js) == [garbage]
    assert event_pb2.EventBatch.FromString((await js.get_msg(bus.EVENTS.name, 1)).data).events[0] == carol


async def test_a_second_replay_inside_the_duplicate_window_is_stored_once(nats_server, js):
    seq = await dead_letter_change(js, make_event("evt-bob", "alice", "bob@example.com"))
    letter = await deadletters.get(js, seq)
    # A first replay published, then died before deleting the dead letter.
    await js.publish(letter.original_subject, letter.data, headers={"Nats-Msg-Id": deadletters.replay_message_id(seq)})
    replayed = await ops(nats_server.url, "deadletters", "replay", str(seq))
    assert replayed.code == 0, replayed
    assert "already held it from an earlier replay: stored once" in replayed.out
    assert (await js.stream_info(bus.CHANGES.name)).state.messages == 1
    assert await stored_sequences(js) == []


async def test_replay_all_of_one_producer(nats_server, js):
    alice = [await dead_letter_change(js, make_event(f"evt-a{i}", "alice", f"a{i}@example.com")) for i in range(3)]
    bob = await dead_letter_event(js, make_event("evt-b", "bob", "b@example.com"))
    run = await ops(nats_server.url, "deadletters", "replay", "--all", "--producer", "alice")
    assert run.code == 0, run
    assert [line.split()[1] for line in run.lines[:-1]] == [str(seq) for seq in alice]
    assert run.lines[-1] == "3 replayed, 0 failed"
    assert await stored_sequences(js) == [bob]
    assert (await js.stream_info(bus.CHANGES.name)).state.messages == 3
    assert (await js.stream_info(bus.EVENTS.name)).state.messages == 0


# --- the round trip: dead-lettered for a real cause, cause removed, replayed, applied once ---------


REFUSED = "bob@example.com"


def refuse_history_of(engine: sa.Engine, email: str) -> None:
    """A trigger that makes recording ``email``'s history fail: an error of that one change
    (IntegrityError on both stores), not an outage.

    On PostgreSQL the trigger raises a check violation (SQLSTATE 23514). A bare RAISE
    EXCEPTION is SQLSTATE P0001, which psycopg 3 maps to ProgrammingError: the class
    listboss_common.faults counts as a passing failure (SQL not matching the schema), so
    the worker would wait it out instead of dead-lettering the change."""
    with engine.begin() as connection:
        if is_postgres(connection):
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse_history() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.email = '{email}' THEN "
                f"RAISE EXCEPTION 'history refuses {email}' USING ERRCODE = 'check_violation'; END IF; "
                "RETURN NEW; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_history BEFORE INSERT ON history FOR EACH ROW EXECUTE FUNCTION refuse_history()"
            )
        else:
            connection.exec_driver_sql(
                f"CREATE TRIGGER refuse_history BEFORE INSERT ON history WHEN NEW.email = '{email}' "
                f"BEGIN SELECT RAISE(ABORT, 'history refuses {email}'); END"
            )


def allow_history(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER refuse_history" + (" ON history" if is_postgres(connection) else ""))
        if is_postgres(connection):
            connection.exec_driver_sql("DROP FUNCTION refuse_history()")


def history_of(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.exec_driver_sql("SELECT event_id, email FROM history ORDER BY event_id, id").all()
        ]


def tags_of(engine: sa.Engine, email: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT t.key FROM contact_tags ct JOIN contacts c ON c.id = ct.contact_id JOIN tags t ON t.id = ct.tag_id"
                    " WHERE c.email = :email AND ct.present ORDER BY t.key"
                ),
                {"email": email},
            ).scalars()
        )


async def until(condition, what: str, attempts: int = 300, interval: float = 0.1):
    """Polls ``condition`` (sync or async) until it is truthy: at most ``attempts`` times."""
    started = time.monotonic()
    for _ in range(attempts):
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"{what}: not within {attempts} polls ({time.monotonic() - started:.1f} s)")


async def settled(js, durable: str, stream: str) -> bool:
    info = await js.consumer_info(stream, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_dead_letter_is_replayed_once_its_cause_is_removed(migrated_engine, nats_server, js, tmp_path):
    from listboss_common.worker import PullWorker, WorkerSpec
    from listboss_contacts import schema
    from listboss_contacts.consumer import ChangeApplier
    from listboss_ingest.publisher import EventPublisher
    from listboss_segmentation import storage
    from listboss_segmentation.consumer import EventProcessor

    contacts_engine = migrated_engine(schema.migrate_database)  # SQLite or PostgreSQL
    segmentation_engine = migrated_engine(storage.migrate_database, f"sqlite:///{tmp_path / 'segmentation.db'}")
    refuse_history_of(contacts_engine, REFUSED)

    workers = [
        PullWorker(
            js,
            WorkerSpec(stream=bus.EVENTS, durable="segmentation", items=bus.EVENT_ITEMS),
            EventProcessor(js, segmentation_engine).handle,
        ),
        PullWorker(
            js,
            WorkerSpec(stream=bus.CHANGES, durable="contacts", items=bus.CHANGE_ITEMS),
            ChangeApplier(contacts_engine).handle,
        ),
    ]
    stop = asyncio.Event()
    for worker in workers:
        await worker.subscribe()
    tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
    try:
        events = [make_event(f"evt-{name}", "acme", f"{name}@example.com") for name in ("alice", "bob", "carol")]
        # Ingest's publisher: the three events travel packed in one message; contacts gets their
        # changes packed by partition of their person.
        await EventPublisher(js).publish_many("request-1", events)

        # Bob's change fails on its own; alice's and carol's are applied.
        await until(lambda: stored_sequences(js), "the dead letter")
        await until(lambda: settled(js, "contacts", bus.CHANGES.name), "contacts worked through its backlog")
        assert history_of(contacts_engine) == [("evt-alice", "alice@example.com"), ("evt-carol", "carol@example.com")]
        [seq] = await stored_sequences(js)
        listed = await ops(nats_server.url, "deadletters", "list", "--json")
        [letter] = [json.loads(line) for line in listed.lines]
        assert letter["seq"] == seq
        bob = next(event for event in events if event.id == "evt-bob")
        assert letter["original_subject"] == bus.changes_subject(
            "acme", bus.event_partition(bob, bus.contacts_partitions())
        )
        assert (letter["stream"], letter["consumer"], letter["producer"]) == ("LISTBOSS_CHANGES", "contacts", "acme")
        assert letter["event_ids"] == ["evt-bob"]  # that change alone, not the whole packed message
        assert "history refuses bob@example.com" in letter["error"]
        body = contact_change_pb2.ContactChangeBatch.FromString((await js.get_msg(deadletters.STREAM, seq)).data)
        assert [change.event.id for change in body.changes] == ["evt-bob"]

        allow_history(contacts_engine)  # the cause is removed
        replayed = await ops(nats_server.url, "deadletters", "replay", "--all")
        assert replayed.code == 0, replayed
        assert replayed.lines[-1] == "1 replayed, 0 failed"

        await until(lambda: ("evt-bob", REFUSED) in history_of(contacts_engine), "bob's change applied")
        await until(lambda: settled(js, "contacts", bus.CHANGES.name), "contacts settled after the replay")
        assert await stored_sequences(js) == []

        # The same body once more (a replay after the duplicate window): contacts skips it.
        await js.publish(bus.changes_subject("acme"), body.SerializeToString(), headers={"Nats-Msg-Id": "again"})
        await until(lambda: settled(js, "contacts", bus.CHANGES.name), "contacts settled after the repeat")
        assert history_of(contacts_engine) == [
            ("evt-alice", "alice@example.com"),
            ("evt-bob", REFUSED),
            ("evt-carol", "carol@example.com"),
        ]
        assert tags_of(contacts_engine, REFUSED) == ["purchase-approved"]
        assert await stored_sequences(js) == []
    finally:
        stop.set()
        await asyncio.wait(tasks, timeout=15)
        contacts_engine.dispose()
        segmentation_engine.dispose()
