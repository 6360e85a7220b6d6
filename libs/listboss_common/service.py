"""The life of a service process: start serving, consume, and shut down gracefully.

On SIGTERM/SIGINT: health turns NOT_SERVING, the gRPC server stops taking calls
and lets in-flight ones finish, each bus worker finishes the batch in hand (its
acks follow the commit), and the NATS connection drains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from nats.aio.client import Client as NatsClient

from listboss_common.auth import TokenVerifier
from listboss_common.bus import PullWorker
from listboss_common.config import ServiceConfig
from listboss_common.grpc_server import GrpcServer, ServiceBinding
from listboss_common.lifecycle import shutdown_event

log = structlog.get_logger("listboss.service")


async def run_service(
    config: ServiceConfig,
    bindings: Sequence[ServiceBinding],
    nc: NatsClient,
    workers: Sequence[PullWorker] = (),
    on_stopped: Callable[[], None] | None = None,
) -> None:
    for worker in workers:
        await worker.subscribe()
    server = GrpcServer(config.grpc_address, bindings, TokenVerifier(config.auth_secret))
    port = await server.start()
    stop = shutdown_event()
    consuming = [asyncio.create_task(worker.run(stop)) for worker in workers]
    log.info("service started", grpc_port=port, services=[b.name for b in bindings])

    await stop.wait()
    log.info("shutting down")
    await server.stop(config.shutdown_grace)
    if consuming:
        await asyncio.wait(consuming, timeout=config.shutdown_grace + 5)
    await nc.drain()
    if on_stopped is not None:
        on_stopped()
    log.info("stopped")
