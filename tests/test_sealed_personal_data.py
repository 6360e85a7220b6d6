"""Persons sealed on the bus, across the services: ingest seals, segmentation and contacts
open, erasure destroys the key. A real nats-server, real SQLite databases, a real gRPC
ContactsService; the three consumers run as their production workers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss.events.v1 import event_pb2
from listboss_common import bus, personal_data
from listboss_common.worker import PullWorker, WorkerSpec
from listboss_contacts import schema
from listboss_contacts.consumer import ChangeApplier
from listboss_contacts.grpc_api import METHOD_SCOPES, ContactsServicer
from listboss_ingest.publisher import EventPublisher
from listboss_segmentation import storage
from listboss_segmentation.consumer import EventProcessor
from listboss_testing import bearer, binding, eventually

EMAIL = "ana.silva@example.com"
# What of the person must never be stored in clear on the bus.
PERSONAL = [EMAIL, "Ana Maria Silva", "+5511987654321", "98765432100", "Rua das Laranjeiras"]
CONTACTS_SERVICE = contacts_pb.DESCRIPTOR.services_by_name["ContactsService"]


def _event(event_id: str, email: str = EMAIL, event_type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED) -> event_pb2.Event:
    event = event_pb2.Event(
        id=event_id,
        producer="alice",
        type=event_type,
        product=event_pb2.Product(id="0042", name="Course"),
        person=event_pb2.Person(
            email=email,
            name="Ana Maria Silva",
            phone="+5511987654321",
            document="98765432100",
            document_type="CPF",
            address=event_pb2.Address(street="Rua das Laranjeiras", city="Recife"),
        ),
        source=event_pb2.EVENT_SOURCE_GRPC,
    )
    event.occur_time.FromSeconds(1_700_000_000 + len(event_id))
    event.receive_time.GetCurrentTime()
    return event


class Pipeline:
    """Segmentation's and contacts' workers, run until every stream is worked through."""

    def __init__(self, js, person_keys, tmp_path: Path):
        self.js = js
        self.segmentation_db = sa.create_engine(f"sqlite:///{tmp_path / 'segmentation.db'}")
        self.contacts_db = sa.create_engine(f"sqlite:///{tmp_path / 'contacts.db'}")
        storage.migrate_database(self.segmentation_db)
        schema.migrate_database(self.contacts_db)
        events = WorkerSpec(stream=bus.EVENTS, durable="segmentation", items=bus.EVENT_ITEMS, item_attempts=1)
        changes = WorkerSpec(stream=bus.CHANGES, durable="contacts", items=bus.CHANGE_ITEMS, item_attempts=1)
        self.consumers = [
            (events, EventProcessor(js, self.segmentation_db, person_keys=person_keys).handle),
            (changes, ChangeApplier(self.contacts_db, person_keys=person_keys).handle),
        ]

    async def settle(self) -> None:
        """Runs both workers (as a service does: subscribe, then run) until the streams are worked through."""
        workers = [PullWorker(self.js, spec, handler) for spec, handler in self.consumers]
        for worker in workers:
            await worker.subscribe()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
        try:

            async def worked_through() -> bool:
                for stream, durable in ((bus.EVENTS, "segmentation"), (bus.CHANGES, "contacts")):
                    stream_info = await self.js.stream_info(stream.name)
                    info = await self.js.consumer_info(stream.name, durable)
                    if (
                        info.num_pending
                        or info.num_ack_pending
                        or info.ack_floor.stream_seq < stream_info.state.last_seq
                    ):
                        return False
                return True

            await eventually(worked_through)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)

    def contacts(self) -> list:
        with self.contacts_db.connect() as connection:
            return list(connection.execute(sa.select(schema.contacts)).mappings())

    def history(self) -> list:
        with self.contacts_db.connect() as connection:
            rows = connection.execute(sa.select(schema.history).order_by(schema.history.c.event_id)).mappings()
            return list(rows)

    def dispose(self) -> None:
        self.segmentation_db.dispose()
        self.contacts_db.dispose()


@pytest.fixture
async def pipeline(js, person_keys, tmp_path):
    made = Pipeline(js, person_keys, tmp_path)
    yield made
    made.dispose()


async def raw_messages(js, stream: bus.StreamSpec) -> list[tuple[bytes, bytes]]:
    """Every message of ``stream`` as stored: (its headers, as text, and its payload)."""
    info = await js.stream_info(stream.name)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        message = await js.get_msg(stream.name, seq=seq)
        found.append((repr(message.headers).encode(), message.data or b""))
    return found


def assert_nothing_personal(stored: bytes, where: str) -> None:
    for value in PERSONAL:
        assert value.encode() not in stored, (where, value)


def stored_files(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in folder.rglob("*") if path.is_file())


async def test_persons_travel_sealed_and_contacts_capture_them(js, person_keys, pipeline, nats_server):
    publisher = EventPublisher(js, person_keys=person_keys)
    webhook = _event("w-1")
    await publisher.publish_one(webhook)
    assert webhook.person.email == EMAIL  # the caller's event keeps its person (IngestWebhook answers with it)
    await publisher.publish_many("batch-1", [_event("g-1"), _event("g-2", email="bea@example.com")])

    await pipeline.settle()

    for stream in (bus.EVENTS, bus.CHANGES):
        messages = await raw_messages(js, stream)
        assert messages, stream.name
        for headers, data in messages:
            assert_nothing_personal(headers + data, stream.name)
    assert_nothing_personal(stored_files(Path(nats_server.store_dir)), "the nats-server's files")
    changes = [c for _, data in await raw_messages(js, bus.CHANGES) for c in bus.CHANGE_ITEMS.decode(data)]
    assert changes and all(c.HasField("sealed_contact_data") and not c.contact_data for c in changes)
    assert all(c.event.HasField("sealed_person") and not c.event.HasField("person") for c in changes)

    captured = {row["email"]: row for row in pipeline.contacts()}
    assert set(captured) == {EMAIL, "bea@example.com"}
    assert captured[EMAIL]["display_name"] == "Ana Maria Silva"
    assert [row["event_id"] for row in pipeline.history()] == ["g-1", "g-2", "w-1"]


async def test_an_event_in_flight_for_an_erased_person_is_applied_without_capture(js, person_keys, pipeline):
    publisher = EventPublisher(js, person_keys=person_keys)
    await publisher.publish_one(_event("e-1"))
    # The person is erased while the event waits on the bus.
    await person_keys.destroy("alice", EMAIL)

    await pipeline.settle()

    assert pipeline.contacts() == []
    (entry,) = pipeline.history()
    assert (entry["event_id"], entry["contact_id"], entry["email"]) == ("e-1", None, "")
    assert (await js.stream_info(bus.DEADLETTER.name)).state.messages == 0

    # A new event for the same email gets a new key and captures a new contact.
    await publisher.publish_one(_event("e-2"))
    await pipeline.settle()
    assert [row["email"] for row in pipeline.contacts()] == [EMAIL]


async def test_clear_events_are_read_as_they_are(js, person_keys, pipeline):
    await EventPublisher(js).publish_one(_event("clear-1"))  # no sealing: as published before sealing existed
    await pipeline.settle()
    assert [row["email"] for row in pipeline.contacts()] == [EMAIL]


async def test_a_sealed_person_that_does_not_authenticate_is_dead_lettered_still_sealed(js, person_keys, pipeline):
    event = _event("t-1")
    (key,) = (await person_keys.for_people([("alice", EMAIL)])).values()
    personal_data.seal_person(event, key)
    damaged = bytearray(event.sealed_person.ciphertext)
    damaged[0] ^= 0xFF
    event.sealed_person.ciphertext = bytes(damaged)
    await js.publish(bus.events_subject("alice"), bus.EVENT_ITEMS.encode([event]))
    await EventPublisher(js, person_keys=person_keys).publish_one(_event("t-2"))

    await pipeline.settle()

    ((headers, letter),) = await raw_messages(js, bus.DEADLETTER)
    assert b"t-1" in headers
    (kept,) = bus.EVENT_ITEMS.decode(letter)
    assert kept.HasField("sealed_person") and not kept.HasField("person")
    assert_nothing_personal(headers + letter, "the dead letter")
    assert [row["event_id"] for row in pipeline.history()] == ["t-2"]


@pytest.fixture
async def contacts_api(pipeline, js, person_keys, grpc_server):
    servicer = ContactsServicer(pipeline.contacts_db, js, person_keys=person_keys)
    served = await grpc_server(
        [binding(CONTACTS_SERVICE, contacts_grpc.add_ContactsServiceServicer_to_server, servicer, METHOD_SCOPES)]
    )
    return contacts_grpc.ContactsServiceStub(served.channel)


async def test_delete_contact_destroys_the_persons_key_first(js, nc, person_keys, pipeline, contacts_api, nats_server):
    await EventPublisher(js, person_keys=person_keys).publish_one(_event("d-1"))
    await pipeline.settle()
    (contact,) = pipeline.contacts()
    name = f"producers/alice/contacts/{contact['id']}"
    key_id = person_keys.keyring.key_id("alice", EMAIL)
    subject = personal_data.key_subject("alice", key_id)

    # NATS away: UNAVAILABLE, and the database is untouched.
    nats_server.stop()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await contacts_api.DeleteContact(contacts_pb.DeleteContactRequest(name=name), metadata=bearer("alice"))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(pipeline.contacts()) == 1

    # Back: the same call completes the erasure.
    nats_server.start()

    async def connected() -> bool:
        return nc.is_connected

    await eventually(connected)
    await contacts_api.DeleteContact(contacts_pb.DeleteContactRequest(name=name), metadata=bearer("alice"))
    assert pipeline.contacts() == []
    with pytest.raises(Exception):  # noqa: B017 - nats-py's NotFoundError: the key is gone
        await js.get_last_msg(bus.PERSON_KEYS.name, subject, direct=True)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await contacts_api.DeleteContact(contacts_pb.DeleteContactRequest(name=name), metadata=bearer("alice"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    # Every sealed copy of the person on the bus now reads as erased.
    stored = [event for _, data in await raw_messages(js, bus.EVENTS) for event in bus.EVENT_ITEMS.decode(data)]
    assert await personal_data.open_events(person_keys, stored) == [personal_data.ERASED]
