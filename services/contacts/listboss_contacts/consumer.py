"""The bus entrypoint: applies the chunks of contact changes its worker hands it, one
transaction each (the worker bounds the chunk, isolates a failing change and waits out
outages: :mod:`listboss_common.worker`).

Each change's person and contact data arrive sealed (:mod:`listboss_common.personal_data`)
and are opened before the transaction; a change whose person was erased meanwhile is
applied without the person (no capture, no contact data, the event still in the history).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy.engine import Engine

from listboss.changes.v1 import contact_change_pb2
from listboss_common import personal_data
from listboss_common.metrics import LATENCY_BUCKETS
from listboss_contacts import handlers, messages
from listboss_contacts.apply import AppliedBatch
from listboss_contacts.repository import TagIds
from listboss_contacts.unit_of_work import UnitOfWork

log = structlog.get_logger("listboss.contacts.consumer")

APPLY_SECONDS = Histogram(
    "listboss_contacts_apply_seconds",
    "Time to apply one chunk of contact changes, its transaction included.",
    buckets=LATENCY_BUCKETS,
)
CHANGES_APPLIED = Counter("listboss_contacts_changes_applied_total", "Contact changes applied.")
CHANGES_SKIPPED = Counter(
    "listboss_contacts_changes_skipped_total", "Contact changes skipped: their event was already in the history."
)


class ChangeApplier:
    """``handle`` is the worker's item handler: decoded ``ContactChange`` messages in, one transaction."""

    def __init__(
        self,
        engine: Engine,
        on_committed: Callable[[], None] | None = None,
        person_keys: personal_data.PersonKeys | None = None,
    ):
        self._engine = engine
        # Opens sealed persons; the service always passes it (tests of clear changes need not).
        self._person_keys = person_keys
        # Lives as long as the applier: tag ids are learnt once per process.
        self._tag_ids = TagIds()
        # Called after each commit (the outbox relay's wake-up).
        self._on_committed = on_committed

    def apply(
        self,
        changes: Sequence[contact_change_pb2.ContactChange],
        persons: Sequence[tuple[str, dict[str, str]]] | None = None,
    ) -> AppliedBatch:
        """Applies ``changes``; ``persons`` holds each one's opened (email, contact data)."""
        started = time.perf_counter()
        decoded = messages.changes_from(changes, persons)
        result = handlers.apply_changes(UnitOfWork(self._engine), decoded, self._tag_ids)
        APPLY_SECONDS.observe(time.perf_counter() - started)
        CHANGES_APPLIED.inc(result.applied)
        CHANGES_SKIPPED.inc(result.skipped)
        return result

    async def handle(self, changes: Sequence[contact_change_pb2.ContactChange]) -> None:
        persons = await personal_data.open_changes(self._person_keys, changes)
        result = await asyncio.to_thread(self.apply, changes, persons)
        if self._on_committed is not None:
            self._on_committed()
        log.info("changes applied", applied=result.applied, skipped=result.skipped)
