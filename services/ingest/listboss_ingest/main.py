"""``listboss-ingest``: the ingest service process.

Environment: LISTBOSS_GRPC_ADDRESS (default 127.0.0.1:50051), LISTBOSS_METRICS_ADDRESS (Prometheus
/metrics, default 127.0.0.1:9101), LISTBOSS_HTTP_ADDRESS (the
webhook receiver, default 127.0.0.1:8080), LISTBOSS_NATS_URL, LISTBOSS_AUTH_SECRET,
LISTBOSS_WEBHOOK_TOKENS_FILE and/or LISTBOSS_WEBHOOK_TOKENS (the producers' hottoks).
"""

from __future__ import annotations

import asyncio

import structlog

from listboss.ingest.v1 import ingest_service_pb2
from listboss_common import bus
from listboss_common.config import ServiceConfig, env
from listboss_common.grpc_server import ServiceBinding
from listboss_common.logs import configure_logging
from listboss_common.readiness import Readiness
from listboss_common.service import Companion, run_service
from listboss_ingest.grpc_api import IngestServicer, add_to_server
from listboss_ingest.http_api import WebhookReceiver
from listboss_ingest.publisher import EventPublisher
from listboss_ingest.webhook_tokens import WebhookTokens

SERVICE_NAME = ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
DEFAULT_HTTP_ADDRESS = "127.0.0.1:8080"

log = structlog.get_logger("listboss.ingest")


async def run() -> None:
    config = ServiceConfig.from_env(default_grpc_address="127.0.0.1:50051", default_metrics_address="127.0.0.1:9101")
    http_address = env("LISTBOSS_HTTP_ADDRESS", DEFAULT_HTTP_ADDRESS)
    tokens = WebhookTokens.from_env()  # read once, at start; a bad file fails the start
    if not len(tokens):
        log.warning("no webhook tokens configured: every webhook will be answered 401")
    readiness = Readiness()
    nc = await bus.connect(config.nats_url, name="listboss-ingest", readiness=readiness)
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.EVENTS])
    publisher = EventPublisher(js)
    servicer = IngestServicer(publisher)
    binding = ServiceBinding(SERVICE_NAME, lambda server: add_to_server(servicer, server))
    receiver = WebhookReceiver(publisher, tokens, shutdown_grace=config.shutdown_grace)
    webhooks = Companion("webhooks-http", lambda: receiver.start(http_address), receiver.stop)
    await run_service(config, [binding], nc, companions=[webhooks], readiness=readiness)


def main() -> None:
    configure_logging("ingest")
    asyncio.run(run())


if __name__ == "__main__":
    main()
