"""Per-producer rate limits on ingest, over real gRPC and real HTTP with a real nats-server:
the answers (RESOURCE_EXHAUSTED with RetryInfo, 429 with Retry-After), that a refused request
stores nothing, and that one producer's flood leaves another's latency alone."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from listboss_common.metrics import RATE_LIMITED_REQUESTS
from listboss_common.rate_limit import RateLimiter
from listboss_ingest.grpc_api import METHOD_SCOPES, IngestServicer, add_to_server
from listboss_ingest.http_api import HOTTOK_HEADER, WebhookReceiver
from listboss_ingest.publisher import EventPublisher
from listboss_ingest.webhook_tokens import WebhookTokens
from listboss_testing import bearer, binding, make_event, refused_fields, rich_status, stored_events, token

REPO = Path(__file__).resolve().parents[3]
WEBHOOK = (REPO / "tests" / "data" / "hotmart" / "PURCHASE_APPROVED.json").read_text()
TOKENS = {"alice": "alice-hottok-0123456789", "bob": "bob-hottok-9876543210"}
FLOODER = Path(__file__).with_name("flood_client.py")


class FrozenClock:
    """Time stands still unless a test moves it: the buckets refill only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def limiter(clock) -> RateLimiter:
    """2 events/s and a burst of 10 per producer, on the frozen clock."""
    return RateLimiter(2, 10, clock=clock)


async def serve_ingest(grpc_server, js, limiter: RateLimiter | None):
    servicer = IngestServicer(EventPublisher(js), limiter)
    served = await grpc_server(
        [binding(pb.DESCRIPTOR.services_by_name["IngestService"], add_to_server, servicer, METHOD_SCOPES)]
    )
    return served, pb_grpc.IngestServiceStub(served.channel)


@pytest.fixture
async def ingest(grpc_server, js, limiter):
    return (await serve_ingest(grpc_server, js, limiter))[1]


@pytest.fixture
async def receiver(js, limiter):
    receiver = WebhookReceiver(EventPublisher(js), WebhookTokens(TOKENS), publish_timeout=2.0, rate_limiter=limiter)
    await receiver.start("127.0.0.1:0")
    yield receiver
    await receiver.stop()


@pytest.fixture
async def http(receiver):
    async with aiohttp.ClientSession(f"http://127.0.0.1:{receiver.port}") as session:
        yield session


def batch(prefix: str, count: int, producer: str = "alice") -> pb.BatchIngestEventsRequest:
    return pb.BatchIngestEventsRequest(
        request_id=f"{prefix}-request",
        events=[make_event(f"{prefix}-{index}", producer=producer) for index in range(count)],
    )


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo detail")


async def refused_for_rate(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    info, _ = rich_status(error)
    assert info.reason == "RATE_LIMITED"
    return error


async def post_webhook(http, producer: str, event_id: str, hottok: str | None = None):
    body = json.loads(WEBHOOK)
    body["id"] = event_id
    headers = {"Content-Type": "application/json", HOTTOK_HEADER: hottok or TOKENS[producer]}
    async with http.post(f"/webhooks/hotmart/{producer}", data=json.dumps(body), headers=headers) as response:
        return response.status, await response.json(), response.headers


# --- gRPC -------------------------------------------------------------------------------------


async def test_an_event_past_the_limit_is_resource_exhausted_with_retry_info(ingest, js):
    for index in range(10):
        await ingest.IngestEvent(pb.IngestEventRequest(event=make_event(f"e-{index}")), metadata=bearer("alice"))
    error = await refused_for_rate(
        ingest.IngestEvent(pb.IngestEventRequest(event=make_event("e-10")), metadata=bearer("alice"))
    )
    assert retry_delay(error) == pytest.approx(0.5)  # one token at 2/s
    assert "alice" not in (error.details() or "")
    assert len(await stored_events(js)) == 10


async def test_a_refused_batch_publishes_nothing_and_a_batch_costs_its_events(ingest, js, clock):
    first = await ingest.BatchIngestEvents(batch("first", 6), metadata=bearer("alice"))
    assert first.accepted_count == 6
    # 4 tokens left: a batch of 6 is refused whole, told to wait for the 2 missing.
    error = await refused_for_rate(ingest.BatchIngestEvents(batch("second", 6), metadata=bearer("alice")))
    assert retry_delay(error) == pytest.approx(1.0)
    assert [event.id for event in await stored_events(js)] == [f"first-{index}" for index in range(6)]
    clock.now += 1.0  # the delay it was told
    second = await ingest.BatchIngestEvents(batch("second", 6), metadata=bearer("alice"))
    assert second.accepted_count == 6
    assert len(await stored_events(js)) == 12


async def test_a_batch_larger_than_the_burst_is_invalid_argument_not_a_retry(ingest, js):
    assert await refused_fields(ingest.BatchIngestEvents(batch("big", 11), metadata=bearer("alice"))) == {"events"}
    assert await stored_events(js) == []
    # It spent nothing: the whole burst is still there.
    assert (await ingest.BatchIngestEvents(batch("fits", 10), metadata=bearer("alice"))).accepted_count == 10


async def test_one_producers_limit_leaves_anothers_alone(ingest, js):
    await ingest.BatchIngestEvents(batch("alice", 10), metadata=bearer("alice"))
    await refused_for_rate(ingest.IngestEvent(pb.IngestEventRequest(event=make_event("a")), metadata=bearer("alice")))
    response = await ingest.BatchIngestEvents(batch("bob", 10, producer="bob"), metadata=bearer("bob"))
    assert response.accepted_count == 10


async def test_an_internal_batch_charges_each_producer_for_its_events_all_or_nothing(ingest, js):
    mixed = pb.BatchIngestEventsRequest(
        request_id="mixed",
        events=[*batch("a", 8).events, *batch("b", 3, producer="bob").events],
    )
    assert (await ingest.BatchIngestEvents(mixed, metadata=bearer(None))).accepted_count == 11
    # Alice holds 2 and bob 7: a batch needing 3 of alice's is refused, bob's 3 are not taken.
    again = pb.BatchIngestEventsRequest(
        request_id="again",
        events=[*batch("a2", 3).events, *batch("b2", 3, producer="bob").events],
    )
    await refused_for_rate(ingest.BatchIngestEvents(again, metadata=bearer(None)))
    assert (await ingest.BatchIngestEvents(batch("b3", 7, producer="bob"), metadata=bearer(None))).accepted_count == 7
    assert len(await stored_events(js)) == 18


async def test_webhooks_over_grpc_share_the_producers_limit(ingest, js):
    await ingest.BatchIngestEvents(batch("fill", 10), metadata=bearer("alice"))
    request = pb.IngestWebhookRequest(parent="producers/alice", payload=WEBHOOK)
    await refused_for_rate(ingest.IngestWebhook(request, metadata=bearer("alice")))
    assert len(await stored_events(js)) == 10


async def test_refusals_are_counted_by_transport(ingest, js):
    before = RATE_LIMITED_REQUESTS.labels("grpc")._value.get()
    await ingest.BatchIngestEvents(batch("fill", 10), metadata=bearer("alice"))
    for index in range(3):
        await refused_for_rate(
            ingest.IngestEvent(pb.IngestEventRequest(event=make_event(f"x-{index}")), metadata=bearer("alice"))
        )
    assert RATE_LIMITED_REQUESTS.labels("grpc")._value.get() == before + 3


async def test_without_a_limiter_nothing_is_limited(grpc_server, js):
    _, ingest = await serve_ingest(grpc_server, js, None)
    for round_ in range(3):
        response = await ingest.BatchIngestEvents(batch(f"r{round_}", 1_000), metadata=bearer("alice"))
        assert response.accepted_count == 1_000


# --- HTTP -------------------------------------------------------------------------------------


async def test_a_webhook_past_the_limit_is_429_with_retry_after_and_not_stored(http, js):
    for index in range(10):
        status, _, _ = await post_webhook(http, "alice", f"w-{index}")
        assert status == 200
    before = RATE_LIMITED_REQUESTS.labels("http")._value.get()
    status, body, headers = await post_webhook(http, "alice", "w-10")
    assert status == 429
    assert headers["Retry-After"] == "1"  # 0.5 s, rounded up to whole seconds
    assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert body["error"]["reason"] == "RATE_LIMITED"
    assert RATE_LIMITED_REQUESTS.labels("http")._value.get() == before + 1
    assert "w-10" not in {event.id for event in await stored_events(js)}
    assert len(await stored_events(js)) == 10
    status, _, _ = await post_webhook(http, "bob", "w-bob")  # bob has a bucket of his own
    assert status == 200


async def test_a_wrong_token_is_401_and_spends_nothing_of_the_producers_allowance(http, js):
    for index in range(20):
        status, _, _ = await post_webhook(http, "alice", f"forged-{index}", hottok="not-alices-token-0000")
        assert status == 401
    for index in range(10):
        status, _, _ = await post_webhook(http, "alice", f"real-{index}")
        assert status == 200


async def test_http_and_grpc_share_one_allowance_per_producer(grpc_server, js, limiter, http):
    _, ingest = await serve_ingest(grpc_server, js, limiter)  # the receiver's limiter
    await ingest.BatchIngestEvents(batch("grpc", 10), metadata=bearer("alice"))
    status, _, headers = await post_webhook(http, "alice", "after-grpc")
    assert status == 429 and headers["Retry-After"] == "1"


# --- fairness ---------------------------------------------------------------------------------

# The flood: one client process (its clients must not share the server's event loop) with 8
# channels and 32 calls of 500 events in flight, until told to stop, 20,000 calls or 20 seconds.
FLOOD_CHANNELS = 8
FLOOD_IN_FLIGHT = 32
FLOOD_MAX_CALLS = 20_000
FLOOD_MAX_SECONDS = 20.0
FLOOD_BATCH = 500
SAMPLES = 40
# The floor: on a 2-core machine the server, this test's client, the flooding process (and
# whatever else runs) share two cores, and even a refused call takes the server's event loop for
# a moment (the token check, its log line, the status: ~0.3 ms, at ~1,000 refusals a second), so
# bob's sub-millisecond median roughly triples during a well-limited flood (measured 3-6 ms) and
# moves by milliseconds with the machine's other load. 10 ms absorbs that, and still fails the
# test at once when refusals are not cheap or the flood is not refused: without a limit the same
# flood (its 500-event batches normalized and published) put bob's median at ~45 ms.
LATENCY_FLOOR_SECONDS = 0.010


async def victim_latencies(ingest, prefix: str) -> list[float]:
    latencies = []
    metadata = bearer("bob")
    for index in range(SAMPLES):
        request = pb.IngestEventRequest(event=make_event(f"{prefix}-{index}", producer="bob"))
        started = time.perf_counter()
        await ingest.IngestEvent(request, metadata=metadata, timeout=10)
        latencies.append(time.perf_counter() - started)
    return latencies


async def test_one_producers_flood_does_not_slow_another_producer(grpc_server, js):
    # Each producer may send 500 events/s with bursts of 1,000: the flood passes at first, then
    # mostly bounces; bob's 120 single events stay far inside his own allowance.
    served, ingest = await serve_ingest(grpc_server, js, RateLimiter(500, 1_000))
    await victim_latencies(ingest, "warm")  # the channel and the server's first calls
    before = await victim_latencies(ingest, "before")

    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        str(FLOODER),
        f"127.0.0.1:{served.port}",
        token("alice"),
        str(FLOOD_CHANNELS),
        str(FLOOD_IN_FLIGHT),
        str(FLOOD_MAX_CALLS),
        str(FLOOD_MAX_SECONDS),
        str(FLOOD_BATCH),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert flood.stdout is not None
        ready = await asyncio.wait_for(flood.stdout.readline(), timeout=30)
        assert ready.strip() == b"flooding"
        await asyncio.sleep(1.0)  # the flood in full swing: alice's burst is spent by now
        during = await victim_latencies(ingest, "during")
        output, _ = await asyncio.wait_for(flood.communicate(b"stop\n"), timeout=FLOOD_MAX_SECONDS + 30)
    finally:
        if flood.returncode is None:
            flood.kill()
            await flood.wait()
    counts = json.loads(output)
    median_before, median_during = statistics.median(before), statistics.median(during)
    print(
        f"bob's median latency: {median_before * 1000:.2f} ms before, {median_during * 1000:.2f} ms during "
        f"the flood; alice's calls: {counts}"
    )
    assert counts["stopped_by"] == "told", counts  # the flood lasted through bob's sampling
    assert counts.get("RESOURCE_EXHAUSTED", 0) > 0, counts
    assert counts.get("OK", 0) > 0, counts  # alice's own allowance did pass
    assert set(counts) <= {"OK", "RESOURCE_EXHAUSTED", "stopped_by"}, counts
    assert median_during <= 2 * median_before + LATENCY_FLOOR_SECONDS
