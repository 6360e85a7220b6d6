"""The segmentation service's storage: reads and writes of its tables (defined in schema.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from listboss_common import db
from listboss_common.db import from_micros, now, to_micros
from listboss_segmentation import conditions, domain

# The tables live in schema.py; migrate_database is re-exported for the callers that start here.
from listboss_segmentation.schema import backfills, migrate_database, products, segmentations  # noqa: F401


@dataclass(frozen=True)
class ProductRecord:
    producer: str
    product_id: str
    display_name: str
    kind: int
    origin: str
    create_time: object
    update_time: object


def _record(row) -> ProductRecord:
    return ProductRecord(
        row.producer,
        row.product_id,
        row.display_name,
        row.kind,
        row.origin,
        from_micros(row.create_time),
        from_micros(row.update_time),
    )


def register_product(
    connection: Connection, producer: str, product_id: str, display_name: str, kind: int
) -> ProductRecord:
    """Creates the product, or updates its name and kind: registration wins over what an event said."""
    stamp = to_micros(now())
    statement = db.insert(connection, products).values(
        producer=producer,
        product_id=product_id,
        display_name=display_name,
        kind=kind,
        origin="registered",
        create_time=stamp,
        update_time=stamp,
    )
    statement = statement.on_conflict_do_update(
        index_elements=[products.c.producer, products.c.product_id],
        set_={"display_name": display_name, "kind": kind, "origin": "registered", "update_time": stamp},
    )
    connection.execute(statement)
    found = get_product(connection, producer, product_id)
    assert found is not None
    return found


def ensure_products(connection: Connection, seen: list[tuple[str, str, str, int]]) -> None:
    """Records products first seen in events: (producer, product_id, name, kind). Existing ones are left as they are."""
    if not seen:
        return
    stamp = to_micros(now())
    rows = [
        dict(
            producer=p,
            product_id=i,
            display_name=name or i,
            kind=kind,
            origin="event",
            create_time=stamp,
            update_time=stamp,
        )
        for p, i, name, kind in seen
    ]
    connection.execute(db.insert(connection, products).on_conflict_do_nothing(), rows)


def get_product(connection: Connection, producer: str, product_id: str) -> ProductRecord | None:
    row = connection.execute(
        sa.select(products).where(products.c.producer == producer, products.c.product_id == product_id)
    ).first()
    return _record(row) if row else None


def list_products(connection: Connection, producer: str, after: str | None, limit: int) -> list[ProductRecord]:
    query = sa.select(products).where(products.c.producer == producer)
    if after is not None:
        query = query.where(products.c.product_id > after)
    rows = connection.execute(query.order_by(products.c.product_id).limit(limit))
    return [_record(row) for row in rows]


def lock_product(connection: Connection, producer: str, product_id: str) -> None:
    """Holds the product until the transaction ends, so changes to its set of ACTIVE
    segmentations (checked against the limits, then saved) happen one at a time.

    PostgreSQL locks the product row (SELECT ... FOR UPDATE). SQLite has one writer per
    database: a write of the row (changing nothing) takes that lock now, before the
    caller's reads, so a second transaction waits here and then reads what the first
    committed."""
    where = (products.c.producer == producer, products.c.product_id == product_id)
    if db.is_postgres(connection):
        connection.execute(sa.select(products.c.product_id).where(*where).with_for_update())
    else:
        connection.execute(products.update().where(*where).values(update_time=products.c.update_time))


# --------------------------------------------------------------------------- custom segmentations


class AlreadyExists(Exception):
    """The segmentation id is taken."""


def _segmentation(row) -> domain.CustomSegmentation:
    return domain.CustomSegmentation(
        producer=row.producer,
        product=row.product_id,
        segmentation_id=row.segmentation_id,
        display_name=row.display_name,
        provider=row.provider,
        event_type=row.event_type,
        condition=conditions.from_json(json.loads(row.condition)) if row.condition else None,
        contact_data=tuple(json.loads(row.contact_data)),
        add_tags=tuple(json.loads(row.add_tags)),
        remove_tags=tuple(json.loads(row.remove_tags)),
        state=row.state,
        revision=row.revision,
        create_time=from_micros(row.create_time),
        update_time=from_micros(row.update_time),
    )


def _definition(segmentation: domain.CustomSegmentation) -> dict:
    return dict(
        display_name=segmentation.display_name,
        provider=segmentation.provider,
        event_type=segmentation.event_type,
        condition=json.dumps(conditions.to_json(segmentation.condition)) if segmentation.condition else "",
        contact_data=json.dumps(list(segmentation.contact_data)),
        add_tags=json.dumps(list(segmentation.add_tags)),
        remove_tags=json.dumps(list(segmentation.remove_tags)),
    )


def _where(producer: str, product_id: str, segmentation_id: str):
    return (
        segmentations.c.producer == producer,
        segmentations.c.product_id == product_id,
        segmentations.c.segmentation_id == segmentation_id,
    )


def find_by_request(connection: Connection, producer: str, product_id: str, request_id: str):
    row = connection.execute(
        sa.select(segmentations).where(
            segmentations.c.producer == producer,
            segmentations.c.product_id == product_id,
            segmentations.c.request_id == request_id,
        )
    ).first()
    return _segmentation(row) if row else None


def create_segmentation(
    connection: Connection, segmentation: domain.CustomSegmentation, request_id: str | None
) -> domain.CustomSegmentation:
    """Inserts a new INACTIVE segmentation; raises AlreadyExists when the id is taken.

    Runs in a SAVEPOINT so a conflict leaves the caller's transaction usable
    (a concurrent retry with the same request_id then finds the first one)."""
    stamp = to_micros(now())
    try:
        with connection.begin_nested():
            connection.execute(
                segmentations.insert().values(
                    producer=segmentation.producer,
                    product_id=segmentation.product,
                    segmentation_id=segmentation.segmentation_id,
                    state=domain.INACTIVE,
                    revision=1,
                    request_id=request_id or None,
                    create_time=stamp,
                    update_time=stamp,
                    **_definition(segmentation),
                )
            )
    except sa.exc.IntegrityError:
        raise AlreadyExists(segmentation.segmentation_id) from None
    found = get_segmentation(connection, segmentation.producer, segmentation.product, segmentation.segmentation_id)
    assert found is not None
    return found


def get_segmentation(
    connection: Connection, producer: str, product_id: str, segmentation_id: str
) -> domain.CustomSegmentation | None:
    row = connection.execute(sa.select(segmentations).where(*_where(producer, product_id, segmentation_id))).first()
    return _segmentation(row) if row else None


def list_segmentations(
    connection: Connection, producer: str, product_id: str, state: str | None = None
) -> list[domain.CustomSegmentation]:
    """A product's custom segmentations in creation order."""
    query = sa.select(segmentations).where(
        segmentations.c.producer == producer, segmentations.c.product_id == product_id
    )
    if state is not None:
        query = query.where(segmentations.c.state == state)
    rows = connection.execute(query.order_by(segmentations.c.create_time, segmentations.c.segmentation_id))
    return [_segmentation(row) for row in rows]


def save_segmentation(
    connection: Connection, segmentation: domain.CustomSegmentation, expected_revision: int
) -> domain.CustomSegmentation | None:
    """Stores the definition and state if the stored revision is still
    ``expected_revision`` (else None: someone changed it meanwhile)."""
    result = connection.execute(
        segmentations.update()
        .where(*_where(segmentation.producer, segmentation.product, segmentation.segmentation_id))
        .where(segmentations.c.revision == expected_revision)
        .values(
            state=segmentation.state,
            revision=expected_revision + 1,
            update_time=to_micros(now()),
            **_definition(segmentation),
        )
    )
    if result.rowcount != 1:
        return None
    return get_segmentation(connection, segmentation.producer, segmentation.product, segmentation.segmentation_id)


def delete_segmentation(
    connection: Connection, producer: str, product_id: str, segmentation_id: str, expected_revision: int
) -> bool:
    result = connection.execute(
        segmentations.delete()
        .where(*_where(producer, product_id, segmentation_id))
        .where(segmentations.c.revision == expected_revision)
    )
    return result.rowcount == 1


# --------------------------------------------------------------------------- backfills


@dataclass(frozen=True)
class BackfillRecord:
    producer: str
    product_id: str
    segmentation_id: str
    backfill_id: str
    state: str
    events_scanned: int
    events_considered: int
    events_matched: int
    error: str
    create_time: object
    update_time: object
    # The replica running it ('' for none), the end of its lease (microseconds since the
    # epoch) and the stream sequence of the last message scanned, published and counted.
    owner: str = ""
    lease_expire_time: int = 0
    scanned_sequence: int = 0


def _backfill(row) -> BackfillRecord:
    return BackfillRecord(
        row.producer,
        row.product_id,
        row.segmentation_id,
        row.backfill_id,
        row.state,
        row.events_scanned,
        row.events_considered,
        row.events_matched,
        row.error,
        from_micros(row.create_time),
        from_micros(row.update_time),
        row.owner,
        row.lease_expire_time,
        row.scanned_sequence,
    )


def _lease_end(lease_seconds: float) -> int:
    return to_micros(now()) + int(lease_seconds * 1_000_000)


def create_backfill(
    connection: Connection,
    producer: str,
    product_id: str,
    segmentation_id: str,
    backfill_id: str,
    owner: str = "",
    lease_seconds: float = 0.0,
) -> BackfillRecord:
    """A new RUNNING backfill held by ``owner`` for ``lease_seconds``."""
    stamp = to_micros(now())
    connection.execute(
        backfills.insert().values(
            producer=producer,
            product_id=product_id,
            segmentation_id=segmentation_id,
            backfill_id=backfill_id,
            state="RUNNING",
            events_scanned=0,
            events_considered=0,
            events_matched=0,
            error="",
            create_time=stamp,
            update_time=stamp,
            owner=owner,
            lease_expire_time=_lease_end(lease_seconds),
            scanned_sequence=0,
        )
    )
    found = get_backfill(connection, producer, product_id, segmentation_id, backfill_id)
    assert found is not None
    return found


def _backfill_key(record: BackfillRecord):
    return (
        backfills.c.producer == record.producer,
        backfills.c.product_id == record.product_id,
        backfills.c.segmentation_id == record.segmentation_id,
        backfills.c.backfill_id == record.backfill_id,
    )


def update_backfill(connection: Connection, record: BackfillRecord, owner: str | None = None, **values) -> bool:
    """Stores progress or the outcome; with ``owner``, only while that replica still holds
    the backfill (False when another one has taken it over)."""
    statement = backfills.update().where(*_backfill_key(record))
    if owner is not None:
        statement = statement.where(backfills.c.owner == owner, backfills.c.state == "RUNNING")
    result = connection.execute(statement.values(update_time=to_micros(now()), **values))
    return result.rowcount == 1


def renew_backfill_lease(connection: Connection, record: BackfillRecord, owner: str, lease_seconds: float) -> bool:
    """Extends ``owner``'s lease; False when the backfill is no longer RUNNING under that owner."""
    result = connection.execute(
        backfills.update()
        .where(*_backfill_key(record), backfills.c.owner == owner, backfills.c.state == "RUNNING")
        .values(lease_expire_time=_lease_end(lease_seconds))
    )
    return result.rowcount == 1


def release_backfill(connection: Connection, record: BackfillRecord, owner: str) -> None:
    """Ends ``owner``'s lease at once (a replica stopping): the next replica that looks takes it over."""
    connection.execute(
        backfills.update()
        .where(*_backfill_key(record), backfills.c.owner == owner, backfills.c.state == "RUNNING")
        .values(lease_expire_time=0)
    )


def expired_backfills(connection: Connection, limit: int) -> list[BackfillRecord]:
    """RUNNING backfills whose lease has expired (their replica died or stopped), oldest first."""
    rows = connection.execute(
        sa.select(backfills)
        .where(backfills.c.state == "RUNNING", backfills.c.lease_expire_time < to_micros(now()))
        .order_by(backfills.c.create_time)
        .limit(limit)
    )
    return [_backfill(row) for row in rows]


def claim_backfill(
    connection: Connection, record: BackfillRecord, owner: str, lease_seconds: float
) -> BackfillRecord | None:
    """Takes over a RUNNING backfill whose lease has expired; None when it has not expired
    (any more) or is no longer RUNNING. One UPDATE with the expiry in its WHERE clause, so of
    replicas claiming together exactly one wins: PostgreSQL re-checks the condition on the row
    a concurrent claim committed, and SQLite runs one writer at a time."""
    result = connection.execute(
        backfills.update()
        .where(
            *_backfill_key(record),
            backfills.c.state == "RUNNING",
            backfills.c.lease_expire_time < to_micros(now()),
        )
        .values(owner=owner, lease_expire_time=_lease_end(lease_seconds))
    )
    if result.rowcount != 1:
        return None
    return get_backfill(connection, record.producer, record.product_id, record.segmentation_id, record.backfill_id)


def get_backfill(
    connection: Connection, producer: str, product_id: str, segmentation_id: str, backfill_id: str
) -> BackfillRecord | None:
    row = connection.execute(
        sa.select(backfills).where(
            backfills.c.producer == producer,
            backfills.c.product_id == product_id,
            backfills.c.segmentation_id == segmentation_id,
            backfills.c.backfill_id == backfill_id,
        )
    ).first()
    return _backfill(row) if row else None
