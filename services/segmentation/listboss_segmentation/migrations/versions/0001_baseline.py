"""Baseline: the segmentation schema as the pre-Alembic steps 1-2 left it.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

A database those steps built is stamped at this revision instead of running it
(listboss_common.migrations adopts it); every other database starts here.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("producer", sa.Text(), primary_key=True),
        sa.Column("product_id", sa.Text(), primary_key=True),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
    )

    op.create_table(
        "segmentations",
        sa.Column("producer", sa.Text(), primary_key=True),
        sa.Column("product_id", sa.Text(), primary_key=True),
        sa.Column("segmentation_id", sa.Text(), primary_key=True),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("contact_data", sa.Text(), nullable=False),
        sa.Column("add_tags", sa.Text(), nullable=False),
        sa.Column("remove_tags", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
    )
    op.create_index("segmentations_request", "segmentations", ["producer", "product_id", "request_id"], unique=True)

    op.create_table(
        "backfills",
        sa.Column("producer", sa.Text(), primary_key=True),
        sa.Column("product_id", sa.Text(), primary_key=True),
        sa.Column("segmentation_id", sa.Text(), primary_key=True),
        sa.Column("backfill_id", sa.Text(), primary_key=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("events_scanned", sa.BigInteger(), nullable=False),
        sa.Column("events_considered", sa.BigInteger(), nullable=False),
        sa.Column("events_matched", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for table in ("backfills", "segmentations", "products"):
        op.drop_table(table)
