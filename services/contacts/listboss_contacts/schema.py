"""The contacts service's own tables and their migrations.

Times are integer microseconds since the epoch (UTC). A tag link is a
last-writer-wins register per (contact, tag): ``present`` is what the newest
operation said, where newest means the greatest (occur_time, event_id) stamp.
Links whose newest operation was a removal are kept (present = false) so that
an older addition arriving later cannot bring the tag back.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from listboss_common.db import migrate, sql_migration

MIGRATIONS = [
    sql_migration(
        1,
        "contacts, tags, tag links and history",
        """CREATE TABLE contacts (
            id {id},
            producer TEXT NOT NULL,
            email TEXT NOT NULL,
            display_name TEXT NOT NULL DEFAULT '',
            phone TEXT NOT NULL DEFAULT '',
            country_code TEXT NOT NULL DEFAULT '',
            source SMALLINT NOT NULL,
            -- Stamp of the event whose data the contact holds (newest wins).
            data_time BIGINT NOT NULL,
            data_event TEXT NOT NULL,
            first_event_time BIGINT NOT NULL,
            last_event_time BIGINT NOT NULL,
            create_time BIGINT NOT NULL,
            update_time BIGINT NOT NULL,
            CONSTRAINT contacts_producer_email UNIQUE (producer, email)
        )""",
        """CREATE TABLE tags (
            id {id},
            producer TEXT NOT NULL,
            product TEXT NOT NULL,
            key TEXT NOT NULL,
            display_name TEXT NOT NULL,
            automatic BOOLEAN NOT NULL,
            -- Kept as tag links change, so counts cost one row read.
            contact_count BIGINT NOT NULL DEFAULT 0,
            create_time BIGINT NOT NULL,
            CONSTRAINT tags_producer_product_key UNIQUE (producer, product, key)
        )""",
        "CREATE INDEX tags_producer_key ON tags (producer, key)",
        """CREATE TABLE contact_tags (
            contact_id BIGINT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            tag_id BIGINT NOT NULL REFERENCES tags (id),
            present BOOLEAN NOT NULL,
            stamp_time BIGINT NOT NULL,
            stamp_event TEXT NOT NULL,
            segmentation TEXT NOT NULL,
            PRIMARY KEY (contact_id, tag_id)
        )""",
        "CREATE INDEX contact_tags_tag ON contact_tags (tag_id, present, contact_id)",
        """CREATE TABLE history (
            id {id},
            producer TEXT NOT NULL,
            product TEXT NOT NULL,
            event_id TEXT NOT NULL,
            event_type SMALLINT NOT NULL,
            occur_time BIGINT NOT NULL,
            record_time BIGINT NOT NULL,
            contact_id BIGINT REFERENCES contacts (id) ON DELETE SET NULL,
            email TEXT NOT NULL,
            contact_created BOOLEAN NOT NULL,
            added_tags TEXT NOT NULL,
            removed_tags TEXT NOT NULL,
            fired_segmentations TEXT NOT NULL,
            CONSTRAINT history_producer_event UNIQUE (producer, event_id)
        )""",
        "CREATE INDEX history_product ON history (producer, product, id)",
        "CREATE INDEX history_contact ON history (contact_id)",
    ),
    # Keyset orders: (producer, id) is the default order, (producer, create_time, id)
    # serves order_by create_time; email order uses contacts_producer_email.
    sql_migration(
        2,
        "contact ordering indexes",
        "CREATE INDEX contacts_producer_id ON contacts (producer, id)",
        "CREATE INDEX contacts_producer_create ON contacts (producer, create_time, id)",
    ),
    # `product = "..."` filters read this link table, kept by apply.py, instead of scanning history.
    sql_migration(
        3,
        "contact-product links",
        """CREATE TABLE contact_products (
            contact_id BIGINT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
            producer TEXT NOT NULL,
            product TEXT NOT NULL,
            first_event_time BIGINT NOT NULL,
            PRIMARY KEY (contact_id, product)
        )""",
        "CREATE INDEX contact_products_product ON contact_products (producer, product, contact_id)",
        """INSERT INTO contact_products (contact_id, producer, product, first_event_time)
           SELECT contact_id, producer, product, MIN(occur_time) FROM history
           WHERE contact_id IS NOT NULL GROUP BY contact_id, producer, product""",
    ),
    # The dashboard's figures: events and newly linked contacts per product, UTC day and event type.
    sql_migration(
        4,
        "per-product daily counters",
        """CREATE TABLE product_daily (
            producer TEXT NOT NULL,
            product TEXT NOT NULL,
            day INTEGER NOT NULL,
            event_type SMALLINT NOT NULL,
            events BIGINT NOT NULL,
            captured BIGINT NOT NULL,
            PRIMARY KEY (producer, product, day, event_type)
        )""",
        """INSERT INTO product_daily (producer, product, day, event_type, events, captured)
           SELECT producer, product, occur_time / 86400000000, event_type, COUNT(*),
                  SUM(CASE WHEN first_of_link = 1 AND contact_id IS NOT NULL THEN 1 ELSE 0 END)
           FROM (SELECT producer, product, occur_time, event_type, contact_id,
                        ROW_NUMBER() OVER (PARTITION BY producer, product, contact_id
                                           ORDER BY occur_time, event_id) AS first_of_link
                 FROM history) AS ranked
           GROUP BY producer, product, occur_time / 86400000000, event_type""",
    ),
    # Transactional outbox of tag changes, written with the tag links; the relay
    # publishes rows in id order to LISTBOSS_TAG_CHANGES and deletes them after the PubAck.
    sql_migration(
        5,
        "tag-change outbox",
        """CREATE TABLE tag_change_outbox (
            id {id},
            producer TEXT NOT NULL,
            contact_id BIGINT NOT NULL,
            product TEXT NOT NULL,
            tag_key TEXT NOT NULL,
            added BOOLEAN NOT NULL,
            event_id TEXT NOT NULL,
            segmentation TEXT NOT NULL,
            occur_time BIGINT NOT NULL,
            commit_time BIGINT NOT NULL
        )""",
    ),
    # History filters (History tab): by email and by event type, newest first.
    sql_migration(
        6,
        "history filter indexes",
        "CREATE INDEX history_product_email ON history (producer, product, email, id)",
        "CREATE INDEX history_product_type ON history (producer, product, event_type, id)",
    ),
    # Segmentation owns version 10: the contact data the fired segmentations chose to
    # send, merged per key newest-wins (attribute_stamps holds each key's stamp).
    sql_migration(
        10,
        "contact data chosen by segmentations",
        "ALTER TABLE contacts ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE contacts ADD COLUMN attribute_stamps TEXT NOT NULL DEFAULT '{}'",
    ),
]

metadata = sa.MetaData()

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("phone", sa.Text, nullable=False),
    sa.Column("country_code", sa.Text, nullable=False),
    sa.Column("source", sa.SmallInteger, nullable=False),
    # JSON {key: value} of the data segmentations chose to send ("name", "phone", "address.city", ...).
    sa.Column("attributes", sa.Text, nullable=False, server_default="{}"),
    # JSON {key: [occur time, event id]}: the stamp of each attribute's value (newest wins).
    sa.Column("attribute_stamps", sa.Text, nullable=False, server_default="{}"),
    sa.Column("data_time", sa.BigInteger, nullable=False),
    sa.Column("data_event", sa.Text, nullable=False),
    sa.Column("first_event_time", sa.BigInteger, nullable=False),
    sa.Column("last_event_time", sa.BigInteger, nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.Column("update_time", sa.BigInteger, nullable=False),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("automatic", sa.Boolean, nullable=False),
    sa.Column("contact_count", sa.BigInteger, nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
)

contact_tags = sa.Table(
    "contact_tags",
    metadata,
    sa.Column("contact_id", sa.BigInteger, primary_key=True),
    sa.Column("tag_id", sa.BigInteger, primary_key=True),
    sa.Column("present", sa.Boolean, nullable=False),
    sa.Column("stamp_time", sa.BigInteger, nullable=False),
    sa.Column("stamp_event", sa.Text, nullable=False),
    sa.Column("segmentation", sa.Text, nullable=False),
)

history = sa.Table(
    "history",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.SmallInteger, nullable=False),
    sa.Column("occur_time", sa.BigInteger, nullable=False),
    sa.Column("record_time", sa.BigInteger, nullable=False),
    sa.Column("contact_id", sa.BigInteger),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("contact_created", sa.Boolean, nullable=False),
    sa.Column("added_tags", sa.Text, nullable=False),
    sa.Column("removed_tags", sa.Text, nullable=False),
    sa.Column("fired_segmentations", sa.Text, nullable=False),
)


contact_products = sa.Table(
    "contact_products",
    metadata,
    sa.Column("contact_id", sa.BigInteger, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("product", sa.Text, primary_key=True),
    sa.Column("first_event_time", sa.BigInteger, nullable=False),
)

product_daily = sa.Table(
    "product_daily",
    metadata,
    sa.Column("producer", sa.Text, primary_key=True),
    sa.Column("product", sa.Text, primary_key=True),
    sa.Column("day", sa.Integer, primary_key=True),  # days since the epoch (UTC)
    sa.Column("event_type", sa.SmallInteger, primary_key=True),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("captured", sa.BigInteger, nullable=False),
)

tag_change_outbox = sa.Table(
    "tag_change_outbox",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("contact_id", sa.BigInteger, nullable=False),
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("tag_key", sa.Text, nullable=False),
    sa.Column("added", sa.Boolean, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("segmentation", sa.Text, nullable=False),
    sa.Column("occur_time", sa.BigInteger, nullable=False),
    sa.Column("commit_time", sa.BigInteger, nullable=False),
)


def migrate_database(engine: Engine) -> None:
    migrate(engine, MIGRATIONS, namespace="listboss_contacts")
