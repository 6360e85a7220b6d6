"""Baseline: the contacts schema as the pre-Alembic steps 1-6 and 10 left it.

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

# BIGSERIAL on PostgreSQL; INTEGER PRIMARY KEY AUTOINCREMENT (the rowid, never reused) on SQLite.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", ID, primary_key=True),
        sa.Column("producer", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("phone", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("country_code", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("source", sa.SmallInteger(), nullable=False),
        sa.Column("data_time", sa.BigInteger(), nullable=False),
        sa.Column("data_event", sa.Text(), nullable=False),
        sa.Column("first_event_time", sa.BigInteger(), nullable=False),
        sa.Column("last_event_time", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("attributes", sa.Text(), server_default="{}", nullable=False),
        sa.Column("attribute_stamps", sa.Text(), server_default="{}", nullable=False),
        sa.UniqueConstraint("producer", "email", name="contacts_producer_email"),
        sqlite_autoincrement=True,
    )
    op.create_index("contacts_producer_id", "contacts", ["producer", "id"])
    op.create_index("contacts_producer_create", "contacts", ["producer", "create_time", "id"])

    op.create_table(
        "tags",
        sa.Column("id", ID, primary_key=True),
        sa.Column("producer", sa.Text(), nullable=False),
        sa.Column("product", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("contact_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("producer", "product", "key", name="tags_producer_product_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("tags_producer_key", "tags", ["producer", "key"])

    op.create_table(
        "contact_tags",
        sa.Column("contact_id", sa.BigInteger(), primary_key=True),
        sa.Column("tag_id", sa.BigInteger(), primary_key=True),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("stamp_time", sa.BigInteger(), nullable=False),
        sa.Column("stamp_event", sa.Text(), nullable=False),
        sa.Column("segmentation", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"]),
    )
    op.create_index("contact_tags_tag", "contact_tags", ["tag_id", "present", "contact_id"])

    op.create_table(
        "history",
        sa.Column("id", ID, primary_key=True),
        sa.Column("producer", sa.Text(), nullable=False),
        sa.Column("product", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.SmallInteger(), nullable=False),
        sa.Column("occur_time", sa.BigInteger(), nullable=False),
        sa.Column("record_time", sa.BigInteger(), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=True),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("contact_created", sa.Boolean(), nullable=False),
        sa.Column("added_tags", sa.Text(), nullable=False),
        sa.Column("removed_tags", sa.Text(), nullable=False),
        sa.Column("fired_segmentations", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="SET NULL"),
        sa.UniqueConstraint("producer", "event_id", name="history_producer_event"),
        sqlite_autoincrement=True,
    )
    op.create_index("history_product", "history", ["producer", "product", "id"])
    op.create_index("history_contact", "history", ["contact_id"])
    op.create_index("history_product_email", "history", ["producer", "product", "email", "id"])
    op.create_index("history_product_type", "history", ["producer", "product", "event_type", "id"])

    op.create_table(
        "contact_products",
        sa.Column("contact_id", sa.BigInteger(), primary_key=True),
        sa.Column("producer", sa.Text(), nullable=False),
        sa.Column("product", sa.Text(), primary_key=True),
        sa.Column("first_event_time", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
    )
    op.create_index("contact_products_product", "contact_products", ["producer", "product", "contact_id"])

    op.create_table(
        "product_daily",
        sa.Column("producer", sa.Text(), primary_key=True),
        sa.Column("product", sa.Text(), primary_key=True),
        sa.Column("day", sa.Integer(), primary_key=True),
        sa.Column("event_type", sa.SmallInteger(), primary_key=True),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), nullable=False),
    )

    op.create_table(
        "tag_change_outbox",
        sa.Column("id", ID, primary_key=True),
        sa.Column("producer", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=False),
        sa.Column("product", sa.Text(), nullable=False),
        sa.Column("tag_key", sa.Text(), nullable=False),
        sa.Column("added", sa.Boolean(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("segmentation", sa.Text(), nullable=False),
        sa.Column("occur_time", sa.BigInteger(), nullable=False),
        sa.Column("commit_time", sa.BigInteger(), nullable=False),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    # Indexes go with their tables; referring tables first.
    for table in (
        "tag_change_outbox",
        "product_daily",
        "contact_products",
        "history",
        "contact_tags",
        "tags",
        "contacts",
    ):
        op.drop_table(table)
