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


def migrate_database(engine: Engine) -> None:
    migrate(engine, MIGRATIONS, namespace="listboss_contacts")
