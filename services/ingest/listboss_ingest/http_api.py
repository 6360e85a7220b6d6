"""The HTTP entrypoint: receives the platform's webhooks directly, translates and calls the
use cases (:mod:`listboss_ingest.handlers`).

``POST /webhooks/hotmart/{producer}`` with the webhook JSON (format 2.0.0) as body and the
producer's token in ``X-HOTMART-HOTTOK`` (the platform's adapter, :mod:`.sources.hotmart`,
names both and reads the body). Answers:

=====  =========================================================================================
200    ``{"event_id": "...", "duplicate": false}`` once JetStream has stored the event
       (``duplicate: true``: the event id was already stored inside the duplicate window)
400    the body is not a valid webhook; ``error.field_violations`` names every problem
401    missing or wrong token, or unknown producer (one answer for all three)
404    no such path
405    a method other than POST
413    a body over 1 MiB (by ``Content-Length``, or by what is actually read)
415    a ``Content-Type`` other than ``application/json`` (charset utf-8 if given)
429    the producer's rate limit is used up (``Retry-After``: whole seconds until a webhook
       passes); checked right after the token, before the body is read
503    JetStream did not store the event in time (``Retry-After`` set): the platform retries
=====  =========================================================================================

Every error body is ``{"error": {"code", "status", "reason", "message", "field_violations"}}``.
``GET /healthz`` answers 200 while the receiver serves, 503 while it shuts down.

The token is compared with :func:`hmac.compare_digest` and never logged, echoed or stored
(the adapter never reads a ``hottok`` key of the body either). One structlog line per
request: method, path, producer, status, event id, duplicate flag, duration.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import Awaitable, Callable

import grpc
import structlog
from aiohttp import web
from prometheus_client import Counter, Histogram

from listboss_common.errors import FieldViolation, InvalidArgument, ServiceError
from listboss_common.metrics import LATENCY_BUCKETS
from listboss_common.rate_limit import RateLimiter, admit, retry_after_seconds
from listboss_ingest import handlers
from listboss_ingest.publisher import EventPublisher
from listboss_ingest.sources import WebhookSource, hotmart
from listboss_ingest.webhook_tokens import WebhookTokens

log = structlog.get_logger("listboss.ingest.http")

# Where a source adapter's webhooks arrive: /webhooks/hotmart/{producer}.
WEBHOOK_PATH = "/webhooks/{source}/{{producer}}"
HOTTOK_HEADER = hotmart.TOKEN_HEADER
MAX_BODY_BYTES = handlers.MAX_WEBHOOK_BYTES
MAX_REQUEST_LINE_BYTES = MAX_BODY_BYTES
# The {producer} of the path: a producer id (normalize.PRODUCER_PATTERN) is at most 63 characters.
MAX_PRODUCER_LENGTH = 63
# The platform retries a webhook that fails; answering 503 quickly beats holding it.
PUBLISH_TIMEOUT = 2.0
RETRY_AFTER_SECONDS = "5"
_JSON_TYPES = ("application/json",)
_MAX_LOGGED_PRODUCER = 64
# What the request's log line carries beyond method, path, status and duration.
_LOG_FIELDS = web.RequestKey("listboss_log_fields", dict)

# Label ``route`` is the matched route's pattern (``/webhooks/hotmart/{producer}``), never the
# path itself: no producer ids in labels. An unmatched path counts as ``unmatched``.
HTTP_REQUESTS = Counter(
    "listboss_http_requests_total", "HTTP requests answered by the webhook receiver.", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "listboss_http_request_duration_seconds",
    "Time to answer an HTTP request of the webhook receiver.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class _Reject(Exception):
    """An error answer: status, reason, message and optional field violations."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        violations: tuple[FieldViolation, ...] = (),
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.violations = violations
        self.headers = headers or {}


def error_response(status: int, reason: str, message: str, violations=(), headers=None) -> web.Response:
    body = {
        "error": {
            "code": status,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
            "reason": reason,
            "message": message,
            "field_violations": [{"field": v.field, "description": v.description} for v in violations],
        }
    }
    return web.json_response(body, status=status, headers=headers)


def _json_content_type(request: web.Request) -> bool:
    if request.content_type not in _JSON_TYPES and not request.content_type.endswith("+json"):
        return False
    charset = request.charset
    return charset is None or charset.lower() in ("utf-8", "utf8")


class WebhookReceiver:
    """The aiohttp application and its server; one per ingest process."""

    def __init__(
        self,
        publisher: EventPublisher,
        tokens: WebhookTokens,
        *,
        source: WebhookSource = hotmart,
        publish_timeout: float = PUBLISH_TIMEOUT,
        shutdown_grace: float = 10.0,
        rate_limiter: RateLimiter | None = None,
    ):
        self._publisher = publisher
        # Shared with the gRPC API: a producer has one allowance, whichever way it sends.
        self._rate_limiter = rate_limiter
        self._tokens = tokens
        self._source = source
        self._publish_timeout = publish_timeout
        self._shutdown_grace = shutdown_grace
        self._runner: web.AppRunner | None = None
        self._serving = False
        self.port: int | None = None

    @property
    def serving(self) -> bool:
        return self._serving

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._middleware])
        app.router.add_post(WEBHOOK_PATH.format(source=self._source.NAME), self._receive)
        app.router.add_get("/healthz", self._health)
        return app

    async def start(self, address: str, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listens on ``address`` (``host:port``; port 0 picks a free one), over HTTPS with
        ``ssl_context`` (:meth:`listboss_common.tls.ServerTls.http_ssl_context`); returns the port."""
        host, port = _split_address(address)
        runner = web.AppRunner(
            self.application(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self._shutdown_grace,
            # A request line up to the body's limit reaches the handler (an over-long producer
            # is answered in JSON); aiohttp's own 400 for longer ones quotes the line.
            max_line_size=MAX_REQUEST_LINE_BYTES,
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise RuntimeError(f"could not bind the webhook receiver to {address}: {error.strerror}") from error
        self._runner = runner
        self.port = runner.addresses[0][1]  # the bound port, when port 0 asked for a free one
        self._serving = True
        log.info(
            "webhook receiver started",
            address=f"{host}:{self.port}",
            producers=len(self._tokens),
            tls=ssl_context is not None,
        )
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stops accepting connections and lets in-flight requests finish.

        In-flight requests get ``shutdown_grace`` seconds, given at construction (aiohttp fixes
        it when the runner is made); ``grace`` is accepted for :class:`Companion`'s signature.
        """
        self._serving = False
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- request handling ---------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        started = time.perf_counter()
        request[_LOG_FIELDS] = fields = {}
        try:
            response = await handler(request)
        except _Reject as reject:
            fields["reason"] = reject.reason
            if reject.violations:
                fields["fields"] = ",".join(v.field for v in reject.violations)
            response = error_response(reject.status, reject.reason, reject.message, reject.violations, reject.headers)
        except web.HTTPException as error:  # aiohttp's own: 404, 405, 413 while reading
            reason = _STATUS_NAMES.get(error.status, "HTTP_ERROR")
            fields["reason"] = reason
            headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
            message = error.reason
            if error.status == 413:
                message = f"the body must be at most {MAX_BODY_BYTES} bytes"
            response = error_response(error.status, reason, message, headers=headers)
        except Exception:
            log.exception("webhook request failed", method=request.method, path=request.path)
            fields["reason"] = "INTERNAL"
            response = error_response(500, "INTERNAL", "internal error")
        duration = time.perf_counter() - started
        log.info(
            "http",
            method=request.method,
            path=request.path[:200],  # never the query string
            status=response.status,
            duration_ms=round(duration * 1000, 2),
            **fields,
        )
        _count_request(request, response.status, duration)
        return response

    def _admit(self, producer: str) -> None:
        """One webhook is one event: its producer's rate limit takes one token, or 429."""
        try:
            admit(self._rate_limiter, {producer: 1}, transport="http", field="payload")
        except ServiceError as error:
            if error.code != grpc.StatusCode.RESOURCE_EXHAUSTED or error.retry_delay is None:
                raise
            retry_after = str(retry_after_seconds(error.retry_delay))
            raise _Reject(429, error.reason, error.message, headers={"Retry-After": retry_after}) from None

    async def _health(self, request: web.Request) -> web.Response:
        if not self._serving:
            return error_response(503, "NOT_SERVING", "shutting down")
        return web.json_response({"status": "SERVING"})

    async def _receive(self, request: web.Request) -> web.Response:
        fields = request[_LOG_FIELDS]
        producer = request.match_info["producer"]
        fields["producer"] = producer[:_MAX_LOGGED_PRODUCER]
        if len(producer) > MAX_PRODUCER_LENGTH:
            # No producer id is that long: say so (never repeating it) rather than "unknown".
            raise _Reject(
                400,
                "INVALID_ARGUMENT",
                f"producer: must be at most {MAX_PRODUCER_LENGTH} characters; got {len(producer)}",
                (FieldViolation("producer", f"must be at most {MAX_PRODUCER_LENGTH} characters"),),
            )
        header = self._source.TOKEN_HEADER
        if not self._tokens.verify(producer, request.headers.get(header)):
            # One answer for a missing token, a wrong one and an unknown producer.
            raise _Reject(401, "UNAUTHENTICATED", f"missing or invalid {header} for this producer")
        # After the token (nobody drains another producer's allowance), before the body is read:
        # a refused webhook costs next to nothing.
        self._admit(producer)
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise _Reject(
                413,
                "PAYLOAD_TOO_LARGE",
                f"the body must be at most {MAX_BODY_BYTES} bytes",
                headers={"Connection": "close"},
            )
        if not _json_content_type(request):
            raise _Reject(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json (charset utf-8)")
        body = await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size
        try:
            event = handlers.webhook_event(self._source, body, producer)
        except InvalidArgument as error:
            raise _Reject(400, "INVALID_ARGUMENT", error.message, error.violations) from None
        fields["event_id"] = event.id[:128]
        try:
            duplicate = await handlers.store_webhook_event(self._publisher, event, timeout=self._publish_timeout)
        except ServiceError as error:
            if error.code != grpc.StatusCode.UNAVAILABLE:
                raise
            raise _Reject(
                503, error.reason, "the event was not stored; retry later", headers={"Retry-After": RETRY_AFTER_SECONDS}
            ) from None
        fields["duplicate"] = duplicate
        return web.Response(
            body=json.dumps({"event_id": event.id, "duplicate": duplicate}).encode(),
            content_type="application/json",
        )


def _count_request(request: web.Request, status: int, duration: float) -> None:
    route = "unmatched"
    with contextlib.suppress(Exception):
        resource = request.match_info.route.resource
        if resource is not None:
            route = resource.canonical
    method = request.method if request.method in _METHODS else "OTHER"
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_DURATION.labels(route, method).observe(duration)


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"an HTTP address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)
