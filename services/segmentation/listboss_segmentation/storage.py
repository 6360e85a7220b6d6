"""The segmentation service's own tables and their migrations."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from listboss_common.db import from_micros, is_postgres, migrate, now, sql_migration, to_micros

MIGRATIONS = [
    sql_migration(
        1,
        "products",
        """CREATE TABLE products (
            producer TEXT NOT NULL,
            product_id TEXT NOT NULL,
            display_name TEXT NOT NULL,
            kind SMALLINT NOT NULL,
            -- 'registered' by the platform, or 'event' when first seen in an event.
            origin TEXT NOT NULL,
            create_time BIGINT NOT NULL,
            update_time BIGINT NOT NULL,
            PRIMARY KEY (producer, product_id)
        )""",
    ),
]

metadata = sa.MetaData()
products = sa.Table(
    "products",
    metadata,
    sa.Column("producer", sa.Text, primary_key=True),
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.Column("update_time", sa.BigInteger, nullable=False),
)


def migrate_database(engine: Engine) -> None:
    migrate(engine, MIGRATIONS, namespace="listboss_segmentation")


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


def _insert(connection: Connection):
    if is_postgres(connection):
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(products)


def register_product(connection: Connection, producer: str, product_id: str, display_name: str, kind: int) -> ProductRecord:
    """Creates the product, or updates its name and kind: registration wins over what an event said."""
    stamp = to_micros(now())
    statement = _insert(connection).values(
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
    connection.execute(_insert(connection).on_conflict_do_nothing(), rows)


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
