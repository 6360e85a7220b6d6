"""Real gRPC servers on port 0 for the tests: the production GrpcServer (auth interceptor,
health, reflection) with the given bindings, and a grpc.aio channel to it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from listboss_common.auth import TokenVerifier
from listboss_common.grpc_server import GrpcServer, ServiceBinding
from listboss_common.readiness import Readiness
from listboss_common.tls import ClientTls, ServerTls, grpc_aio_channel
from listboss_testing.tokens import token_verifier


def binding(
    service: ServiceDescriptor,
    add_to_server: Callable[[Any, grpc.aio.Server], None],
    servicer: Any,
    scopes: Mapping[str, str],
) -> ServiceBinding:
    """``servicer`` bound as ``service`` (e.g. ``pb.DESCRIPTOR.services_by_name["ContactsService"]``)
    with the service's scope table (its ``METHOD_SCOPES``)."""
    return ServiceBinding(service.full_name, lambda server: add_to_server(servicer, server), scopes)


@dataclass
class Served:
    """A started server: its port and a channel to it."""

    server: GrpcServer
    port: int
    channel: grpc.aio.Channel
    closed: bool = False

    async def close(self) -> None:
        """Closes the channel and stops the server (once; the fixture's teardown skips it then)."""
        if self.closed:
            return
        self.closed = True
        await self.channel.close()
        await self.server.stop(0)


class GrpcServers:
    """Starts servers with :meth:`start`; :meth:`close` closes them all, newest first."""

    def __init__(self) -> None:
        self._started: list[Served] = []

    async def start(
        self,
        bindings: Sequence[ServiceBinding] = (),
        readiness: Readiness | None = None,
        *,
        tls: ServerTls | None = None,
        client_tls: ClientTls | None = None,
        verifier: TokenVerifier | None = None,
    ) -> Served:
        """``tls``: the server serves TLS; ``client_tls``: how its channel connects (plaintext without);
        ``verifier``: how it checks tokens (default: the session's JWKS, listboss_testing.tokens)."""
        server = GrpcServer("127.0.0.1:0", bindings, verifier or token_verifier(), readiness, tls=tls)
        port = await server.start()
        served = Served(server, port, grpc_aio_channel(f"127.0.0.1:{port}", client_tls))
        self._started.append(served)
        return served

    __call__ = start

    async def close(self) -> None:
        while self._started:
            await self._started.pop().close()
