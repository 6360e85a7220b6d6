"""Tracing helpers: traceparent in NATS headers, chunk spans with links, trace ids in log lines."""

from __future__ import annotations

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from listboss_common import tracing


@pytest.fixture
def spans(monkeypatch):
    """Tracing on for the test, with an in-memory exporter (the global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", provider)
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def published(subject: str = "listboss.events.demo") -> dict[str, str]:
    headers = {"Nats-Msg-Id": "x"}
    with tracing.publishing(subject, headers):
        pass
    return headers


def test_with_tracing_off_nothing_is_added_and_no_span_is_made():
    assert not tracing.enabled()
    headers = published()
    assert headers == {"Nats-Msg-Id": "x"}
    assert tracing.publishing("s", headers) is tracing.processing("p", [None]) is tracing._NULL
    assert tracing.add_trace_ids(None, "info", {"event": "e"}) == {"event": "e"}


def test_a_published_message_carries_its_producer_spans_traceparent(spans):
    headers = published()
    (span,) = spans.get_finished_spans()
    assert span.kind == trace.SpanKind.PRODUCER
    context = tracing.message_context(headers)
    assert (context.trace_id, context.span_id) == (span.context.trace_id, span.context.span_id)
    assert tracing.message_context({"Nats-Msg-Id": "x"}) is None and tracing.message_context(None) is None


def test_a_chunk_from_one_context_continues_its_trace_and_links_to_it(spans):
    upstream = tracing.message_context(published())
    with (
        structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars, tracing.add_trace_ids]
        ) as logs,
        tracing.processing("process test", [upstream, upstream]),
    ):
        structlog.get_logger().info("handled")
    chunk = spans.get_finished_spans()[-1]
    assert chunk.kind == trace.SpanKind.CONSUMER
    assert chunk.parent.span_id == upstream.span_id and chunk.context.trace_id == upstream.trace_id
    assert [link.context.span_id for link in chunk.links] == [upstream.span_id]
    (line,) = logs
    assert line["trace_id"] == trace.format_trace_id(upstream.trace_id)
    assert line["span_id"] == trace.format_span_id(chunk.context.span_id)
    assert line["linked_trace_ids"] == [trace.format_trace_id(upstream.trace_id)]


def test_a_chunk_from_several_traces_starts_its_own_and_links_to_each(spans):
    first, second = tracing.message_context(published()), tracing.message_context(published())
    with (
        structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars, tracing.add_trace_ids]
        ) as logs,
        tracing.processing("process test", [first, None, second]),
    ):
        structlog.get_logger().info("handled")
    chunk = spans.get_finished_spans()[-1]
    assert chunk.parent is None and chunk.context.trace_id not in (first.trace_id, second.trace_id)
    assert {link.context.trace_id for link in chunk.links} == {first.trace_id, second.trace_id}
    assert logs[0]["linked_trace_ids"] == sorted(trace.format_trace_id(c.trace_id) for c in (first, second))
    # Outside the span: no trace ids, no links.
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars, tracing.add_trace_ids]
    ) as logs:
        structlog.get_logger().info("after")
    assert "trace_id" not in logs[0] and "linked_trace_ids" not in logs[0]


def test_an_unknown_exporter_fails_the_start(monkeypatch):
    monkeypatch.setenv(tracing.EXPORTER_VARIABLE, "jaeger")
    with pytest.raises(ValueError, match="LISTBOSS_TRACES_EXPORTER"):
        tracing.configure_tracing("test")
