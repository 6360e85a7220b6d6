"""Conditions on an event's data (one definition: validation, evaluation, explanation):
pure unit tests, no database, on the example webhooks and on generated conditions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listboss.events.v1 import event_pb2
from listboss_ingest.sources.hotmart import event_from_webhook
from listboss_segmentation import conditions as cond
from listboss_segmentation import domain
from listboss_segmentation.messages import event_type_name

WEBHOOKS = Path(__file__).resolve().parents[3] / "tests" / "data" / "hotmart"


def webhook_event(name: str) -> event_pb2.Event:
    return event_from_webhook((WEBHOOKS / f"{name}.json").read_text(), "alice")


def clause(field, operator, *values) -> cond.Clause:
    return cond.Clause(field, operator, tuple(values))


# --- the conditions: one definition, evaluated, explained, validated --------------------------------


BILLET = webhook_event("PURCHASE_BILLET_PRINTED")
CASES = [
    # (condition, event, expected)
    (clause("payment_type", cond.EQUALS, "CREDIT_CARD"), BILLET, True),
    (clause("payment_type", cond.EQUALS, "BILLET"), BILLET, False),
    (clause("payment_type", cond.IN, "BILLET", "PIX", "CREDIT_CARD"), BILLET, True),
    (clause("payment_type", cond.NOT_IN, "BILLET", "PIX"), BILLET, True),
    (clause("offer_code", cond.EQUALS, "test"), BILLET, True),
    (clause("coupon_code", cond.NOT_EQUALS, "SHHUHA"), BILLET, False),
    (clause("price", cond.GREATER_OR_EQUALS, cond.Money("BRL", 1500)), BILLET, True),
    (clause("price", cond.LESS_THAN, cond.Money("BRL", 1500)), BILLET, False),
    (clause("price", cond.GREATER_THAN, cond.Money("USD", 10)), BILLET, False),  # another currency never matches
    (clause("price", cond.NOT_EQUALS, cond.Money("USD", 1500)), BILLET, True),
    (clause("installments", cond.GREATER_THAN, 10.0), BILLET, True),
    (clause("installments", cond.LESS_OR_EQUALS, 1.0), BILLET, False),
    (clause("recurrence_number", cond.EXISTS), BILLET, False),
    (clause("recurrence_number", cond.NOT_EQUALS, 1.0), BILLET, True),  # absent: "not 1" holds
    (clause("checkout_country", cond.EQUALS, "BR"), BILLET, True),
    (clause("country", cond.EXISTS), BILLET, True),
    (clause("email_domain", cond.EQUALS, "example.com"), BILLET, True),
    (
        clause("subscription_plan", cond.EQUALS, "Subscription Plan Name"),
        webhook_event("SUBSCRIPTION_CANCELLATION"),
        True,
    ),
    (clause("subscription_plan", cond.EQUALS, "Novo produto test postback2"), webhook_event("SWITCH_PLAN"), True),
    (clause("module", cond.EQUALS, "Mudule test name"), webhook_event("CLUB_MODULE_COMPLETED"), True),
    (clause("module_id", cond.IN, "other"), webhook_event("CLUB_MODULE_COMPLETED"), False),
    (
        cond.AllOf((clause("payment_type", cond.EQUALS, "CREDIT_CARD"), clause("offer_code", cond.EQUALS, "test"))),
        BILLET,
        True,
    ),
    (
        cond.AllOf((clause("payment_type", cond.EQUALS, "PIX"), clause("offer_code", cond.EQUALS, "test"))),
        BILLET,
        False,
    ),
    (cond.AnyOf((clause("payment_type", cond.EQUALS, "PIX"), clause("offer_code", cond.EQUALS, "test"))), BILLET, True),
    (cond.Not(clause("payment_type", cond.EQUALS, "PIX")), BILLET, True),
    (
        cond.Not(cond.AnyOf((clause("installments", cond.GREATER_THAN, 1.0), clause("coupon_code", cond.EXISTS)))),
        BILLET,
        False,
    ),
]


@pytest.mark.parametrize(("condition", "event", "expected"), CASES)
def test_conditions_on_the_example_webhooks(condition, event, expected):
    assert cond.compile_condition(condition)(event) is expected
    result, outcomes = cond.explain(condition, event)
    assert result is expected  # the explanation and the compiled predicate agree
    assert [o.clause for o in outcomes] == [c for _, c in cond.clauses(condition)]
    event_type = event_type_name(event.type)
    for _, found in cond.clauses(condition):
        assert cond.check_clause(found, event_type) == []


def test_progress_and_webinar_fields():
    progress = event_pb2.Event(
        type=event_pb2.EVENT_TYPE_CONTENT_PROGRESS,
        content_progress=event_pb2.ContentProgress(content_id="c1", percentage=80),
    )
    assert cond.compile_condition(clause("course_progress", cond.GREATER_OR_EQUALS, 75.0))(progress)
    assert not cond.compile_condition(clause("course_progress", cond.GREATER_OR_EQUALS, 90.0))(progress)
    assert cond.compile_condition(clause("content_id", cond.EQUALS, "c1"))(progress)
    webinar = event_pb2.Event(
        type=event_pb2.EVENT_TYPE_WEBINAR_ATTENDANCE,
        webinar=event_pb2.WebinarSession(id="w1", name="Live", attended_minutes=42),
    )
    assert cond.compile_condition(clause("attended_minutes", cond.GREATER_THAN, 30.0))(webinar)
    assert cond.compile_condition(clause("webinar_name", cond.IN, "Live", "Replay"))(webinar)


def test_explain_shows_actual_values():
    condition = cond.AllOf(
        (clause("price", cond.GREATER_THAN, cond.Money("BRL", 100)), clause("recurrence_number", cond.EQUALS, 1.0))
    )
    result, outcomes = cond.explain(condition, BILLET)
    assert result is False
    assert [(o.path, o.actual, o.result) for o in outcomes] == [
        ("all.conditions[0].clause", cond.Money("BRL", 1500.0), True),
        ("all.conditions[1].clause", None, False),
    ]


def test_registry_is_consistent():
    for field in cond.FIELDS.values():
        assert field.event_types <= set(cond.EVENT_TYPES), field.name
        assert field.operators
    known = {event_type_name(v) for v in event_pb2.EventType.values() if v}
    assert set(cond.EVENT_TYPES) == known
    assert cond.from_json(json.loads(json.dumps(cond.to_json(CASES[-1][0])))) == CASES[-1][0]


# --- one definition: the compiled predicate and the explanation never disagree -------------------

_PAYMENT = st.sampled_from(["BILLET", "PIX", "CREDIT_CARD", ""])
_NUMBER = st.sampled_from([0.0, 1.0, 3.0, 12.0])
_MONEY = st.builds(cond.Money, st.sampled_from(["BRL", "USD"]), st.sampled_from([0.0, 97.0, 1500.0]))


def _clauses_strategy():
    string_ops = st.sampled_from([cond.EQUALS, cond.NOT_EQUALS, cond.EXISTS, cond.IN, cond.NOT_IN])
    number_ops = st.sampled_from(
        [
            cond.EQUALS,
            cond.NOT_EQUALS,
            cond.LESS_THAN,
            cond.LESS_OR_EQUALS,
            cond.GREATER_THAN,
            cond.GREATER_OR_EQUALS,
            cond.EXISTS,
            cond.IN,
        ]
    )
    money_ops = st.sampled_from([cond.EQUALS, cond.NOT_EQUALS, cond.LESS_THAN, cond.GREATER_OR_EQUALS, cond.EXISTS])

    def build(field, op, value, extra):
        if op == cond.EXISTS:
            return cond.Clause(field, op, ())
        if op in (cond.IN, cond.NOT_IN):
            return cond.Clause(field, op, (value, extra))
        return cond.Clause(field, op, (value,))

    payment = st.builds(build, st.just("payment_type"), string_ops, _PAYMENT.filter(bool), _PAYMENT.filter(bool))
    installments = st.builds(build, st.just("installments"), number_ops, _NUMBER, _NUMBER)
    price = st.builds(build, st.just("price"), money_ops, _MONEY, _MONEY)
    return st.one_of(payment, installments, price)


CONDITIONS = st.recursive(
    _clauses_strategy(),
    lambda inner: st.one_of(
        st.builds(lambda terms: cond.AllOf(tuple(terms)), st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda terms: cond.AnyOf(tuple(terms)), st.lists(inner, min_size=1, max_size=3)),
        st.builds(cond.Not, inner),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(CONDITIONS, _PAYMENT, _NUMBER, _MONEY)
def test_compiled_and_explained_results_agree(condition, payment_type, installments, price):
    event = event_pb2.Event(
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        purchase=event_pb2.Purchase(
            payment_type=payment_type,
            installments=int(installments),
            price=event_pb2.Money(currency_code=price.currency_code, value=price.value),
        ),
    )
    compiled = cond.compile_condition(condition)(event)
    explained, outcomes = cond.explain(condition, event)
    assert compiled is explained
    # A rule set compiled with other rules (shared slots) decides the same.
    other = cond.Clause("coupon_code", cond.EXISTS, ())
    rules = domain.rule_set(
        [
            domain.Rule("other", "PURCHASE_APPROVED", False, other, ("a",), (), ()),
            domain.Rule("this", "PURCHASE_APPROVED", False, condition, ("b",), (), ()),
        ]
    )
    assert ("this" in [r.segmentation_id for r in domain.fire(rules, event)]) is compiled
    assert len(outcomes) == len(cond.clauses(condition))
