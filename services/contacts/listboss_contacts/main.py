"""``listboss-contacts``: the contacts service process.

Environment: LISTBOSS_GRPC_ADDRESS (default 127.0.0.1:50053), LISTBOSS_NATS_URL,
LISTBOSS_AUTH_SECRET, LISTBOSS_DATABASE_URL (default sqlite:///contacts.db).
"""

from __future__ import annotations

import asyncio

from listboss.contacts.v1 import contacts_service_pb2, contacts_service_pb2_grpc
from listboss_common import bus
from listboss_common.config import ServiceConfig, env
from listboss_common.db import create_engine
from listboss_common.grpc_server import ServiceBinding
from listboss_common.logs import configure_logging
from listboss_common.service import run_service
from listboss_contacts import schema
from listboss_contacts.changes import ChangeApplier
from listboss_contacts.grpc_api import ContactsServicer

SERVICE_NAME = contacts_service_pb2.DESCRIPTOR.services_by_name["ContactsService"].full_name
CHANGES_WORKER = bus.WorkerSpec(stream=bus.CHANGES, durable="contacts", batch_size=200)


async def run() -> None:
    config = ServiceConfig.from_env(default_grpc_address="127.0.0.1:50053")
    engine = create_engine(env("LISTBOSS_DATABASE_URL", "sqlite:///contacts.db"))
    schema.migrate_database(engine)

    nc = await bus.connect(config.nats_url, name="listboss-contacts")
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.CHANGES, bus.DEADLETTER])
    worker = bus.PullWorker(js, CHANGES_WORKER, ChangeApplier(engine).handle)
    servicer = ContactsServicer(engine)
    binding = ServiceBinding(SERVICE_NAME, lambda server: contacts_service_pb2_grpc.add_ContactsServiceServicer_to_server(servicer, server))
    await run_service(config, [binding], nc, [worker], on_stopped=engine.dispose)


def main() -> None:
    configure_logging("contacts")
    asyncio.run(run())


if __name__ == "__main__":
    main()
