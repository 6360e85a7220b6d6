"""``listboss-ops import`` against the real suite (nats-server and the three services as
processes, SQLite), the CLI run as a subprocess: a generated history of 10,000 sales ends in the
tags its newest event per person, product and tag implies, with every event at its original
time; a second run adds nothing; a live refund sent before the import still wins over the
imported approval it is newer than; a CSV of sales; a broken line reported by its number while
the rest goes in; a dry run that sends nothing. The suite runs with a low rate limit, so the
import also shows that RESOURCE_EXHAUSTED answers are waited out and nothing is skipped."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from listboss_common import bus
from listboss_common.processes import free_port
from listboss_ingest.sources import hotmart
from listboss_tools.suite import Suite
from tests.faults.load import expected_tags, micros
from tests.faults.probes import ContactsProbe

pytestmark = pytest.mark.e2e

OPS_SCRIPT = Path(sys.executable).parent / "listboss-ops"
WEBHOOKS = Path(__file__).parent / "data" / "hotmart"
# Low enough that a 10,000-event import is refused again and again and must wait (a second's
# allowance at once, then 1,000 events a second), high enough to stay quick.
RATE = 1_000
BURST = 1_000
BATCH = 500

# What a platform's sales history holds, weighted like a real one: mostly approvals, with
# refunds, cancellations and chargebacks taking some of them back.
HISTORY_EVENTS = {
    "PURCHASE_APPROVED": 40,
    "PURCHASE_COMPLETE": 10,
    "PURCHASE_REFUNDED": 8,
    "PURCHASE_CANCELED": 8,
    "PURCHASE_CHARGEBACK": 4,
    "PURCHASE_BILLET_PRINTED": 12,
    "PURCHASE_EXPIRED": 6,
    "PURCHASE_OUT_OF_SHOPPING_CART": 12,
}
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    suite = Suite(
        tmp_path_factory.mktemp("suite"),
        nats_port=0,
        ingest_port=0,
        segmentation_port=0,
        contacts_port=0,
        http_port=0,
        extra_env={
            "LISTBOSS_RATE_LIMIT_EVENTS_PER_SECOND": str(RATE),
            "LISTBOSS_RATE_LIMIT_BURST": str(BURST),
        },
        output=None,
    )
    suite.start()
    yield suite
    assert suite.stop() == {"ingest": 0, "segmentation": 0, "contacts": 0, "nats": 0}


@pytest.fixture(scope="module")
def probe(suite):
    probe = ContactsProbe(suite.database_url("contacts"))
    yield probe
    probe.close()


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out)


def ops_import(suite: Suite, path: Path, producer: str, *extra: str, timeout: float = 180.0) -> Run:
    command = [str(OPS_SCRIPT)] if OPS_SCRIPT.exists() else [sys.executable, "-m", "listboss_tools.ops"]
    # Nothing from the test's environment decides where the CLI goes: only the arguments.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTBOSS_")}
    done = subprocess.run(
        [*command, "import", str(path), "--producer", producer, "--suite-file", str(suite.suite_file), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def wait_for(condition, what: str, timeout: float = 180.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s")


def occur_times(probe: ContactsProbe, producer: str) -> dict[str, int]:
    """Each history entry's event id and occurrence time (epoch microseconds)."""
    with probe.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT event_id, occur_time FROM history WHERE producer = :p"), {"p": producer}
        )
        return {row[0]: row[1] for row in rows}


def webhook_template(event_name: str) -> dict:
    return json.loads((WEBHOOKS / f"{event_name}.json").read_text())


def sale(template: dict, *, event_id: str, when_ms: int, email: str, product: int, transaction: str) -> dict:
    """A webhook document like ``template`` about another sale."""
    document = copy.deepcopy(template)
    document["id"] = event_id
    document["creation_date"] = when_ms
    data = document["data"]
    data["product"] = {**data.get("product", {}), "id": product, "name": f"Course {product}"}
    data["buyer"] = {**data.get("buyer", {}), "email": email, "name": email.split("@")[0].title()}
    if "purchase" in data:
        data["purchase"].update(transaction=transaction, order_date=when_ms - 60_000, approved_date=when_ms)
    return document


def generate_history(count: int, buyers: int, products: int, end_ms: int, seed: int = 20260101) -> list[dict]:
    """``count`` webhook documents over the year before ``end_ms``: ``buyers`` people, ``products``
    products, the event types of :data:`HISTORY_EVENTS`."""
    rng = random.Random(seed)
    templates = {name: webhook_template(name) for name in HISTORY_EVENTS}
    names, weights = list(HISTORY_EVENTS), list(HISTORY_EVENTS.values())
    history = []
    for number in range(count):
        history.append(
            sale(
                templates[rng.choices(names, weights)[0]],
                event_id=f"past-{number:05d}",
                when_ms=end_ms - rng.randrange(365 * DAY_MS),
                email=f"buyer{rng.randrange(buyers):04d}@example.com",
                product=101 + rng.randrange(products),
                transaction=f"HP{number:08d}",
            )
        )
    return history


def write_jsonl(path: Path, documents: list[dict]) -> Path:
    path.write_text("".join(json.dumps(document) + "\n" for document in documents))
    return path


def canonical(documents: list[dict], producer: str) -> list[event_pb2.Event]:
    """What ingest makes of the documents: its own adapter."""
    return [hotmart.event_from_webhook(document, producer) for document in documents]


def send_live_webhook(suite: Suite, producer: str, document: dict) -> None:
    with grpc.insecure_channel(suite.ingest_address) as channel:
        ingest_grpc.IngestServiceStub(channel).IngestWebhook(
            ingest_pb.IngestWebhookRequest(parent=f"producers/{producer}", payload=json.dumps(document)),
            metadata=(("authorization", f"Bearer {suite.producer_token(producer)}"),),
            timeout=10,
        )


async def events_stored(suite: Suite) -> int:
    nc = await bus.connect(suite.nats_url, name="test-ops-import")
    try:
        return (await nc.jetstream().stream_info(bus.EVENTS.name)).state.messages
    finally:
        await nc.close()


# --------------------------------------------------------------------------------------------------


def test_a_history_of_ten_thousand_sales(suite, probe, tmp_path):
    producer = "pastshop"
    now_ms = int(time.time() * 1000)
    history = generate_history(10_000, buyers=2_000, products=5, end_ms=now_ms - 2 * DAY_MS)
    path = write_jsonl(tmp_path / "sales.jsonl", history)

    # A live refund of one buyer's product, newer than anything in the history, arrives first.
    approved = next(d for d in history if d["event"] == "PURCHASE_APPROVED")
    live = sale(
        webhook_template("PURCHASE_REFUNDED"),
        event_id="live-refund",
        when_ms=now_ms - 60_000,
        email=approved["data"]["buyer"]["email"],
        product=approved["data"]["product"]["id"],
        transaction=approved["data"]["purchase"]["transaction"],
    )
    send_live_webhook(suite, producer, live)
    wait_for(lambda: probe.history_count(producer) == 1, "the live refund applied")

    run = ops_import(suite, path, producer, "--batch-size", str(BATCH), "--json")
    assert run.code == 0, run
    report = run.json()
    assert (report["records"], report["sent"], report["duplicates"], report["refused"]) == (10_000, 10_000, 0, 0)
    assert report["errors"] == [] and report["stopped"] is None
    # 10,000 events at 1,000 a second: the import had to wait, and did.
    assert report["rate_limited_waits"] > 0

    # The same file again, at once: every batch is recognised, nothing is stored twice.
    again = ops_import(suite, path, producer, "--batch-size", str(BATCH), "--json")
    assert again.code == 0, again
    assert (again.json()["sent"], again.json()["duplicates"], again.json()["refused"]) == (0, 10_000, 0)

    wait_for(lambda: probe.history_count(producer) == 10_001, "the history applied")
    events = canonical(history, producer)
    live_event = hotmart.event_from_webhook(live, producer)
    expected = expected_tags([*events, live_event])
    present = probe.present_tags(producer)
    assert present == expected
    assert probe.count_mismatches(producer) == []

    # Every buyer is one contact; every event is in the history once, at its original time.
    buyers = {event.person.email for event in events}
    assert len(buyers) > 1_900
    assert set(probe.contact_emails(producer)) == buyers
    assert max(probe.contact_emails(producer).values()) == 1
    assert occur_times(probe, producer) == {e.id: micros(e.occur_time) for e in [*events, live_event]}

    # The live refund, newer than the imported approval, decided that person's product.
    person, product = live_event.person.email, live_event.product.id
    assert (person, product, "purchase-refunded") in present
    assert (person, product, "purchase-approved") not in present


def test_a_csv_of_sales(suite, probe, tmp_path):
    producer = "csvshop"
    path = tmp_path / "sales.csv"
    # A spreadsheet's export: ';' between cells, decimal commas, columns in another order and
    # with other capitals, a column the import does not know.
    path.write_text(
        "Buyer Email;Buyer Name;Transaction;Status;Product ID;Product Name;Price;Currency;"
        "Order Date;Approved Date;Event Date;Affiliate\n"
        "ana@example.com;Ana;HP001;APPROVED;7;Course;97,00;BRL;2025-03-01T10:00:00Z;2025-03-01T10:02:00Z;;x\n"
        "bia@example.com;Bia;HP002;APPROVED;7;Course;97,00;BRL;2025-03-02T10:00:00Z;2025-03-02T10:02:00Z;;\n"
        "bia@example.com;Bia;HP002;REFUNDED;7;Course;97,00;BRL;2025-03-02T10:00:00Z;2025-03-02T10:02:00Z;"
        "2025-03-09T12:00:00Z;\n"
        "caio@example.com;Caio;HP003;BILLET_PRINTED;8;Other;1.497,50;BRL;1740000000000;;;\n"
    )
    run = ops_import(suite, path, producer)
    assert run.code == 0, run
    assert "4 records, 4 sent, 0 duplicates (already imported), 0 refused" in run.out

    wait_for(lambda: probe.history_count(producer) == 4, "the CSV applied")
    assert probe.present_tags(producer) == {
        ("ana@example.com", "7", "purchase-approved"),
        ("bia@example.com", "7", "purchase-refunded"),
        ("caio@example.com", "8", "billet-printed"),
    }
    seconds = sorted(moment // 1_000_000 for moment in occur_times(probe, producer).values())
    assert seconds == [
        1_740_000_000,  # order_date alone, epoch milliseconds
        1_740_823_320,  # 2025-03-01T10:02:00Z, approved_date
        1_740_909_720,  # 2025-03-02T10:02:00Z
        1_741_521_600,  # 2025-03-09T12:00:00Z, event_date
    ]


def test_a_broken_line_is_reported_and_the_rest_imported(suite, probe, tmp_path):
    producer = "brokenshop"
    history = generate_history(5, buyers=5, products=1, end_ms=int(time.time() * 1000) - DAY_MS, seed=7)
    del history[3]["data"]["buyer"]["email"]
    lines = [json.dumps(document) for document in history]
    lines.insert(1, '{"id": "half", "event": "PURCHASE_APPROVED", ')
    lines.insert(3, "")  # blank lines are skipped, and still counted as lines
    path = tmp_path / "sales.jsonl"
    path.write_text("\n".join(lines) + "\n")

    run = ops_import(suite, path, producer)
    assert run.code == 1, run
    assert "listboss-ops: line 2: payload: malformed JSON" in run.err
    assert "listboss-ops: line 6: person.email: required: no email at data.buyer.email" in run.err
    assert "6 records, 4 sent, 0 duplicates (already imported), 2 refused (payload 1, person.email 1)" in run.out
    wait_for(lambda: probe.history_count(producer) == 4, "the valid lines applied")
    assert set(occur_times(probe, producer)) == {d["id"] for i, d in enumerate(history) if i != 3}


def test_a_dry_run_sends_nothing(suite, probe, tmp_path):
    producer = "dryshop"
    path = write_jsonl(
        tmp_path / "sales.jsonl", generate_history(50, buyers=10, products=2, end_ms=int(time.time() * 1000))
    )
    before = asyncio.run(events_stored(suite))
    run = ops_import(suite, path, producer, "--dry-run")
    assert run.code == 0, run
    assert "dry run of" in run.out and "50 records, 50 valid, 0 refused; nothing sent" in run.out
    assert asyncio.run(events_stored(suite)) == before
    assert probe.history_count(producer) == 0

    headless = tmp_path / "sales.csv"
    headless.write_text("transaction,product_id,status\nHP1,7,APPROVED\n")
    refused = ops_import(suite, headless, producer)
    assert refused.code == 1 and "the CSV header lacks the column(s) buyer_email" in refused.err
    assert asyncio.run(events_stored(suite)) == before

    unknown = tmp_path / "sales.txt"
    unknown.write_text("")
    usage = ops_import(suite, unknown, producer, "--dry-run")
    assert usage.code == 2 and "give --format jsonl|csv" in usage.err


def test_an_unreachable_ingest_is_retried_then_the_import_stops(suite, tmp_path):
    path = write_jsonl(
        tmp_path / "sales.jsonl", generate_history(3, buyers=3, products=1, end_ms=int(time.time() * 1000))
    )
    closed = f"127.0.0.1:{free_port()}"
    run = ops_import(suite, path, "nowhere", "--ingest-address", closed, "--retry-for", "2", "--json")
    assert run.code == 1, run
    report = run.json()
    assert report["sent"] == 0 and report["unavailable_retries"] >= 2
    assert "kept refusing for 2 s (UNAVAILABLE" in report["stopped"]
    assert "run the same command again to continue" in run.err
