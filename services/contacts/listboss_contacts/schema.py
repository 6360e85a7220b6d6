"""The contacts service's own tables, defined once, and their migrations.

The tables below are the schema: Alembic revisions in ``migrations/versions/`` bring a
database to them, and ``./dev lint`` fails when the two disagree (docs/operations.md, "Schema
migrations"). Names of tables, columns, constraints and indexes are what databases
already hold: change them only through a revision.

Times are integer microseconds since the epoch (UTC). A tag link is a
last-writer-wins register per (contact, tag): ``present`` is what the newest
operation said, where newest means the greatest (occur_time, event_id) stamp.
Links whose newest operation was a removal are kept (present = false) so that
an older addition arriving later cannot bring the tag back.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from listboss_common import migrations
from listboss_contacts.migrations import legacy

# Auto-increment ids: BIGSERIAL on PostgreSQL; on SQLite an INTEGER PRIMARY KEY (the rowid)
# with AUTOINCREMENT (the table's sqlite_autoincrement), so ids are never reused.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("phone", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("country_code", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("source", sa.SmallInteger, nullable=False),
    # Stamp of the event whose data the contact holds (newest wins).
    sa.Column("data_time", sa.BigInteger, nullable=False),
    sa.Column("data_event", sa.Text, nullable=False),
    sa.Column("first_event_time", sa.BigInteger, nullable=False),
    sa.Column("last_event_time", sa.BigInteger, nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.Column("update_time", sa.BigInteger, nullable=False),
    # JSON {key: value} of the data segmentations chose to send ("name", "phone", "address.city", ...).
    sa.Column("attributes", sa.Text, nullable=False, server_default="{}"),
    # JSON {key: [occur time, event id]}: the stamp of each attribute's value (newest wins).
    sa.Column("attribute_stamps", sa.Text, nullable=False, server_default="{}"),
    sa.UniqueConstraint("producer", "email", name="contacts_producer_email"),
    # Keyset orders: (producer, id) is the default order, (producer, create_time, id)
    # serves order_by create_time; email order uses contacts_producer_email.
    sa.Index("contacts_producer_id", "producer", "id"),
    sa.Index("contacts_producer_create", "producer", "create_time", "id"),
    # `country = "PT"` filters: an equality range already in id order.
    sa.Index("contacts_producer_country", "producer", "country_code", "id"),
    sqlite_autoincrement=True,
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("automatic", sa.Boolean, nullable=False),
    # Kept as tag links change, so counts cost one row read.
    sa.Column("contact_count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("producer", "product", "key", name="tags_producer_product_key"),
    sa.Index("tags_producer_key", "producer", "key"),
    sqlite_autoincrement=True,
)

contact_tags = sa.Table(
    "contact_tags",
    metadata,
    sa.Column("contact_id", sa.BigInteger, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag_id", sa.BigInteger, sa.ForeignKey("tags.id"), primary_key=True),
    sa.Column("present", sa.Boolean, nullable=False),
    sa.Column("stamp_time", sa.BigInteger, nullable=False),
    sa.Column("stamp_event", sa.Text, nullable=False),
    sa.Column("segmentation", sa.Text, nullable=False),
    # Drives tag filters: an index-only range scan per tag, in contact id order.
    sa.Index("contact_tags_tag", "tag_id", "present", "contact_id"),
)

history = sa.Table(
    "history",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("event_type", sa.SmallInteger, nullable=False),
    sa.Column("occur_time", sa.BigInteger, nullable=False),
    sa.Column("record_time", sa.BigInteger, nullable=False),
    sa.Column("contact_id", sa.BigInteger, sa.ForeignKey("contacts.id", ondelete="SET NULL")),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("contact_created", sa.Boolean, nullable=False),
    sa.Column("added_tags", sa.Text, nullable=False),
    sa.Column("removed_tags", sa.Text, nullable=False),
    sa.Column("fired_segmentations", sa.Text, nullable=False),
    sa.UniqueConstraint("producer", "event_id", name="history_producer_event"),
    sa.Index("history_product", "producer", "product", "id"),
    sa.Index("history_contact", "contact_id"),
    # History filters (History tab): by email and by event type, newest first.
    sa.Index("history_product_email", "producer", "product", "email", "id"),
    sa.Index("history_product_type", "producer", "product", "event_type", "id"),
    sqlite_autoincrement=True,
)

# `product = "..."` filters read this link table, kept by apply.py, instead of scanning history.
contact_products = sa.Table(
    "contact_products",
    metadata,
    sa.Column("contact_id", sa.BigInteger, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("product", sa.Text, primary_key=True),
    sa.Column("first_event_time", sa.BigInteger, nullable=False),
    sa.Index("contact_products_product", "producer", "product", "contact_id"),
)

# Each purchase (a producer's transaction) of a contact as a last-writer-wins register, like
# a tag link: the event with the greatest (occur_time, event id) stamp decides whether it is
# counted (approved, complete) or taken back out (refunded, chargeback, ...), and its figures.
purchases = sa.Table(
    "purchases",
    metadata,
    sa.Column("contact_id", sa.BigInteger, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("transaction_id", sa.Text, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("counted", sa.Boolean, nullable=False),
    sa.Column("stamp_time", sa.BigInteger, nullable=False),
    sa.Column("stamp_event", sa.Text, nullable=False),
    # When the purchase was made: the platform's approval time, else its order time, else the event's.
    sa.Column("purchase_time", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),  # millionths of the currency unit
)

# Purchase traits, derived from the counted purchases of each contact whose purchases changed:
# one row per (contact, product) bought and one with product "" for the producer as a whole.
# Only contacts with a counted purchase have rows, so the rows drive trait filters in id order.
contact_traits = sa.Table(
    "contact_traits",
    metadata,
    sa.Column("contact_id", sa.BigInteger, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("product", sa.Text, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("purchases", sa.BigInteger, nullable=False),
    sa.Column("first_purchase_time", sa.BigInteger, nullable=False),
    sa.Column("last_purchase_time", sa.BigInteger, nullable=False),
    # Drives trait filters in id order, and covers them: no table read per candidate.
    sa.Index(
        "contact_traits_product",
        "producer",
        "product",
        "contact_id",
        "purchases",
        "first_purchase_time",
        "last_purchase_time",
    ),
    # Counts of `purchases >= N`: a range of this index.
    sa.Index("contact_traits_purchases", "producer", "product", "purchases"),
)

# Total spent per currency, alongside contact_traits (product "" for the producer as a whole).
contact_spending = sa.Table(
    "contact_spending",
    metadata,
    sa.Column("contact_id", sa.BigInteger, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("product", sa.Text, primary_key=True),
    sa.Column("currency", sa.Text, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),  # millionths of the currency unit
    sa.Index("contact_spending_currency", "producer", "product", "currency", "contact_id", "amount"),
)

# The dashboard's figures: events and newly linked contacts per product, UTC day and event type.
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

# Transactional outbox of tag changes, written with the tag links; the relay
# publishes rows in id order to LISTBOSS_TAG_CHANGES and deletes them after the PubAck.
tag_change_outbox = sa.Table(
    "tag_change_outbox",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("contact_id", sa.BigInteger, nullable=False),
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("tag_key", sa.Text, nullable=False),
    sa.Column("added", sa.Boolean, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("segmentation", sa.Text, nullable=False),
    sa.Column("occur_time", sa.BigInteger, nullable=False),
    sa.Column("commit_time", sa.BigInteger, nullable=False),
    # An audience change (entered when ``added``, else exited): the audience's id; product,
    # tag_key and segmentation are then empty. Empty for a tag change.
    sa.Column("audience", sa.Text, nullable=False, server_default=sa.text("''")),
    sqlite_autoincrement=True,
)

# A producer's audiences: a named contact filter whose members are kept (audiences.py).
audiences = sa.Table(
    "audiences",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("producer", sa.Text, nullable=False),
    sa.Column("audience_id", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False),
    sa.Column("filter", sa.Text, nullable=False),
    # The filter compares with `now - <duration>`: its members change as time passes (the sweep).
    sa.Column("relative", sa.Boolean, nullable=False),
    # Kept with the members, so reading it costs one row.
    sa.Column("member_count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("revision", sa.BigInteger, nullable=False),  # the etag
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.Column("update_time", sa.BigInteger, nullable=False),
    # When the sweep last evaluated a relative audience (microseconds; 0: never).
    sa.Column("sweep_time", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.UniqueConstraint("producer", "audience_id", name="audiences_producer_audience"),
    sqlite_autoincrement=True,
)

audience_members = sa.Table(
    "audience_members",
    metadata,
    sa.Column("audience_id", sa.BigInteger, sa.ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("contact_id", sa.BigInteger, sa.ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    # A contact's memberships (erasure, and the batch's touched contacts).
    sa.Index("audience_members_contact", "contact_id", "audience_id"),
)

# The service's Alembic environment: migrations/ (alembic.ini, env.py, versions/), version
# table alembic_version_contacts, and the frozen pre-Alembic steps to adopt older databases.
ALEMBIC = migrations.Environment(
    name="contacts",
    directory=Path(__file__).with_name("migrations"),
    metadata=metadata,
    legacy=legacy.MIGRATIONS,
    legacy_table="contacts",
)


def migrate_database(engine: Engine) -> None:
    """Brings the database to the newest revision (replicas may start together)."""
    migrations.upgrade(engine, ALEMBIC)
