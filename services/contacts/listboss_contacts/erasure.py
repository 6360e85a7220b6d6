"""Erasing a contact (DeleteContact): the person's data goes, what the events did stays.

In one transaction: the contact's present tag links leave their tags' counts,
its tag links and product links are deleted, its history entries keep what the
event did but lose the person (contact set to null, email blanked), and the
contact row is deleted. The events stay in the history, so a redelivered old
event is still recognised as applied and cannot bring the person back; a new
event for the same email captures a new contact (a new name).

The tag-change outbox and stream carry contact resource names, never emails or
names, so nothing there is personal data; entries already published stay and
now name a contact that answers NOT_FOUND. Erasure itself publishes no tag
changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from listboss_common.db import is_postgres
from listboss_contacts.schema import contact_products, contact_tags, contacts, history, tags


def erase_contact(connection: Connection, producer: str, contact_id: int) -> bool:
    """Erases the producer's contact; False when there is no such contact."""
    query = sa.select(contacts.c.id).where(contacts.c.producer == producer, contacts.c.id == contact_id)
    if is_postgres(connection):
        query = query.with_for_update()  # an apply changing this contact waits, then sees it gone
    if connection.execute(query).first() is None:
        return False
    present = (
        connection.execute(
            sa.select(contact_tags.c.tag_id)
            .where(contact_tags.c.contact_id == contact_id, contact_tags.c.present == sa.true())
            .order_by(contact_tags.c.tag_id)
        )
        .scalars()
        .all()
    )
    if present:
        connection.execute(tags.update().where(tags.c.id.in_(present)).values(contact_count=tags.c.contact_count - 1))
    connection.execute(contact_tags.delete().where(contact_tags.c.contact_id == contact_id))
    connection.execute(contact_products.delete().where(contact_products.c.contact_id == contact_id))
    connection.execute(
        history.update()
        .where(history.c.producer == producer, history.c.contact_id == contact_id)
        .values(contact_id=None, email="")
    )
    connection.execute(contacts.delete().where(contacts.c.id == contact_id))
    return True
