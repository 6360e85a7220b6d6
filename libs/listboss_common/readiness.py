"""Whether a process can do its work now: the dependencies it finds missing.

Bus workers and the NATS connection report here when a dependency goes away and
when it is back; the gRPC server's health service follows it, so an orchestrator
sees ``NOT_SERVING`` for exactly as long as the process is waiting on something.
"""

from __future__ import annotations

from collections.abc import Callable

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
