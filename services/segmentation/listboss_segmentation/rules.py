"""The compiled rules of each product, cached in memory and kept fresh across replicas.

Each (producer, product) gets its rule index (automatic + ACTIVE custom
segmentations, compiled) on first use, from one query. After a committed
change the gRPC entrypoint broadcasts the product on core NATS
(:data:`RULES_CHANGED_SUBJECT`); every replica drops its entry and reloads it
on the next event, so a change is seen within the broadcast's latency, with no
restart and no query per event. A missed broadcast (a NATS outage) is covered
by the safety refresh: an entry older than ``max_age`` seconds is reloaded.

A load that races an invalidation is not kept: each key has a generation,
bumped by every invalidation, and a load stores its result only if the
generation it started with is still current.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog
from prometheus_client import Counter
from sqlalchemy.engine import Engine

from listboss_segmentation import domain, storage

log = structlog.get_logger("listboss.segmentation.rules")

RULES_CHANGED_SUBJECT = "listboss.segmentation.rules.changed"
SAFETY_REFRESH_SECONDS = 30.0

Key = tuple[str, str]  # (producer, product)


def change_message(producer: str, product: str) -> bytes:
    return json.dumps({"producer": producer, "product": product}).encode()


RULE_CACHE_LOADS = Counter(
    "listboss_segmentation_rule_cache_loads_total", "Products' rules loaded from the database (cache misses)."
)


class RuleCache:
    def __init__(
        self, engine: Engine, max_age: float = SAFETY_REFRESH_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        self._engine = engine
        self._max_age = max_age
        self._clock = clock
        self._entries: dict[Key, tuple[float, domain.RuleIndex]] = {}
        self._generations: dict[Key, int] = {}
        self.loads = 0  # for tests and logs: how many product loads hit the database

    def invalidate(self, producer: str, product: str) -> None:
        key = (producer, product)
        self._entries.pop(key, None)
        self._generations[key] = self._generations.get(key, 0) + 1

    def on_broadcast(self, payload: bytes) -> None:
        message = json.loads(payload)
        self.invalidate(message["producer"], message["product"])
        log.info("rules changed", producer=message["producer"], product=message["product"])

    def cached(self, producer: str, product: str) -> domain.RuleIndex | None:
        entry = self._entries.get((producer, product))
        if entry is None or self._clock() - entry[0] > self._max_age:
            return None
        return entry[1]

    async def rules(self, keys: Iterable[Key]) -> dict[Key, domain.RuleIndex]:
        """The rule index of each key, loading the missing or stale ones in one thread hop."""
        found: dict[Key, domain.RuleIndex] = {}
        missing: list[Key] = []
        for key in set(keys):
            index = self.cached(*key)
            if index is None:
                missing.append(key)
            else:
                found[key] = index
        while missing:
            generations = {key: self._generations.get(key, 0) for key in missing}
            started = self._clock()
            loaded = await asyncio.to_thread(self._load, missing)
            self.loads += len(missing)
            RULE_CACHE_LOADS.inc(len(missing))
            retry = []
            for key, index in loaded.items():
                found[key] = index
                if self._generations.get(key, 0) == generations[key]:
                    self._entries[key] = (started, index)
                else:
                    retry.append(key)  # changed while loading: use nothing older than the change
            missing = retry
        return found

    def _load(self, keys: list[Key]) -> dict[Key, domain.RuleIndex]:
        with self._engine.connect() as connection:
            return {
                key: domain.rule_index(storage.list_segmentations(connection, *key, state=domain.ACTIVE))
                for key in keys
            }


Notifier = Callable[[str, str], Awaitable[None]]
