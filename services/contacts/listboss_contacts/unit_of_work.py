"""The unit of work: one database transaction, and what a use case reaches through it.

``with uow:`` opens the transaction; ``uow.commit()`` commits it; leaving the block
without a commit rolls it back (reads never commit). Reads are
:mod:`~listboss_contacts.queries`' on the transaction's connection, erasure is
:mod:`~listboss_contacts.erasure`'s, audiences are ``audiences``
(:class:`~listboss_contacts.audiences.AudienceStore`), and applying changes goes through ``store``
(:class:`~listboss_contacts.repository.ContactStore`), so handlers see neither
SQLAlchemy nor a connection.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from sqlalchemy.engine import Connection, Engine

from listboss_common import db, faults, filtering
from listboss_common.db import WORKER_STATEMENT_TIMEOUT, StatementTimeout
from listboss_common.paging import SortOrder
from listboss_contacts import erasure, queries
from listboss_contacts.audiences import AudienceStore
from listboss_contacts.repository import ContactStore

log = structlog.get_logger("listboss.contacts")


class UnitOfWork:
    _connection: Connection
    store: ContactStore
    audiences: AudienceStore

    def __init__(self, engine: Engine, statement_timeout: StatementTimeout = WORKER_STATEMENT_TIMEOUT):
        self._engine = engine
        # The RPCs pass theirs (the caller's deadline); the bus worker keeps the generous default.
        self._statement_timeout = statement_timeout

    def __enter__(self) -> UnitOfWork:
        self._connection = self._engine.connect()
        self._statement_timeout.apply(self._connection)
        self.store = ContactStore(self._connection)
        self.audiences = AudienceStore(self._connection)
        return self

    def __exit__(self, *exc_info) -> None:
        self._connection.close()  # rolls back what was not committed

    def commit(self) -> None:
        self._connection.commit()

    # ------------------------------------------------------------------ reads

    def contact(self, producer: str, contact_id: int) -> tuple[queries.ContactRow, list[queries.ContactTagRow]] | None:
        return queries.get_contact(self._connection, producer, contact_id)

    def purchase_traits(self, contact_id: int) -> list[queries.PurchaseTraits]:
        return queries.purchase_traits(self._connection, contact_id)

    def contacts(
        self,
        producer: str,
        node: filtering.Node | None,
        after: Sequence | None,
        limit: int,
        order: SortOrder,
        with_tags: bool = True,
    ) -> list[tuple[queries.ContactRow, list[queries.ContactTagRow]]]:
        return queries.list_contacts(self._connection, producer, node, after, limit, order, with_tags=with_tags)

    def count_contacts(self, producer: str, node: filtering.Node | None) -> int:
        return queries.count_contacts(self._connection, producer, node)

    def tags(self, producer: str, product: str | None, after_id: int | None, limit: int) -> Sequence:
        return queries.list_tags(self._connection, producer, product, after_id, limit)

    def history(
        self, producer: str, product: str, before_id: int | None, limit: int, node: filtering.Node | None
    ) -> list[queries.HistoryRow]:
        return queries.list_history(self._connection, producer, product, before_id, limit, node)

    def dashboard(self, producer: str, product: str, start_day: int, end_day: int) -> queries.Dashboard:
        return queries.product_dashboard(self._connection, producer, product, start_day, end_day)

    # ------------------------------------------------------------------ writes

    def erase_contact(self, producer: str, contact_id: int) -> bool:
        return erasure.erase_contact(self._connection, producer, contact_id)

    def release_erased_pages(self) -> None:
        """After an erasure has committed, outside its transaction: SQLite's write-ahead log
        still holds the pages the erasure replaced, so it is checkpointed and truncated.
        Best effort: the erasure stands whether or not this succeeds."""
        try:
            if not db.checkpoint_wal(self._engine):
                log.info("write-ahead log busy after an erasure; the next checkpoint truncates it")
        except Exception as error:
            log.warning("write-ahead log checkpoint after an erasure failed", error=faults.describe_error(error))
