"""The life of a service process: start serving, consume, and shut down gracefully.

On SIGTERM/SIGINT: health turns NOT_SERVING, the gRPC server (and any companion
server, e.g. an HTTP receiver) stops taking calls and lets in-flight ones finish,
each bus worker finishes the batch in hand (its acks follow the commit), and the
NATS connection drains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from nats.aio.client import Client as NatsClient

from listboss_common.auth import TokenVerifier
from listboss_common.config import ConfigError, ServiceConfig
from listboss_common.grpc_server import GrpcServer, ServiceBinding
from listboss_common.lifecycle import shutdown_event
from listboss_common.metrics import serve as serve_metrics
from listboss_common.readiness import Readiness

log = structlog.get_logger("listboss.service")


class Worker(Protocol):
    """Background work of a service process (a bus worker, the outbox relay, a probe):
    ``subscribe`` before serving starts, ``run`` until ``stop`` is set."""

    async def subscribe(self) -> None: ...

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass(frozen=True)
class Companion:
    """A server living beside the gRPC server in the same process (e.g. an HTTP receiver).

    ``start`` runs before the gRPC server starts, so a SERVING health status implies the
    companion is up (a failed start fails the process). ``stop(grace)`` runs together with
    the gRPC server's stop, after health turned NOT_SERVING and before NATS drains: it stops
    accepting and lets in-flight work finish within ``grace`` seconds.
    """

    name: str
    start: Callable[[], Awaitable[object]]
    stop: Callable[[float], Awaitable[None]]


def token_verifier(config: ServiceConfig) -> TokenVerifier:
    """The verifier of ``config``'s JWKS and revocation list; exits the process with the reason
    when they are missing or weak (a private, symmetric or non-Ed25519 key)."""
    try:
        return TokenVerifier.from_files(
            config.jwks_file,
            config.revoked_tokens_file or None,
            issuer=config.token_issuer,
            audience=config.token_audience,
        )
    except ConfigError as error:
        log.error("refusing to start", reason=str(error))
        raise SystemExit(f"refusing to start: {error}") from None


async def run_service(
    config: ServiceConfig,
    bindings: Sequence[ServiceBinding],
    nc: NatsClient,
    workers: Sequence[Worker] = (),
    on_stopped: Callable[[], None] | None = None,
    companions: Sequence[Companion] = (),
    readiness: Readiness | None = None,
    verifier: TokenVerifier | None = None,
) -> None:
    """Runs until SIGTERM/SIGINT. ``readiness`` (shared with the NATS connection and the
    workers) drives the health status: NOT_SERVING while a dependency is missing. ``verifier``
    checks the bearer tokens (default: :func:`token_verifier` of ``config``; a process builds it
    first thing, so a bad key file stops it before it connects anywhere)."""
    if verifier is None:
        verifier = token_verifier(config)
    for worker in workers:
        await worker.subscribe()
    # Before anything serves: a metrics address already taken fails the start.
    metrics = serve_metrics(config.metrics_address)
    started: list[Companion] = []
    try:
        for companion in companions:
            await companion.start()
            started.append(companion)
    except BaseException:
        for companion in reversed(started):
            await companion.stop(0)
        if metrics is not None:
            metrics.stop()
        raise
    server = GrpcServer(config.grpc_address, bindings, verifier, readiness, tls=config.tls)
    port = await server.start()
    stop = shutdown_event()
    consuming = [asyncio.create_task(worker.run(stop)) for worker in workers]
    log.info(
        "service started",
        grpc_port=port,
        tls=config.tls.mode if config.tls else "off",
        services=[b.name for b in bindings],
        companions=[c.name for c in started],
        metrics_port=metrics.port if metrics else None,
    )

    await stop.wait()
    log.info("shutting down")
    # gRPC first in the gather: its stop turns health NOT_SERVING before anything else yields.
    await asyncio.gather(server.stop(config.shutdown_grace), *(c.stop(config.shutdown_grace) for c in started))
    if consuming:
        await asyncio.wait(consuming, timeout=config.shutdown_grace + 5)
    await nc.drain()
    if metrics is not None:
        metrics.stop()  # last: a final scrape still sees the shutdown's figures
    if on_stopped is not None:
        on_stopped()
    log.info("stopped")
