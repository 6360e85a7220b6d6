"""``listboss-segmentation``: the segmentation service process.

Environment: LISTBOSS_GRPC_ADDRESS (default 127.0.0.1:50052), LISTBOSS_METRICS_ADDRESS (Prometheus
/metrics, default 127.0.0.1:9102), LISTBOSS_NATS_URL,
LISTBOSS_JWKS_FILE, LISTBOSS_DATABASE_URL (default sqlite:///segmentation.db),
LISTBOSS_STATEMENT_TIMEOUT (seconds, the cap of an RPC's statements; default 30), LISTBOSS_DATA_KEY
(opens the persons sealed on the bus, listboss_common.personal_data).
"""

from __future__ import annotations

import asyncio

from listboss.segmentation.v1 import segmentation_service_pb2, segmentation_service_pb2_grpc
from listboss_common import bus, personal_data
from listboss_common.config import ServiceConfig, env
from listboss_common.db import create_engine, statement_timeout_from_env
from listboss_common.grpc_server import ServiceBinding
from listboss_common.logs import configure_logging
from listboss_common.readiness import DatabaseProbe, Readiness
from listboss_common.service import run_service, token_verifier
from listboss_common.worker import PullWorker, WorkerSpec
from listboss_segmentation import storage
from listboss_segmentation.backfill import Backfiller
from listboss_segmentation.consumer import EventProcessor
from listboss_segmentation.grpc_api import METHOD_SCOPES, SegmentationServicer
from listboss_segmentation.rules import RULES_CHANGED_SUBJECT, RuleCache, change_message

SERVICE_NAME = segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"].full_name
# A fetch of 100 messages (webhooks carry one event each, batches up to 512 KiB of them),
# segmented 2,000 events at a time.
EVENTS_WORKER = WorkerSpec(
    stream=bus.EVENTS, durable="segmentation", items=bus.EVENT_ITEMS, batch_size=100, max_items=2_000
)


async def run() -> None:
    config = ServiceConfig.from_env(default_grpc_address="127.0.0.1:50052", default_metrics_address="127.0.0.1:9102")
    verifier = token_verifier(config)  # refuses a missing or weak JWKS before anything starts
    keyring = personal_data.Keyring.from_env()  # refuses a missing or weak key before anything starts
    statement_timeout = statement_timeout_from_env()  # a bad value fails the start
    engine = create_engine(
        env("LISTBOSS_DATABASE_URL", "sqlite:///segmentation.db"), application_name="listboss-segmentation"
    )
    storage.migrate_database(engine)

    readiness = Readiness()
    nc = await bus.connect(config.nats_url, name="listboss-segmentation", readiness=readiness)
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.EVENTS, bus.CHANGES, bus.DEADLETTER, bus.PERSON_KEYS])
    person_keys = personal_data.PersonKeys(js, keyring)
    await person_keys.listen(nc)
    # Every replica hears every rule change (core NATS, no queue group) and drops its cached rules.
    rules = RuleCache(engine)
    await bus.listen(nc, RULES_CHANGED_SUBJECT, rules.on_broadcast)

    async def notify(producer: str, product: str) -> None:
        rules.invalidate(producer, product)  # this replica at once, the others through NATS
        await bus.broadcast(nc, RULES_CHANGED_SUBJECT, change_message(producer, product))

    worker = PullWorker(js, EVENTS_WORKER, EventProcessor(js, engine, rules, person_keys).handle, readiness)
    # Runs the backfills this replica accepts and takes over those whose replica died.
    backfiller = Backfiller(js, engine, person_keys)
    servicer = SegmentationServicer(engine, notify=notify, backfiller=backfiller, statement_timeout=statement_timeout)
    binding = ServiceBinding(
        SERVICE_NAME,
        lambda server: segmentation_service_pb2_grpc.add_SegmentationServiceServicer_to_server(servicer, server),
        METHOD_SCOPES,
    )
    await run_service(
        config,
        [binding],
        nc,
        [worker, backfiller, DatabaseProbe(engine, readiness)],
        on_stopped=engine.dispose,
        readiness=readiness,
        verifier=verifier,
    )


def main() -> None:
    configure_logging("segmentation")
    asyncio.run(run())


if __name__ == "__main__":
    main()
