"""Fixtures of the ingest tests: a real IngestService server on a free port (``grpc_server``),
over the test's nats-server (the ``js`` fixture of listboss_testing)."""

from __future__ import annotations

import pytest

from listboss.ingest.v1 import ingest_service_pb2 as pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from listboss_ingest.grpc_api import METHOD_SCOPES, IngestServicer, add_to_server
from listboss_ingest.publisher import EventPublisher
from listboss_testing import binding


@pytest.fixture
async def ingest_served(js, grpc_server):
    """A real IngestService server on a free port, publishing to the test's JetStream."""
    servicer = IngestServicer(EventPublisher(js))
    service = pb.DESCRIPTOR.services_by_name["IngestService"]
    return await grpc_server([binding(service, add_to_server, servicer, METHOD_SCOPES)])


@pytest.fixture
def ingest_port(ingest_served):
    """The server's port."""
    return ingest_served.port


@pytest.fixture
def ingest(ingest_served):
    """An IngestService stub on a grpc.aio channel to the server."""
    return pb_grpc.IngestServiceStub(ingest_served.channel)
