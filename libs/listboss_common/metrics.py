"""Prometheus metrics: the server every service process runs, and the metrics they share.

:func:`serve` starts the ``/metrics`` HTTP endpoint (``prometheus-client``'s, on a thread of
its own) on ``LISTBOSS_METRICS_ADDRESS``; :func:`listboss_common.service.run_service` calls
it, so every service serves metrics. The metrics below are those of the shared parts: gRPC
calls (the interceptor, :mod:`listboss_common.grpc_server`) and the bus workers
(:mod:`listboss_common.worker`). A service's own metrics live beside its code.

Conventions (prometheus.io/docs/practices/naming): base units in names (``_seconds``),
counters end in ``_total``; labels never carry personal data or producer ids, only values
from a small fixed set (methods, codes, consumer names, dependencies).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = structlog.get_logger("listboss.metrics")

# Latencies from a millisecond up to a minute (a long stream, a slow backlog batch).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Items in a batch: one webhook event up to a full transaction of changes.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)

# -- gRPC (the interceptor) -------------------------------------------------------------------

GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by method and gRPC status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end (a stream's whole life), by method.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)


def split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


# -- bus workers (label ``consumer``: the durable consumer's name) ----------------------------

CONSUMER_MESSAGES = Counter(
    "listboss_consumer_messages_handled_total",
    "Messages acked after every item they carry was handled or dead-lettered.",
    ["consumer"],
)
CONSUMER_ITEMS = Counter(
    "listboss_consumer_items_handled_total",
    "Items (events, contact changes) the handler took without failing.",
    ["consumer"],
)
CONSUMER_BATCH_ITEMS = Histogram(
    "listboss_consumer_batch_items",
    "Items in one fetched batch of messages.",
    ["consumer"],
    buckets=BATCH_SIZE_BUCKETS,
)
CONSUMER_BATCH_SECONDS = Histogram(
    "listboss_consumer_batch_handling_seconds",
    "Time to handle one fetched batch, from decoding to the last ack.",
    ["consumer"],
    buckets=LATENCY_BUCKETS,
)
CONSUMER_REDELIVERIES = Counter(
    "listboss_consumer_redeliveries_total",
    "Messages received again (JetStream num_delivered > 1).",
    ["consumer"],
)
CONSUMER_DEAD_LETTERS = Counter(
    "listboss_consumer_dead_letters_total",
    "Items or undecodable messages published to LISTBOSS_DEADLETTER.",
    ["consumer"],
)
CONSUMER_OUTAGE_WAITS = Counter(
    "listboss_consumer_outage_waits_total",
    "Back-off waits while a dependency (database, nats) was unavailable.",
    ["consumer", "dependency"],
)
CONSUMER_PENDING = Gauge(
    "listboss_consumer_pending_messages",
    "Messages on the stream not yet delivered to the consumer (JetStream num_pending; refreshed every few seconds).",
    ["consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "listboss_consumer_ack_pending_messages",
    "Messages delivered and not yet acked (JetStream num_ack_pending; refreshed every few seconds).",
    ["consumer"],
)


# -- rate limits (listboss_common.rate_limit) -------------------------------------------------

# Label ``transport``: ``grpc`` or ``http``; never the producer (ids stay out of labels).
RATE_LIMITED_REQUESTS = Counter(
    "listboss_rate_limited_requests_total",
    "Requests refused because their producer's rate limit was used up (RESOURCE_EXHAUSTED / 429).",
    ["transport"],
)


# -- the server --------------------------------------------------------------------------------


@dataclass
class MetricsServer:
    """The running ``/metrics`` endpoint; :meth:`stop` closes it."""

    server: WSGIServer
    thread: threading.Thread
    port: int

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"a metrics address must be host:port, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(address: str) -> MetricsServer | None:
    """Serves the default registry on ``address`` (``host:port``; port 0 picks a free one) at
    ``/metrics``; an empty address serves nothing."""
    if not address:
        return None
    host, port = split_address(address)
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as error:
        raise RuntimeError(f"could not bind the metrics server to {address}: {error.strerror}") from error
    bound = server.server_address[1]
    log.info("metrics server started", address=f"{host}:{bound}")
    return MetricsServer(server, thread, bound)
