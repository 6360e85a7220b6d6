"""What an erasure leaves in the storage itself, beyond its rows: on SQLite the deleted
content is overwritten (secure_delete) and the write-ahead log is checkpointed and
truncated after the erasure, so neither the database file nor its -wal holds the person;
the contact's tag changes still in the outbox go with it (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_common.db import create_engine
from listboss_contacts import handlers, schema
from listboss_contacts.apply import TagIds, apply_changes
from listboss_contacts.unit_of_work import UnitOfWork

EMAIL = "yolanda.brixtonova@example.net"
NAME = "Yolanda Brixtonova"
PHONE = "5531977553311"


def change(event_id: str, email: str, name: str, phone: str, seconds: int) -> contact_change_pb2.ContactChange:
    event = event_pb2.Event(
        id=event_id,
        producer="alice",
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id="42", name="Course"),
        person=event_pb2.Person(email=email, name=name, phone=phone),
    )
    event.occur_time.FromSeconds(seconds)
    result = contact_change_pb2.ContactChange(event=event, fired_segmentations=["seg"])
    result.tag_operations.add(
        action=contact_change_pb2.TagOperation.ACTION_ADD,
        tag_key="buyer",
        tag_display_name="buyer",
        automatic=True,
        segmentation="seg",
    )
    return result


def apply(engine: sa.Engine, changes: list) -> None:
    tag_ids = TagIds()
    with engine.begin() as connection:
        result = apply_changes(connection, changes, tag_ids)
    tag_ids.commit(result.tag_ids)


def contact_id_of(engine: sa.Engine, email: str) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(schema.contacts.c.id).where(schema.contacts.c.email == email)).scalar_one()


def outbox_contacts(engine: sa.Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(schema.tag_change_outbox.c.contact_id)).scalars())


def stored_bytes(database: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in database.parent.glob(database.name + "*")}


def test_an_erased_person_is_in_no_sqlite_file(tmp_path: Path):
    database = tmp_path / "contacts.db"
    engine = create_engine(f"sqlite:///{database}")
    try:
        schema.migrate_database(engine)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
        apply(engine, [change("e1", EMAIL, NAME, PHONE, 100), change("e2", "bob@example.com", "Bob", "", 100)])
        apply(engine, [change("e3", EMAIL, NAME, PHONE, 200)])
        ana = contact_id_of(engine, EMAIL)
        # Control: before the erasure the files do hold the person.
        assert any(EMAIL.encode() in content for content in stored_bytes(database).values())

        assert handlers.delete_contact(UnitOfWork(engine), "alice", ana) is True

        for name, content in stored_bytes(database).items():
            for value in (EMAIL, NAME, PHONE):
                assert value.encode() not in content, f"{value} is still in {name}"
        assert ana not in outbox_contacts(engine)
        assert outbox_contacts(engine), "the other contact's tag changes stay in the outbox"
    finally:
        engine.dispose()


def test_erasure_deletes_the_contacts_pending_tag_changes(migrated_engine):
    engine = migrated_engine(schema.migrate_database)  # SQLite or PostgreSQL
    apply(engine, [change("e1", EMAIL, NAME, PHONE, 100), change("e2", "bob@example.com", "Bob", "", 100)])
    ana, bob = contact_id_of(engine, EMAIL), contact_id_of(engine, "bob@example.com")
    assert sorted(outbox_contacts(engine)) == sorted([ana, bob])
    assert handlers.delete_contact(UnitOfWork(engine), "alice", ana) is True
    assert outbox_contacts(engine) == [bob]
    assert handlers.delete_contact(UnitOfWork(engine), "alice", ana) is False


def test_a_busy_checkpoint_does_not_fail_the_erasure(tmp_path: Path):
    database = tmp_path / "contacts.db"
    engine = create_engine(f"sqlite:///{database}")
    reader = create_engine(f"sqlite:///{database}")
    try:
        schema.migrate_database(engine)
        apply(engine, [change("e1", EMAIL, NAME, PHONE, 100)])
        ana = contact_id_of(engine, EMAIL)
        with reader.connect() as connection:
            # A reader in the middle of a transaction keeps the log from being truncated.
            connection.exec_driver_sql("BEGIN")
            connection.exec_driver_sql("SELECT count(*) FROM contacts").scalar()
            assert handlers.delete_contact(UnitOfWork(engine), "alice", ana) is True
            connection.exec_driver_sql("ROLLBACK")
        with engine.connect() as connection:
            assert connection.execute(sa.select(sa.func.count()).select_from(schema.contacts)).scalar() == 0
    finally:
        reader.dispose()
        engine.dispose()
