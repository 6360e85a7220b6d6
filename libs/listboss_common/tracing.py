"""Traces across the bus: OpenTelemetry spans, with the W3C ``traceparent`` in NATS headers.

``LISTBOSS_TRACES_EXPORTER`` chooses where spans go: ``none`` (the default: no provider is
set, the API's tracer is a no-op and the helpers below skip even that), ``console`` (one
JSON line per span on stdout) or ``otlp`` (OTLP over gRPC to ``OTEL_EXPORTER_OTLP_ENDPOINT``,
default ``http://localhost:4317``; the other standard ``OTEL_EXPORTER_OTLP_*`` variables
apply). ``OTEL_SERVICE_NAME`` overrides the service name (``listboss-<service>``).

What is a span:

- every RPC (a server span from OpenTelemetry's gRPC interceptor) and every webhook request
  (a server span from its aiohttp middleware), continuing a ``traceparent`` the caller sent;
- every packed message ingest publishes (a producer span, child of the request's span): its
  ``traceparent`` travels in the message's headers, so the events of one request share the
  request's trace;
- every chunk a :class:`~listboss_common.worker.PullWorker` hands its handler (a consumer
  span): it links to the context of each message its items came from (a chunk mixes
  messages, so no single parent fits in general) and, when all of them carry the same
  context, it is also that context's child, so the common case reads as one trace. What the
  handler publishes (segmentation's ContactChangeBatch messages, dead letters) carries the
  chunk span's ``traceparent``. Log lines in a chunk carry ``linked_trace_ids``.

Log lines carry ``trace_id`` and ``span_id`` while a span is recording
(:func:`add_trace_ids`, a structlog processor installed only when tracing is on).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, MutableMapping, Sequence

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

EXPORTER_VARIABLE = "LISTBOSS_TRACES_EXPORTER"
EXPORTERS = ("none", "console", "otlp")

_NULL = contextlib.nullcontext()
_provider = None  # the SDK provider, once configured with an exporter
_tracer: trace.Tracer = trace.NoOpTracer()


def exporter_name() -> str:
    """The exporter the environment asks for; a value outside :data:`EXPORTERS` fails the start."""
    name = (os.environ.get(EXPORTER_VARIABLE) or "none").strip().lower()
    if name not in EXPORTERS:
        raise ValueError(f"{EXPORTER_VARIABLE} must be one of {', '.join(EXPORTERS)}, got {name!r}")
    return name


def enabled() -> bool:
    return _provider is not None


def configure_tracing(service: str) -> None:
    """Sets the process's tracer provider and instruments the aiohttp server, per
    ``LISTBOSS_TRACES_EXPORTER``; with ``none`` it does nothing at all."""
    global _provider, _tracer
    name = exporter_name()
    if name == "none" or _provider is not None:
        return
    # Imported here: with tracing off the SDK is never loaded.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or f"listboss-{service}"})
    provider = TracerProvider(resource=resource)  # flushed and shut down at exit
    exporter: SpanExporter
    if name == "console":
        exporter = ConsoleSpanExporter(out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n")
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_ENDPOINT and friends
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("listboss")

    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    # Puts its middleware first in every aiohttp application made from now on.
    AioHttpServerInstrumentor().instrument(tracer_provider=provider)


def grpc_server_interceptors() -> list:
    """OpenTelemetry's server interceptor (a span per RPC) while tracing is on; none otherwise."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    # Health checks and reflection (probes every few seconds) would bury the traces that matter.
    quiet = filters.any_of(filters.service_prefix("grpc.health."), filters.service_prefix("grpc.reflection."))
    return [aio_server_interceptor(tracer_provider=_provider, filter_=filters.negate(quiet))]


# --- structlog


def add_trace_ids(logger, method_name: str, event_dict: MutableMapping) -> MutableMapping:
    """structlog processor: the current span's trace and span ids, while one is recording."""
    span = trace.get_current_span()
    if span.is_recording():
        span_context = span.get_span_context()
        event_dict["trace_id"] = trace.format_trace_id(span_context.trace_id)
        event_dict["span_id"] = trace.format_span_id(span_context.span_id)
    return event_dict


# --- NATS headers


def inject(headers: MutableMapping[str, str]) -> None:
    """Adds the current span's ``traceparent`` (and ``tracestate``) to ``headers``, if tracing is on."""
    if _provider is not None:
        propagate.inject(headers)


def publishing(subject: str, headers: MutableMapping[str, str]):
    """A producer span around one publish on ``subject``, its context injected in ``headers``
    (a shared no-op context manager while tracing is off)."""
    if _provider is None:
        return _NULL
    return _producer_span(subject, headers)


@contextlib.contextmanager
def _producer_span(subject: str, headers: MutableMapping[str, str]) -> Iterator[None]:
    with _tracer.start_as_current_span(
        f"publish {subject}",
        kind=trace.SpanKind.PRODUCER,
        attributes={"messaging.system": "nats", "messaging.destination.name": subject},
    ):
        propagate.inject(headers)
        yield


def message_context(headers: Mapping[str, str] | None) -> trace.SpanContext | None:
    """The span context a message's headers carry, or None."""
    if not headers or "traceparent" not in headers:
        return None
    span_context = trace.get_current_span(propagate.extract(headers)).get_span_context()
    return span_context if span_context.is_valid else None


def processing(name: str, upstream: Sequence[trace.SpanContext | None], attributes: Mapping | None = None):
    """A consumer span around the handling of one chunk whose items came from messages with
    the ``upstream`` contexts: linked to each distinct one, and the child of the only one
    when there is exactly one. Log lines inside carry ``linked_trace_ids``. A shared no-op
    context manager while tracing is off."""
    if _provider is None:
        return _NULL
    return _consumer_span(name, upstream, attributes or {})


@contextlib.contextmanager
def _consumer_span(name: str, upstream: Sequence[trace.SpanContext | None], attributes: Mapping) -> Iterator[None]:
    distinct = list({(c.trace_id, c.span_id): c for c in upstream if c is not None}.values())
    links = [trace.Link(c) for c in distinct]
    parent = (
        trace.set_span_in_context(trace.NonRecordingSpan(distinct[0])) if len(distinct) == 1 else otel_context.Context()
    )
    linked = sorted({trace.format_trace_id(c.trace_id) for c in distinct})
    with (
        _tracer.start_as_current_span(
            name, context=parent, kind=trace.SpanKind.CONSUMER, links=links, attributes=dict(attributes)
        ),
        structlog.contextvars.bound_contextvars(linked_trace_ids=linked),
    ):
        yield
