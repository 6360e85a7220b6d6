"""End to end through grpcurl alone, with the real suite (nats-server, three services as
processes): a producer creates "buyers paying by billet with offer X get tag billet-buyers",
tests it against a sample event, activates it, ingests matching and non-matching events,
and sees exactly the matching contacts tagged; automatic segmentations refuse changes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from listboss_tools.suite import Suite

pytestmark = pytest.mark.e2e

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
PRODUCT = "producers/demo/products/555"
SEGMENTATION = f"{PRODUCT}/segmentations/billet-buyers"


def grpcurl(suite: Suite, service: str, method: str, body: dict, producer: str | None = "demo", ok: bool = True):
    address = getattr(suite, f"{service}_address")
    package = f"listboss.{service}.v1.{service.capitalize()}Service"
    result = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-H",
            f"authorization: Bearer {suite.producer_token(producer)}",
            "-d",
            json.dumps(body),
            address,
            f"{package}/{method}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode == 0) is ok, result.stderr or result.stdout
    return json.loads(result.stdout) if ok else result.stderr


def billet_event(event_id: str, email: str, payment_type: str, offer_code: str) -> dict:
    return {
        "id": event_id,
        "producer": "demo",
        "type": "EVENT_TYPE_PURCHASE_BILLET_PRINTED",
        "occurTime": "2026-01-10T12:00:00Z",
        "product": {"id": "555", "name": "Billet course", "kind": "PRODUCT_KIND_PRODUCT"},
        "person": {"email": email, "name": email.split("@")[0].title(), "phone": "+55 11 90000"},
        "purchase": {
            "transaction": f"HP{event_id}",
            "paymentType": payment_type,
            "offerCode": offer_code,
            "price": {"currencyCode": "BRL", "value": 97},
        },
    }


def test_a_producer_builds_tests_and_activates_a_segmentation_with_grpcurl(suite):
    # The platform registers the producer's approved product (internal role).
    grpcurl(
        suite,
        "segmentation",
        "RegisterProduct",
        {
            "parent": "producers/demo",
            "productId": "555",
            "displayName": "Billet course",
            "kind": "PRODUCT_KIND_PRODUCT",
        },
        producer=None,
    )

    described = grpcurl(suite, "segmentation", "DescribeEventTypes", {})
    billet = next(d for d in described["event_types"] if d["event_type"] == "EVENT_TYPE_PURCHASE_BILLET_PRINTED")
    assert {"payment_type", "offer_code"} <= {f["name"] for f in billet["fields"]}

    created = grpcurl(
        suite,
        "segmentation",
        "CreateSegmentation",
        {
            "parent": PRODUCT,
            "segmentationId": "billet-buyers",
            "requestId": "create-billet-buyers-1",
            "segmentation": {
                "displayName": "Buyers paying by billet with offer X",
                "provider": "PROVIDER_SEND",
                "eventType": "EVENT_TYPE_PURCHASE_BILLET_PRINTED",
                "condition": {
                    "all": {
                        "conditions": [
                            {
                                "clause": {
                                    "field": "payment_type",
                                    "operator": "OPERATOR_EQUALS",
                                    "value": {"stringValue": "BILLET"},
                                }
                            },
                            {
                                "clause": {
                                    "field": "offer_code",
                                    "operator": "OPERATOR_EQUALS",
                                    "value": {"stringValue": "X"},
                                }
                            },
                        ]
                    }
                },
                "contactData": ["CONTACT_DATA_NAME", "CONTACT_DATA_PHONE"],
                "action": {"addTags": ["billet-buyers"]},
            },
        },
    )
    assert created["name"] == SEGMENTATION and created["state"] == "SEGMENTATION_STATE_INACTIVE"

    sample = billet_event("sample", "sample@example.com", "BILLET", "X")
    tested = grpcurl(suite, "segmentation", "TestSegmentation", {"name": SEGMENTATION, "event": sample})
    assert tested["matched"] is True
    assert [(c["field"], c["result"]) for c in tested["clauses"]] == [("payment_type", True), ("offer_code", True)]
    sample["purchase"]["offerCode"] = "Y"
    tested = grpcurl(suite, "segmentation", "TestSegmentation", {"name": SEGMENTATION, "event": sample})
    assert tested.get("matched", False) is False
    assert tested["clauses"][1]["actual"] == {"string_value": "Y"}

    active = grpcurl(suite, "segmentation", "ActivateSegmentation", {"name": SEGMENTATION})
    assert active["state"] == "SEGMENTATION_STATE_ACTIVE"

    events = {
        "ana@example.com": billet_event("e2e-1", "ana@example.com", "BILLET", "X"),  # matches
        "bia@example.com": billet_event("e2e-2", "bia@example.com", "PIX", "X"),  # wrong payment type
        "caio@example.com": billet_event("e2e-3", "caio@example.com", "BILLET", "Y"),  # wrong offer
        "dora@example.com": billet_event("e2e-4", "dora@example.com", "billet", "X"),  # matches (normalized)
    }
    for event in events.values():
        reply = grpcurl(suite, "ingest", "IngestEvent", {"event": event})
        assert reply["event_id"] == event["id"]

    def history():
        listed = grpcurl(suite, "contacts", "ListEvents", {"parent": PRODUCT, "pageSize": 100})
        return listed.get("events", [])

    deadline = time.monotonic() + 30
    while len(history()) < len(events):
        assert time.monotonic() < deadline, "the events never reached the history"
        time.sleep(0.2)

    tagged = grpcurl(suite, "contacts", "ListContacts", {"parent": "producers/demo", "filter": 'tag = "billet-buyers"'})
    assert sorted(c["email"] for c in tagged.get("contacts", [])) == ["ana@example.com", "dora@example.com"]
    everyone = grpcurl(
        suite, "contacts", "ListContacts", {"parent": "producers/demo", "filter": 'tag = "billet-printed"'}
    )
    assert len(everyone["contacts"]) == 4  # the automatic segmentation fired for all of them
    entry = next(e for e in history() if e["email"] == "ana@example.com")
    assert set(entry["fired_segmentations"]) == {f"{PRODUCT}/segmentations/auto-billet-printed", SEGMENTATION}
    assert "billet-buyers" in entry["added_tags"]

    # Automatic segmentations are platform-defined: every change fails with a clear reason.
    automatic = f"{PRODUCT}/segmentations/auto-billet-printed"
    error = grpcurl(
        suite,
        "segmentation",
        "UpdateSegmentation",
        {"segmentation": {"name": automatic, "displayName": "Mine"}, "updateMask": {"paths": ["display_name"]}},
        ok=False,
    )
    assert "FailedPrecondition" in error and "platform-defined" in error and "AUTOMATIC_SEGMENTATION_LOCKED" in error
    error = grpcurl(suite, "segmentation", "DeleteSegmentation", {"name": automatic}, ok=False)
    assert "FailedPrecondition" in error and "platform-defined" in error
