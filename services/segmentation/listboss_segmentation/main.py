"""``listboss-segmentation``: the segmentation service process.

Environment: LISTBOSS_GRPC_ADDRESS (default 127.0.0.1:50052), LISTBOSS_METRICS_ADDRESS (Prometheus
/metrics, default 127.0.0.1:9102), LISTBOSS_NATS_URL,
LISTBOSS_AUTH_SECRET, LISTBOSS_DATABASE_URL (default sqlite:///segmentation.db).
"""

from __future__ import annotations

import asyncio

from listboss.segmentation.v1 import segmentation_service_pb2, segmentation_service_pb2_grpc
from listboss_common import bus
from listboss_common.config import ServiceConfig, env
from listboss_common.db import create_engine
from listboss_common.grpc_server import ServiceBinding
from listboss_common.logs import configure_logging
from listboss_common.readiness import DatabaseProbe, Readiness
from listboss_common.service import run_service
from listboss_common.worker import PullWorker, WorkerSpec
from listboss_segmentation import storage
from listboss_segmentation.backfill import Backfiller
from listboss_segmentation.consumer import EventProcessor
from listboss_segmentation.grpc_api import SegmentationServicer
from listboss_segmentation.rules import RULES_CHANGED_SUBJECT, RuleCache, change_message

SERVICE_NAME = segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"].full_name
# A fetch of 100 messages (webhooks carry one event each, batches up to 512 KiB of them),
# segmented 2,000 events at a time.
EVENTS_WORKER = WorkerSpec(
    stream=bus.EVENTS, durable="segmentation", items=bus.EVENT_ITEMS, batch_size=100, max_items=2_000
)


async def run() -> None:
    config = ServiceConfig.from_env(default_grpc_address="127.0.0.1:50052", default_metrics_address="127.0.0.1:9102")
    engine = create_engine(env("LISTBOSS_DATABASE_URL", "sqlite:///segmentation.db"))
    storage.migrate_database(engine)

    readiness = Readiness()
    nc = await bus.connect(config.nats_url, name="listboss-segmentation", readiness=readiness)
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.EVENTS, bus.CHANGES, bus.DEADLETTER])
    # Every replica hears every rule change (core NATS, no queue group) and drops its cached rules.
    rules = RuleCache(engine)
    await bus.listen(nc, RULES_CHANGED_SUBJECT, rules.on_broadcast)

    async def notify(producer: str, product: str) -> None:
        rules.invalidate(producer, product)  # this replica at once, the others through NATS
        await bus.broadcast(nc, RULES_CHANGED_SUBJECT, change_message(producer, product))

    worker = PullWorker(js, EVENTS_WORKER, EventProcessor(js, engine, rules).handle, readiness)
    servicer = SegmentationServicer(engine, notify=notify, backfiller=Backfiller(js, engine))
    binding = ServiceBinding(
        SERVICE_NAME,
        lambda server: segmentation_service_pb2_grpc.add_SegmentationServiceServicer_to_server(servicer, server),
    )
    await run_service(
        config,
        [binding],
        nc,
        [worker, DatabaseProbe(engine, readiness)],
        on_stopped=engine.dispose,
        readiness=readiness,
    )


def main() -> None:
    configure_logging("segmentation")
    asyncio.run(run())


if __name__ == "__main__":
    main()
