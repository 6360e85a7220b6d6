"""The bus entrypoint: applies the chunks of contact changes its worker hands it, one
transaction each (the worker bounds the chunk, isolates a failing change and waits out
outages: :mod:`listboss_common.worker`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from sqlalchemy.engine import Engine

from listboss.changes.v1 import contact_change_pb2
from listboss_contacts import handlers, messages
from listboss_contacts.apply import AppliedBatch
from listboss_contacts.repository import TagIds
from listboss_contacts.unit_of_work import UnitOfWork

log = structlog.get_logger("listboss.contacts.consumer")


class ChangeApplier:
    """``handle`` is the worker's item handler: decoded ``ContactChange`` messages in, one transaction."""

    def __init__(self, engine: Engine, on_committed: Callable[[], None] | None = None):
        self._engine = engine
        # Lives as long as the applier: tag ids are learnt once per process.
        self._tag_ids = TagIds()
        # Called after each commit (the outbox relay's wake-up).
        self._on_committed = on_committed

    def apply(self, changes: Sequence[contact_change_pb2.ContactChange]) -> AppliedBatch:
        return handlers.apply_changes(UnitOfWork(self._engine), messages.changes_from(changes), self._tag_ids)

    async def handle(self, changes: Sequence[contact_change_pb2.ContactChange]) -> None:
        result = await asyncio.to_thread(self.apply, changes)
        if self._on_committed is not None:
            self._on_committed()
        log.info("changes applied", applied=result.applied, skipped=result.skipped)
