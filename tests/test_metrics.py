"""Prometheus metrics: the whole suite as processes, events fed through BatchIngestEvents and a
webhook, then every service's /metrics scraped over HTTP; plus the worker's metrics in-process."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from listboss_ingest.sources import hotmart
from listboss_tools.suite import DEMO_PRODUCER, Suite

pytestmark = pytest.mark.e2e  # runs the services as processes

FIXTURES = sorted((Path(__file__).parent / "data" / "hotmart").glob("*.json"))
PRODUCTS = ("0", "123456", "788921")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    with _NO_PROXY.open(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def contacts_value(samples: dict, name: str) -> float:
    """``name`` summed over the contacts service's consumers: one per partition of the changes
    (``contacts-p<k>``) and ``contacts`` for messages from before partitions."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and any(k == "consumer" and (c == "contacts" or c.startswith("contacts-p")) for k, c in ls)
    )


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


@pytest.fixture(scope="module")
def metrics_suite(tmp_path_factory):
    """A suite of its own: the counters start from zero for this module."""
    suite = Suite.on_free_ports(tmp_path_factory.mktemp("metrics-suite"))
    suite.start()
    yield suite
    assert suite.stop() == {"ingest": 0, "segmentation": 0, "contacts": 0, "nats": 0}


@pytest.fixture(scope="module")
def fed(metrics_suite):
    """All but one example event through BatchIngestEvents, the last as an HTTP webhook; returns
    how many events were sent, once they are all in contacts' history."""
    suite = metrics_suite
    metadata = (("authorization", f"Bearer {suite.demo_token}"),)
    *batched, webhook = FIXTURES
    now = datetime.now(UTC)
    events = [hotmart.event_from_webhook(path.read_bytes(), DEMO_PRODUCER, receive_time=now) for path in batched]
    with grpc.insecure_channel(suite.ingest_address) as channel:
        reply = ingest_grpc.IngestServiceStub(channel).BatchIngestEvents(
            ingest_pb.BatchIngestEventsRequest(request_id="metrics-test", events=events), metadata=metadata, timeout=10
        )
    assert reply.accepted_count == len(batched)
    request = urllib.request.Request(
        suite.webhook_url(DEMO_PRODUCER),
        data=webhook.read_bytes(),
        headers={"Content-Type": "application/json", hotmart.TOKEN_HEADER: suite.demo_hottok},
        method="POST",
    )
    with _NO_PROXY.open(request, timeout=10) as response:
        assert response.status == 200 and json.loads(response.read())["duplicate"] is False

    with grpc.insecure_channel(suite.contacts_address) as channel:
        stub = contacts_grpc.ContactsServiceStub(channel)

        def recorded() -> int:
            return sum(
                len(
                    stub.ListEvents(
                        contacts_pb.ListEventsRequest(parent=f"producers/demo/products/{p}", page_size=100),
                        metadata=metadata,
                    ).events
                )
                for p in PRODUCTS
            )

        assert wait_for(lambda: recorded() == len(FIXTURES)), "the events never reached the history"
    return len(FIXTURES)


def test_the_suite_publishes_each_services_metrics_url(metrics_suite):
    info = json.loads(metrics_suite.suite_file.read_text())
    for name in ("ingest", "segmentation", "contacts"):
        url = info["services"][name]["metrics_url"]
        assert url == metrics_suite.metrics_url(name) and url.endswith("/metrics")
        assert url.startswith(f"http://{metrics_suite.host}:")


def test_ingest_counts_events_rpcs_and_webhooks(metrics_suite, fed):
    samples = scrape(metrics_suite.metrics_url("ingest"))
    assert value(samples, "listboss_ingest_events_accepted_total") == fed
    assert value(samples, "listboss_ingest_events_accepted_total", source="WEBHOOK") == 1
    assert value(samples, "listboss_ingest_events_accepted_total", source="GRPC") == fed - 1
    assert value(samples, "listboss_ingest_events_duplicate_total") == 0
    assert value(samples, "listboss_ingest_events_rejected_total") == 0
    assert value(samples, "grpc_server_handled_total", grpc_method="BatchIngestEvents", grpc_code="OK") >= 1
    assert value(samples, "grpc_server_handling_seconds_count", grpc_method="BatchIngestEvents") >= 1
    route = "/webhooks/hotmart/{producer}"
    assert value(samples, "listboss_http_requests_total", route=route, method="POST", status="200") == 1
    assert value(samples, "listboss_http_request_duration_seconds_count", route=route) == 1
    # No producer id in any label.
    assert not any(DEMO_PRODUCER in v for (_, labels), _ in samples.items() for _, v in labels)


def test_segmentation_counts_its_consumer_and_rules(metrics_suite, fed):
    samples = wait_for(
        lambda: (
            (s := scrape(metrics_suite.metrics_url("segmentation")))
            and value(s, "listboss_consumer_items_handled_total", consumer="segmentation") >= fed
            and s
        )
    )
    assert samples, "segmentation's consumer never counted the events"
    assert value(samples, "listboss_consumer_messages_handled_total", consumer="segmentation") >= 2
    assert value(samples, "listboss_consumer_batch_items_sum", consumer="segmentation") >= fed
    assert value(samples, "listboss_consumer_batch_handling_seconds_count", consumer="segmentation") >= 1
    assert value(samples, "listboss_consumer_dead_letters_total", consumer="segmentation") == 0
    assert value(samples, "listboss_segmentation_rules_evaluated_total") > 0
    assert value(samples, "listboss_segmentation_rule_cache_loads_total") > 0
    assert value(samples, "listboss_segmentation_backfills_running") == 0


def test_contacts_counts_applies_the_outbox_and_its_consumer(metrics_suite, fed):
    def settled():
        s = scrape(metrics_suite.metrics_url("contacts"))
        # The pending gauges are read from JetStream every few seconds; the relay runs after commits.
        done = (
            contacts_value(s, "listboss_consumer_items_handled_total") >= fed
            and value(s, "listboss_contacts_outbox_published_total") > 0
            and contacts_value(s, "listboss_consumer_pending_messages") == 0
            and ("listboss_consumer_pending_messages", (("consumer", "contacts-p0"),)) in s
        )
        return done and s

    samples = wait_for(settled)
    assert samples, "contacts' figures never settled"
    assert contacts_value(samples, "listboss_consumer_ack_pending_messages") >= 0
    assert value(samples, "listboss_contacts_changes_applied_total") == fed
    assert value(samples, "listboss_contacts_apply_seconds_count") >= 1
    assert value(samples, "listboss_contacts_outbox_relay_delay_seconds_count") == value(
        samples, "listboss_contacts_outbox_published_total"
    )
    assert value(samples, "listboss_contacts_tag_change_watchers") == 0
    assert value(samples, "grpc_server_handled_total", grpc_method="ListEvents", grpc_code="OK") >= 1
