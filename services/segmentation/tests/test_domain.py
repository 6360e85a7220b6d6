"""The segmentation rules, pure: custom rules beside the automatic ones in a change, lead
capture, the dry-run explanation and the display-name rule. No database. (The automatic
table is tested in test_segmentation.py, the limits in test_limits.py.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss_ingest.sources.hotmart import event_from_webhook
from listboss_segmentation import conditions as cond
from listboss_segmentation import domain
from listboss_segmentation.consumer import change_for
from listboss_segmentation.messages import ChangeEncoder, clear_contact_data, event_type_name

WEBHOOKS = Path(__file__).resolve().parents[3] / "tests" / "data" / "hotmart"
BILLET = event_from_webhook((WEBHOOKS / "PURCHASE_BILLET_PRINTED.json").read_text(), "alice")


def clause(field, operator, *values) -> cond.Clause:
    return cond.Clause(field, operator, tuple(values))


def billet_buyers(**overrides) -> domain.CustomSegmentation:
    segmentation = domain.CustomSegmentation(
        "alice",
        "0",
        "billet-buyers",
        "Billet buyers",
        "SEND",
        "PURCHASE_BILLET_PRINTED",
        clause("offer_code", cond.EQUALS, "test"),
        ("phone", "address"),
        ("billet-buyers",),
        ("old-tag",),
        state=domain.ACTIVE,
    )
    return replace(segmentation, **overrides)


def test_custom_rules_follow_the_automatic_one_in_the_change():
    custom = billet_buyers()
    change = change_for(BILLET, domain.rule_index([custom]))
    base = "producers/alice/products/0/segmentations/"
    assert list(change.fired_segmentations) == [base + "auto-billet-printed", base + "billet-buyers"]
    assert [(o.tag_key, o.automatic, o.segmentation.rsplit("/", 1)[1]) for o in change.tag_operations] == [
        ("cart-abandoned", True, "auto-billet-printed"),
        ("billet-printed", True, "auto-billet-printed"),
        ("old-tag", False, "billet-buyers"),
        ("billet-buyers", False, "billet-buyers"),
    ]
    data = dict(change.contact_data)
    assert data["email"] == "testecomprador271101postman15@example.com"
    assert data["name"] == "Teste Comprador"
    assert data["phone"] and data["address.city"] == "Uberlândia"
    assert "document" not in data  # not chosen by anyone
    # An inactive one does nothing.
    change = change_for(BILLET, domain.rule_index([replace(custom, state=domain.INACTIVE)]))
    assert list(change.fired_segmentations) == [base + "auto-billet-printed"]
    assert set(change.contact_data) == {"email", "name"}


def test_capture_sends_email_and_name_even_without_an_automatic_segmentation():
    webinar = event_pb2.Event(
        id="w1",
        producer="alice",
        type=event_pb2.EVENT_TYPE_WEBINAR_ATTENDANCE,
        product=event_pb2.Product(id="9", name="Live", kind=event_pb2.PRODUCT_KIND_WEBINAR),
        person=event_pb2.Person(email="ana@example.com", first_name="Ana", last_name="Lima", phone="+55"),
        webinar=event_pb2.WebinarSession(id="w", attended_minutes=50),
    )
    change = change_for(webinar)
    assert list(change.fired_segmentations) == [] and list(change.tag_operations) == []
    assert dict(change.contact_data) == {"email": "ana@example.com", "name": "Ana Lima"}
    stayed = domain.CustomSegmentation(
        "alice",
        "9",
        "stayed",
        "Stayed",
        "SEND",
        "WEBINAR_ATTENDANCE",
        clause("attended_minutes", cond.GREATER_OR_EQUALS, 45.0),
        ("phone",),
        ("stayed-45",),
        (),
        state=domain.ACTIVE,
    )
    change = change_for(webinar, domain.rule_index([stayed]))
    assert [o.tag_key for o in change.tag_operations] == ["stayed-45"]
    assert dict(change.contact_data) == {"email": "ana@example.com", "name": "Ana Lima", "phone": "+55"}


# --- the dry run (TestSegmentation) ------------------------------------------------------------------


def test_explanation_of_a_match_names_what_it_would_do_and_send():
    explanation = domain.explain(billet_buyers(), "PURCHASE_BILLET_PRINTED", BILLET)
    assert explanation.matched and explanation.event_type_matched
    assert explanation.text == "matches: it would add billet-buyers, remove old-tag"
    assert [(o.path, o.result) for o in explanation.clauses] == [("clause", True)]
    # Only what this segmentation chose: lead capture's email and name are not its doing.
    assert "email" not in explanation.contact_data
    assert explanation.contact_data["phone"] and explanation.contact_data["address.city"] == "Uberlândia"


def test_explanation_of_a_false_condition_lists_the_false_clauses():
    condition = cond.AllOf(
        (
            clause("offer_code", cond.EQUALS, "test"),
            clause("payment_type", cond.EQUALS, "PIX"),
            clause("installments", cond.LESS_THAN, 2.0),
        )
    )
    explanation = domain.explain(billet_buyers(condition=condition), "PURCHASE_BILLET_PRINTED", BILLET)
    assert not explanation.matched and explanation.event_type_matched
    assert explanation.text == (
        "does not match: the condition is false (false clauses: all.conditions[1].clause, all.conditions[2].clause)"
    )
    assert [o.result for o in explanation.clauses] == [True, False, False]
    assert explanation.contact_data == {}


def test_explanation_of_another_event_type_still_explains_every_clause():
    explanation = domain.explain(billet_buyers(), "PURCHASE_APPROVED", BILLET)
    assert not explanation.matched and not explanation.event_type_matched
    assert (
        explanation.text == "does not match: the event is PURCHASE_APPROVED, the segmentation is for "
        "PURCHASE_BILLET_PRINTED"
    )
    assert [o.result for o in explanation.clauses] == [True]


def test_explanation_of_an_automatic_segmentation():
    automatic = domain.AUTOMATIC_BY_ID["auto-billet-printed"]
    explanation = domain.explain(automatic, "PURCHASE_BILLET_PRINTED", BILLET)
    assert explanation.matched and explanation.clauses == []
    assert explanation.text == "matches: it would add billet-printed, remove cart-abandoned"
    assert set(explanation.contact_data) == {"email", "name"}


# --- names --------------------------------------------------------------------------------------------


def test_one_display_name_rule_for_products_and_segmentations():
    assert domain.check_display_name("Course") is None
    assert domain.check_display_name("x" * domain.MAX_DISPLAY_NAME) is None
    assert domain.check_display_name("x" * (domain.MAX_DISPLAY_NAME + 1)) == "must be at most 200 characters"
    assert domain.check_display_name("   ") == "is required"
    too_long = billet_buyers(display_name="x" * 201)
    assert ("display_name", "must be at most 200 characters") in domain.check_segmentation(too_long)
    # A tag's display name carries a registered product's whole name.
    assert domain.MAX_TAG_PRODUCT_NAME == domain.MAX_DISPLAY_NAME


def _encoded_change(encoder: ChangeEncoder, event: event_pb2.Event, index: domain.RuleIndex):
    """What the consumer publishes for a clear event, parsed back."""
    fired = domain.fire(index[event_type_name(event.type)], event)
    outcome = encoder.outcome(event.producer, event.product.id, event.product.name, fired)
    chosen = domain.contact_data(outcome.contact_data, event)
    encoded = encoder.change(event.SerializeToString(), outcome, clear_contact_data(chosen))
    return contact_change_pb2.ContactChange.FromString(encoded)


def test_encoded_changes_equal_the_messages_built_field_by_field():
    encoder = ChangeEncoder()
    index = domain.rule_index([billet_buyers(), billet_buyers(segmentation_id="all-billets", condition=None)])
    for offer in ("test", "other"):  # both custom rules fire, then only the unconditional one
        event = event_pb2.Event()
        event.CopyFrom(BILLET)
        event.purchase.offer_code = offer
        for _ in range(2):  # built, then taken from the encoder's cache
            assert _encoded_change(encoder, event, index) == change_for(event, index)


def test_an_encoded_outcome_follows_a_rule_changed_under_the_same_id():
    encoder = ChangeEncoder()
    before = _encoded_change(encoder, BILLET, domain.rule_index([billet_buyers()]))
    after = _encoded_change(encoder, BILLET, domain.rule_index([billet_buyers(add_tags=("renamed",))]))
    assert "billet-buyers" in [op.tag_key for op in before.tag_operations]
    assert "renamed" in [op.tag_key for op in after.tag_operations]
    assert "billet-buyers" not in [op.tag_key for op in after.tag_operations]
