"""Audiences: a producer's named contact filters with their members kept, and audience
changes in the tag-change outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

Adds the tables ``audiences`` and ``audience_members`` and the outbox column ``audience``
(empty for a tag change). Existing databases have no audiences: nothing to fill in.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# BIGSERIAL on PostgreSQL; INTEGER PRIMARY KEY AUTOINCREMENT (the rowid, never reused) on SQLite.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("tag_change_outbox", sa.Column("audience", sa.Text(), server_default=sa.text("''"), nullable=False))
    op.create_table(
        "audiences",
        sa.Column("id", ID, primary_key=True),
        sa.Column("producer", sa.Text(), nullable=False),
        sa.Column("audience_id", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("filter", sa.Text(), nullable=False),
        sa.Column("relative", sa.Boolean(), nullable=False),
        sa.Column("member_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("sweep_time", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.UniqueConstraint("producer", "audience_id", name="audiences_producer_audience"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "audience_members",
        sa.Column("audience_id", sa.BigInteger(), primary_key=True),
        sa.Column("contact_id", sa.BigInteger(), primary_key=True),
        sa.ForeignKeyConstraint(["audience_id"], ["audiences.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
    )
    op.create_index("audience_members_contact", "audience_members", ["contact_id", "audience_id"])


def downgrade() -> None:
    op.drop_index("audience_members_contact", table_name="audience_members")
    op.drop_table("audience_members")
    op.drop_table("audiences")
    with op.batch_alter_table("tag_change_outbox") as batch:
        batch.drop_column("audience")
