"""The contacts schema's steps from before Alembic, frozen.

Used only to adopt a database they built (``listboss_common.migrations``): the steps its
``schema_migrations`` table does not list are run, then the Alembic baseline is stamped.
Never edit or extend this list: schema changes are Alembic revisions in ``versions/``.
"""

from __future__ import annotations

from listboss_common.db import sql_migration

# Every version the old path could record for contacts: all of them applied means the
# schema is exactly the Alembic baseline (0001).
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
