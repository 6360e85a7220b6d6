"""Fixtures for the segmentation service's tests."""

from __future__ import annotations

import grpc
import pytest

from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as pb_grpc
from listboss_common.auth import TokenVerifier
from listboss_common.db import create_engine
from listboss_common.grpc_server import GrpcServer, ServiceBinding
from listboss_common.testing import AUTH_SECRET
from listboss_segmentation import storage

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SegmentationService"].full_name


@pytest.fixture
def engine(database_url):
    """The segmentation schema, migrated, on SQLite and on PostgreSQL (``database_url``)."""
    engine = create_engine(database_url)
    storage.migrate_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def serve():
    """Serves a SegmentationServicer over real gRPC on a free port: ``await serve(servicer)``
    gives a client stub and the port; both are closed after the test."""
    started = []

    async def start(servicer) -> tuple[pb_grpc.SegmentationServiceStub, int]:
        server = GrpcServer(
            "127.0.0.1:0",
            [ServiceBinding(SERVICE_NAME, lambda s: pb_grpc.add_SegmentationServiceServicer_to_server(servicer, s))],
            TokenVerifier(AUTH_SECRET),
        )
        port = await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        started.append((server, channel))
        return pb_grpc.SegmentationServiceStub(channel), port

    yield start
    for server, channel in reversed(started):
        await channel.close()
        await server.stop(0)
