"""The contacts service's use cases: plain functions over a unit of work and plain values.

Each takes the unit of work first (:class:`~listboss_contacts.unit_of_work.UnitOfWork`
or a fake with the same methods) and runs in one transaction. The entrypoints
(:mod:`~listboss_contacts.grpc_api`, :mod:`~listboss_contacts.consumer`) translate
their inputs, call one of these in a worker thread (they block on the database) and
translate the result. This module imports neither protobuf nor SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from listboss_common.paging import Page
from listboss_contacts import apply, domain, queries, tag_changes

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncGenerator, Collection

    from nats.js import JetStreamContext

    from listboss_common import filtering
    from listboss_common.paging import SortOrder
    from listboss_contacts.audiences import Audience
    from listboss_contacts.repository import TagIds
    from listboss_contacts.unit_of_work import UnitOfWork

# Contacts per export chunk: one keyset query and one stream message each.
EXPORT_CHUNK = 1000


def apply_changes(uow: UnitOfWork, changes: Sequence[domain.Change], tag_ids: TagIds) -> apply.AppliedBatch:
    """Applies a batch of changes in one transaction; ``tag_ids`` learns the batch's tags once it commits."""
    with uow:
        result = apply.apply_batch(uow.store, changes, tag_ids)
        uow.commit()
    tag_ids.commit(result.tag_ids)
    return result


def get_contact(
    uow: UnitOfWork, producer: str, contact_id: int
) -> tuple[queries.ContactRow, list[queries.ContactTagRow]] | None:
    with uow:
        return uow.contact(producer, contact_id)


def get_contact_with_traits(
    uow: UnitOfWork, producer: str, contact_id: int
) -> tuple[queries.ContactRow, list[queries.ContactTagRow], list[queries.PurchaseTraits]] | None:
    """The contact, its tags and its purchase traits, read in one transaction."""
    with uow:
        found = uow.contact(producer, contact_id)
        if found is None:
            return None
        return (*found, uow.purchase_traits(found[0].id))


def list_contacts(
    uow: UnitOfWork, producer: str, node: filtering.Node | None, order: SortOrder, after: list | None, size: int
) -> Page[tuple[queries.ContactRow, list[queries.ContactTagRow]]]:
    with uow:
        found = uow.contacts(producer, node, after, size + 1, order)
    return Page.of(found, size, lambda item: queries.position_of(item[0], order))


def export_chunk(
    uow: UnitOfWork, producer: str, node: filtering.Node | None, order: SortOrder, after: list | None, with_tags: bool
) -> Page[tuple[queries.ContactRow, list[queries.ContactTagRow]]]:
    """The next :data:`EXPORT_CHUNK` contacts of an export (without tags unless ``with_tags``)."""
    with uow:
        found = uow.contacts(producer, node, after, EXPORT_CHUNK, order, with_tags=with_tags)
    return Page(found, queries.position_of(found[-1][0], order) if len(found) == EXPORT_CHUNK else None)


def count_contacts(uow: UnitOfWork, producer: str, node: filtering.Node | None) -> int:
    with uow:
        return uow.count_contacts(producer, node)


def delete_contact(uow: UnitOfWork, producer: str, contact_id: int) -> bool:
    """Erases the contact (see :mod:`~listboss_contacts.erasure`); False when there is none.
    Once committed, the storage is asked to let go of the replaced pages too (best effort)."""
    with uow:
        erased = uow.erase_contact(producer, contact_id)
        uow.commit()
    if erased:
        uow.release_erased_pages()
    return erased


def list_tags(uow: UnitOfWork, producer: str, product: str | None, after_id: int | None, size: int) -> Page:
    with uow:
        rows = uow.tags(producer, product, after_id, size + 1)
    return Page.of(rows, size, lambda row: [row.id])


def list_events(
    uow: UnitOfWork, producer: str, product: str, node: filtering.Node | None, before_id: int | None, size: int
) -> Page[queries.HistoryRow]:
    """A product's history, newest recorded first."""
    with uow:
        rows = uow.history(producer, product, before_id, size + 1, node)
    return Page.of(rows, size, lambda row: [row.id])


def product_dashboard(uow: UnitOfWork, producer: str, product: str, start: int, end: int) -> queries.Dashboard:
    """A product's figures over the whole UTC days that cover [start, end) (microseconds)."""
    day = domain.MICROS_PER_DAY
    with uow:
        return uow.dashboard(producer, product, start // day, -(-end // day))


def watch_tag_changes(
    js: JetStreamContext,
    producer: str,
    after: int,
    tags: Collection[str],
    stopping: asyncio.Event,
    audiences: Collection[str] = (),
) -> AsyncGenerator:
    """The producer's tag changes after stream sequence ``after``, only those of ``tags``
    (keys or tag names) and ``audiences`` (ids; "-": every audience); neither: every change;
    until ``stopping`` is set (:func:`tag_changes.watch`)."""
    selector = tag_changes.TagSelector(list(tags), list(audiences))
    return tag_changes.watch(js, producer, after, selector, stopping)


# --------------------------------------------------------------------------- audiences


def get_audience(uow: UnitOfWork, producer: str, audience_id: str) -> Audience:
    with uow:
        return uow.audiences.get(producer, audience_id)


def list_audiences(uow: UnitOfWork, producer: str, after_id: int | None, size: int) -> Page[Audience]:
    with uow:
        rows = uow.audiences.list(producer, after_id, size + 1)
    return Page.of(rows, size, lambda row: [row.id])


def create_audience(
    uow: UnitOfWork, producer: str, audience_id: str, display_name: str, filter_text: str, publish: bool, now: int
) -> Audience:
    """Creates the audience and records its existing matches as members (their entries
    published only when ``publish``), in one transaction."""
    with uow:
        created, _ = uow.audiences.create(producer, audience_id, display_name, filter_text, publish, now)
        uow.commit()
    return created


def update_audience(
    uow: UnitOfWork,
    producer: str,
    audience_id: str,
    etag: str,
    display_name: str | None,
    filter_text: str | None,
    now: int,
) -> Audience:
    """Changes the audience; a new filter is evaluated over every contact and the
    difference published, in the same transaction."""
    with uow:
        updated, _ = uow.audiences.update(producer, audience_id, etag, display_name, filter_text, now)
        uow.commit()
    return updated


def delete_audience(uow: UnitOfWork, producer: str, audience_id: str, etag: str) -> None:
    with uow:
        uow.audiences.delete(producer, audience_id, etag)
        uow.commit()
