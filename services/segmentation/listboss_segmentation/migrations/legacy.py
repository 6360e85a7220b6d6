"""The segmentation schema's steps from before Alembic, frozen.

Used only to adopt a database they built (``listboss_common.migrations``): the steps its
``schema_migrations`` table does not list are run, then the Alembic baseline is stamped.
Never edit or extend this list: schema changes are Alembic revisions in ``versions/``.
"""

from __future__ import annotations

from listboss_common.db import sql_migration

# Every version the old path could record for segmentation: all of them applied means the
# schema is exactly the Alembic baseline (0001).
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
    sql_migration(
        2,
        "custom segmentations and their backfills",
        """CREATE TABLE segmentations (
            producer TEXT NOT NULL,
            product_id TEXT NOT NULL,
            segmentation_id TEXT NOT NULL,
            display_name TEXT NOT NULL,
            provider TEXT NOT NULL,
            event_type TEXT NOT NULL,
            -- JSON (conditions.to_json); empty when there is no condition.
            condition TEXT NOT NULL,
            contact_data TEXT NOT NULL,
            add_tags TEXT NOT NULL,
            remove_tags TEXT NOT NULL,
            state TEXT NOT NULL,
            -- Bumped by every change; the etag is derived from it.
            revision BIGINT NOT NULL,
            -- The CreateSegmentation request_id, so a retry finds what it created.
            request_id TEXT,
            create_time BIGINT NOT NULL,
            update_time BIGINT NOT NULL,
            PRIMARY KEY (producer, product_id, segmentation_id)
        )""",
        "CREATE UNIQUE INDEX segmentations_request ON segmentations (producer, product_id, request_id)",
        """CREATE TABLE backfills (
            producer TEXT NOT NULL,
            product_id TEXT NOT NULL,
            segmentation_id TEXT NOT NULL,
            backfill_id TEXT NOT NULL,
            state TEXT NOT NULL,
            events_scanned BIGINT NOT NULL,
            events_considered BIGINT NOT NULL,
            events_matched BIGINT NOT NULL,
            error TEXT NOT NULL,
            create_time BIGINT NOT NULL,
            update_time BIGINT NOT NULL,
            PRIMARY KEY (producer, product_id, segmentation_id, backfill_id)
        )""",
    ),
]
