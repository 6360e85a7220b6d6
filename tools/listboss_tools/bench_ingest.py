"""Ingest throughput: webhook requests/s over HTTP and batch-ingest events/s into JetStream.
Prints figures; passes or fails on nothing.

    python -m listboss_tools.bench_ingest --mode webhook        # or: listboss-bench-ingest
    python -m listboss_tools.bench_ingest --mode batch-ingest
    python -m listboss_tools.bench_ingest --mode webhook --requests 40000 --concurrency 128

It starts its own nats-server (JetStream in a temporary folder) and one ``listboss-ingest``
process on free loopback ports, waits for SERVING, then:

* ``webhook``: a concurrent aiohttp client posts the platform's example payloads
  (tests/data/hotmart), each with a distinct id, to ``POST /webhooks/hotmart/bench``; every
  request must be answered 200 with ``duplicate: false`` (stored by JetStream).
* ``batch-ingest``: a gRPC client sends pre-built ``BatchIngestEvents`` requests (distinct
  event ids) with a few calls in flight; every event must come back ACCEPTED.

Both are bounded by a count and by ``--max-seconds``; only loopback is used. The bodies and
requests are built before the clock starts, so the figures are the server's, though the client
shares the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from listboss_common.auth import issue_token
from listboss_common.keys import SigningKey, write_jwks
from listboss_common.personal_data import new_data_key
from listboss_common.processes import NatsServer, ServiceProcess, free_port, wait_serving
from listboss_tools.suite_files import REPO_ROOT

FIXTURES_DIR = REPO_ROOT / "tests" / "data" / "hotmart"
PRODUCER = "bench"


class IngestUnderTest:
    """nats-server and one ingest process on free loopback ports, in ``folder``."""

    def __init__(self, folder: Path, extra_env: dict[str, str] | None = None):
        self.folder = folder
        self.grpc_port, self.http_port = free_port(), free_port()
        self.signing_key = SigningKey.generate()
        write_jwks(folder / "jwks.json", [self.signing_key])
        self.hottok = secrets.token_urlsafe(24)
        self.nats = NatsServer(folder / "nats", capture=False)
        env = {
            **os.environ,
            "LISTBOSS_GRPC_ADDRESS": f"127.0.0.1:{self.grpc_port}",
            "LISTBOSS_METRICS_ADDRESS": "127.0.0.1:0",  # a free port: never clash with a running suite
            "LISTBOSS_HTTP_ADDRESS": f"127.0.0.1:{self.http_port}",
            "LISTBOSS_NATS_URL": self.nats.url,
            "LISTBOSS_JWKS_FILE": str(folder / "jwks.json"),
            "LISTBOSS_DATA_KEY": new_data_key(),
            "LISTBOSS_WEBHOOK_TOKENS": f"{PRODUCER}={self.hottok}",
            "LISTBOSS_LOG_FORMAT": "json",
            "LISTBOSS_LOG_LEVEL": "INFO",  # one line per request, as in production
            **(extra_env or {}),
        }
        # Its log lines are not read: a reader thread would take the GIL from the client.
        self.ingest = ServiceProcess("ingest", env, address=f"127.0.0.1:{self.grpc_port}", capture=False)

    def __enter__(self) -> IngestUnderTest:
        try:
            self.nats.start()
            self.ingest.start()
            wait_serving([self.ingest])
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.ingest.child is not None:  # first: while it drains it still needs NATS
            self.ingest.child.stop()
        self.nats.stop()

    @property
    def pid(self) -> int:
        assert self.ingest.child is not None
        return self.ingest.child.pid


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (Linux /proc), 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# --- webhook mode ----------------------------------------------------------------------------


def webhook_bodies(count: int) -> list[bytes]:
    documents = [json.loads(path.read_text()) for path in sorted(FIXTURES_DIR.glob("*.json"))]
    bodies = []
    for index in range(count):
        document = documents[index % len(documents)]
        document["id"] = uuid.uuid4().hex
        document["creation_date"] = int(time.time() * 1000)
        bodies.append(json.dumps(document).encode())
    return bodies


async def run_webhooks(target: IngestUnderTest, bodies: list[bytes], concurrency: int, max_seconds: float) -> dict:
    import aiohttp

    url = f"http://127.0.0.1:{target.http_port}/webhooks/hotmart/{PRODUCER}"
    headers = {"Content-Type": "application/json", "X-HOTMART-HOTTOK": target.hottok}
    queue = list(reversed(bodies))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        # Warm up (connections, code paths) outside the measurement.
        for body in webhook_bodies(concurrency):
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
        deadline = time.perf_counter() + max_seconds

        async def client() -> None:
            while queue and time.perf_counter() < deadline:
                body = queue.pop()
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    answer = await response.read()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status != 200 or json.loads(answer)["duplicate"]:
                    raise RuntimeError(f"unexpected answer {response.status}: {answer[:200]!r}")

        cpu_before = _cpu_seconds(target.pid)
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(target.pid) - cpu_before
    latencies.sort()
    done = len(latencies)
    return {
        "requests": done,
        "seconds": elapsed,
        "rate": done / elapsed,
        "p50_ms": latencies[done // 2] * 1000,
        "p99_ms": latencies[min(done - 1, int(done * 0.99))] * 1000,
        "statuses": statuses,
        "ingest_cpu_per_request_us": cpu / done * 1e6 if done else 0.0,
    }


# --- batch-ingest mode -----------------------------------------------------------------------


def batch_requests(events: int, batch: int) -> list[bytes]:
    from listboss.events.v1 import event_pb2
    from listboss.ingest.v1 import ingest_service_pb2

    rng = random.Random(7)
    types = [value for value in range(1, 16)]
    now = int(time.time())
    requests = []
    for start in range(0, events, batch):
        request = ingest_service_pb2.BatchIngestEventsRequest(request_id=uuid.uuid4().hex)
        for _ in range(min(batch, events - start)):
            person = rng.randrange(50_000)
            event = request.events.add(
                id=uuid.uuid4().hex,
                producer=PRODUCER,
                type=rng.choice(types),
                product=event_pb2.Product(id=str(rng.randrange(5)), name="Benchmark course"),
                person=event_pb2.Person(email=f"Person{person}@Example.com ", name=f"Person {person}"),
            )
            event.occur_time.seconds = now
        requests.append(request.SerializeToString())
    return requests


async def run_batches(target: IngestUnderTest, requests: list[bytes], concurrency: int, max_seconds: float) -> dict:
    import grpc

    from listboss.ingest.v1 import ingest_service_pb2

    metadata = (("authorization", f"Bearer {issue_token(target.signing_key, PRODUCER)}"),)
    options = [("grpc.enable_http_proxy", 0), ("grpc.max_send_message_length", 16 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{target.grpc_port}", options=options) as channel:
        call = channel.unary_unary(
            "/listboss.ingest.v1.IngestService/BatchIngestEvents",
            request_serializer=None,  # requests are already serialized
            response_deserializer=ingest_service_pb2.BatchIngestEventsResponse.FromString,
        )
        await call(requests[0], metadata=metadata, timeout=60)  # warm-up, not counted
        queue = list(reversed(requests[1:]))
        deadline = time.perf_counter() + max_seconds
        accepted = 0
        latencies: list[float] = []

        async def client() -> None:
            nonlocal accepted
            while queue and time.perf_counter() < deadline:
                request = queue.pop()
                started = time.perf_counter()
                reply = await call(request, metadata=metadata, timeout=60)
                latencies.append(time.perf_counter() - started)
                if reply.rejected_count or reply.duplicate_count:
                    raise RuntimeError(f"{reply.rejected_count} rejected, {reply.duplicate_count} duplicates")
                accepted += reply.accepted_count

        cpu_before = _cpu_seconds(target.pid)
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(target.pid) - cpu_before
    return {
        "events": accepted,
        "calls": len(latencies),
        "seconds": elapsed,
        "rate": accepted / elapsed,
        "call_p50_ms": statistics.median(latencies) * 1000,
        "ingest_cpu_per_event_us": cpu / accepted * 1e6 if accepted else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["webhook", "batch-ingest"], required=True)
    parser.add_argument("--requests", type=int, default=20_000, help="webhook: requests to send")
    parser.add_argument("--events", type=int, default=500_000, help="batch-ingest: events to send")
    parser.add_argument("--batch", type=int, default=10_000, help="batch-ingest: events per call (max 10000)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="requests in flight (default: webhook 64, batch-ingest 3)"
    )
    parser.add_argument("--max-seconds", type=float, default=60.0, help="stop sending after this long")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="listboss-bench-ingest-") as folder:
        if args.mode == "webhook":
            concurrency = args.concurrency or 64
            bodies = webhook_bodies(args.requests)
            with IngestUnderTest(Path(folder)) as target:
                result = asyncio.run(run_webhooks(target, bodies, concurrency, args.max_seconds))
        else:
            concurrency = args.concurrency or 3
            requests = batch_requests(args.events + args.batch, args.batch)  # + the warm-up call
            with IngestUnderTest(Path(folder)) as target:
                result = asyncio.run(run_batches(target, requests, concurrency, args.max_seconds))

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
    if args.mode == "webhook":
        print(
            f"webhook: {result['requests']} requests, {concurrency} in flight, {result['seconds']:.2f} s: "
            f"{result['rate']:,.0f} requests/s (each stored by JetStream before the 200)"
        )
        print(
            f"latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; "
            f"ingest CPU {result['ingest_cpu_per_request_us']:.0f} us/request; statuses {result['statuses']}"
        )
    else:
        print(
            f"batch-ingest: {result['events']:,} events in {result['calls']} calls of {args.batch}, "
            f"{concurrency} in flight, {result['seconds']:.2f} s: {result['rate']:,.0f} events/s "
            f"acknowledged by JetStream"
        )
        print(f"call p50 {result['call_p50_ms']:.0f} ms; ingest CPU {result['ingest_cpu_per_event_us']:.1f} us/event")


if __name__ == "__main__":
    main()
