"""Fixtures for the segmentation service's tests."""

from __future__ import annotations

import pytest

from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as pb_grpc
from listboss_segmentation import storage
from listboss_segmentation.grpc_api import METHOD_SCOPES
from listboss_testing import binding

SERVICE = pb.DESCRIPTOR.services_by_name["SegmentationService"]


@pytest.fixture
def engine(migrated_engine):
    """The segmentation schema, migrated, on SQLite and on PostgreSQL (``database_url``)."""
    return migrated_engine(storage.migrate_database)


@pytest.fixture
def serve(grpc_server):
    """Serves a SegmentationServicer over real gRPC on a free port (``grpc_server``):
    ``await serve(servicer)`` gives a client stub and the port; both are closed after the test."""

    async def start(servicer) -> tuple[pb_grpc.SegmentationServiceStub, int]:
        served = await grpc_server(
            [binding(SERVICE, pb_grpc.add_SegmentationServiceServicer_to_server, servicer, METHOD_SCOPES)]
        )
        return pb_grpc.SegmentationServiceStub(served.channel), served.port

    return start
