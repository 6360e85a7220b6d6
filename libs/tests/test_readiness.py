"""Health follows readiness: NOT_SERVING while a dependency is missing, SERVING when
it is back, NOT_SERVING for good once shutdown begins. Real gRPC server and client;
a real NATS connection whose server goes away and comes back; a real database driver
refused a connection. (A real database going away and coming back: tests/faults.)"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2, health_pb2_grpc

from listboss_common import bus
from listboss_common.db import create_engine
from listboss_common.readiness import DatabaseProbe, Readiness
from listboss_testing import eventually, free_port

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def status_becomes(stub, expected, timeout: float = 10.0) -> None:
    async def reached() -> bool:
        return (await stub.Check(health_pb2.HealthCheckRequest(service=""))).status == expected

    await eventually(reached, timeout=timeout, message=f"health did not become {expected} within {timeout}s")


async def serving(grpc_server, readiness: Readiness):
    """A real GrpcServer with no service but health, following ``readiness``; its health stub."""
    served = await grpc_server(readiness=readiness)
    return served, health_pb2_grpc.HealthStub(served.channel)


def test_readiness_tracks_each_missing_dependency():
    readiness = Readiness()
    changes: list[bool] = []
    readiness.watch(changes.append)
    readiness.down("database", "refused")
    readiness.down("nats", "disconnected")
    readiness.up("database")
    assert not readiness.ready and readiness.missing == {"nats": "disconnected"}
    readiness.up("nats")
    readiness.up("nats")  # already back: nothing to tell
    assert readiness.ready
    assert changes == [False, True]


async def test_health_follows_readiness_until_shutdown(grpc_server):
    readiness = Readiness()
    served, stub = await serving(grpc_server, readiness)
    try:
        await status_becomes(stub, SERVING)
        readiness.down("database", "connection refused")
        await status_becomes(stub, NOT_SERVING)
        readiness.up("database")
        await status_becomes(stub, SERVING)

        readiness.down("database", "connection refused")
        await status_becomes(stub, NOT_SERVING)
        stopping = asyncio.create_task(served.server.stop(1.0))
        readiness.up("database")  # shutting down: it must not turn SERVING again
        await stopping
    finally:
        await served.channel.close()


async def test_a_process_starting_without_a_dependency_is_not_serving(grpc_server):
    readiness = Readiness()
    readiness.down("nats", "disconnected")
    _, stub = await serving(grpc_server, readiness)
    await status_becomes(stub, NOT_SERVING)


async def test_health_is_not_serving_while_nats_is_away(nats_server, grpc_server):
    readiness = Readiness()
    nc = await bus.connect(nats_server.url, name="test-readiness", readiness=readiness)
    served, stub = await serving(grpc_server, readiness)
    try:
        await status_becomes(stub, SERVING)
        nats_server.stop()
        await status_becomes(stub, NOT_SERVING)
        nats_server.start()
        await status_becomes(stub, SERVING, timeout=20)
    finally:
        await served.close()
        await nc.close()


async def test_database_probe_reports_an_unreachable_database_and_its_return(tmp_path):
    readiness = Readiness()
    refused = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    try:
        assert not await DatabaseProbe(refused, readiness).check()
        assert "database" in readiness.missing
        assert readiness.missing["database"].startswith("OperationalError(")
    finally:
        refused.dispose()
    reachable = create_engine(f"sqlite:///{tmp_path / 'probe.db'}")
    try:
        assert await DatabaseProbe(reachable, readiness).check()
        assert readiness.ready
    finally:
        reachable.dispose()


async def test_database_probe_runs_until_stopped(tmp_path):
    readiness = Readiness()
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    stop = asyncio.Event()
    task = asyncio.create_task(DatabaseProbe(engine, readiness, interval=0.05).run(stop))
    try:
        await eventually(lambda: not readiness.ready, interval=0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        engine.dispose()
