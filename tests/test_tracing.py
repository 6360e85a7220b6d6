"""Traces across the bus: one webhook's trace id followed through the three services' logs
(and their console span exporters), with ``LISTBOSS_TRACES_EXPORTER=console``."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import grpc
import pytest

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss_testing import eventually_sync
from listboss_tools.suite import DEMO_PRODUCER, Suite

pytestmark = pytest.mark.e2e  # runs the services as processes

WEBHOOK = Path(__file__).parent / "data" / "hotmart" / "PURCHASE_APPROVED.json"


def post(url: str, body: bytes, hottok: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", "X-HOTMART-HOTTOK": hottok}, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    with opener.open(request, timeout=15) as response:
        return response.status, json.loads(response.read())


@pytest.fixture(scope="module")
def traced_suite(tmp_path_factory):
    """The suite with console traces, every line each process prints kept in a file."""
    folder = tmp_path_factory.mktemp("suite")
    output_path = folder / "output.log"
    with output_path.open("w") as output:
        suite = Suite(
            folder,
            nats_port=0,
            ingest_port=0,
            segmentation_port=0,
            contacts_port=0,
            http_port=0,
            output=output,
            # Spans exported within a fraction of a second rather than every 5 s.
            extra_env={"LISTBOSS_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"},
        )
        suite.start()
        try:
            yield suite, output_path
        finally:
            codes = suite.stop()
    assert codes == {"ingest": 0, "segmentation": 0, "contacts": 0, "nats": 0}


def json_lines(output_path: Path, service: str) -> list[dict]:
    """The JSON objects ``service`` printed (log lines and exported spans), in order."""
    found = []
    for line in output_path.read_text().splitlines():
        name, sep, rest = line.partition(" | ")
        if not sep or name.strip() != service:
            continue
        try:
            value = json.loads(rest)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def traced_by(entry: dict, trace_id: str) -> bool:
    """The log line was written in the trace, or in a span linked to it."""
    return entry.get("trace_id") == trace_id or trace_id in entry.get("linked_trace_ids", ())


def span_trace_ids(entries: list[dict]) -> set[str]:
    """The trace ids of the exported spans among ``entries``, and of the spans they link to."""
    ids = set()
    for entry in entries:
        if "context" in entry and "name" in entry:
            ids.add(entry["context"]["trace_id"].removeprefix("0x"))
            ids.update(link["context"]["trace_id"].removeprefix("0x") for link in entry.get("links", ()))
    return ids


def test_one_webhooks_trace_id_is_in_every_services_log_lines(traced_suite):
    suite, output_path = traced_suite
    status, answer = post(suite.webhook_url(DEMO_PRODUCER), WEBHOOK.read_bytes(), suite.demo_hottok)
    assert status == 200, answer
    event_id = answer["event_id"]

    metadata = (("authorization", f"Bearer {suite.demo_token}"),)
    with grpc.insecure_channel(suite.contacts_address) as channel:
        stub = contacts_grpc.ContactsServiceStub(channel)

        def recorded() -> bool:
            for product in ("0", "123456", "788921"):
                reply = stub.ListEvents(
                    contacts_pb.ListEventsRequest(parent=f"producers/demo/products/{product}", page_size=100),
                    metadata=metadata,
                )
                if any(event.name.endswith(f"/{event_id}") for event in reply.events):
                    return True
            return False

        eventually_sync(recorded, timeout=30, interval=0.2, message=f"contacts did not record {event_id} in 30s")

    # Ingest: the request's line names the event and carries the request span's trace id.
    requests = [
        e for e in json_lines(output_path, "ingest") if e.get("event") == "http" and e.get("event_id") == event_id
    ]
    assert len(requests) == 1, requests
    trace_id = requests[0].get("trace_id")
    assert trace_id and len(trace_id) == 32 and requests[0].get("span_id"), requests[0]

    # Segmentation and contacts: the line of the chunk that handled it, in that trace or linked to it.
    def handled_in(service: str, event: str) -> list[dict]:
        return [e for e in json_lines(output_path, service) if e.get("event") == event and traced_by(e, trace_id)]

    eventually_sync(
        lambda: handled_in("segmentation", "events segmented"),
        timeout=10,
        interval=0.2,
        message=f"no segmentation line carries trace {trace_id}",
    )
    eventually_sync(
        lambda: handled_in("contacts", "changes applied"),
        timeout=10,
        interval=0.2,
        message=f"no contacts line carries trace {trace_id}",
    )

    # The console exporters printed spans of that trace (or linked to it) in all three services.
    for service in ("ingest", "segmentation", "contacts"):
        eventually_sync(
            lambda service=service: trace_id in span_trace_ids(json_lines(output_path, service)),
            timeout=10,
            interval=0.2,
            message=f"{service} exported no span of trace {trace_id}",
        )


def test_lines_outside_a_span_carry_no_trace_id(traced_suite):
    _suite, output_path = traced_suite
    started = [e for e in json_lines(output_path, "ingest") if e.get("event") == "service started"]
    assert started and "trace_id" not in started[0]
