"""SegmentationService's queries end by the caller's deadline (PostgreSQL): a query held up by
a lock answers DEADLINE_EXCEEDED, not INTERNAL, and the pooled connection serves the next call."""

from __future__ import annotations

import time

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss_common.db import create_engine
from listboss_segmentation import storage
from listboss_segmentation.grpc_api import SegmentationServicer
from listboss_testing import bearer, rich_status

pytestmark = pytest.mark.postgres

APPLICATION = "listboss-segmentation"
LIST = pb.ListProductsRequest(parent="producers/alice")


@pytest.fixture
def engine(postgres_url):
    engine = create_engine(postgres_url, application_name=APPLICATION)
    storage.migrate_database(engine)
    yield engine
    engine.dispose()


def service_pids(observer: sa.Engine) -> list[int]:
    with observer.connect() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE application_name = :name AND datname = current_database() ORDER BY pid"
                ),
                {"name": APPLICATION},
            ).scalars()
        )


async def test_a_query_past_its_timeout_is_deadline_exceeded_and_the_connection_serves_on(serve, engine, postgres_url):
    segmentation, _ = await serve(SegmentationServicer(engine, statement_timeout=0.5))
    observer = sa.create_engine(postgres_url, poolclass=NullPool)
    try:
        assert not (await segmentation.ListProducts(LIST, metadata=bearer("alice"))).products
        pids = service_pids(observer)
        assert len(pids) == 1  # the service's name, while connected
        with observer.connect() as holder:
            holder.exec_driver_sql("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await segmentation.ListProducts(LIST, metadata=bearer("alice"), timeout=30)
            elapsed = time.monotonic() - started
            holder.rollback()
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert rich_status(caught.value)[0].reason == "STATEMENT_TIMEOUT"
        assert elapsed < 10, elapsed  # the 0.5 s cap, not the lock's end
        assert not (await segmentation.ListProducts(LIST, metadata=bearer("alice"))).products
        assert service_pids(observer) == pids
    finally:
        observer.dispose()
