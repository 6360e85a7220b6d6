"""Backfill across segmentation and contacts (real JetStream; SQLite and PostgreSQL):
recorded events replayed through one custom segmentation; contacts applies the
backfill's tag operations without a second history entry; a second run changes nothing."""

from __future__ import annotations

import json

import grpc
import pytest
import sqlalchemy as sa

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as pb_grpc
from listboss_common import bus
from listboss_contacts import schema
from listboss_contacts.apply import TagIds, apply_changes
from listboss_segmentation import storage
from listboss_segmentation.backfill import Backfiller
from listboss_segmentation.consumer import EventProcessor, decode_events
from listboss_segmentation.grpc_api import METHOD_SCOPES, SegmentationServicer
from listboss_testing import bearer, binding, eventually

SERVICE = pb.DESCRIPTOR.services_by_name["SegmentationService"]
ALICE = bearer("alice")
PARENT = "producers/alice/products/42"


@pytest.fixture
def engines(migrated_engine, tmp_path):
    segmentation = migrated_engine(storage.migrate_database)
    # Contacts in a database of its own, as in production (schema_migrations is per database).
    contacts = migrated_engine(schema.migrate_database, f"sqlite:///{tmp_path / 'contacts.db'}")
    return segmentation, contacts


def event(event_id, email, payment_type, *, product="42", seconds=1_700_000_000, event_type=None):
    result = event_pb2.Event(
        id=event_id,
        producer="alice",
        type=event_type or event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED,
        product=event_pb2.Product(id=product, name="Course"),
        person=event_pb2.Person(email=email, name=email.split("@")[0].title(), document="123"),
        purchase=event_pb2.Purchase(payment_type=payment_type),
        source=event_pb2.EVENT_SOURCE_GRPC,
    )
    result.occur_time.FromSeconds(seconds)
    return result


class ContactsSide:
    """What the contacts consumer does, driven by hand: applies the changes stream from a position."""

    def __init__(self, js, engine):
        self.js, self.engine, self.position, self.tag_ids = js, engine, 0, TagIds()

    async def catch_up(self):
        info = await self.js.stream_info(bus.CHANGES.name)
        batch = []
        for seq in range(max(self.position + 1, info.state.first_seq), info.state.last_seq + 1):
            message = await self.js.get_msg(bus.CHANGES.name, seq=seq)
            batch.extend(contact_change_pb2.ContactChangeBatch.FromString(message.data).changes)
        self.position = info.state.last_seq
        if batch:
            with self.engine.begin() as connection:
                result = apply_changes(connection, batch, self.tag_ids)
            self.tag_ids.commit(result.tag_ids)
        return batch

    def state(self):
        with self.engine.connect() as connection:
            links = connection.execute(
                sa.text(
                    "SELECT c.email, t.key, ct.present, ct.stamp_event, ct.segmentation FROM contact_tags ct "
                    "JOIN contacts c ON c.id = ct.contact_id JOIN tags t ON t.id = ct.tag_id ORDER BY 1, 2"
                )
            ).all()
            counts = connection.execute(sa.text("SELECT key, contact_count FROM tags ORDER BY key")).all()
            history = connection.execute(
                sa.text("SELECT event_id, added_tags, fired_segmentations FROM history ORDER BY event_id")
            ).all()
            people = connection.execute(
                sa.text("SELECT email, display_name, attributes FROM contacts ORDER BY email")
            ).all()
        return (
            [tuple(r) for r in links],
            [tuple(r) for r in counts],
            [tuple(r) for r in history],
            [tuple(r) for r in people],
        )


async def test_backfill_applies_the_past_once_and_a_second_run_changes_nothing(engines, nats_server, grpc_server):
    segmentation_engine, contacts_engine = engines
    nc = await bus.connect(nats_server.url, name="backfill-test")
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.EVENTS, bus.CHANGES, bus.DEADLETTER])
    servicer = SegmentationServicer(segmentation_engine, backfiller=Backfiller(js, segmentation_engine))
    served = await grpc_server(
        [binding(SERVICE, pb_grpc.add_SegmentationServiceServicer_to_server, servicer, METHOD_SCOPES)]
    )
    stub = pb_grpc.SegmentationServiceStub(served.channel)
    contacts = ContactsSide(js, contacts_engine)
    try:
        # The past: events processed while no custom segmentation existed.
        past = [
            event("e1", "ana@example.com", "BILLET"),
            event("e2", "bia@example.com", "PIX"),
            event("e3", "caio@example.com", "BILLET", product="43"),  # another product
            event("e4", "dora@example.com", "BILLET", event_type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED),
            event("e5", "edu@example.com", "BILLET"),
        ]
        for item in past:
            await js.publish(
                bus.events_subject("alice"),
                event_pb2.EventBatch(events=[item]).SerializeToString(),
                headers={"Nats-Msg-Id": f"alice/{item.id}"},
            )
        processor = EventProcessor(js, segmentation_engine)
        subscription = await js.pull_subscribe("listboss.events.>", durable="segmentation", stream=bus.EVENTS.name)
        await processor.handle(decode_events(await subscription.fetch(5, timeout=5)))
        assert len(await contacts.catch_up()) == 5
        before = contacts.state()
        assert not any(key == "billet-buyers" for _, key, *_ in before[0])

        created = await stub.CreateSegmentation(
            pb.CreateSegmentationRequest(
                parent=PARENT,
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
                    contact_data=[pb.CONTACT_DATA_DOCUMENT],
                    action=pb.TagAction(add_tags=["billet-buyers"]),
                ),
            ),
            metadata=ALICE,
        )

        async def backfill():
            started = await stub.BackfillSegmentation(pb.BackfillSegmentationRequest(name=created.name), metadata=ALICE)
            assert started.name.startswith(created.name + "/backfills/")
            assert started.state == pb.BACKFILL_STATE_RUNNING

            async def finished():
                polled = await stub.GetBackfill(pb.GetBackfillRequest(name=started.name), metadata=ALICE)
                return polled if polled.state != pb.BACKFILL_STATE_RUNNING else None

            return await eventually(finished, timeout=20, message="the backfill never finished")

        first = await backfill()
        assert first.state == pb.BACKFILL_STATE_SUCCEEDED, first.error
        assert (first.events_scanned, first.events_considered, first.events_matched) == (5, 3, 2)
        replayed = await contacts.catch_up()
        assert sorted(c.event.id for c in replayed) == ["e1", "e5"]
        assert all(c.backfill.startswith(created.name + "/backfills/") for c in replayed)
        assert all(list(c.fired_segmentations) == [created.name] for c in replayed)
        after = contacts.state()
        tagged = {(email, key, present) for email, key, present, *_ in after[0] if key == "billet-buyers"}
        assert tagged == {("ana@example.com", "billet-buyers", True), ("edu@example.com", "billet-buyers", True)}
        assert after[2] == before[2]  # no second history entry, nothing rewritten
        assert dict(after[1])["billet-buyers"] == 2
        ana = next(p for p in after[3] if p[0] == "ana@example.com")
        assert json.loads(ana[2]) == {"email": "ana@example.com", "name": "Ana", "document": "123"}

        second = await backfill()
        assert second.state == pb.BACKFILL_STATE_SUCCEEDED and second.name != first.name
        assert second.events_matched == 2
        assert len(await contacts.catch_up()) == 2  # published again, and applied...
        assert contacts.state() == after  # ...changing nothing

        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.GetBackfill(pb.GetBackfillRequest(name=first.name), metadata=bearer("bob"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await served.close()
        await nc.close()
