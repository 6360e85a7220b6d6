"""Erasure reaches every store: after DeleteContact no file of the suite, no service log and
no database row holds the person's email, name, phone, document or address.

The real suite runs (nats-server and the three services as processes) on SQLite, and with
segmentation and contacts on PostgreSQL. One person with values found nowhere else arrives
through a webhook and through BatchIngestEvents; a custom segmentation sends their phone,
document and address to contacts, so the changes carry them; a third event is refused by
the contacts database (a trigger on its event id) until it is dead-lettered, so a dead
letter carries the person too. A scan before the erasure must find the values in the
databases (the scan can find them); after DeleteContact it must find none, in every file
under the suite's data directory (JetStream's store with every stream, the SQLite files
with their -wal and -shm), in the services' output, and on PostgreSQL in every row of
every table of both databases, while the suite runs and again once it has stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from listboss.segmentation.v1 import segmentation_service_pb2 as segmentation_pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as segmentation_grpc
from listboss_common import bus
from listboss_testing import POSTGRES_ADMIN_URL, eventually_sync
from listboss_tools.suite import DEMO_PRODUCER, Suite

pytestmark = pytest.mark.e2e

WEBHOOK = Path(__file__).parent / "data" / "hotmart" / "PURCHASE_APPROVED.json"
PRODUCT = "7311"
PRODUCT_NAME = f"producers/{DEMO_PRODUCER}/products/{PRODUCT}"
WAIT = 60.0  # seconds any one step may take

# The person: values that appear nowhere else, so any occurrence is theirs. ASCII, so the
# bytes are the same in protobuf, SQLite, PostgreSQL and JSON log lines.
EMAIL = "Zeldarina.Quixwortova+erasure@example.org"
FIRST_NAME = "Zeldarina"
LAST_NAME = "Quixwortova"
NAME = f"{FIRST_NAME} {LAST_NAME}"
PHONE_AREA, PHONE_NUMBER = "317", "984561237"
DOCUMENT = "73519864202"
STREET = "Rua Xilofagos Erasmianos"
ZIP_CODE = "39517284"


def person_values() -> dict[str, bytes]:
    """Each distinctive value as the bytes a store would hold (the email also as ingest
    stores it, lower-cased)."""
    values = {
        "email": EMAIL,
        "email (lower case)": EMAIL.lower(),
        "name": NAME,
        "first name": FIRST_NAME,
        "last name": LAST_NAME,
        "phone": PHONE_NUMBER,
        "document": DOCUMENT,
        "street": STREET,
        "zip code": ZIP_CODE,
    }
    return {what: value.encode() for what, value in values.items()}


# --- the suite, on SQLite or PostgreSQL, with its output in a file -------------------------------


@dataclass
class Running:
    suite: Suite
    log_path: Path


def _postgres_reachable() -> None:
    admin = sa.create_engine(POSTGRES_ADMIN_URL)
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as error:
        if os.environ.get("LISTBOSS_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL is not reachable ({error.orig}); set LISTBOSS_REQUIRE_POSTGRES=1 to fail instead")
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def running(request, tmp_path: Path) -> Iterator[Running]:
    """The suite on the parameter's database; every child's output goes to ``suite.log``."""
    postgres = request.param == "postgres"
    if postgres:
        _postgres_reachable()
    log_path = tmp_path / "suite.log"
    with log_path.open("w", encoding="utf-8") as log:
        suite = Suite(
            tmp_path / "suite",
            nats_port=0,
            ingest_port=0,
            segmentation_port=0,
            contacts_port=0,
            http_port=0,
            database=POSTGRES_ADMIN_URL if postgres else "sqlite",
            output=log,
            database_suffix=f"erasure_{uuid.uuid4().hex[:12]}",
        )
        try:
            suite.start()
            yield Running(suite, log_path)
        finally:
            suite.stop()
            if postgres:
                admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
                with admin.connect() as connection:
                    for service in ("segmentation", "contacts"):
                        name = sa.make_url(suite.database_url(service)).database
                        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.dispose()


# --- feeding the person in ------------------------------------------------------------------------


def post_webhook(suite: Suite, event_id: str) -> None:
    payload = json.loads(WEBHOOK.read_text())
    payload["id"] = event_id
    payload["data"]["product"]["id"] = int(PRODUCT)
    buyer = payload["data"]["buyer"]
    buyer.update(
        email=EMAIL,
        name=NAME,
        first_name=FIRST_NAME,
        last_name=LAST_NAME,
        checkout_phone_code=PHONE_AREA,
        checkout_phone=PHONE_NUMBER,
        document=DOCUMENT,
    )
    buyer["address"].update(address=STREET, zipcode=ZIP_CODE)
    request = urllib.request.Request(
        suite.webhook_url(DEMO_PRODUCER),
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "X-HOTMART-HOTTOK": suite.demo_hottok},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=15) as response:
            assert response.status == 200
    except urllib.error.HTTPError as error:
        raise AssertionError(f"webhook answered {error.code}: {error.read()!r}") from None


def canonical_event(event_id: str) -> event_pb2.Event:
    event = event_pb2.Event(
        id=event_id,
        producer=DEMO_PRODUCER,
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id=PRODUCT, name="Erasure course"),
        person=event_pb2.Person(
            email=EMAIL,
            name=NAME,
            first_name=FIRST_NAME,
            last_name=LAST_NAME,
            phone=f"{PHONE_AREA} {PHONE_NUMBER}",
            document=DOCUMENT,
            document_type="CPF",
            address=event_pb2.Address(street=STREET, zip_code=ZIP_CODE, city="Belo Horizonte", country_code="BR"),
        ),
        purchase=event_pb2.Purchase(transaction=f"HP{event_id}", status="APPROVED", payment_type="PIX"),
    )
    event.occur_time.GetCurrentTime()
    return event


def metadata(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def activate_a_segmentation_sending_contact_data(suite: Suite) -> None:
    """A custom segmentation of the product's approved purchases that sends the person's
    name, phone, document and address to contacts, so the changes carry them."""
    with grpc.insecure_channel(suite.segmentation_address) as channel:
        stub = segmentation_grpc.SegmentationServiceStub(channel)
        stub.RegisterProduct(
            segmentation_pb.RegisterProductRequest(
                parent=f"producers/{DEMO_PRODUCER}",
                product_id=PRODUCT,
                display_name="Erasure course",
                kind=event_pb2.PRODUCT_KIND_PRODUCT,
            ),
            metadata=metadata(suite.internal_token),
            timeout=15,
        )
        data = segmentation_pb.ContactData
        stub.CreateSegmentation(
            segmentation_pb.CreateSegmentationRequest(
                parent=PRODUCT_NAME,
                segmentation_id="buyers-with-data",
                segmentation=segmentation_pb.Segmentation(
                    display_name="Buyers, with their contact data",
                    provider=segmentation_pb.PROVIDER_SEND,
                    event_type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
                    contact_data=[
                        data.CONTACT_DATA_NAME,
                        data.CONTACT_DATA_FIRST_NAME,
                        data.CONTACT_DATA_LAST_NAME,
                        data.CONTACT_DATA_PHONE,
                        data.CONTACT_DATA_DOCUMENT,
                        data.CONTACT_DATA_ADDRESS,
                    ],
                    action=segmentation_pb.TagAction(add_tags=["buyers-with-data"]),
                ),
            ),
            metadata=metadata(suite.demo_token),
            timeout=15,
        )
        stub.ActivateSegmentation(
            segmentation_pb.ActivateSegmentationRequest(name=f"{PRODUCT_NAME}/segmentations/buyers-with-data"),
            metadata=metadata(suite.demo_token),
            timeout=15,
        )


def refuse_history_of_event(engine: sa.Engine, event_id: str) -> None:
    """A trigger that makes recording one event's history fail, on either database, as an
    error of that change (IntegrityError), so the contacts worker dead-letters it. It names
    the event id, never the person, so it adds nothing the scan looks for."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse_history() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.event_id = '{event_id}' THEN "
                "RAISE EXCEPTION 'history refuses this event' USING ERRCODE = 'check_violation'; END IF; "
                "RETURN NEW; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_history BEFORE INSERT ON history FOR EACH ROW EXECUTE FUNCTION refuse_history()"
            )
        else:
            connection.exec_driver_sql(
                f"CREATE TRIGGER refuse_history BEFORE INSERT ON history WHEN NEW.event_id = '{event_id}' "
                "BEGIN SELECT RAISE(ABORT, 'history refuses this event'); END"
            )


def allow_history(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("DROP TRIGGER refuse_history ON history")
            connection.exec_driver_sql("DROP FUNCTION refuse_history()")
        else:
            connection.exec_driver_sql("DROP TRIGGER refuse_history")


def dead_letters(suite: Suite) -> int:
    async def count() -> int:
        client = await bus.connect(suite.nats_url, name="erasure-test")
        try:
            return (await client.jetstream().stream_info(bus.DEADLETTER.name)).state.messages
        finally:
            await client.close()

    return asyncio.run(count())


def find_contact(stub: contacts_grpc.ContactsServiceStub, token: str) -> contacts_pb.Contact | None:
    reply = stub.ListContacts(
        contacts_pb.ListContactsRequest(parent=f"producers/{DEMO_PRODUCER}", filter=f'email = "{EMAIL.lower()}"'),
        metadata=metadata(token),
        timeout=15,
    )
    return reply.contacts[0] if reply.contacts else None


def recorded_events(stub: contacts_grpc.ContactsServiceStub, token: str) -> set[str]:
    reply = stub.ListEvents(
        contacts_pb.ListEventsRequest(parent=PRODUCT_NAME, page_size=100), metadata=metadata(token), timeout=15
    )
    return {event.name.rsplit("/", 1)[-1] for event in reply.events}


# --- the scans ----------------------------------------------------------------------------------


def scan_files(paths: list[Path]) -> list[str]:
    """``file: value`` for every distinctive value found in the files' bytes."""
    found = []
    for path in paths:
        try:
            content = path.read_bytes()
        except FileNotFoundError:  # removed meanwhile (a -wal checkpointed away)
            continue
        found.extend(f"{path}: {what}" for what, value in person_values().items() if value in content)
    return found


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def scan_postgres(suite: Suite) -> list[str]:
    """``database.table: value`` for every distinctive value in any row of any table of the
    two service databases (each row read whole, as text)."""
    found = []
    for service in ("segmentation", "contacts"):
        engine = sa.create_engine(suite.database_url(service))
        try:
            with engine.connect() as connection:
                tables = connection.exec_driver_sql(
                    "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables"
                    " WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
                ).scalars()
                for table in list(tables):
                    rows = connection.exec_driver_sql(f"SELECT CAST(t AS text) FROM {table} AS t").scalars()
                    text = "\n".join(rows).encode()
                    found.extend(
                        f"{service} database, table {table}: {what}"
                        for what, value in person_values().items()
                        if value in text
                    )
        finally:
            engine.dispose()
    return found


# Every stream's folder must be among the files scanned, or the scan looked in the wrong place.
STREAMS = {bus.EVENTS.name, bus.CHANGES.name, bus.DEADLETTER.name, bus.TAG_CHANGES.name, bus.PERSON_KEYS.name}


def scan_everything(running: Running) -> list[str]:
    suite = running.suite
    files = files_under(suite.data_dir)
    folders = {part for path in files for part in path.parts}
    assert folders >= STREAMS, f"streams missing from {suite.data_dir}: {sorted(STREAMS - folders)}"
    assert running.log_path.stat().st_size > 0, "the services wrote no output to scan"
    found = scan_files([*files, running.log_path])
    if suite.database != "sqlite":
        found += scan_postgres(suite)
    return found


def database_files(suite: Suite) -> list[Path]:
    return [path for path in files_under(suite.data_dir) if ".db" in path.name]


# --- the test ---------------------------------------------------------------------------------


def test_after_delete_contact_no_store_holds_the_person(running: Running):
    suite = running.suite
    activate_a_segmentation_sending_contact_data(suite)
    contacts_engine = sa.create_engine(suite.database_url("contacts"))
    dead_lettered = "erasure-dead-letter-1"
    try:
        refuse_history_of_event(contacts_engine, dead_lettered)
        post_webhook(suite, "erasure-webhook-1")
        with grpc.insecure_channel(suite.ingest_address) as channel:
            reply = ingest_grpc.IngestServiceStub(channel).BatchIngestEvents(
                ingest_pb.BatchIngestEventsRequest(
                    events=[canonical_event("erasure-batch-1"), canonical_event(dead_lettered)]
                ),
                metadata=metadata(suite.demo_token),
                timeout=15,
            )
        assert len(reply.results) == 2
        eventually_sync(
            lambda: dead_letters(suite) >= 1, timeout=WAIT, message="the refused change was not dead-lettered"
        )
    finally:
        allow_history(contacts_engine)
        contacts_engine.dispose()

    with grpc.insecure_channel(suite.contacts_address) as channel:
        stub = contacts_grpc.ContactsServiceStub(channel)
        token = suite.demo_token
        eventually_sync(
            lambda: {"erasure-webhook-1", "erasure-batch-1"} <= recorded_events(stub, token),
            timeout=WAIT,
            message="the person's events never reached the history",
        )

        def with_its_data() -> contacts_pb.Contact | None:
            contact = find_contact(stub, token)
            attributes = dict(contact.attributes) if contact else {}
            if (
                contact
                and any(DOCUMENT in value for value in attributes.values())
                and any(STREET in value for value in attributes.values())
            ):
                return contact
            return None

        contact = eventually_sync(with_its_data, timeout=WAIT, message="the contact never held its data")

        # Control: the scan finds the person where they are stored before the erasure.
        before = scan_files(database_files(suite)) if suite.database == "sqlite" else scan_postgres(suite)
        found_values = {line.rsplit(": ", 1)[1] for line in before}
        assert {"email (lower case)", "name", "phone", "document", "street", "zip code"} <= found_values, before
        # And it reads JetStream's message blocks: the events' product name (not personal) is there.
        event_blocks = [path for path in files_under(suite.data_dir) if bus.EVENTS.name in path.parts]
        assert any(b"Erasure course" in path.read_bytes() for path in event_blocks), event_blocks

        stub.DeleteContact(contacts_pb.DeleteContactRequest(name=contact.name), metadata=metadata(token), timeout=15)
        assert find_contact(stub, token) is None

    # While the suite runs, then at rest once it has stopped (everything flushed and closed).
    running_scan = scan_everything(running)
    codes = suite.stop()
    assert codes == {"ingest": 0, "segmentation": 0, "contacts": 0, "nats": 0}, codes
    at_rest = [line for line in scan_everything(running) if line not in running_scan]
    leftovers = running_scan + [f"{line} (after stopping)" for line in at_rest]
    assert not leftovers, "the erased person's data is still stored:\n" + "\n".join(leftovers)
