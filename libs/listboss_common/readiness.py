"""Whether a process can do its work now: the dependencies it finds missing.

Bus workers and the NATS connection report here when a dependency goes away and
when it is back; the gRPC server's health service follows it, so an orchestrator
sees ``NOT_SERVING`` for exactly as long as the process is waiting on something.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import sqlalchemy as sa
import structlog

log = structlog.get_logger("listboss.readiness")


class Readiness:
    def __init__(self) -> None:
        self._missing: dict[str, str] = {}
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def ready(self) -> bool:
        return not self._missing

    @property
    def missing(self) -> dict[str, str]:
        """Each missing dependency with why it is considered missing."""
        return dict(self._missing)

    def down(self, dependency: str, reason: str) -> None:
        was_ready = self.ready
        if dependency not in self._missing:
            log.warning("dependency unavailable", dependency=dependency, reason=reason)
        self._missing[dependency] = reason
        if was_ready:
            self._notify()

    def up(self, dependency: str) -> None:
        if self._missing.pop(dependency, None) is None:
            return
        log.info("dependency available again", dependency=dependency)
        if self.ready:
            self._notify()

    def watch(self, listener: Callable[[bool], None]) -> None:
        """Calls ``listener(ready)`` on every change between ready and not ready."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self.ready)


class DatabaseProbe:
    """Checks the database every ``interval`` seconds, so health tells the truth even
    while no work arrives to find it failing. Shaped like a bus worker (``subscribe``,
    ``run(stop)``) so a service runs and stops it with the others."""

    DEPENDENCY = "database"

    def __init__(self, engine: sa.Engine, readiness: Readiness, interval: float = 2.0):
        self._engine = engine
        self._readiness = readiness
        self._interval = interval

    async def subscribe(self) -> None:
        pass

    async def check(self) -> bool:
        try:
            await asyncio.to_thread(self._select_one)
        except Exception as error:
            self._readiness.down(self.DEPENDENCY, repr(error)[:300])
            return False
        self._readiness.up(self.DEPENDENCY)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.check()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval)

    def _select_one(self) -> None:
        with self._engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
