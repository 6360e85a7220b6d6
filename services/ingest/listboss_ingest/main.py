"""``listboss-ingest``: the ingest service process.

Environment: LISTBOSS_GRPC_ADDRESS (default 127.0.0.1:50051), LISTBOSS_NATS_URL,
LISTBOSS_AUTH_SECRET.
"""

from __future__ import annotations

import asyncio

from listboss.ingest.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from listboss_common import bus
from listboss_common.config import ServiceConfig
from listboss_common.grpc_server import ServiceBinding
from listboss_common.logs import configure_logging
from listboss_common.service import run_service
from listboss_ingest.grpc_api import IngestServicer
from listboss_ingest.publisher import EventPublisher

SERVICE_NAME = ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


async def run() -> None:
    config = ServiceConfig.from_env(default_grpc_address="127.0.0.1:50051")
    nc = await bus.connect(config.nats_url, name="listboss-ingest")
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.EVENTS])
    servicer = IngestServicer(EventPublisher(js))
    binding = ServiceBinding(
        SERVICE_NAME, lambda server: ingest_service_pb2_grpc.add_IngestServiceServicer_to_server(servicer, server)
    )
    await run_service(config, [binding], nc)


def main() -> None:
    configure_logging("ingest")
    asyncio.run(run())


if __name__ == "__main__":
    main()
