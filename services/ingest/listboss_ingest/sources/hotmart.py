"""The Hotmart adapter: one webhook payload of the platform (format 2.0.0, JSON) becomes a
canonical ``Event`` with ``source = EVENT_SOURCE_WEBHOOK``, normalized by the same rules as
every event (:mod:`listboss_ingest.normalize`).

The receiver takes it at ``POST /webhooks/hotmart/{producer}`` with the producer's token in
``X-HOTMART-HOTTOK`` (:mod:`listboss_ingest.http_api`); ``IngestService.IngestWebhook`` takes
the same JSON over gRPC.

Webhook mapping (:func:`event_from_webhook`)
--------------------------------------------

Paths are in the payload; ``data`` is the payload's ``data`` object. Where several paths are
listed the first one that holds a usable value wins. Every intermediate object may be missing,
null, a list or of a wrong type: it then counts as absent. Numbers may arrive as strings and
ids as numbers. No key named ``hottok`` is ever read, at any depth: the producer's secret token
never reaches the event (nor an error message).

::

    webhook path                                              | canonical field
    ----------------------------------------------------------+----------------------------------------
    id                                                        | id
    (argument producer)                                       | producer
    event ("PURCHASE_APPROVED" ...)                           | type (EVENT_TYPE_<event>)
    creation_date, else creationDate                          | occur_time
    (argument receive_time)                                   | receive_time
    (constant)                                                | source = EVENT_SOURCE_WEBHOOK
    data.product.id, data.subscription.product.id             | product.id
    data.product.name, data.subscription.product.name         | product.name
    P.email  (P = the person object, see below)               | person.email
    P.name / P.first_name / P.last_name                       | person.name / first_name / last_name
    P.checkout_phone_code + P.checkout_phone, else P.phone    | person.phone (parts joined by one
    (text), else P.phone.dddCell + P.phone.cell, else         | space; empty strings skipped)
    P.phone.dddPhone + P.phone.phone                          |
    P.document / P.document_type                              | person.document / document_type
    P.address.address (or .street)                            | person.address.street
    P.address.number / .complement / .neighborhood /          | person.address.number / complement /
      .city / .state / .country                               |   neighborhood / city / state / country
    P.address.zipcode (or .zip_code)                          | person.address.zip_code
    P.address.country_iso (or .country_code)                  | person.address.country_code
    P.address.country_iso, data.checkout_country.iso,         | person.country_code
      data.purchase.checkout_country.iso                      |
    data.purchase.transaction                                 | purchase.transaction
    data.purchase.status                                      | purchase.status
    data.purchase.payment.type                                | purchase.payment_type
    data.purchase.payment.installments_number                 | purchase.installments
    data.purchase.recurrence_number                           | purchase.recurrence_number
    data.purchase.offer.code, data.offer.code (cart)          | purchase.offer_code
    data.purchase.offer.coupon_code, data.offer.coupon_code   | purchase.coupon_code
    data.purchase.price.value + .currency_value               | purchase.price
    data.purchase.full_price.value + .currency_value          | purchase.full_price
    data.purchase.checkout_country.iso,                       | purchase.checkout_country_code
      data.checkout_country.iso (cart)                        |
    data.purchase.order_date                                  | purchase.order_time
    data.purchase.approved_date                               | purchase.approved_time
    data.subscription.id                                      | subscription.id
    data.subscription.status                                  | subscription.status
    data.subscription.subscriber.code,                        | subscription.subscriber_code
      data.subscription.subscriber_code, data.subscriber.code |
    L.id / L.name  (L = the plan object, see below)           | subscription.plan.id / name
    L.offer.code (or L.offer.key)                             | subscription.plan.offer_code
    data.date_next_charge, data.subscription.dateNextCharge,  | subscription.next_charge_time
      data.subscription.date_next_charge                      |
    data.module.id / data.module.name                         | module.id / module.name

The person object ``P`` is the first of these objects that holds an email, in an order that
depends on the event family: ``data.buyer`` (purchases, cart), ``data.user`` (club),
``data.subscriber`` (subscription cancellation, charge date), ``data.subscription.user``
(switch plan); the family's own path is tried first, then the others. The plan object ``L`` is,
for ``SWITCH_PLAN``, the element of ``data.plans`` whose ``current`` is true, otherwise
``data.subscription.plan`` then ``data.plan`` (then the current element of ``data.plans``).

Times (``creation_date``, ``order_date`` ...) are epoch milliseconds; a number below 10^11 is
taken as epoch seconds (10^11 ms is March 1973, 10^11 s is year 5138, so the two never
overlap for plausible dates); numeric strings and ISO-8601 strings (naive = UTC) are accepted.

The raw payload is not kept: only the canonical event travels on and is stored, so a payload
field this table does not map is dropped at ingest (and a payload's ``hottok`` never leaves it).

Errors: malformed JSON, empty payload or a top level that is not an object -> violation on
``payload``; an unknown ``event`` name -> violation on ``event``; a missing email -> violation on
``person.email`` naming the paths searched; a lone surrogate (JSON ``"\\ud800"``, or its bytes) in a
value the table maps -> violation on the canonical field it would fill (``person.name``), checked
before protobuf sees the value; a count or a time that is a number its canonical field cannot
hold (``installments_number`` 2**80, ``approved_date`` 1e400, a negative count) -> violation on
that field naming the payload path (``sources.payload.count_field`` / ``time_field``: one rule
for every number; a value that is not a number at all counts as absent); everything :func:`~listboss_ingest.normalize.normalize_event`
checks -> its canonical field paths. All violations are reported together. A payload field the
table does not map is never read, so junk there (a lone surrogate included) does not refuse the
webhook.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from listboss.events.v1 import event_pb2
from listboss_common.errors import FieldViolation
from listboss_ingest.sources.payload import (
    EMPTY,
    TIME_HINT,
    as_float,
    as_object,
    as_text,
    as_timestamp,
    count_field,
    datetime_to_timestamp,
    finish,
    first_text,
    is_true,
    parse_payload,
    put_text,
    set_strings,
    set_timestamp,
    time_field,
    value_at,
)
from listboss_ingest.string_rule import without_lone_surrogates

__all__ = ["NAME", "TOKEN_HEADER", "event_from_webhook"]

#: The platform, as it appears in the receiver's path (``/webhooks/hotmart/{producer}``).
NAME: Final = "hotmart"
#: The header that carries the producer's webhook token (its "hottok").
TOKEN_HEADER: Final = "X-HOTMART-HOTTOK"

_UNSPECIFIED: Final = event_pb2.EVENT_TYPE_UNSPECIFIED

# The platform's 15 webhook events; the canonical-only types (CONTENT_PROGRESS, WEBINAR_*)
# arrive over gRPC and are unknown as webhooks.
_GRPC_ONLY_TYPES: Final = frozenset(
    {
        event_pb2.EVENT_TYPE_CONTENT_PROGRESS,
        event_pb2.EVENT_TYPE_WEBINAR_REGISTRATION,
        event_pb2.EVENT_TYPE_WEBINAR_ATTENDANCE,
    }
)
_WEBHOOK_TYPES: Final[Mapping[str, event_pb2.EventType]] = MappingProxyType(
    {
        name.removeprefix("EVENT_TYPE_"): value
        for name, value in event_pb2.EventType.items()
        if value != _UNSPECIFIED and value not in _GRPC_ONLY_TYPES
    }
)

# Where the person sits, by event family; the family's own path first, the others as fallback.
_BUYER: Final = ("buyer",)
_USER: Final = ("user",)
_SUBSCRIBER: Final = ("subscriber",)
_SUBSCRIPTION_USER: Final = ("subscription", "user")
_PERSON_PATHS_DEFAULT: Final = (_BUYER, _USER, _SUBSCRIBER, _SUBSCRIPTION_USER)
_PERSON_PATHS: Final[Mapping[int, tuple[tuple[str, ...], ...]]] = MappingProxyType(
    {
        event_pb2.EVENT_TYPE_CLUB_FIRST_ACCESS: (_USER, _BUYER, _SUBSCRIBER, _SUBSCRIPTION_USER),
        event_pb2.EVENT_TYPE_CLUB_MODULE_COMPLETED: (_USER, _BUYER, _SUBSCRIBER, _SUBSCRIPTION_USER),
        event_pb2.EVENT_TYPE_SUBSCRIPTION_CANCELLATION: (_SUBSCRIBER, _SUBSCRIPTION_USER, _BUYER, _USER),
        event_pb2.EVENT_TYPE_UPDATE_SUBSCRIPTION_CHARGE_DATE: (_SUBSCRIBER, _SUBSCRIPTION_USER, _BUYER, _USER),
        event_pb2.EVENT_TYPE_SWITCH_PLAN: (_SUBSCRIPTION_USER, _SUBSCRIBER, _USER, _BUYER),
    }
)

_EXPLAINS: Final[Mapping[str, str]] = MappingProxyType({"event": "type"})


def event_from_webhook(
    payload: bytes | str | Mapping[str, Any],
    producer: str,
    *,
    receive_time: datetime | None = None,
) -> event_pb2.Event:
    """Convert one webhook payload (format 2.0.0) of ``producer`` into a normalized canonical Event.

    ``payload`` is the raw body (bytes or str, JSON) or an already decoded object; a mapping is
    only read, never changed. ``receive_time`` (naive = UTC) is stored as the event's
    ``receive_time``; when None the field stays unset for the caller to stamp. See the module
    docstring for the mapping. Raises :class:`InvalidArgument` listing every violation; never
    anything else for any input.
    """
    document = parse_payload(payload)
    data = as_object(document.get("data"))
    violations: list[FieldViolation] = []

    # The producer comes from the caller (URL, token), but a non-str must still end as a violation.
    producer_text = without_lone_surrogates(producer) if isinstance(producer, str) else ""
    event = event_pb2.Event(producer=producer_text, source=event_pb2.EVENT_SOURCE_WEBHOOK)
    put_text(event, "id", as_text(document.get("id")), "", violations)
    event.type = _webhook_type(document.get("event"), violations)
    _set_occur_time(event, document, violations)
    if isinstance(receive_time, datetime):
        set_timestamp(event.receive_time, datetime_to_timestamp(receive_time))
    _set_product(event.product, data, violations)
    _set_person(event, data, violations)
    _set_purchase(event.purchase, data, violations)
    _set_subscription(event.subscription, data, event.type, violations)
    set_strings(event.module, as_object(data.get("module")), _ID_NAME_FIELDS, "module", violations)

    # An unknown ``event`` name explains the missing type.
    return finish(event, violations, _EXPLAINS)


def _set_occur_time(event: event_pb2.Event, document: Mapping[str, Any], violations: list[FieldViolation]) -> None:
    present = [key for key in ("creation_date", "creationDate") if document.get(key) is not None]
    for key in present:
        if set_timestamp(event.occur_time, as_timestamp(document[key])):
            return
    if present:
        violations.append(FieldViolation("occur_time", f"{' / '.join(present)} is not a valid time: {TIME_HINT}"))
    else:
        violations.append(FieldViolation("occur_time", "required: the payload has no creation_date or creationDate"))


# --- event type ------------------------------------------------------------------------------


def _webhook_type(name: Any, violations: list[FieldViolation]) -> event_pb2.EventType:
    if not isinstance(name, str) or not name.strip():
        violations.append(FieldViolation("event", "required: the webhook event name, e.g. PURCHASE_APPROVED"))
        return _UNSPECIFIED
    event_type = _WEBHOOK_TYPES.get(name.strip().upper())
    if event_type is None:
        shown = name.strip()[:80]
        violations.append(
            FieldViolation("event", f"unknown event {shown!r}; expected one of {', '.join(_WEBHOOK_TYPES)}")
        )
        return _UNSPECIFIED
    return event_type


# --- product, person -------------------------------------------------------------------------


_ID_NAME_FIELDS: Final = (("id", ("id",)), ("name", ("name",)))


def _set_product(product: event_pb2.Product, data: Mapping[str, Any], violations: list[FieldViolation]) -> None:
    candidates = [as_object(data.get("product")), as_object(value_at(data, ("subscription", "product")))]
    # The first object that names the product; failing that, the first with anything in it.
    source = next((c for c in candidates if as_text(c.get("id"))), None) or next((c for c in candidates if c), EMPTY)
    set_strings(product, source, _ID_NAME_FIELDS, "product", violations)


_ADDRESS_FIELDS: Final = (
    ("street", ("address", "street")),
    ("number", ("number",)),
    ("complement", ("complement",)),
    ("neighborhood", ("neighborhood",)),
    ("city", ("city",)),
    ("state", ("state",)),
    ("zip_code", ("zipcode", "zip_code")),
    ("country", ("country",)),
    ("country_code", ("country_iso", "country_code")),
)
_PERSON_FIELDS: Final = (
    ("name", ("name",)),
    ("first_name", ("first_name",)),
    ("last_name", ("last_name",)),
    ("document", ("document",)),
    ("document_type", ("document_type",)),
)


def _set_person(event: event_pb2.Event, data: Mapping[str, Any], violations: list[FieldViolation]) -> None:
    paths = _PERSON_PATHS.get(event.type, _PERSON_PATHS_DEFAULT)
    for path in paths:
        source = as_object(value_at(data, path))
        email = as_text(source.get("email"))
        if email:
            break
    else:
        searched = ", ".join("data." + ".".join(path) + ".email" for path in paths)
        violations.append(FieldViolation("person.email", f"required: no email at {searched}"))
        return
    person = event.person
    put_text(person, "email", email, "person", violations)
    set_strings(person, source, _PERSON_FIELDS, "person", violations)
    phone = _phone(source)
    if phone:
        put_text(person, "phone", phone, "person", violations)
    address = as_object(source.get("address"))
    set_strings(person.address, address, _ADDRESS_FIELDS, "person.address", violations)
    country = first_text(
        address.get("country_iso"),
        value_at(data, ("checkout_country", "iso")),
        value_at(data, ("purchase", "checkout_country", "iso")),
    )
    if country:
        put_text(person, "country_code", country, "person", violations)


def _phone(person: Mapping[str, Any]) -> str:
    """The person's phone: checkout code + number, a plain phone, or the subscriber phone object."""
    checkout = _join(as_text(person.get("checkout_phone_code")), as_text(person.get("checkout_phone")))
    if checkout:
        return checkout
    phone = person.get("phone")
    if isinstance(phone, Mapping):
        # Subscriber payloads split it into area code + number; the mobile is the better contact.
        return _join(as_text(phone.get("dddCell")), as_text(phone.get("cell"))) or _join(
            as_text(phone.get("dddPhone")), as_text(phone.get("phone"))
        )
    return as_text(phone)


def _join(prefix: str, number: str) -> str:
    """``prefix number`` (one space keeps the parts recoverable); "" without a number."""
    if not number:
        return ""
    return f"{prefix} {number}" if prefix else number


# --- purchase, subscription ------------------------------------------------------------------


def _set_purchase(purchase: event_pb2.Purchase, data: Mapping[str, Any], violations: list[FieldViolation]) -> None:
    source = as_object(data.get("purchase"))
    payment = as_object(source.get("payment"))
    offer = as_object(source.get("offer"))
    cart_offer = as_object(data.get("offer"))  # the cart event carries offer/country at data level
    set_strings(purchase, source, (("transaction", ("transaction",)), ("status", ("status",))), "purchase", violations)
    set_strings(purchase, payment, (("payment_type", ("type",)),), "purchase", violations)
    texts = (
        ("offer_code", first_text(offer.get("code"), cart_offer.get("code"))),
        ("coupon_code", first_text(offer.get("coupon_code"), cart_offer.get("coupon_code"))),
        (
            "checkout_country_code",
            first_text(value_at(source, ("checkout_country", "iso")), value_at(data, ("checkout_country", "iso"))),
        ),
    )
    for name, text in texts:
        if text:
            put_text(purchase, name, text, "purchase", violations)
    _set_money(purchase.price, source.get("price"), "purchase.price", violations)
    _set_money(purchase.full_price, source.get("full_price"), "purchase.full_price", violations)
    # Zero is proto3's "absent"; writing it would create an empty purchase on non-purchase events.
    installments = count_field(
        payment.get("installments_number"),
        "purchase.installments",
        "data.purchase.payment.installments_number",
        violations,
    )
    if installments:
        purchase.installments = installments
    recurrence = count_field(
        source.get("recurrence_number"), "purchase.recurrence_number", "data.purchase.recurrence_number", violations
    )
    if recurrence:
        purchase.recurrence_number = recurrence
    set_timestamp(
        purchase.order_time,
        time_field(source.get("order_date"), "purchase.order_time", "data.purchase.order_date", violations),
    )
    set_timestamp(
        purchase.approved_time,
        time_field(source.get("approved_date"), "purchase.approved_time", "data.purchase.approved_date", violations),
    )


def _set_money(money: event_pb2.Money, value: Any, at: str, violations: list[FieldViolation]) -> None:
    source = as_object(value)
    amount = as_float(source.get("value"))
    if amount is None:  # a currency without an amount says nothing
        return
    money.value = amount
    money.SetInParent()  # a price of 0 is a real price: keep the message present
    currency = first_text(source.get("currency_value"), source.get("currency_code"))
    if currency:
        put_text(money, "currency_code", currency, at, violations)


def _set_subscription(
    subscription: event_pb2.Subscription, data: Mapping[str, Any], event_type: int, violations: list[FieldViolation]
) -> None:
    source = as_object(data.get("subscription"))
    set_strings(subscription, source, (("id", ("id",)), ("status", ("status",))), "subscription", violations)
    code = first_text(
        value_at(source, ("subscriber", "code")),
        source.get("subscriber_code"),
        value_at(data, ("subscriber", "code")),
    )
    if code:
        put_text(subscription, "subscriber_code", code, "subscription", violations)
    _set_plan(subscription.plan, _plan_source(data, source, event_type), violations)
    for path, value in (
        ("data.date_next_charge", data.get("date_next_charge")),
        ("data.subscription.dateNextCharge", source.get("dateNextCharge")),
        ("data.subscription.date_next_charge", source.get("date_next_charge")),
    ):
        if set_timestamp(
            subscription.next_charge_time, time_field(value, "subscription.next_charge_time", path, violations)
        ):
            break


def _plan_source(data: Mapping[str, Any], subscription: Mapping[str, Any], event_type: int) -> Mapping[str, Any]:
    current = _current_plan(data.get("plans"))
    candidates = [as_object(subscription.get("plan")), as_object(data.get("plan"))]
    # SWITCH_PLAN lists old and new plans; the event is about the one now current.
    candidates.insert(0 if event_type == event_pb2.EVENT_TYPE_SWITCH_PLAN else 2, current)
    return next((c for c in candidates if as_text(c.get("id")) or as_text(c.get("name"))), EMPTY)


def _current_plan(plans: Any) -> Mapping[str, Any]:
    if isinstance(plans, list):
        for plan in plans:
            if isinstance(plan, Mapping) and is_true(plan.get("current")):
                return plan
    return EMPTY


def _set_plan(plan: event_pb2.Plan, source: Mapping[str, Any], violations: list[FieldViolation]) -> None:
    set_strings(plan, source, _ID_NAME_FIELDS, "subscription.plan", violations)
    offer = as_object(source.get("offer"))
    # SWITCH_PLAN names the offer "key"; the other payloads call it "code".
    offer_code = first_text(offer.get("code"), offer.get("key"))
    if offer_code:
        put_text(plan, "offer_code", offer_code, "subscription.plan", violations)
