"""The gRPC server bootstrap every service uses.

One ``grpc.aio`` server with: the standard health service (NOT_SERVING during
graceful shutdown), server reflection (so grpcurl needs no .proto files), and
one interceptor that gives each RPC a request id, authenticates the bearer
token, checks the token scope the method needs (before the handler runs), maps :class:`ServiceError` to a rich ``google.rpc.Status`` and writes one
log line per request. With :class:`~listboss_common.tls.ServerTls` the port serves TLS (mutual
TLS with a client CA, where the internal role also needs the verified client certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_status import rpc_status

from listboss_common import deadlines
from listboss_common.auth import TokenVerifier, current_principal, require_scope
from listboss_common.decoding import Undecodable, tolerant
from listboss_common.errors import ServiceError, unauthenticated
from listboss_common.metrics import GRPC_HANDLED, GRPC_HANDLING, split_method
from listboss_common.readiness import Readiness
from listboss_common.tls import ServerTls, client_certificate_verified
from listboss_common.tracing import grpc_server_interceptors

log = structlog.get_logger("listboss.grpc")

# Health and reflection answer without a token: they reveal no producer's data
# and grpcurl / orchestrators must reach them unauthenticated.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to serve: its full name (for health and reflection), how to add it, and the
    token scope each of its methods needs (method name -> ``read`` / ``write``; a method the
    table does not name is refused)."""

    name: str
    register: Callable[[grpc.aio.Server], None]
    scopes: Mapping[str, str]


def _abort_args(error: ServiceError) -> tuple[grpc.StatusCode, str, tuple]:
    status = rpc_status.to_status(error.to_status())
    return status.code, status.details, status.trailing_metadata


class RequestInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        verifier: TokenVerifier,
        scopes: Mapping[str, str],
        internal_needs_client_certificate: bool = False,
    ):
        self._verifier = verifier
        self._scopes = scopes  # method path (/package.Service/Method) -> the scope it needs
        # Under mutual TLS the internal role takes a verified client certificate as well as its token.
        self._internal_needs_client_certificate = internal_needs_client_certificate

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method),
                request_deserializer=_tolerant_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._server_stream(handler.unary_stream, method),
                request_deserializer=_tolerant_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler  # client streaming: none of our services use it

    def _begin(self, context: grpc.aio.ServicerContext, method: str) -> dict:
        metadata = dict(context.invocation_metadata() or ())
        request_id = metadata.get("x-request-id") or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
        principal = self._verifier.verify(metadata.get("authorization"))
        if principal.internal and self._internal_needs_client_certificate and not client_certificate_verified(context):
            raise unauthenticated("the internal role needs a verified client certificate on this server")
        require_scope(principal, method, self._scopes)
        current_principal.set(principal)
        structlog.contextvars.bind_contextvars(caller=principal.producer or "internal")
        # The database bounds the RPC's statements by it (each RPC runs in a task of its own).
        deadlines.start_call(context.time_remaining())
        return metadata

    @contextlib.asynccontextmanager
    async def _call(self, context: grpc.aio.ServicerContext, method: str):
        """Authenticates one RPC, turns what its handler raises into a gRPC status, and logs it."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            self._begin(context, method)
            yield
        except ServiceError as error:
            code = error.code
            await context.abort(*_abort_args(error))
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("rpc failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            _log_rpc(code, started)
            _count_rpc(method, code, started)

    def _unary(self, behavior, method: str):
        async def wrapper(request, context):
            async with self._call(context, method):
                if type(request) is Undecodable:
                    raise request.error
                return await behavior(request, context)

        return wrapper

    def _server_stream(self, behavior, method: str):
        async def wrapper(request, context):
            async with self._call(context, method):
                if type(request) is Undecodable:
                    raise request.error
                async for item in behavior(request, context):
                    yield item

        return wrapper


def _tolerant_deserializer(deserializer):
    """The method's deserializer, answering :class:`Undecodable` for a request protobuf cannot
    read (raised above once the caller is authenticated: INVALID_ARGUMENT naming the field,
    :mod:`listboss_common.decoding`). A deserializer that is not a message class's own
    ``FromString`` is kept: it handles such requests itself."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    if descriptor is None:
        return deserializer
    return tolerant(deserializer, descriptor)


def _log_rpc(code: grpc.StatusCode, started: float) -> None:
    log.info("rpc", code=code.name, duration_ms=round((time.perf_counter() - started) * 1000, 2))
    structlog.contextvars.unbind_contextvars("request_id", "method", "caller")


def _count_rpc(method: str, code: grpc.StatusCode, started: float) -> None:
    service, name = split_method(method)
    GRPC_HANDLED.labels(service, name, code.name).inc()
    GRPC_HANDLING.labels(service, name).observe(time.perf_counter() - started)


# grpc.reflection.v1 is what current clients ask for first; grpcio-reflection implements only
# v1alpha, whose messages are the same on the wire, so one servicer answers both names.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_SERVICES = (REFLECTION_V1, reflection.SERVICE_NAME)


def _serve_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    servicer = reflection.aio.ReflectionServicer(service_names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in REFLECTION_SERVICES:
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )


class GrpcServer:
    """Serves the given bindings plus health and reflection on ``address``: over TLS with
    ``tls`` (mutual TLS when it has a client CA), plaintext without."""

    def __init__(
        self,
        address: str,
        bindings: Sequence[ServiceBinding],
        verifier: TokenVerifier,
        readiness: Readiness | None = None,
        tls: ServerTls | None = None,
    ):
        self._address = address
        self._bindings = list(bindings)
        self._method_scopes = {
            f"/{binding.name}/{method}": scope for binding in self._bindings for method, scope in binding.scopes.items()
        }
        self._verifier = verifier
        self._tls = tls  # None: plaintext
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        # Health follows it: NOT_SERVING while the process waits on a missing dependency.
        self._readiness = readiness or Readiness()
        self._readiness.watch(self._on_readiness)
        self._health_updates: set[asyncio.Task] = set()
        self.port: int | None = None

    async def start(self) -> int:
        server = grpc.aio.server(
            # OpenTelemetry's first (when tracing is on): its span is current in ours, so the
            # request's log line carries the trace id.
            interceptors=[
                *grpc_server_interceptors(),
                RequestInterceptor(
                    self._verifier,
                    self._method_scopes,
                    internal_needs_client_certificate=bool(self._tls and self._tls.mutual),
                ),
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        for binding in self._bindings:
            binding.register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [b.name for b in self._bindings]
        _serve_reflection(
            server, [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, *REFLECTION_SERVICES]
        )
        if self._tls is None:
            self.port = server.add_insecure_port(self._address)
        else:
            self.port = server.add_secure_port(self._address, self._tls.grpc_credentials())
        if self.port == 0:
            raise RuntimeError(f"could not bind gRPC address {self._address}")
        await server.start()
        self._server = server
        await self._set_health(self._readiness.ready)
        return self.port

    async def _set_health(self, ready: bool) -> None:
        # After a graceful shutdown began, the servicer ignores this: it stays NOT_SERVING.
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *(b.name for b in self._bindings)]:
            await self._health.set(name, status)

    def _on_readiness(self, ready: bool) -> None:
        if self._server is None:
            return  # start() sets the status it finds
        task = asyncio.get_running_loop().create_task(self._set_health(ready))
        self._health_updates.add(task)
        task.add_done_callback(self._health_updates.discard)

    async def stop(self, grace: float) -> None:
        """Reports NOT_SERVING, stops taking RPCs and lets in-flight ones finish for ``grace`` seconds."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        self._server = None
