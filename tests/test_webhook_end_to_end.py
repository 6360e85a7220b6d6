"""End to end through the webhook receiver: the suite's processes, the example webhooks posted
over HTTP with the development hottok, and what contacts records; plus the ingest process's
start-up and shutdown around its HTTP side."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss_testing import auth_env, eventually_sync, free_port
from listboss_testing.personal_data import data_key_env
from listboss_tools.suite import DEMO_PRODUCER, health_status

pytestmark = pytest.mark.e2e

FIXTURES = sorted((Path(__file__).parent / "data" / "hotmart").glob("*.json"))


def post(url: str, body: bytes, hottok: str | None, content_type: str = "application/json") -> tuple[int, dict]:
    headers = {"Content-Type": content_type}
    if hottok is not None:
        headers["X-HOTMART-HOTTOK"] = hottok
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_suite_configures_a_private_dev_hottok_for_demo(suite):
    tokens = json.loads(suite.webhook_tokens_file.read_text())
    assert tokens == {DEMO_PRODUCER: suite.demo_hottok}
    assert len(suite.demo_hottok) >= 24
    assert suite.webhook_tokens_file.stat().st_mode & 0o077 == 0
    assert suite.info()["tokens"]["hottok"] == suite.demo_hottok


def test_example_webhooks_over_http_reach_the_contacts_history(suite):
    url = suite.webhook_url(DEMO_PRODUCER)
    ids = []
    for path in FIXTURES:
        status, answer = post(url, path.read_bytes(), suite.demo_hottok)
        assert status == 200, answer
        assert answer["duplicate"] is False
        ids.append(answer["event_id"])
    assert post(url, FIXTURES[0].read_bytes(), suite.demo_hottok) == (200, {"event_id": ids[0], "duplicate": True})
    assert post(url, FIXTURES[0].read_bytes(), "wrong")[0] == 401
    assert post(suite.webhook_url("someone-else"), FIXTURES[0].read_bytes(), suite.demo_hottok)[0] == 401

    metadata = (("authorization", f"Bearer {suite.demo_token}"),)
    with grpc.insecure_channel(suite.contacts_address) as channel:
        stub = contacts_grpc.ContactsServiceStub(channel)

        def recorded() -> list[str]:
            found = []
            for product in ("0", "123456", "788921"):
                reply = stub.ListEvents(
                    contacts_pb.ListEventsRequest(parent=f"producers/demo/products/{product}", page_size=100),
                    metadata=metadata,
                )
                found.extend(event.name.rsplit("/", 1)[-1] for event in reply.events)
            return found

        eventually_sync(
            lambda: sorted(recorded()) == sorted(ids),
            timeout=30,
            interval=0.2,
            message=f"contacts did not record every one of {sorted(ids)} within 30s",
        )


def test_http_health_follows_grpc_health(suite):
    assert health_status(suite.ingest_address) == "SERVING"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{suite.http_address}/healthz", timeout=5) as response:
        assert json.loads(response.read()) == {"status": "SERVING"}


def _ingest_env(grpc_port: int, http_port: int, nats_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "LISTBOSS_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
        "LISTBOSS_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
        "LISTBOSS_NATS_URL": nats_url,
        **auth_env(),
        **data_key_env(),
        "LISTBOSS_WEBHOOK_TOKENS": "alice=alice-hottok",
        "LISTBOSS_LOG_FORMAT": "json",
        # A free port, so a second run on the machine cannot collide with this one.
        "LISTBOSS_METRICS_ADDRESS": "127.0.0.1:0",
    }


def _ingest_command() -> list[str]:
    return [sys.executable, "-m", "listboss_ingest.main"]


def test_ingest_does_not_serve_when_its_http_port_is_taken(nats_server):
    grpc_port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        http_port = busy.getsockname()[1]
        process = subprocess.run(
            _ingest_command(),
            env=_ingest_env(grpc_port, http_port, nats_server.url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert process.returncode != 0
    assert "could not bind the webhook receiver" in process.stderr


def test_sigterm_stops_http_and_grpc_then_exits_cleanly(nats_server):
    grpc_port, http_port = free_port(), free_port()
    process = subprocess.Popen(
        _ingest_command(),
        env=_ingest_env(grpc_port, http_port, nats_server.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while health_status(f"127.0.0.1:{grpc_port}") != "SERVING":
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        body = FIXTURES[0].read_bytes()
        status, answer = post(f"http://127.0.0.1:{http_port}/webhooks/hotmart/alice", body, "alice-hottok")
        assert status == 200, answer
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    http_lines = [line for line in lines if line["event"] == "http"]
    assert [(line["status"], line["producer"]) for line in http_lines] == [(200, "alice")]
    assert "alice-hottok" not in stderr
    assert [line["event"] for line in lines][-1] == "stopped"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", http_port)) != 0


def test_a_webhook_whose_product_is_a_placeholder_still_captures_its_lead(suite):
    approved = Path(__file__).parent / "data" / "hotmart" / "PURCHASE_APPROVED.json"
    document = json.loads(approved.read_text())
    product_id = str(document["data"]["product"]["id"])
    # As real webhooks sometimes arrive: an address-like placeholder where the product object was.
    document["id"] = "productless-lead-1"
    document["data"]["product"] = "Rua Exemplo, 123 - Centro"
    document["data"]["buyer"]["email"] = "Lead.Without.Product@Example.com"
    status, answer = post(suite.webhook_url(DEMO_PRODUCER), json.dumps(document).encode(), suite.demo_hottok)
    assert status == 200, answer
    assert answer == {"event_id": "productless-lead-1", "duplicate": False}

    metadata = (("authorization", f"Bearer {suite.demo_token}"),)
    with grpc.insecure_channel(suite.contacts_address) as channel:
        stub = contacts_grpc.ContactsServiceStub(channel)

        def captured() -> list[contacts_pb.Contact]:
            reply = stub.ListContacts(
                contacts_pb.ListContactsRequest(
                    parent="producers/demo", filter='email = "lead.without.product@example.com"'
                ),
                metadata=metadata,
            )
            return list(reply.contacts)

        (contact,) = eventually_sync(
            captured, timeout=30, interval=0.2, message="contacts did not capture the product-less lead within 30s"
        )
        assert contact.source == contacts_pb.CONTACT_SOURCE_AUTO
        assert list(contact.tags) == []  # no product: no product tag
        fetched = stub.GetContact(contacts_pb.GetContactRequest(name=contact.name), metadata=metadata)
        assert fetched.last_event_time.seconds > 0
        # No product's history lists it, not even the one the damaged payload had named.
        listed = stub.ListEvents(
            contacts_pb.ListEventsRequest(parent=f"producers/demo/products/{product_id}", page_size=100),
            metadata=metadata,
        )
        assert "productless-lead-1" not in [event.name.rsplit("/", 1)[-1] for event in listed.events]
