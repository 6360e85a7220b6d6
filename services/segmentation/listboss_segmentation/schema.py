"""The segmentation service's own tables, defined once, and their migrations.

The tables below are the schema: Alembic revisions in ``migrations/versions/`` bring a
database to them, and ``./dev lint`` fails when the two disagree (docs/operations.md, "Schema
migrations"). Names of tables, columns, constraints and indexes are what databases
already hold: change them only through a revision. Times are integer microseconds since
the epoch (UTC).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from listboss_common import migrations
from listboss_segmentation.migrations import legacy

metadata = sa.MetaData()

products = sa.Table(
    "products",
    metadata,
    sa.Column("producer", sa.Text, primary_key=True),
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("kind", sa.SmallInteger, nullable=False),
    # 'registered' by the platform, or 'event' when first seen in an event.
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.Column("update_time", sa.BigInteger, nullable=False),
)

segmentations = sa.Table(
    "segmentations",
    metadata,
    sa.Column("producer", sa.Text, primary_key=True),
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("segmentation_id", sa.Text, primary_key=True),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    # JSON (conditions.to_json); empty when there is no condition.
    sa.Column("condition", sa.Text, nullable=False),
    sa.Column("contact_data", sa.Text, nullable=False),
    sa.Column("add_tags", sa.Text, nullable=False),
    sa.Column("remove_tags", sa.Text, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    # Bumped by every change; the etag is derived from it.
    sa.Column("revision", sa.BigInteger, nullable=False),
    # The CreateSegmentation request_id, so a retry finds what it created.
    sa.Column("request_id", sa.Text),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.Column("update_time", sa.BigInteger, nullable=False),
    sa.Index("segmentations_request", "producer", "product_id", "request_id", unique=True),
)

backfills = sa.Table(
    "backfills",
    metadata,
    sa.Column("producer", sa.Text, primary_key=True),
    sa.Column("product_id", sa.Text, primary_key=True),
    sa.Column("segmentation_id", sa.Text, primary_key=True),
    sa.Column("backfill_id", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("events_scanned", sa.BigInteger, nullable=False),
    sa.Column("events_considered", sa.BigInteger, nullable=False),
    sa.Column("events_matched", sa.BigInteger, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    # The last progress stored (update_time moves only with progress, never with the lease).
    sa.Column("update_time", sa.BigInteger, nullable=False),
    # The replica running it ('' for none) and until when that replica holds it: a RUNNING
    # backfill whose lease has expired is claimed by another replica (backfill.py).
    sa.Column("owner", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("lease_expire_time", sa.BigInteger, nullable=False, server_default="0"),
    # The LISTBOSS_EVENTS sequence of the last message scanned, its changes published and
    # counted: a replica that takes the backfill over resumes after it.
    sa.Column("scanned_sequence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("backfills_lease", "state", "lease_expire_time"),
)

# The service's Alembic environment: migrations/ (alembic.ini, env.py, versions/), version
# table alembic_version_segmentation, and the frozen pre-Alembic steps to adopt older databases.
ALEMBIC = migrations.Environment(
    name="segmentation",
    directory=Path(__file__).with_name("migrations"),
    metadata=metadata,
    legacy=legacy.MIGRATIONS,
    legacy_table="products",
)


def migrate_database(engine: Engine) -> None:
    """Brings the database to the newest revision (replicas may start together)."""
    migrations.upgrade(engine, ALEMBIC)
