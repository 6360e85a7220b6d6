"""Per-producer rate limits: a token bucket for each producer, counting events.

Every producer has a bucket holding up to ``burst`` tokens that refills at
``events_per_second``; a request costs one token per event it carries and passes only when the
bucket holds that many, so a producer may send ``burst`` events at once and then
``events_per_second`` on average. Buckets are independent: one producer's flood empties its own
bucket, never another's, and the refusal happens before any expensive work (normalizing,
publishing), so refused requests stay cheap and the service keeps its time for the others.

A request whose events come from several producers (the internal role's batches) takes from
every bucket it names or from none: it is accepted or refused whole. A request larger than the
burst could never pass, so it is refused as bad input (:class:`RequestTooLarge`) instead of being
told to retry forever.

Memory is bounded: a bucket idle long enough to have refilled completely is the same as no
bucket, so it is dropped (the least recently used first, checked on every acquisition); a hard
cap of buckets bounds memory even if a huge number of producers are active within one refill
period (the oldest is dropped: its producer starts again from a full bucket).

The limiter is synchronous and cheap (no I/O); a lock makes it safe to share between threads,
though the services call it from their event loop only.

Configuration (docs/operations.md): ``LISTBOSS_RATE_LIMIT_EVENTS_PER_SECOND`` and
``LISTBOSS_RATE_LIMIT_BURST``, per producer; 0 in either turns the limit off.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from listboss_common.config import ConfigError, env_int
from listboss_common.errors import invalid_field, resource_exhausted
from listboss_common.metrics import RATE_LIMITED_REQUESTS

RATE_ENV = "LISTBOSS_RATE_LIMIT_EVENTS_PER_SECOND"
BURST_ENV = "LISTBOSS_RATE_LIMIT_BURST"
# Above one ingest replica's measured capacity (docs/benchmarks.md: ~60,000-83,000 batched
# events/s from one producer), so the benchmarks and a single busy producer are never throttled
# by default; where many producers share a replica, set a lower figure.
DEFAULT_EVENTS_PER_SECOND = 100_000
# Two seconds at the default rate: a backlog replayed at once (100,000 events) passes.
DEFAULT_BURST = 200_000
# Enough for every producer of a large platform active within one refill period.
MAX_BUCKETS = 100_000

REASON = "RATE_LIMITED"


@dataclass(frozen=True)
class RateLimitSettings:
    """Per producer: tokens (events) added each second, and the most a bucket holds."""

    events_per_second: int
    burst: int

    @property
    def enabled(self) -> bool:
        return self.events_per_second > 0 and self.burst > 0

    @classmethod
    def from_env(cls) -> RateLimitSettings:
        rate = env_int(RATE_ENV, DEFAULT_EVENTS_PER_SECOND)
        burst = env_int(BURST_ENV, DEFAULT_BURST)
        if rate < 0:
            raise ConfigError(f"{RATE_ENV} must be 0 (no limit) or more, got {rate}")
        if burst < 0:
            raise ConfigError(f"{BURST_ENV} must be 0 (no limit) or more, got {burst}")
        return cls(rate, burst)


class RequestTooLarge(ValueError):
    """A request costing more than the burst: no wait would ever let it pass."""


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float):
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """Token buckets keyed by producer; see the module docstring.

    ``clock`` gives seconds that only go forward (``time.monotonic``; tests inject their own).
    """

    def __init__(
        self,
        events_per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ):
        if events_per_second <= 0 or burst < 1:
            raise ValueError("a rate limiter needs a positive rate and a burst of at least 1")
        self.events_per_second = float(events_per_second)
        self.burst = burst
        self._clock = clock
        self._max_buckets = max_buckets
        # Time for an empty bucket to refill completely: a bucket idle that long is full.
        self._refill_seconds = burst / self.events_per_second
        # Least recently used first: the eviction sweep stops at the first bucket still in use.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: RateLimitSettings) -> RateLimiter | None:
        """A limiter for ``settings``, or None when they turn limits off."""
        return cls(settings.events_per_second, settings.burst) if settings.enabled else None

    def __len__(self) -> int:
        return len(self._buckets)

    def try_acquire(self, costs: Mapping[str, int]) -> float:
        """Takes ``costs[producer]`` tokens from each producer's bucket, all or none.

        Returns 0.0 when they were taken; otherwise the seconds until every bucket holds enough
        (nothing is taken). Raises :class:`RequestTooLarge` when a cost exceeds the burst.
        """
        for cost in costs.values():
            if cost > self.burst:
                raise RequestTooLarge(f"costs {cost} events, more than the burst of {self.burst}")
        with self._lock:
            now = self._clock()
            self._evict_idle(now)
            buckets = [(self._refilled(producer, now), cost) for producer, cost in costs.items() if cost > 0]
            wait = max(((cost - bucket.tokens) / self.events_per_second for bucket, cost in buckets), default=0.0)
            if wait > 0:
                return wait
            for bucket, cost in buckets:
                bucket.tokens -= cost
            return 0.0

    def _refilled(self, producer: str, now: float) -> _Bucket:
        """The producer's bucket, refilled for the time since it was last used, now the most
        recently used."""
        bucket = self._buckets.get(producer)
        if bucket is None:
            bucket = self._buckets[producer] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
            return bucket
        elapsed = max(now - bucket.updated, 0.0)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.events_per_second)
        bucket.updated = now
        self._buckets.move_to_end(producer)
        return bucket

    def _evict_idle(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            producer, oldest = next(iter(buckets.items()))
            if now - oldest.updated < self._refill_seconds:
                return
            del buckets[producer]


def admit(limiter: RateLimiter | None, costs: Mapping[str, int], *, transport: str, field: str = "events") -> None:
    """Lets a request through ``limiter`` (None: no limit) or raises what it answers.

    ``costs``: events per producer. A cost above the burst is INVALID_ARGUMENT on ``field``
    (it could never pass); a bucket without enough tokens is RESOURCE_EXHAUSTED with a
    ``RetryInfo`` of the wait, counted by ``transport`` (``grpc``, ``http``).
    """
    if limiter is None:
        return
    try:
        wait = limiter.try_acquire(costs)
    except RequestTooLarge:
        raise invalid_field(
            field, f"must hold at most {limiter.burst} events, this server's rate-limit burst; send smaller requests"
        ) from None
    if wait <= 0:
        return
    RATE_LIMITED_REQUESTS.labels(transport).inc()
    raise resource_exhausted(
        f"the producer's rate limit of {limiter.events_per_second:g} events/s is used up; retry after the delay",
        REASON,
        wait,
        retry_after_seconds=str(retry_after_seconds(wait)),
    )


def retry_after_seconds(wait: float) -> int:
    """``wait`` as whole seconds for HTTP's ``Retry-After``: rounded up, at least 1."""
    return max(1, math.ceil(wait))
