"""The bus entrypoint: applies the chunks of contact changes its worker hands it, one
transaction each (the worker bounds the chunk, isolates a failing change and waits out
outages: :mod:`listboss_common.worker`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from nats.aio.msg import Msg
from sqlalchemy.engine import Engine

from listboss.changes.v1 import contact_change_pb2
from listboss_common import bus
from listboss_contacts.apply import TagIds, apply_changes

log = structlog.get_logger("listboss.contacts.changes")


def decode_changes(messages: Sequence[Msg]) -> list[contact_change_pb2.ContactChange]:
    return bus.unpack(messages, bus.CHANGE_ITEMS)


class ChangeApplier:
    def __init__(self, engine: Engine, on_committed: Callable[[], None] | None = None):
        self._engine = engine
        self._tag_ids = TagIds()
        # Called after each commit (the outbox relay's wake-up).
        self._on_committed = on_committed

    def apply(self, changes: Sequence[contact_change_pb2.ContactChange]):
        with self._engine.begin() as connection:
            result = apply_changes(connection, changes, self._tag_ids)
        self._tag_ids.commit(result.tag_ids)
        return result

    async def handle(self, changes: Sequence[contact_change_pb2.ContactChange]) -> None:
        result = await asyncio.to_thread(self.apply, changes)
        if self._on_committed is not None:
            self._on_committed()
        log.info("changes applied", applied=result.applied, skipped=result.skipped)
