"""The unit of work: one database transaction, and the stored things a use case reaches through it.

``with uow:`` begins the transaction; ``uow.commit()`` commits it; leaving the
block without a commit rolls it back. The methods are storage's queries on the
transaction's connection, named for what they give, so handlers see neither
SQLAlchemy nor a connection and tests can pass a fake with the same methods.
Handlers run in a worker thread (``asyncio.to_thread``): the event loop keeps
serving while the database works.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection, Engine

from listboss_common.db import WORKER_STATEMENT_TIMEOUT, StatementTimeout
from listboss_segmentation import domain, storage


class UnitOfWork:
    _connection: Connection

    def __init__(self, engine: Engine, statement_timeout: StatementTimeout = WORKER_STATEMENT_TIMEOUT):
        self._engine = engine
        # The RPCs pass theirs (the caller's deadline); the bus worker keeps the generous default.
        self._statement_timeout = statement_timeout
        # Products whose rules the committed transaction changed; the caller tells every
        # replica's rule cache once the commit is done.
        self.changed_products: list[tuple[str, str]] = []

    def __enter__(self) -> UnitOfWork:
        self._connection = self._engine.connect()
        self._statement_timeout.apply(self._connection)
        return self

    def __exit__(self, *exc_info) -> None:
        self._connection.close()  # rolls back what was not committed (reads never commit)

    def commit(self) -> None:
        self._connection.commit()

    # ------------------------------------------------------------------ products

    def product(self, producer: str, product_id: str) -> storage.ProductRecord | None:
        return storage.get_product(self._connection, producer, product_id)

    def products(self, producer: str, after: str | None, limit: int) -> list[storage.ProductRecord]:
        return storage.list_products(self._connection, producer, after, limit)

    def register_product(self, producer: str, product_id: str, display_name: str, kind: int) -> storage.ProductRecord:
        return storage.register_product(self._connection, producer, product_id, display_name, kind)

    def add_products_seen(self, seen: list[tuple[str, str, str, int]]) -> None:
        storage.ensure_products(self._connection, seen)

    def lock_product(self, producer: str, product_id: str) -> None:
        storage.lock_product(self._connection, producer, product_id)

    # ------------------------------------------------------------------ custom segmentations

    def segmentation(self, producer: str, product_id: str, segmentation_id: str) -> domain.CustomSegmentation | None:
        return storage.get_segmentation(self._connection, producer, product_id, segmentation_id)

    def segmentations(
        self, producer: str, product_id: str, state: str | None = None
    ) -> list[domain.CustomSegmentation]:
        """In creation order."""
        return storage.list_segmentations(self._connection, producer, product_id, state=state)

    def segmentation_by_request(self, producer: str, product_id: str, request_id: str):
        return storage.find_by_request(self._connection, producer, product_id, request_id)

    def add_segmentation(
        self, segmentation: domain.CustomSegmentation, request_id: str
    ) -> domain.CustomSegmentation | None:
        """The new INACTIVE segmentation as stored, or None when its id is taken (the
        transaction stays usable)."""
        try:
            return storage.create_segmentation(self._connection, segmentation, request_id)
        except storage.AlreadyExists:
            return None

    def save_segmentation(
        self, segmentation: domain.CustomSegmentation, expected_revision: int
    ) -> domain.CustomSegmentation | None:
        """The segmentation as stored, or None when its revision is no longer ``expected_revision``."""
        return storage.save_segmentation(self._connection, segmentation, expected_revision)

    def delete_segmentation(self, segmentation: domain.CustomSegmentation) -> bool:
        """False when its stored revision is no longer ``segmentation``'s."""
        return storage.delete_segmentation(
            self._connection,
            segmentation.producer,
            segmentation.product,
            segmentation.segmentation_id,
            segmentation.revision,
        )

    # ------------------------------------------------------------------ backfills

    def add_backfill(
        self, segmentation: domain.CustomSegmentation, backfill_id: str, owner: str = "", lease_seconds: float = 0.0
    ) -> storage.BackfillRecord:
        return storage.create_backfill(
            self._connection,
            segmentation.producer,
            segmentation.product,
            segmentation.segmentation_id,
            backfill_id,
            owner,
            lease_seconds,
        )

    def backfill(
        self, producer: str, product_id: str, segmentation_id: str, backfill_id: str
    ) -> storage.BackfillRecord | None:
        return storage.get_backfill(self._connection, producer, product_id, segmentation_id, backfill_id)
