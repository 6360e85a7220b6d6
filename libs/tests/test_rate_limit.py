"""The per-producer token buckets, on an injected clock: no test sleeps."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from listboss_common.config import ConfigError
from listboss_common.errors import ServiceError
from listboss_common.metrics import RATE_LIMITED_REQUESTS
from listboss_common.rate_limit import (
    BURST_ENV,
    DEFAULT_BURST,
    DEFAULT_EVENTS_PER_SECOND,
    RATE_ENV,
    RateLimiter,
    RateLimitSettings,
    RequestTooLarge,
    admit,
    retry_after_seconds,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limiter(clock: FakeClock, rate: float = 10, burst: int = 20, **kwargs) -> RateLimiter:
    return RateLimiter(rate, burst, clock=clock, **kwargs)


def test_a_new_producer_may_spend_the_whole_burst_at_once_and_then_waits(clock):
    limits = limiter(clock)
    assert limits.try_acquire({"alice": 20}) == 0.0
    assert limits.try_acquire({"alice": 1}) == pytest.approx(0.1)  # one token at 10/s


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst(clock):
    limits = limiter(clock)
    assert limits.try_acquire({"alice": 20}) == 0.0
    clock.advance(0.5)  # five tokens back
    assert limits.try_acquire({"alice": 6}) == pytest.approx(0.1)
    assert limits.try_acquire({"alice": 5}) == 0.0
    clock.advance(3600)  # an hour idle refills to the burst, not to 36,000
    assert limits.try_acquire({"alice": 20}) == 0.0
    assert limits.try_acquire({"alice": 1}) > 0


def test_a_batch_costs_one_token_per_event(clock):
    limits = limiter(clock)
    assert limits.try_acquire({"alice": 15}) == 0.0
    # 5 left: a batch of 6 waits for the sixth token, and takes nothing meanwhile.
    assert limits.try_acquire({"alice": 6}) == pytest.approx(0.1)
    assert limits.try_acquire({"alice": 5}) == 0.0


def test_a_refused_request_takes_nothing(clock):
    limits = limiter(clock)
    assert limits.try_acquire({"alice": 18}) == 0.0
    for _ in range(5):
        assert limits.try_acquire({"alice": 3}) > 0
    assert limits.try_acquire({"alice": 2}) == 0.0


def test_producers_have_buckets_of_their_own(clock):
    limits = limiter(clock)
    assert limits.try_acquire({"alice": 20}) == 0.0
    assert limits.try_acquire({"alice": 1}) > 0
    assert limits.try_acquire({"bob": 20}) == 0.0


def test_a_request_of_several_producers_is_taken_from_every_bucket_or_from_none(clock):
    limits = limiter(clock)
    assert limits.try_acquire({"bob": 15}) == 0.0
    # Bob holds 5: the request waits for bob's sixth token and takes nothing from alice.
    assert limits.try_acquire({"alice": 10, "bob": 6}) == pytest.approx(0.1)
    assert limits.try_acquire({"alice": 20}) == 0.0
    clock.advance(2.0)
    assert limits.try_acquire({"alice": 10, "bob": 6}) == 0.0
    assert limits.try_acquire({"alice": 11}) > 0  # both buckets paid: 10 and 14 left
    assert limits.try_acquire({"bob": 15}) > 0
    assert limits.try_acquire({"bob": 14}) == 0.0


def test_the_wait_is_that_of_the_emptiest_bucket(clock):
    limits = limiter(clock)
    limits.try_acquire({"alice": 20, "bob": 10})
    assert limits.try_acquire({"alice": 5, "bob": 5}) == pytest.approx(0.5)


def test_a_request_larger_than_the_burst_could_never_pass(clock):
    limits = limiter(clock)
    with pytest.raises(RequestTooLarge):
        limits.try_acquire({"alice": 21})
    assert limits.try_acquire({"alice": 20}) == 0.0  # and it took nothing


def test_buckets_idle_until_full_are_dropped(clock):
    limits = limiter(clock)  # refills in 2 s
    for producer in range(1_000):
        limits.try_acquire({f"producer-{producer}": 1})
    assert len(limits) == 1_000
    clock.advance(1.0)
    limits.try_acquire({"alice": 1})
    assert len(limits) == 1_001  # not yet refilled: still needed
    clock.advance(1.5)
    limits.try_acquire({"bob": 1})
    assert len(limits) == 2  # the thousand refilled and were dropped; alice (1.5 s idle) stays


def test_a_dropped_bucket_comes_back_full_as_if_it_had_been_kept(clock):
    limits = limiter(clock)
    assert limits.try_acquire({"alice": 20}) == 0.0
    clock.advance(2.0)
    limits.try_acquire({"bob": 1})  # sweeps alice's refilled bucket
    assert len(limits) == 1
    assert limits.try_acquire({"alice": 20}) == 0.0
    assert limits.try_acquire({"alice": 1}) > 0


def test_the_number_of_buckets_is_capped(clock):
    limits = limiter(clock, max_buckets=100)
    for producer in range(1_000):
        limits.try_acquire({f"producer-{producer}": 20})
    assert len(limits) == 100
    assert limits.try_acquire({"producer-999": 1}) > 0  # the newest are kept


def test_settings_default_and_turn_off_with_zero(monkeypatch):
    monkeypatch.delenv(RATE_ENV, raising=False)
    monkeypatch.delenv(BURST_ENV, raising=False)
    settings = RateLimitSettings.from_env()
    assert (settings.events_per_second, settings.burst) == (DEFAULT_EVENTS_PER_SECOND, DEFAULT_BURST)
    assert RateLimiter.from_settings(settings) is not None
    monkeypatch.setenv(RATE_ENV, "0")
    assert RateLimiter.from_settings(RateLimitSettings.from_env()) is None
    monkeypatch.setenv(RATE_ENV, "50")
    monkeypatch.setenv(BURST_ENV, "0")
    assert RateLimiter.from_settings(RateLimitSettings.from_env()) is None


@pytest.mark.parametrize(("name", "value"), [(RATE_ENV, "-1"), (BURST_ENV, "-5"), (RATE_ENV, "fast")])
def test_bad_settings_are_refused_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        RateLimitSettings.from_env()


def test_admit_answers_resource_exhausted_with_retry_info_and_counts_it(clock):
    limits = limiter(clock)
    admit(limits, {"alice": 20}, transport="grpc")
    before = RATE_LIMITED_REQUESTS.labels("grpc")._value.get()
    with pytest.raises(ServiceError) as caught:
        admit(limits, {"alice": 15}, transport="grpc")
    error = caught.value
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "RATE_LIMITED"
    assert error.metadata["retry_after_seconds"] == "2"
    assert "alice" not in error.message
    details = error.to_status().details
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in details if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR))
    assert retry.retry_delay.ToNanoseconds() == 1_500_000_000
    assert RATE_LIMITED_REQUESTS.labels("grpc")._value.get() == before + 1


def test_admit_answers_invalid_argument_for_a_request_over_the_burst(clock):
    with pytest.raises(ServiceError) as caught:
        admit(limiter(clock), {"alice": 21}, transport="grpc")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["events"]
    assert "20" in caught.value.violations[0].description


def test_admit_without_a_limiter_lets_everything_through():
    admit(None, {"alice": 10**9}, transport="http")


@pytest.mark.parametrize(("wait", "seconds"), [(0.001, 1), (1.0, 1), (1.01, 2), (59.5, 60)])
def test_retry_after_is_whole_seconds_rounded_up(wait, seconds):
    assert retry_after_seconds(wait) == seconds
