"""``listboss-ingest``: the ingest service process.

Environment: LISTBOSS_GRPC_ADDRESS (default 127.0.0.1:50051), LISTBOSS_METRICS_ADDRESS (Prometheus
/metrics, default 127.0.0.1:9101), LISTBOSS_HTTP_ADDRESS (the
webhook receiver, default 127.0.0.1:8080), LISTBOSS_NATS_URL, LISTBOSS_JWKS_FILE,
LISTBOSS_WEBHOOK_TOKENS_FILE and/or LISTBOSS_WEBHOOK_TOKENS (the producers' hottoks),
LISTBOSS_TLS_CERT_FILE / LISTBOSS_TLS_KEY_FILE (HTTPS and gRPC over TLS, listboss_common.tls),
LISTBOSS_DATA_KEY (seals persons on the bus, listboss_common.personal_data),
LISTBOSS_RATE_LIMIT_EVENTS_PER_SECOND / LISTBOSS_RATE_LIMIT_BURST (per producer, listboss_common.rate_limit).
"""

from __future__ import annotations

import asyncio

import structlog

from listboss.ingest.v1 import ingest_service_pb2
from listboss_common import bus, personal_data
from listboss_common.config import ServiceConfig, env
from listboss_common.grpc_server import ServiceBinding
from listboss_common.logs import configure_logging
from listboss_common.rate_limit import RateLimiter, RateLimitSettings
from listboss_common.readiness import Readiness
from listboss_common.service import Companion, run_service, token_verifier
from listboss_ingest.grpc_api import METHOD_SCOPES, IngestServicer, add_to_server
from listboss_ingest.http_api import WebhookReceiver
from listboss_ingest.publisher import EventPublisher
from listboss_ingest.webhook_tokens import WebhookTokens

SERVICE_NAME = ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
DEFAULT_HTTP_ADDRESS = "127.0.0.1:8080"

log = structlog.get_logger("listboss.ingest")


async def run() -> None:
    config = ServiceConfig.from_env(default_grpc_address="127.0.0.1:50051", default_metrics_address="127.0.0.1:9101")
    verifier = token_verifier(config)  # refuses a missing or weak JWKS before anything starts
    http_address = env("LISTBOSS_HTTP_ADDRESS", DEFAULT_HTTP_ADDRESS)
    keyring = personal_data.Keyring.from_env()  # refuses a missing or weak key before anything starts
    tokens = WebhookTokens.from_env()  # read once, at start; a bad file fails the start
    # One limiter for both entrypoints: a producer's allowance is the same over gRPC and HTTP.
    rate_limiter = RateLimiter.from_settings(RateLimitSettings.from_env())
    if not len(tokens):
        log.warning("no webhook tokens configured: every webhook will be answered 401")
    readiness = Readiness()
    nc = await bus.connect(config.nats_url, name="listboss-ingest", readiness=readiness)
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.EVENTS, bus.PERSON_KEYS])
    person_keys = personal_data.PersonKeys(js, keyring)
    await person_keys.listen(nc)
    publisher = EventPublisher(js, person_keys=person_keys)
    servicer = IngestServicer(publisher, rate_limiter)
    binding = ServiceBinding(SERVICE_NAME, lambda server: add_to_server(servicer, server), METHOD_SCOPES)
    receiver = WebhookReceiver(publisher, tokens, shutdown_grace=config.shutdown_grace, rate_limiter=rate_limiter)
    http_tls = config.tls.http_ssl_context() if config.tls else None  # the gRPC port's certificate
    webhooks = Companion("webhooks-http", lambda: receiver.start(http_address, http_tls), receiver.stop)
    await run_service(config, [binding], nc, companions=[webhooks], readiness=readiness, verifier=verifier)


def main() -> None:
    configure_logging("ingest")
    asyncio.run(run())


if __name__ == "__main__":
    main()
