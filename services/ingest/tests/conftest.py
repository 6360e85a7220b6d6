"""Fixtures of the ingest tests: a real IngestService server on a free port, over the test's
nats-server (the ``js`` fixture of listboss_common.testing)."""

from __future__ import annotations

import grpc
import pytest

from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from listboss_common.auth import TokenVerifier
from listboss_common.grpc_server import GrpcServer, ServiceBinding
from listboss_common.testing import AUTH_SECRET
from listboss_ingest.grpc_api import IngestServicer, add_to_server
from listboss_ingest.publisher import EventPublisher

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["IngestService"].full_name


@pytest.fixture
async def ingest_port(js):
    """A real IngestService server on a free port; yields the port."""
    servicer = IngestServicer(EventPublisher(js))
    server = GrpcServer(
        "127.0.0.1:0",
        [ServiceBinding(SERVICE_NAME, lambda s: add_to_server(servicer, s))],
        TokenVerifier(AUTH_SECRET),
    )
    port = await server.start()
    yield port
    await server.stop(0)


@pytest.fixture
async def ingest(ingest_port):
    """An IngestService stub on a grpc.aio channel to the server."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{ingest_port}")
    yield pb_grpc.IngestServiceStub(channel)
    await channel.close()
