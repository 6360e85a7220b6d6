"""A producer flooding IngestService, run as a process of its own by the fairness test
(test_rate_limits.py) so that its clients do not share the server's event loop.

    python flood_client.py HOST:PORT TOKEN CHANNELS IN_FLIGHT MAX_CALLS MAX_SECONDS BATCH

Prints ``flooding`` once its channels are ready, then sends ``BatchIngestEvents`` of ``BATCH``
events (64 requests built beforehand, in turn), ``IN_FLIGHT`` calls at a time over ``CHANNELS`` channels, until a line (or
the end) arrives on stdin, ``MAX_CALLS`` calls were made or ``MAX_SECONDS`` passed. Then prints
one JSON object: calls by status code name, and ``stopped_by`` (``told``, ``calls``, ``time``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import threading
import time
from collections import Counter

import grpc

from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from listboss_testing.events import make_event

# Distinct requests, sent in turn (a repeat is a duplicate batch: still work for the server).
PREBUILT_REQUESTS = 64


async def flood(address: str, token: str, channels: int, in_flight: int, max_calls: int, max_seconds: float, size: int):
    told = threading.Event()

    def wait_for_stop() -> None:
        sys.stdin.readline()
        told.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    opened = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    for channel in opened:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
    stubs = [pb_grpc.IngestServiceStub(channel) for channel in opened]
    metadata = (("authorization", f"Bearer {token}"),)
    counts: Counter[str] = Counter()
    numbers = itertools.count()
    deadline = time.monotonic() + max_seconds
    stopped_by: list[str] = []

    def stop_reason() -> str | None:
        if told.is_set():
            return "told"
        if counts.total() >= max_calls:
            return "calls"
        if time.monotonic() >= deadline:
            return "time"
        return None

    # Built before the flood: the client's own work must not take the cores the server needs.
    requests = [
        pb.BatchIngestEventsRequest(
            request_id=f"flood-{number}",
            events=[make_event(f"flood-{number}-{index}", producer="alice") for index in range(size)],
        )
        for number in range(PREBUILT_REQUESTS)
    ]

    async def client(stub) -> None:
        while (reason := stop_reason()) is None:
            request = requests[next(numbers) % PREBUILT_REQUESTS]
            try:
                await stub.BatchIngestEvents(request, metadata=metadata, timeout=10)
                counts["OK"] += 1
            except grpc.aio.AioRpcError as error:
                counts[error.code().name] += 1
        stopped_by.append(reason)

    print("flooding", flush=True)
    await asyncio.gather(*(client(stubs[index % channels]) for index in range(in_flight)))
    for channel in opened:
        await channel.close()
    print(json.dumps({**counts, "stopped_by": stopped_by[0]}), flush=True)


def main() -> None:
    address, token, channels, in_flight, max_calls, max_seconds, size = sys.argv[1:8]
    asyncio.run(flood(address, token, int(channels), int(in_flight), int(max_calls), float(max_seconds), int(size)))


if __name__ == "__main__":
    main()
