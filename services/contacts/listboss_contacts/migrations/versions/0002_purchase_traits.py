"""Purchase traits: each contact's purchases as last-writer-wins registers, the traits derived
from the counted ones (per product and for the producer as a whole), and an index for
``country = ...`` filters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Existing databases start with no purchases: events recorded before this revision are not
replayed (a producer's past sales come in through ``listboss-ops import``, or a backfill).
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("contacts_producer_country", "contacts", ["producer", "country_code", "id"])
    op.create_table(
        "purchases",
        sa.Column("contact_id", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.Text(), nullable=False),
        sa.Column("producer", sa.Text(), nullable=False),
        sa.Column("product", sa.Text(), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("stamp_time", sa.BigInteger(), nullable=False),
        sa.Column("stamp_event", sa.Text(), nullable=False),
        sa.Column("purchase_time", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("contact_id", "transaction_id"),
    )
    op.create_table(
        "contact_traits",
        sa.Column("contact_id", sa.BigInteger(), nullable=False),
        sa.Column("product", sa.Text(), nullable=False),
        sa.Column("producer", sa.Text(), nullable=False),
        sa.Column("purchases", sa.BigInteger(), nullable=False),
        sa.Column("first_purchase_time", sa.BigInteger(), nullable=False),
        sa.Column("last_purchase_time", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("contact_id", "product"),
    )
    op.create_index(
        "contact_traits_product",
        "contact_traits",
        ["producer", "product", "contact_id", "purchases", "first_purchase_time", "last_purchase_time"],
    )
    op.create_index("contact_traits_purchases", "contact_traits", ["producer", "product", "purchases"])
    op.create_table(
        "contact_spending",
        sa.Column("contact_id", sa.BigInteger(), nullable=False),
        sa.Column("product", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("producer", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("contact_id", "product", "currency"),
    )
    op.create_index(
        "contact_spending_currency", "contact_spending", ["producer", "product", "currency", "contact_id", "amount"]
    )


def downgrade() -> None:
    op.drop_index("contact_spending_currency", table_name="contact_spending")
    op.drop_table("contact_spending")
    op.drop_index("contact_traits_purchases", table_name="contact_traits")
    op.drop_index("contact_traits_product", table_name="contact_traits")
    op.drop_table("contact_traits")
    op.drop_table("purchases")
    op.drop_index("contacts_producer_country", table_name="contacts")
