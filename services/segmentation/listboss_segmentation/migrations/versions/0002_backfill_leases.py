"""Backfill leases: the replica running a backfill, its lease, and the stream position reached.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10

Backfills that exist are given no owner and an expired lease: a RUNNING one left by a replica
that died is taken over by the first replica that looks, from the oldest event.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backfills") as table:
        table.add_column(sa.Column("owner", sa.Text(), nullable=False, server_default=sa.text("''")))
        table.add_column(sa.Column("lease_expire_time", sa.BigInteger(), nullable=False, server_default="0"))
        table.add_column(sa.Column("scanned_sequence", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_index("backfills_lease", "backfills", ["state", "lease_expire_time"])


def downgrade() -> None:
    op.drop_index("backfills_lease", table_name="backfills")
    with op.batch_alter_table("backfills") as table:
        table.drop_column("scanned_sequence")
        table.drop_column("lease_expire_time")
        table.drop_column("owner")
