"""``listboss-contacts``: the contacts service process.

Environment: LISTBOSS_GRPC_ADDRESS (default 127.0.0.1:50053), LISTBOSS_METRICS_ADDRESS (Prometheus
/metrics, default 127.0.0.1:9103), LISTBOSS_NATS_URL,
LISTBOSS_JWKS_FILE, LISTBOSS_DATABASE_URL (default sqlite:///contacts.db),
LISTBOSS_STATEMENT_TIMEOUT (seconds, the cap of an RPC's statements; default 30),
LISTBOSS_AUDIENCE_SWEEP_INTERVAL (seconds between sweeps of audiences whose filters use `now`;
default 60), LISTBOSS_DATA_KEY
(opens the persons sealed on the bus; erasure destroys their keys: listboss_common.personal_data),
LISTBOSS_CONTACTS_PARTITIONS (the same in every segmentation and contacts process). The changes
are applied by partitions, each by one replica at a time: :mod:`listboss_contacts.partitions`.
"""

from __future__ import annotations

import asyncio
import gc
import sys

from listboss.contacts.v1 import contacts_service_pb2, contacts_service_pb2_grpc
from listboss_common import bus, personal_data
from listboss_common.config import ServiceConfig, env, env_int_between
from listboss_common.db import create_engine, statement_timeout_from_env
from listboss_common.grpc_server import ServiceBinding
from listboss_common.logs import configure_logging
from listboss_common.partitions import PartitionedWorkers, PartitionOwnership
from listboss_common.readiness import DatabaseProbe, Readiness
from listboss_common.service import run_service, token_verifier
from listboss_contacts import schema
from listboss_contacts.audiences import AudienceSweeper
from listboss_contacts.consumer import ChangeApplier
from listboss_contacts.grpc_api import METHOD_SCOPES, ContactsServicer
from listboss_contacts.partitions import GROUP, PartitionConsumers, partition_workers
from listboss_contacts.tag_changes import OutboxRelay

SERVICE_NAME = contacts_service_pb2.DESCRIPTOR.services_by_name["ContactsService"].full_name


async def run() -> None:
    config = ServiceConfig.from_env(default_grpc_address="127.0.0.1:50053", default_metrics_address="127.0.0.1:9103")
    verifier = token_verifier(config)  # refuses a missing or weak JWKS before anything starts
    keyring = personal_data.Keyring.from_env()  # refuses a missing or weak key before anything starts
    statement_timeout = statement_timeout_from_env()  # a bad value fails the start
    engine = create_engine(env("LISTBOSS_DATABASE_URL", "sqlite:///contacts.db"), application_name="listboss-contacts")
    schema.migrate_database(engine)

    readiness = Readiness()
    nc = await bus.connect(config.nats_url, name="listboss-contacts", readiness=readiness)
    js = nc.jetstream()
    await bus.ensure_streams(js, [bus.CHANGES, bus.DEADLETTER, bus.TAG_CHANGES, bus.PERSON_KEYS])
    person_keys = personal_data.PersonKeys(js, keyring)
    await person_keys.listen(nc)
    relay = OutboxRelay(engine, js)
    # Audiences whose filters compare with `now` change as time passes: swept every interval.
    sweeper = AudienceSweeper(
        engine, interval=env_int_between("LISTBOSS_AUDIENCE_SWEEP_INTERVAL", 60, 1, 86_400), on_committed=relay.notify
    )
    partitions = bus.contacts_partitions()  # a bad value fails the start
    ownership = PartitionOwnership(
        js,
        GROUP,
        partitions,
        PartitionedWorkers(
            partition_workers(
                js, engine, readiness, lambda: ChangeApplier(engine, on_committed=relay.notify, person_keys=person_keys)
            )
        ),
    )
    servicer = ContactsServicer(engine, js, person_keys=person_keys, statement_timeout=statement_timeout)
    binding = ServiceBinding(
        SERVICE_NAME,
        lambda server: contacts_service_pb2_grpc.add_ContactsServiceServicer_to_server(servicer, server),
        METHOD_SCOPES,
    )
    # The relay and the stream closer run beside the bus worker and stop with it.
    await run_service(
        config,
        [binding],
        nc,
        [
            PartitionConsumers(js, ownership, readiness),
            relay,
            sweeper,
            StreamCloser(servicer),
            DatabaseProbe(engine, readiness),
        ],
        on_stopped=engine.dispose,
        readiness=readiness,
        verifier=verifier,
    )


class StreamCloser:
    """Ends open WatchTagChanges streams at shutdown, so the gRPC server's graceful
    stop finishes them cleanly instead of cancelling them after the grace period.
    Shaped like a bus worker (``subscribe``, ``run(stop)``)."""

    def __init__(self, servicer: ContactsServicer):
        self._servicer = servicer

    async def subscribe(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._servicer.close_streams()


def main() -> None:
    configure_logging("contacts")
    # What start-up loaded lives for the whole process: keep it out of the collector's
    # full passes, which otherwise show up as tail latency on reads.
    gc.freeze()
    # Reads hop between the event loop and database threads; a shorter GIL switch
    # interval (default 5 ms) keeps a busy thread from holding a read up that long.
    sys.setswitchinterval(0.001)
    asyncio.run(run())


if __name__ == "__main__":
    main()
