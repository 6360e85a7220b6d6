"""Erasing a contact (DeleteContact): the person's data goes, what the events did stays.

In one transaction: the contact's present tag links leave their tags' counts,
its tag links, product links, purchases and purchase traits are deleted, its history entries keep what the
event did but lose the person (contact set to null, email blanked), and the
contact row is deleted. The events stay in the history, so a redelivered old
event is still recognised as applied and cannot bring the person back; a new
event for the same email captures a new contact (a new name).

The contact's tag changes still waiting in the outbox are deleted with it. The
tag-change stream carries contact resource names, never emails or names: entries
already published stay and now name a contact that answers NOT_FOUND. Erasure
itself publishes no tag changes, but the contact leaves its audiences with an
``AUDIENCE_EXITED`` each (:func:`listboss_contacts.audiences.remove_contact`), so an
automation an entry started can stop.

Nothing personal is left in the contacts database's rows; what remains of the
deleted rows in the files is the storage's concern: SQLite overwrites deleted
content (``secure_delete``) and the handler checkpoints the write-ahead log after
the transaction; PostgreSQL keeps dead tuples until VACUUM (docs/operations.md,
"Erasure (LGPD/GDPR)"). The segmentation database holds no person's data.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from listboss_common.db import is_postgres
from listboss_contacts import audiences
from listboss_contacts.schema import (
    contact_products,
    contact_spending,
    contact_tags,
    contact_traits,
    contacts,
    history,
    purchases,
    tag_change_outbox,
    tags,
)


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
    # Its purchases and the traits derived from them are about the person: they go too.
    for table in (purchases, contact_traits, contact_spending):
        connection.execute(table.delete().where(table.c.contact_id == contact_id))
    connection.execute(
        history.update()
        .where(history.c.producer == producer, history.c.contact_id == contact_id)
        .values(contact_id=None, email="")
    )
    # Tag changes not yet relayed would name the contact after it is gone: they go too.
    connection.execute(
        tag_change_outbox.delete().where(
            tag_change_outbox.c.producer == producer, tag_change_outbox.c.contact_id == contact_id
        )
    )
    # Its audiences lose it, and say so: an automation started by an entry learns of the exit.
    audiences.remove_contact(connection, producer, contact_id)
    connection.execute(contacts.delete().where(contacts.c.id == contact_id))
    return True
