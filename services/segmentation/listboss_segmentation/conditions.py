"""Conditions on an event's data: one definition, three uses.

A condition is data (a tree of :class:`Clause`, :class:`AllOf`, :class:`AnyOf`
and :class:`Not`). The field registry (:data:`FIELDS`) says, for every field a
clause may name, its type, the event types that offer it and how to read it
from a canonical event. From that one definition come:

* validation (:func:`check_clause`): the field exists for the event type, the
  operator suits the field's type, the values have the right type;
* evaluation (:func:`compile_slots`): a tree of closures built once per rule,
  over the values of a rule set's fields read once per event, so evaluating
  one event costs a few function calls per clause;
* explanation (:func:`explain`): each clause with its field, operator,
  expected value, the event's actual value and the result.

Readers take the event by attribute (``event.purchase.payment_type``) and
return None when the event has no value. The module imports neither protobuf
nor SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# --------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Money:
    currency_code: str
    value: float


Scalar = str | float | Money


@dataclass(frozen=True)
class Clause:
    field: str
    operator: str  # one of OPERATORS
    # One value for the comparisons, several for IN / NOT_IN, none for EXISTS.
    values: tuple[Scalar, ...] = ()


@dataclass(frozen=True)
class AllOf:
    terms: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    terms: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    term: Condition


Condition = Clause | AllOf | AnyOf | Not


def list_kind(condition: AllOf | AnyOf) -> str:
    """ "all" or "any": the list's name in paths, in the stored JSON and in messages."""
    return "all" if isinstance(condition, AllOf) else "any"


# --------------------------------------------------------------------------- operators and types

EQUALS, NOT_EQUALS, IN, NOT_IN = "EQUALS", "NOT_EQUALS", "IN", "NOT_IN"
LESS_THAN, LESS_OR_EQUALS, GREATER_THAN, GREATER_OR_EQUALS = (
    "LESS_THAN",
    "LESS_OR_EQUALS",
    "GREATER_THAN",
    "GREATER_OR_EQUALS",
)
EXISTS = "EXISTS"
OPERATORS = (EQUALS, NOT_EQUALS, IN, NOT_IN, LESS_THAN, LESS_OR_EQUALS, GREATER_THAN, GREATER_OR_EQUALS, EXISTS)
SYMBOLS = {
    EQUALS: "=",
    NOT_EQUALS: "!=",
    IN: "in",
    NOT_IN: "not in",
    LESS_THAN: "<",
    LESS_OR_EQUALS: "<=",
    GREATER_THAN: ">",
    GREATER_OR_EQUALS: ">=",
    EXISTS: "exists",
}
_ORDERINGS = (LESS_THAN, LESS_OR_EQUALS, GREATER_THAN, GREATER_OR_EQUALS)

STRING, NUMBER, MONEY = "STRING", "NUMBER", "MONEY"
OPERATORS_BY_TYPE: dict[str, tuple[str, ...]] = {
    STRING: (EQUALS, NOT_EQUALS, IN, NOT_IN, EXISTS),
    NUMBER: (EQUALS, NOT_EQUALS, IN, NOT_IN, *_ORDERINGS, EXISTS),
    MONEY: (EQUALS, NOT_EQUALS, *_ORDERINGS, EXISTS),
}
_PYTHON_TYPES = {STRING: str, NUMBER: float, MONEY: Money}

# The size of one segmentation's condition (docs/api.md). Real segmentations nest two or three
# levels (any of several all-lists, a negation); 8 leaves room and keeps evaluation cheap.
MAX_DEPTH = 8  # levels below the top condition
MAX_CLAUSES = 50
MAX_NODES = 100  # conditions of every kind: clauses, all/any lists, negations
MAX_VALUES = 100
MAX_STRING = 200

# --------------------------------------------------------------------------- event types

PURCHASE_EVENTS = (
    "PURCHASE_OUT_OF_SHOPPING_CART",
    "PURCHASE_BILLET_PRINTED",
    "PURCHASE_APPROVED",
    "PURCHASE_COMPLETE",
    "PURCHASE_CANCELED",
    "PURCHASE_EXPIRED",
    "PURCHASE_DELAYED",
    "PURCHASE_PROTEST",
    "PURCHASE_REFUNDED",
    "PURCHASE_CHARGEBACK",
)
SUBSCRIPTION_EVENTS = ("SUBSCRIPTION_CANCELLATION", "SWITCH_PLAN", "UPDATE_SUBSCRIPTION_CHARGE_DATE")
CLUB_EVENTS = ("CLUB_FIRST_ACCESS", "CLUB_MODULE_COMPLETED")
WEBINAR_EVENTS = ("WEBINAR_REGISTRATION", "WEBINAR_ATTENDANCE")
EVENT_TYPES: dict[str, str] = {
    "PURCHASE_OUT_OF_SHOPPING_CART": "The person left the checkout without buying.",
    "PURCHASE_BILLET_PRINTED": "The person printed a payment slip (billet).",
    "PURCHASE_APPROVED": "The payment was approved.",
    "PURCHASE_COMPLETE": "The purchase is complete (the warranty period ended).",
    "PURCHASE_CANCELED": "The purchase was canceled.",
    "PURCHASE_EXPIRED": "The payment slip or pix expired unpaid.",
    "PURCHASE_DELAYED": "The payment is late.",
    "PURCHASE_PROTEST": "The buyer asked for a refund.",
    "PURCHASE_REFUNDED": "The purchase was refunded.",
    "PURCHASE_CHARGEBACK": "The buyer's card issuer charged the purchase back.",
    "SUBSCRIPTION_CANCELLATION": "The subscription was canceled.",
    "SWITCH_PLAN": "The subscriber switched plans.",
    "UPDATE_SUBSCRIPTION_CHARGE_DATE": "The subscription's charge date changed.",
    "CLUB_FIRST_ACCESS": "The person entered the members area for the first time.",
    "CLUB_MODULE_COMPLETED": "The person completed a module of the members area.",
    "CONTENT_PROGRESS": "The person's progress in the product's content changed.",
    "WEBINAR_REGISTRATION": "The person registered for a webinar.",
    "WEBINAR_ATTENDANCE": "The person attended a webinar.",
}
ALL_EVENTS = tuple(EVENT_TYPES)

# --------------------------------------------------------------------------- the field registry


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    event_types: frozenset[str]
    read: Callable[[Any], Any]
    description: str
    # Upper-case expected values: ingest upper-cases these fields in events.
    upper: bool = False

    @property
    def operators(self) -> tuple[str, ...]:
        return OPERATORS_BY_TYPE[self.type]


def _text(value: str) -> str | None:
    return value or None


def _positive(value: int | float) -> float | None:
    return float(value) if value else None


def _money(money) -> tuple[str, float] | None:
    # A tuple, not a Money: reading must stay cheap on the hot path.
    return (money.currency_code, money.value) if money.currency_code else None


def _plan(event) -> str | None:
    plan = event.subscription.plan
    return plan.name or plan.id or None


_FIELD_LIST = (
    Field(
        "payment_type",
        STRING,
        frozenset(PURCHASE_EVENTS),
        lambda e: _text(e.purchase.payment_type),
        "The payment type, e.g. CREDIT_CARD, BILLET, PIX, PAYPAL.",
        upper=True,
    ),
    Field(
        "offer_code",
        STRING,
        frozenset(PURCHASE_EVENTS),
        lambda e: _text(e.purchase.offer_code),
        "The offer's code (exact, as the platform sends it).",
    ),
    Field(
        "coupon_code",
        STRING,
        frozenset(PURCHASE_EVENTS),
        lambda e: _text(e.purchase.coupon_code),
        "The coupon used at checkout (exact).",
    ),
    Field(
        "purchase_status",
        STRING,
        frozenset(PURCHASE_EVENTS),
        lambda e: _text(e.purchase.status),
        "The platform's purchase status, e.g. APPROVED.",
        upper=True,
    ),
    Field(
        "price",
        MONEY,
        frozenset(PURCHASE_EVENTS),
        lambda e: _money(e.purchase.price),
        "The price paid, with its currency; a different currency never matches.",
    ),
    Field(
        "installments",
        NUMBER,
        frozenset(PURCHASE_EVENTS),
        lambda e: _positive(e.purchase.installments),
        "Number of installments.",
    ),
    Field(
        "recurrence_number",
        NUMBER,
        frozenset(PURCHASE_EVENTS),
        lambda e: _positive(e.purchase.recurrence_number),
        "Which charge of a subscription (1 = first).",
    ),
    Field(
        "checkout_country",
        STRING,
        frozenset(PURCHASE_EVENTS),
        lambda e: _text(e.purchase.checkout_country_code),
        "ISO 3166-1 alpha-2 of the checkout.",
        upper=True,
    ),
    Field(
        "subscription_plan",
        STRING,
        frozenset(PURCHASE_EVENTS + SUBSCRIPTION_EVENTS),
        _plan,
        "The subscription plan's name (its id when unnamed).",
    ),
    Field(
        "subscription_plan_id",
        STRING,
        frozenset(PURCHASE_EVENTS + SUBSCRIPTION_EVENTS),
        lambda e: _text(e.subscription.plan.id),
        "The subscription plan's id.",
    ),
    Field(
        "module",
        STRING,
        frozenset({"CLUB_MODULE_COMPLETED"}),
        lambda e: _text(e.module.name),
        "The members-area module's name.",
    ),
    Field(
        "module_id",
        STRING,
        frozenset({"CLUB_MODULE_COMPLETED"}),
        lambda e: _text(e.module.id),
        "The members-area module's id.",
    ),
    Field(
        "course_progress",
        NUMBER,
        frozenset({"CONTENT_PROGRESS"}),
        lambda e: float(e.content_progress.percentage),
        "Share of the content completed, 0 to 100.",
    ),
    Field(
        "content_id",
        STRING,
        frozenset({"CONTENT_PROGRESS"}),
        lambda e: _text(e.content_progress.content_id),
        "The course (or other content) within the product.",
    ),
    Field("webinar_id", STRING, frozenset(WEBINAR_EVENTS), lambda e: _text(e.webinar.id), "The webinar's id."),
    Field("webinar_name", STRING, frozenset(WEBINAR_EVENTS), lambda e: _text(e.webinar.name), "The webinar's name."),
    Field(
        "attended_minutes",
        NUMBER,
        frozenset({"WEBINAR_ATTENDANCE"}),
        lambda e: float(e.webinar.attended_minutes),
        "Minutes the person stayed in the webinar.",
    ),
    Field(
        "country",
        STRING,
        frozenset(ALL_EVENTS),
        lambda e: _text(e.person.country_code),
        "The person's country, ISO 3166-1 alpha-2.",
        upper=True,
    ),
    Field(
        "email_domain",
        STRING,
        frozenset(ALL_EVENTS),
        lambda e: e.person.email.rpartition("@")[2] or None,
        "The domain of the person's email, e.g. example.com.",
    ),
)
FIELDS: dict[str, Field] = {f.name: f for f in _FIELD_LIST}


def fields_for(event_type: str) -> list[Field]:
    return [f for f in _FIELD_LIST if event_type in f.event_types]


# --------------------------------------------------------------------------- validation


def normalize_value(field: Field, value: Scalar) -> Scalar:
    if field.upper and isinstance(value, str):
        return value.strip().upper()
    if isinstance(value, Money):
        return Money(value.currency_code.strip().upper(), value.value)
    return value


def check_clause(clause: Clause, event_type: str) -> list[tuple[str, str]]:
    """What is wrong with ``clause`` for events of ``event_type``: (sub-field, description)."""
    field = FIELDS.get(clause.field)
    if field is None:
        return [("field", f"unknown field {clause.field!r}; DescribeEventTypes lists the fields")]
    if event_type not in field.event_types:
        offered = ", ".join(f.name for f in fields_for(event_type)) or "(none)"
        return [("field", f"{event_type} events do not offer {clause.field!r}; they offer: {offered}")]
    if clause.operator not in field.operators:
        allowed = ", ".join(field.operators)
        return [
            (
                "operator",
                f"{clause.operator or 'no operator'} does not apply to {field.type} field "
                f"{field.name!r}; allowed: {allowed}",
            )
        ]
    problems: list[tuple[str, str]] = []
    wanted = _PYTHON_TYPES[field.type]
    if clause.operator == EXISTS:
        if clause.values:
            problems.append(("value", "EXISTS takes no value"))
        return problems
    if clause.operator in (IN, NOT_IN):
        if not clause.values:
            problems.append(("values", f"{clause.operator} needs at least one value"))
        elif len(clause.values) > MAX_VALUES:
            problems.append(("values", f"at most {MAX_VALUES} values"))
        where = "values"
    else:
        if len(clause.values) != 1:
            problems.append(("value", f"{clause.operator} needs one value"))
            return problems
        where = "value"
    for index, value in enumerate(clause.values):
        path = f"values[{index}]" if where == "values" else "value"
        if not isinstance(value, wanted):
            problems.append((path, f"{field.name!r} is a {field.type} field: give a {_VALUE_FIELD[field.type]}"))
        elif isinstance(value, str) and (not value.strip() or len(value) > MAX_STRING):
            problems.append((path, f"must be 1-{MAX_STRING} characters"))
        elif isinstance(value, Money) and len(value.currency_code.strip()) != 3:
            problems.append((path, "money_value needs a 3-letter currency_code"))
    return problems


_VALUE_FIELD = {STRING: "string_value", NUMBER: "number_value", MONEY: "money_value"}


def clauses(condition: Condition | None, path: str = "") -> list[tuple[str, Clause]]:
    """Every clause with its path, e.g. ("all.conditions[1].clause", Clause(...))."""
    if condition is None:
        return []
    if isinstance(condition, Clause):
        return [(_join(path, "clause"), condition)]
    if isinstance(condition, Not):
        return clauses(condition.term, _join(path, "negate"))
    kind = list_kind(condition)
    found = []
    for index, term in enumerate(condition.terms):
        found.extend(clauses(term, _join(path, f"{kind}.conditions[{index}]")))
    return found


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def depth(condition: Condition | None) -> int:
    if condition is None or isinstance(condition, Clause):
        return 0
    if isinstance(condition, Not):
        return 1 + depth(condition.term)
    return 1 + max((depth(t) for t in condition.terms), default=0)


# --------------------------------------------------------------------------- evaluation

Test = Callable[[Any], bool]


def _test(field: Field, clause: Clause) -> Test:
    """The predicate on the value read from the event (None: no value)."""
    op = clause.operator
    values = tuple(normalize_value(field, v) for v in clause.values)
    if op == EXISTS:
        return lambda actual: actual is not None
    if field.type == MONEY:
        expected: Money = values[0]  # type: ignore[assignment]
        currency, amount = expected.currency_code, expected.value
        compare = _COMPARE[op]
        if op == NOT_EQUALS:
            return lambda actual: actual is None or actual[0] != currency or actual[1] != amount
        return lambda actual: actual is not None and actual[0] == currency and compare(actual[1], amount)
    if op == IN:
        members = frozenset(values)
        return lambda actual: actual in members
    if op == NOT_IN:
        members = frozenset(values)
        return lambda actual: actual not in members
    value = values[0]
    if op == EQUALS:
        return lambda actual: actual == value
    if op == NOT_EQUALS:
        return lambda actual: actual != value
    compare = _COMPARE[op]
    return lambda actual: actual is not None and compare(actual, value)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    EQUALS: lambda a, b: a == b,
    NOT_EQUALS: lambda a, b: a != b,
    LESS_THAN: lambda a, b: a < b,
    LESS_OR_EQUALS: lambda a, b: a <= b,
    GREATER_THAN: lambda a, b: a > b,
    GREATER_OR_EQUALS: lambda a, b: a >= b,
}

Predicate = Callable[[Any], bool]
# A compiled condition takes the values of the fields it uses, read once per event
# (``slots`` maps a field's name to its position), so rules sharing a field share the read.
SlotPredicate = Callable[[list], bool]


def slots_for(conditions: Iterable[Condition | None]) -> dict[str, int]:
    """Positions for every field the conditions use."""
    slots: dict[str, int] = {}
    for condition in conditions:
        for _, found in clauses(condition):
            slots.setdefault(found.field, len(slots))
    return slots


def readers(slots: dict[str, int]) -> tuple[Callable[[Any], Any], ...]:
    return tuple(FIELDS[name].read for name in slots)


def compile_slots(condition: Condition, slots: dict[str, int]) -> SlotPredicate:
    """A predicate on the values read for ``slots`` (validated conditions only)."""
    if isinstance(condition, Clause):
        position, test = slots[condition.field], _test(FIELDS[condition.field], condition)
        return lambda values: test(values[position])
    if isinstance(condition, Not):
        inner = compile_slots(condition.term, slots)
        return lambda values: not inner(values)
    terms = tuple(compile_slots(t, slots) for t in condition.terms)
    if len(terms) == 1:
        return terms[0]
    if len(terms) == 2:
        first, second = terms
        if isinstance(condition, AllOf):
            return lambda values: first(values) and second(values)
        return lambda values: first(values) or second(values)
    if isinstance(condition, AllOf):

        def all_of(values: list) -> bool:
            return all(term(values) for term in terms)

        return all_of

    def any_of(values: list) -> bool:
        return any(term(values) for term in terms)

    return any_of


def compile_condition(condition: Condition) -> Predicate:
    """A predicate on one event, for a condition used on its own."""
    slots = slots_for([condition])
    read, predicate = readers(slots), compile_slots(condition, slots)
    return lambda event: predicate([r(event) for r in read])


@dataclass(frozen=True)
class ClauseOutcome:
    path: str
    clause: Clause
    actual: Any  # None, str, float or Money
    result: bool


def explain(condition: Condition | None, event) -> tuple[bool, list[ClauseOutcome]]:
    """The condition's result for ``event`` and every clause's outcome (all of
    them, not only those a short-circuit would reach)."""
    outcomes: list[ClauseOutcome] = []

    def walk(node: Condition, path: str) -> bool:
        if isinstance(node, Clause):
            field = FIELDS[node.field]
            actual = field.read(event)
            result = _test(field, node)(actual)
            if isinstance(actual, tuple):
                actual = Money(*actual)
            outcomes.append(ClauseOutcome(_join(path, "clause"), node, actual, result))
            return result
        if isinstance(node, Not):
            return not walk(node.term, _join(path, "negate"))
        kind = list_kind(node)
        results = [walk(t, _join(path, f"{kind}.conditions[{i}]")) for i, t in enumerate(node.terms)]
        return all(results) if isinstance(node, AllOf) else any(results)

    if condition is None:
        return True, outcomes
    return walk(condition, ""), outcomes


# --------------------------------------------------------------------------- storage form (JSON)


def to_json(condition: Condition | None) -> Any:
    if condition is None:
        return None
    if isinstance(condition, Clause):
        return {
            "clause": {
                "field": condition.field,
                "operator": condition.operator,
                "values": [_value_json(v) for v in condition.values],
            }
        }
    if isinstance(condition, Not):
        return {"not": to_json(condition.term)}
    return {list_kind(condition): [to_json(t) for t in condition.terms]}


def from_json(data: Any) -> Condition | None:
    if data is None:
        return None
    if "clause" in data:
        c = data["clause"]
        return Clause(c["field"], c["operator"], tuple(_value_from_json(v) for v in c["values"]))
    if "not" in data:
        return Not(from_json(data["not"]))  # type: ignore[arg-type]
    if "all" in data:
        return AllOf(tuple(from_json(t) for t in data["all"]))  # type: ignore[misc]
    return AnyOf(tuple(from_json(t) for t in data["any"]))  # type: ignore[misc]


def _value_json(value: Scalar) -> Any:
    if isinstance(value, Money):
        return {"currency_code": value.currency_code, "value": value.value}
    if isinstance(value, str):
        return {"string": value}
    return {"number": value}


def _value_from_json(data: Any) -> Scalar:
    if "string" in data:
        return data["string"]
    if "number" in data:
        return float(data["number"])
    return Money(data["currency_code"], float(data["value"]))
