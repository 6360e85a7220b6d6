"""End to end: the three services as processes, a real nats-server, the example
webhooks in, and what Send would see out — through gRPC and through grpcurl."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from listboss.segmentation.v1 import segmentation_service_pb2 as segmentation_pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as segmentation_grpc
from listboss_tools.suite import Suite

pytestmark = pytest.mark.e2e

FIXTURES = sorted((Path(__file__).parent / "data" / "hotmart").glob("*.json"))
GRPCURL = str(Path(sys.executable).parent / "grpcurl")

BUYER = "testecomprador271101postman15@example.com"
EXPECTED_TAGS = {
    # The purchase events, decided by their creation times: the chargeback removed approved and
    # complete, the refund removed refund-requested, the later protest added it back.
    BUYER: {
        ("0", "purchase-canceled"),
        ("0", "purchase-chargeback"),
        ("0", "purchase-delayed"),
        ("0", "purchase-expired"),
        ("0", "purchase-refunded"),
        ("0", "refund-requested"),
    },
    "teste@hotmart.com.br": {
        ("0", "members-area-accessed"),
        ("0", "module-completed"),
        ("0", "plan-switched"),
        ("123456", "cart-abandoned"),
    },
    "test@hotmart.com": {("0", "charge-date-changed"), ("788921", "subscription-canceled")},
}


def auth(suite: Suite, producer: str | None = "demo"):
    return (("authorization", f"Bearer {suite.producer_token(producer)}"),)


@pytest.fixture(scope="module")
def ingested(suite):
    """Feeds every example webhook once and waits until contacts has recorded all of
    them; returns the canonical events."""
    with grpc.insecure_channel(suite.ingest_address) as channel:
        stub = ingest_grpc.IngestServiceStub(channel)
        replies = [
            stub.IngestWebhook(
                ingest_pb.IngestWebhookRequest(parent="producers/demo", payload=path.read_text()),
                metadata=auth(suite),
                timeout=10,
            )
            for path in FIXTURES
        ]
    assert not any(reply.duplicate for reply in replies)
    stub = contacts_stub(suite)
    recorded = wait_for(
        lambda: sum(len(all_history(stub, suite, product)) for product in ("0", "123456", "788921")) == len(FIXTURES)
    )
    assert recorded, "the events never reached the contacts service's history"
    return [reply.event for reply in replies]


def contacts_stub(suite):
    return contacts_grpc.ContactsServiceStub(grpc.insecure_channel(suite.contacts_address))


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def all_history(stub, suite, product):
    return stub.ListEvents(
        contacts_pb.ListEventsRequest(parent=f"producers/demo/products/{product}", page_size=100),
        metadata=auth(suite),
    ).events


def test_example_webhooks_become_contacts_with_standard_tags(suite, ingested):
    assert len(ingested) == 15
    stub = contacts_stub(suite)

    contacts = stub.ListContacts(
        contacts_pb.ListContactsRequest(parent="producers/demo"), metadata=auth(suite)
    ).contacts
    assert {c.email: {(t.product.split("/")[-1], t.key) for t in c.tags} for c in contacts} == EXPECTED_TAGS
    assert all(c.source == contacts_pb.CONTACT_SOURCE_AUTO for c in contacts)
    buyer = next(c for c in contacts if c.email == BUYER)
    assert buyer.display_name == "Teste Comprador"
    assert all(t.kind == contacts_pb.TAG_KIND_AUTOMATIC for t in buyer.tags)
    refunded = next(t for t in buyer.tags if t.key == "purchase-refunded")
    assert refunded.segmentation == "producers/demo/products/0/segmentations/auto-purchase-refunded"
    assert stub.GetContact(contacts_pb.GetContactRequest(name=buyer.name), metadata=auth(suite)) == buyer


def test_history_tells_what_each_event_did(suite, ingested):
    stub = contacts_stub(suite)
    history = {entry.name.split("/")[-1]: entry for entry in all_history(stub, suite, "0")}
    approved = history["545e7d21-8fc4-4906-8fba-dcd7889f6481"]
    assert approved.email == BUYER and approved.type == 3
    assert list(approved.added_tags) == ["purchase-approved"]
    assert set(approved.removed_tags) == {
        "cart-abandoned",
        "billet-printed",
        "purchase-canceled",
        "purchase-expired",
        "purchase-delayed",
    }
    assert list(approved.fired_segmentations) == ["producers/demo/products/0/segmentations/auto-purchase-approved"]
    cart = all_history(stub, suite, "123456")
    assert [e.email for e in cart] == ["teste@hotmart.com.br"]
    everything = [*history.values(), *cart, *all_history(stub, suite, "788921")]
    # Each of the three people was captured by exactly one event.
    captured = sorted(entry.email for entry in everything if entry.contact_created)
    assert captured == sorted(EXPECTED_TAGS)


def test_filter_counts_and_tags_for_send(suite, ingested):
    stub = contacts_stub(suite)
    found = stub.ListContacts(
        contacts_pb.ListContactsRequest(
            parent="producers/demo", filter='tag = "purchase-refunded" AND NOT tag = "cart-abandoned"'
        ),
        metadata=auth(suite),
    )
    assert [c.email for c in found.contacts] == [BUYER]
    tags = stub.ListTags(contacts_pb.ListTagsRequest(parent="producers/demo"), metadata=auth(suite)).tags
    counts = {t.name: t.contact_count for t in tags}
    assert counts["producers/demo/tags/0.purchase-refunded"] == 1
    assert counts["producers/demo/tags/0.purchase-approved"] == 0
    with pytest.raises(grpc.RpcError) as error:
        stub.ListContacts(
            contacts_pb.ListContactsRequest(parent="producers/demo", filter='tag = "x" AND'), metadata=auth(suite)
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_repeated_webhook_is_a_duplicate_and_changes_nothing(suite, ingested):
    stub = contacts_stub(suite)
    with grpc.insecure_channel(suite.ingest_address) as channel:
        reply = ingest_grpc.IngestServiceStub(channel).IngestWebhook(
            ingest_pb.IngestWebhookRequest(parent="producers/demo", payload=FIXTURES[0].read_text()),
            metadata=auth(suite),
        )
    assert reply.duplicate
    time.sleep(0.5)  # deliberately lets time pass: the duplicate must add nothing to the history
    assert len(all_history(stub, suite, "0")) == 13


def test_one_producer_cannot_see_anothers_contacts(suite, ingested):
    stub = contacts_stub(suite)
    for call in (
        lambda md: stub.ListContacts(contacts_pb.ListContactsRequest(parent="producers/demo"), metadata=md),
        lambda md: stub.ListTags(contacts_pb.ListTagsRequest(parent="producers/demo"), metadata=md),
        lambda md: stub.GetContact(contacts_pb.GetContactRequest(name="producers/demo/contacts/1"), metadata=md),
        lambda md: stub.ListEvents(contacts_pb.ListEventsRequest(parent="producers/demo/products/0"), metadata=md),
    ):
        with pytest.raises(grpc.RpcError) as error:
            call(auth(suite, "intruder"))
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "@" not in error.value.details()
        with pytest.raises(grpc.RpcError) as error:
            call(())
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    own = stub.ListContacts(
        contacts_pb.ListContactsRequest(parent="producers/intruder"), metadata=auth(suite, "intruder")
    )
    assert list(own.contacts) == []


def test_products_and_their_automatic_segmentations(suite, ingested):
    with grpc.insecure_channel(suite.segmentation_address) as channel:
        stub = segmentation_grpc.SegmentationServiceStub(channel)
        # Segmentation records a product before it publishes the changes its events caused.
        products = stub.ListProducts(
            segmentation_pb.ListProductsRequest(parent="producers/demo"), metadata=auth(suite)
        ).products
        assert {p.name for p in products} == {
            "producers/demo/products/0",
            "producers/demo/products/123456",
            "producers/demo/products/788921",
        }
        registered = stub.RegisterProduct(
            segmentation_pb.RegisterProductRequest(
                parent="producers/demo", product_id="999", display_name="Live webinar", kind=2
            ),
            metadata=auth(suite, None),
        )
        assert registered.name == "producers/demo/products/999"
        segmentations = stub.ListSegmentations(
            segmentation_pb.ListSegmentationsRequest(parent=registered.name, page_size=100), metadata=auth(suite)
        ).segmentations
    assert len(segmentations) == 15
    assert all(s.kind == segmentation_pb.SEGMENTATION_KIND_AUTOMATIC for s in segmentations)


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30)


def test_grpcurl_lists_every_service_through_reflection(suite):
    for name, address in suite.grpc_addresses.items():
        listed = grpcurl("-plaintext", address, "list")
        assert listed.returncode == 0, listed.stderr
        services = set(listed.stdout.split())
        assert f"listboss.{name}.v1.{name.capitalize()}Service" in services
        assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
        health = grpcurl("-plaintext", address, "grpc.health.v1.Health/Check")
        assert json.loads(health.stdout) == {"status": "SERVING"}


def test_grpcurl_calls_a_method_with_no_proto_files(suite, ingested):
    token = suite.producer_token("demo")
    result = grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        json.dumps({"parent": "producers/demo", "filter": 'tag = "cart-abandoned"'}),
        suite.contacts_address,
        "listboss.contacts.v1.ContactsService/ListContacts",
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert [c["email"] for c in body["contacts"]] == ["teste@hotmart.com.br"]
    denied = grpcurl(
        "-plaintext",
        "-d",
        json.dumps({"parent": "producers/demo"}),
        suite.contacts_address,
        "listboss.contacts.v1.ContactsService/ListContacts",
    )
    assert denied.returncode != 0 and "Unauthenticated" in denied.stderr


def test_a_node_client_generated_from_the_protos(suite, ingested):
    script = Path(__file__).parent / "node" / "contacts_client.js"
    token = suite.producer_token("demo")
    run = subprocess.run(
        ["node", str(script), suite.contacts_address, token, "producers/demo", 'tag = "module-completed"'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert [c["email"] for c in body["contacts"]] == ["teste@hotmart.com.br"]
    assert body["contacts"][0]["source"] == "CONTACT_SOURCE_AUTO"
    denied = subprocess.run(
        ["node", str(script), suite.contacts_address, suite.producer_token("intruder"), "producers/demo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode == 1 and json.loads(denied.stderr)["code"] == "PERMISSION_DENIED"


def read_tag_changes(stub, suite, cursor="", limit=None, seconds=3.0):
    """The demo producer's tag changes after ``cursor``: up to ``limit`` of them, or all
    that arrive within ``seconds``."""
    call = stub.WatchTagChanges(
        contacts_pb.WatchTagChangesRequest(parent="producers/demo", cursor=cursor),
        metadata=auth(suite),
        timeout=seconds,
    )
    got = []
    try:
        for item in call:
            got.append(item)
            if limit is not None and len(got) == limit:
                call.cancel()
                break
    except grpc.RpcError as error:
        assert error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED), error
    return got


def test_tag_changes_stream_follows_the_tags_and_resumes_after_a_disconnect(suite, ingested):
    stub = contacts_stub(suite)
    names = {
        c.name: c.email
        for c in stub.ListContacts(
            contacts_pb.ListContactsRequest(parent="producers/demo"), metadata=auth(suite)
        ).contacts
    }

    def replayed(items):
        """The tags each contact has after every change in the stream, in its order."""
        state: dict[str, set] = {email: set() for email in EXPECTED_TAGS}
        for item in items:
            change = item.change
            tag = (change.tag.split("/")[-1].rsplit(".", 1)[0], change.tag_key)
            target = state[names[change.contact]]
            (target.add if change.action == contacts_pb.TagChange.ACTION_ADDED else target.discard)(tag)
        return state

    everything = wait_for(
        lambda: (items := read_tag_changes(stub, suite)) and replayed(items) == EXPECTED_TAGS and items
    )
    assert everything, "the tag changes never matched the contacts' tags"
    ids = [int(item.change.id) for item in everything]
    assert ids == sorted(set(ids))
    assert all("@" not in str(item.change) for item in everything)

    first = read_tag_changes(stub, suite, limit=4)
    rest = read_tag_changes(stub, suite, cursor=first[-1].cursor)
    assert [item.change.id for item in first + rest] == [item.change.id for item in everything]


def grpcurl_json(suite, token: str, method: str, body: dict) -> list[dict]:
    """Calls ``method`` on the contacts service with grpcurl; returns every response message."""
    result = grpcurl(
        "-plaintext",
        "-H",
        f"authorization: Bearer {token}",
        "-d",
        json.dumps(body),
        suite.contacts_address,
        f"listboss.contacts.v1.ContactsService/{method}",
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(part) for part in result.stdout.replace("}\n{", "}\x00{").split("\x00") if part.strip()]


def test_count_and_export_through_grpcurl(suite, ingested):
    token = suite.producer_token("demo")
    [count] = grpcurl_json(
        suite, token, "CountContacts", {"parent": "producers/demo", "filter": 'tag = "purchase-chargeback"'}
    )
    assert count == {"count": "1"}
    [everyone] = grpcurl_json(suite, token, "CountContacts", {"parent": "producers/demo"})
    chunks = grpcurl_json(suite, token, "ExportContacts", {"parent": "producers/demo", "order_by": "email"})
    exported = [c["email"] for chunk in chunks for c in chunk["contacts"]]
    assert exported == sorted(exported) and len(exported) == int(everyone["count"])
    assert set(EXPECTED_TAGS) <= set(exported)


def test_erasure_through_grpcurl_and_a_fresh_start(suite, ingested):
    token = suite.producer_token("demo")
    payload = json.loads((FIXTURES[0].parent / "PURCHASE_APPROVED.json").read_text())
    payload["id"] = "erasure-first"
    payload["data"]["buyer"]["email"] = "forget.me@example.com"
    with grpc.insecure_channel(suite.ingest_address) as channel:
        ingest = ingest_grpc.IngestServiceStub(channel)
        ingest.IngestWebhook(
            ingest_pb.IngestWebhookRequest(parent="producers/demo", payload=json.dumps(payload)), metadata=auth(suite)
        )
        find = {"parent": "producers/demo", "filter": 'email = "forget.me@example.com"'}
        found = wait_for(lambda: grpcurl_json(suite, token, "ListContacts", find)[0].get("contacts"))
        assert found, "the contact was never captured"
        name = found[0]["name"]

        assert grpcurl_json(suite, token, "DeleteContact", {"name": name}) == [{}]
        gone = grpcurl(
            "-plaintext",
            "-H",
            f"authorization: Bearer {token}",
            "-d",
            json.dumps({"name": name}),
            suite.contacts_address,
            "listboss.contacts.v1.ContactsService/GetContact",
        )
        assert gone.returncode != 0 and "NotFound" in gone.stderr
        history = all_history(contacts_stub(suite), suite, "0")
        assert not any(entry.email == "forget.me@example.com" for entry in history)

        payload["id"] = "erasure-second"
        ingest.IngestWebhook(
            ingest_pb.IngestWebhookRequest(parent="producers/demo", payload=json.dumps(payload)), metadata=auth(suite)
        )
    again = wait_for(lambda: grpcurl_json(suite, token, "ListContacts", find)[0].get("contacts"))
    assert again and again[0]["name"] != name
    assert [t["key"] for t in again[0]["tags"]] == ["purchase-approved"]
