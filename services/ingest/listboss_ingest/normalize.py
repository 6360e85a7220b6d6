"""Validation and normalization of canonical events, and conversion of the platform's webhooks.

Two entry points:

* :func:`normalize_event` checks a canonical ``Event`` (as sent over gRPC) and returns a
  normalized copy, or raises :class:`~listboss_common.errors.InvalidArgument` naming every
  wrong field (paths relative to the event: ``person.email``, ``occur_time``...).
* :func:`event_from_webhook` turns one webhook payload (format 2.0.0, JSON) into a canonical
  ``Event`` with ``source = EVENT_SOURCE_WEBHOOK`` and runs the same normalization.

Rules enforced by :func:`normalize_event`
-----------------------------------------

::

    field                           | rule
    --------------------------------+--------------------------------------------------------------------------
    every string field              | what a store can hold, checked on the normalized value (STRING_FIELDS):
                                    | - no control character: U+0000-U+001F (NUL, and tab, LF, CR too: no
                                    |   field is free text, each holds one line), U+007F, U+0080-U+009F
                                    | - no lone surrogate, U+D800-U+DFFF (a JSON "\\ud800" in a webhook; over
                                    |   gRPC the transport refuses one, see grpc_api.py)
                                    | - at most: 128 characters for ids and codes (id, product.id, webinar.id,
                                    |   module.id, content_id, transaction, subscription id and
                                    |   subscriber_code, plan id and offer_code, offer and coupon codes, every
                                    |   status, payment type, country and currency code, phone, document,
                                    |   document_type, address number and zip_code); 254 for person.email;
                                    |   63 for producer; 500 for names and address lines (product, person,
                                    |   first/last, plan, module, content and webinar names; street,
                                    |   complement, neighborhood, city, state, country) and for a string
                                    |   field added to the protos and not yet listed
                                    | A violation names the field (person.name, events[3].person.name) and the
                                    | first bad character and its position, never the value.
    id                              | required, trimmed, printable, no whitespace
    producer                        | required, exactly ^[a-z0-9][a-z0-9_-]{0,62}$: lower-case letters, digits,
                                    | '-' and '_', 1-63 characters, starting with a letter or digit. Not
                                    | trimmed or lower-cased: it names the tenant, so it must be exact
    type                            | not EVENT_TYPE_UNSPECIFIED, and a value the enum defines
    occur_time                      | required, valid nanos, not before 2000-01-01T00:00:00Z, not more than
                                    | 1 day after the current time
    product.id                      | required, trimmed; an all-digits id loses its leading zeros ("00000" ->
                                    | "0", "0042" -> "42"); letters, digits, '-', '_', '.'
    person.email                    | required, trimmed, lower-cased; exactly one '@', a non-empty local part,
                                    | a domain with a dot (not at either end, no ".."), no spaces
    purchase.price, .full_price     | when present: value finite and >= 0; currency code upper case
    purchase.installments,          | must be >= 0
    .recurrence_number              |
    *.country_code, checkout_...    | trimmed, upper case (ISO 3166-1 / ISO 4217)
    purchase.status, .payment_type, | trimmed, upper case: the platform's enum-like codes
    subscription.status             |
    content_progress                | required for EVENT_TYPE_CONTENT_PROGRESS (may be empty: the whole
                                    | product at 0 %)
    content_progress.percentage     | finite, 0 to 100
    content_progress.completed_/    | >= 0; completed_lessons <= total_lessons when total_lessons is set
      total_lessons                 | (> 0; proto3's 0 means "not known")
    webinar.id                      | required (non-empty after trimming) for EVENT_TYPE_WEBINAR_*
    webinar.attended_minutes        | >= 0
    webinar.start_time              | when present: valid nanos
    every other string              | trimmed; offer and coupon codes keep their case (case-sensitive on
                                    | the platform)
    (the whole event)               | at most 256 KiB serialized (violation on "" / event / payload); a
                                    | backstop: the string limits keep today's Event under ~45 KiB

One violation per field: where a field's own rule and the string rule both object, the string
rule's is kept.

CONTENT_PROGRESS and WEBINAR_* are canonical events sent over gRPC only (the members area, the
webinar tool): no webhook carries them, and no automatic segmentation tags them; like every
event they capture the contact.

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
before protobuf sees the value; everything :func:`normalize_event` checks -> its canonical field
paths. All violations are reported together. A payload field the table does not map is never
read, so junk there (a lone surrogate included) does not refuse the webhook.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Final

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from listboss.events.v1 import event_pb2
from listboss_common.errors import FieldViolation, InvalidArgument
from listboss_common.resources import canonical_product_id, is_valid_id

__all__ = [
    "MAX_EMAIL_LENGTH",
    "MAX_EVENT_BYTES",
    "MAX_ID_LENGTH",
    "MAX_PRODUCT_ID_LENGTH",
    "MAX_TEXT_LENGTH",
    "PRODUCER_PATTERN",
    "STRING_FIELDS",
    "event_from_webhook",
    "normalize_event",
    "normalize_in_place",
]

# ---------------------------------------------------------------------------------------------
# Rules of the canonical event
# ---------------------------------------------------------------------------------------------

#: A producer id: lower-case letters, digits, "-" and "_", 1-63 characters, starting with a
#: letter or digit (it is the {producer} of resource names, so it must be URL-friendly).
#: Used with ``fullmatch`` (``$`` would accept a trailing newline).
PRODUCER_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

MAX_ID_LENGTH: Final = 128  # ids and codes (the event's id has always had this limit)
MAX_PRODUCT_ID_LENGTH: Final = MAX_ID_LENGTH
MAX_EMAIL_LENGTH: Final = 254  # RFC 5321 path limit minus the angle brackets
MAX_TEXT_LENGTH: Final = 500  # names, address lines, and a string field STRING_FIELDS does not list
#: A normalized event's serialized size; keeps every bus message under nats-server's 1 MiB.
MAX_EVENT_BYTES: Final = 256 * 1024

_MIN_OCCUR_SECONDS: Final = 946_684_800  # 2000-01-01T00:00:00Z
_MAX_FUTURE_SECONDS: Final = 86_400  # clocks drift; a day is generous, more is a bug
_MAX_NANOS: Final = 999_999_999

_UNSPECIFIED: Final = event_pb2.EVENT_TYPE_UNSPECIFIED
_KNOWN_TYPES: Final = frozenset(v for v in event_pb2.EventType.values() if v != _UNSPECIFIED)

# How the string rule normalizes a value before it checks it.
KEEP: Final = 0  # as sent
TRIM: Final = 1  # surrounding whitespace stripped
UPPER: Final = 2  # stripped and upper-cased: country and currency codes, the platform's enum-like codes

#: Every string field of the canonical event, by path (a repeated field or a map value: the path
#: without index or key): the most characters it may hold once normalized, and how it is
#: normalized. A string field missing here (one added to the protos later) is still checked, as
#: (MAX_TEXT_LENGTH, TRIM); a test fails until it is listed.
STRING_FIELDS: Final[Mapping[str, tuple[int, int]]] = MappingProxyType(
    {
        "id": (MAX_ID_LENGTH, TRIM),
        "producer": (63, KEEP),  # names the tenant: exact (PRODUCER_PATTERN)
        "product.id": (MAX_PRODUCT_ID_LENGTH, TRIM),
        "product.name": (MAX_TEXT_LENGTH, TRIM),
        "person.email": (MAX_EMAIL_LENGTH, TRIM),  # then lower-cased by its own rule
        "person.name": (MAX_TEXT_LENGTH, TRIM),
        "person.first_name": (MAX_TEXT_LENGTH, TRIM),
        "person.last_name": (MAX_TEXT_LENGTH, TRIM),
        "person.phone": (MAX_ID_LENGTH, TRIM),
        "person.document": (MAX_ID_LENGTH, TRIM),
        "person.document_type": (MAX_ID_LENGTH, TRIM),
        "person.country_code": (MAX_ID_LENGTH, UPPER),
        "person.address.street": (MAX_TEXT_LENGTH, TRIM),
        "person.address.number": (MAX_ID_LENGTH, TRIM),
        "person.address.complement": (MAX_TEXT_LENGTH, TRIM),
        "person.address.neighborhood": (MAX_TEXT_LENGTH, TRIM),
        "person.address.city": (MAX_TEXT_LENGTH, TRIM),
        "person.address.state": (MAX_TEXT_LENGTH, TRIM),
        "person.address.zip_code": (MAX_ID_LENGTH, TRIM),
        "person.address.country": (MAX_TEXT_LENGTH, TRIM),
        "person.address.country_code": (MAX_ID_LENGTH, UPPER),
        "purchase.transaction": (MAX_ID_LENGTH, TRIM),
        "purchase.status": (MAX_ID_LENGTH, UPPER),
        "purchase.payment_type": (MAX_ID_LENGTH, UPPER),
        "purchase.offer_code": (MAX_ID_LENGTH, TRIM),  # offer and coupon codes are case-sensitive
        "purchase.coupon_code": (MAX_ID_LENGTH, TRIM),
        "purchase.price.currency_code": (MAX_ID_LENGTH, UPPER),
        "purchase.full_price.currency_code": (MAX_ID_LENGTH, UPPER),
        "purchase.checkout_country_code": (MAX_ID_LENGTH, UPPER),
        "subscription.id": (MAX_ID_LENGTH, TRIM),
        "subscription.subscriber_code": (MAX_ID_LENGTH, TRIM),
        "subscription.status": (MAX_ID_LENGTH, UPPER),
        "subscription.plan.id": (MAX_ID_LENGTH, TRIM),
        "subscription.plan.name": (MAX_TEXT_LENGTH, TRIM),
        "subscription.plan.offer_code": (MAX_ID_LENGTH, TRIM),
        "module.id": (MAX_ID_LENGTH, TRIM),
        "module.name": (MAX_TEXT_LENGTH, TRIM),
        "content_progress.content_id": (MAX_ID_LENGTH, TRIM),
        "content_progress.content_name": (MAX_TEXT_LENGTH, TRIM),
        "webinar.id": (MAX_ID_LENGTH, TRIM),
        "webinar.name": (MAX_TEXT_LENGTH, TRIM),
    }
)
_UNLISTED_STRING: Final = (MAX_TEXT_LENGTH, TRIM)

#: Characters no string of the event may hold, whatever the field: C0 controls (tab, LF and CR
#: included: no canonical field is free text, each holds one line), DEL, C1 controls, and lone
#: surrogates (not Unicode: protobuf refuses to encode them, so only the webhook converter can
#: meet one, from a JSON "\ud800"). PostgreSQL refuses NUL in text outright.
_UNSTORABLE: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def normalize_event(event: event_pb2.Event) -> event_pb2.Event:
    """Return a validated, normalized copy of a canonical ``event``; the argument is not changed.

    Raises :class:`InvalidArgument` listing every violation (see the module docstring). The
    result is a fixed point: normalizing it again returns an equal event.
    """
    out = event_pb2.Event()
    out.CopyFrom(event)  # the only copy: everything below edits ``out`` in place
    violations = _normalize_in_place(out, time.time())
    if violations:
        raise InvalidArgument(violations)
    return out


def normalize_in_place(event: event_pb2.Event) -> event_pb2.Event:
    """:func:`normalize_event` without the copy: ``event`` itself is normalized and returned.

    For callers that own the message (a batch request's events). On InvalidArgument the event
    may be partly normalized.
    """
    violations = _normalize_in_place(event, time.time())
    if violations:
        raise InvalidArgument(violations)
    return event


def _normalize_in_place(event: event_pb2.Event, now: float) -> list[FieldViolation]:
    """Normalize ``event`` in place and return what is wrong with it (empty when valid)."""
    violations: list[FieldViolation] = []
    # Every string first: the rules below read trimmed, upper-cased values.
    _event_strings(event, violations, "")
    _check_id(event.id, violations)
    _check_producer(event.producer, violations)
    _check_type(event.type, violations)
    _check_occur_time(event, now, violations)
    _normalize_product(event, violations)
    _normalize_person(event, violations)
    # HasField guards keep absent sub-messages absent (reading is free, writing would create them).
    if event.HasField("purchase"):
        _check_purchase(event.purchase, violations)
    _check_content_progress(event, violations)
    _check_webinar(event, violations)
    if len(violations) > 1:
        violations = _first_per_field(violations)
    elif not violations and event.ByteSize() > MAX_EVENT_BYTES:
        # "" is the event as a whole: callers prefix it ("event", "events[3]", "payload").
        violations.append(FieldViolation("", f"must be at most {MAX_EVENT_BYTES} bytes once normalized"))
    return violations


def _first_per_field(violations: list[FieldViolation]) -> list[FieldViolation]:
    """One violation per field, the first: the string rule's, when a field's own rule agrees."""
    seen: set[str] = set()
    return [v for v in violations if not (v.field in seen or seen.add(v.field))]


# --- the string rule: every string field, one plan built from the descriptors ----------------


_STRING: Final = FieldDescriptor.TYPE_STRING
_MESSAGE: Final = FieldDescriptor.TYPE_MESSAGE

#: ``(message, violations, prefix)``: normalizes every string below ``message`` and reports each
#: one a store cannot hold, by its path after ``prefix``.
StringRule = Callable[[Any, list[FieldViolation], str], None]


class _Strings:
    """The string rule's plan for one message type at one path of the event: its string fields
    with their limits and treatments, its sub-messages that hold strings, its repeated and map
    fields. Built once from the descriptors, so a field added to the protos is covered unchanged;
    :meth:`apply` walks it for every message."""

    __slots__ = ("strings", "messages", "containers")

    def __init__(self, descriptor: Descriptor, path: str = "", outer: frozenset[str] = frozenset()):
        outer = outer | {descriptor.full_name}  # a recursive type is not followed into itself
        strings: list[tuple[str, int, int]] = []  # (name, limit, treatment)
        messages: list[tuple[str, str, _Strings]] = []  # (name, its path suffix "name.", plan)
        # (name, limit, treatment, plan of message values or None, is a map)
        containers: list[tuple[str, int, int, _Strings | None, bool]] = []
        for field in descriptor.fields:
            field_path = path + field.name
            limit, treatment = STRING_FIELDS.get(field_path, _UNLISTED_STRING)
            value, is_map = field, False
            if field.type == _MESSAGE and field.message_type.GetOptions().map_entry:
                value, is_map = field.message_type.fields_by_name["value"], True
            plan = None
            if value.type == _MESSAGE:
                if value.message_type.full_name in outer:
                    continue
                plan = _Strings(value.message_type, field_path + ".", outer)
                if not plan:
                    plan = None  # Timestamp and other string-free messages: never visited
                    if not is_map:
                        continue
            elif value.type != _STRING and not is_map:
                continue
            if is_map or field.is_repeated:
                containers.append((field.name, limit, treatment, plan, is_map))
            elif plan is not None:
                messages.append((field.name, field.name + ".", plan))
            else:
                strings.append((field.name, limit, treatment))
        self.strings = tuple(strings)
        self.messages = tuple(messages)
        self.containers = tuple(containers)

    def __bool__(self) -> bool:
        return bool(self.strings or self.messages or self.containers)

    def apply(self, message: Any, violations: list[FieldViolation], prefix: str) -> None:
        """The string rule (a :data:`StringRule`) for ``message``: trims its strings and
        upper-cases its codes, writing a field only when that changes it; visits each sub-message
        present (an absent one stays absent), each repeated field and map; reports every string
        a store cannot hold, by its path after ``prefix``.

        isprintable() is one C loop, True for nearly every real value and False for every
        character of _UNSTORABLE, so the regex in _check_string runs only for the few values it
        cannot clear."""
        for name, limit, treatment in self.strings:
            value = getattr(message, name)
            if not value:
                continue
            if treatment != KEEP:
                fixed = value.strip().upper() if treatment == UPPER else value.strip()
                if fixed != value:
                    setattr(message, name, fixed)
                    value = fixed
            if len(value) > limit or not value.isprintable():
                _check_string(value, prefix + name, limit, violations)
        for name, suffix, plan in self.messages:
            if message.HasField(name):
                plan.apply(getattr(message, name), violations, prefix + suffix)
        for name, limit, treatment, plan, is_map in self.containers:
            _normalize_container(getattr(message, name), prefix + name, limit, treatment, plan, is_map, violations)


def _normalize_container(
    values: Any, path: str, limit: int, treatment: int, plan: _Strings | None, is_map: bool,
    violations: list[FieldViolation],
) -> None:
    """The string rule for a repeated field (``path[3]``) or a map (``path["key"]``)."""
    keys = list(values) if is_map else range(len(values))
    for key in keys:
        # json.dumps escapes every control character: a path never carries what it reports.
        at = f"{path}[{json.dumps(key) if isinstance(key, str) else key}]"
        if isinstance(key, str):
            _check_string(key, at, limit, violations)
        if plan is not None:
            plan.apply(values[key], violations, at + ".")
            continue
        value = values[key]
        if not isinstance(value, str):  # a map of numbers: only its keys are strings
            continue
        if treatment != KEEP:
            fixed = value.strip().upper() if treatment == UPPER else value.strip()
            if fixed != value:
                values[key] = value = fixed
        _check_string(value, at, limit, violations)


def string_rule(descriptor: Descriptor) -> StringRule:
    """The string rule for messages of type ``descriptor`` (STRING_FIELDS's paths are the
    Event's, so another type's fields get MAX_TEXT_LENGTH and TRIM)."""
    return _Strings(descriptor).apply


def _check_string(value: str, path: str, limit: int, violations: list[FieldViolation]) -> None:
    problem = _character_problem(value)
    if problem is None and len(value) > limit:
        problem = f"must be at most {limit} characters"
    if problem is not None:
        violations.append(FieldViolation(path, problem))


def _character_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored because of a character it holds, or None."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    code = ord(found.group())
    if 0xD800 <= code <= 0xDFFF:
        kind = "lone surrogates (U+D800-U+DFFF are not Unicode text)"
    else:
        kind = "control characters (U+0000-U+001F, U+007F-U+009F; tab and line breaks included)"
    return f"must not contain {kind}: found U+{code:04X} at position {found.start()}"


_event_strings: Final = string_rule(event_pb2.Event.DESCRIPTOR)


# --- the rules of single fields (on values the string rule has normalized) --------------------


def _check_id(event_id: str, violations: list[FieldViolation]) -> None:
    if not event_id:
        violations.append(FieldViolation("id", "required"))
    # isprintable() is False for every whitespace character except the ASCII space.
    elif " " in event_id or not event_id.isprintable():
        violations.append(FieldViolation("id", "must be printable and contain no whitespace"))


def _check_producer(producer: str, violations: list[FieldViolation]) -> None:
    if not producer:
        violations.append(FieldViolation("producer", "required"))
    elif PRODUCER_PATTERN.fullmatch(producer) is None:
        violations.append(
            FieldViolation(
                "producer",
                "must match ^[a-z0-9][a-z0-9_-]{0,62}$ (lower-case letters, digits, '-' and '_', "
                "starting with a letter or digit, at most 63 characters)",
            )
        )


def _check_type(event_type: int, violations: list[FieldViolation]) -> None:
    if event_type == _UNSPECIFIED:
        violations.append(FieldViolation("type", "required: must not be EVENT_TYPE_UNSPECIFIED"))
    elif event_type not in _KNOWN_TYPES:
        # proto3 enums are open: a newer client may send a number this server does not know.
        violations.append(FieldViolation("type", f"unknown event type {event_type}"))


def _check_occur_time(event: event_pb2.Event, now: float, violations: list[FieldViolation]) -> None:
    if not event.HasField("occur_time"):
        violations.append(FieldViolation("occur_time", "required"))
        return
    seconds, nanos = event.occur_time.seconds, event.occur_time.nanos
    if not 0 <= nanos <= _MAX_NANOS:
        violations.append(FieldViolation("occur_time", "nanos must be between 0 and 999999999"))
    elif seconds < _MIN_OCCUR_SECONDS:
        violations.append(FieldViolation("occur_time", "must not be before 2000-01-01T00:00:00Z"))
    elif seconds > now + _MAX_FUTURE_SECONDS:
        violations.append(FieldViolation("occur_time", "must not be more than 1 day in the future"))


def _normalize_product(event: event_pb2.Event, violations: list[FieldViolation]) -> None:
    if not event.HasField("product"):
        violations.append(FieldViolation("product.id", "required"))
        return
    product = event.product
    product_id = canonical_product_id(product.id)
    if product_id != product.id:
        product.id = product_id
    if not product_id:
        violations.append(FieldViolation("product.id", "required"))
    elif not is_valid_id(product_id):
        # It becomes a segment of resource names (producers/p/products/{id}).
        violations.append(
            FieldViolation("product.id", "must start with a letter or digit and hold only letters, digits, '-', '_', '.'")
        )


def _normalize_person(event: event_pb2.Event, violations: list[FieldViolation]) -> None:
    if not event.HasField("person"):
        violations.append(FieldViolation("person.email", "required"))
        return
    person = event.person
    email = person.email.lower()
    if email != person.email:
        person.email = email
    problem = _email_problem(email)
    if problem is not None:
        # The address itself is personal data: the description never repeats it.
        violations.append(FieldViolation("person.email", problem))


def _email_problem(email: str) -> str | None:
    """Why ``email`` (already trimmed and lower-cased) is not a plausible address, or None."""
    if not email:
        return "required"
    if len(email) > MAX_EMAIL_LENGTH:
        return f"must be at most {MAX_EMAIL_LENGTH} characters"
    if " " in email or not email.isprintable():
        return "must not contain spaces or control characters"
    local, at, domain = email.partition("@")
    if not at or "@" in domain:
        return "must contain exactly one '@'"
    if not local:
        return "must have a non-empty part before '@'"
    if "." not in domain or domain[0] == "." or domain[-1] == "." or ".." in domain:
        return "must have a domain with a dot after '@', e.g. example.com"
    return None


def _check_purchase(purchase: event_pb2.Purchase, violations: list[FieldViolation]) -> None:
    for name in ("price", "full_price"):
        if purchase.HasField(name):
            money = getattr(purchase, name)
            if not math.isfinite(money.value) or money.value < 0:
                violations.append(FieldViolation(f"purchase.{name}.value", "must be a finite number >= 0"))
    if purchase.installments < 0:
        violations.append(FieldViolation("purchase.installments", "must be >= 0"))
    if purchase.recurrence_number < 0:
        violations.append(FieldViolation("purchase.recurrence_number", "must be >= 0"))


def _check_content_progress(event: event_pb2.Event, violations: list[FieldViolation]) -> None:
    if not event.HasField("content_progress"):
        if event.type == event_pb2.EVENT_TYPE_CONTENT_PROGRESS:
            violations.append(FieldViolation("content_progress", "required for EVENT_TYPE_CONTENT_PROGRESS"))
        return
    progress = event.content_progress
    if not (math.isfinite(progress.percentage) and 0 <= progress.percentage <= 100):
        violations.append(FieldViolation("content_progress.percentage", "must be a finite number from 0 to 100"))
    completed, total = progress.completed_lessons, progress.total_lessons
    if completed < 0:
        violations.append(FieldViolation("content_progress.completed_lessons", "must be >= 0"))
    if total < 0:
        violations.append(FieldViolation("content_progress.total_lessons", "must be >= 0"))
    elif total > 0 and completed > total:
        violations.append(
            FieldViolation("content_progress.completed_lessons", "must not be greater than total_lessons")
        )


_WEBINAR_TYPES: Final = frozenset({event_pb2.EVENT_TYPE_WEBINAR_REGISTRATION, event_pb2.EVENT_TYPE_WEBINAR_ATTENDANCE})


def _check_webinar(event: event_pb2.Event, violations: list[FieldViolation]) -> None:
    if not event.HasField("webinar"):
        if event.type in _WEBINAR_TYPES:
            violations.append(FieldViolation("webinar.id", f"required for {event_pb2.EventType.Name(event.type)}"))
        return
    webinar = event.webinar
    if not webinar.id and event.type in _WEBINAR_TYPES:
        violations.append(FieldViolation("webinar.id", f"required for {event_pb2.EventType.Name(event.type)}"))
    if webinar.attended_minutes < 0:
        violations.append(FieldViolation("webinar.attended_minutes", "must be >= 0"))
    if webinar.HasField("start_time") and not 0 <= webinar.start_time.nanos <= _MAX_NANOS:
        violations.append(FieldViolation("webinar.start_time", "nanos must be between 0 and 999999999"))


# ---------------------------------------------------------------------------------------------
# Webhook payloads
# ---------------------------------------------------------------------------------------------

# The platform's 15 webhook events; the canonical-only types (CONTENT_PROGRESS, WEBINAR_*)
# arrive over gRPC and are unknown as webhooks.
_GRPC_ONLY_TYPES: Final = frozenset(
    {event_pb2.EVENT_TYPE_CONTENT_PROGRESS, event_pb2.EVENT_TYPE_WEBINAR_REGISTRATION,
     event_pb2.EVENT_TYPE_WEBINAR_ATTENDANCE}
)
_WEBHOOK_TYPES: Final[Mapping[str, int]] = MappingProxyType(
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

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_UTC: Final = timezone.utc
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=_UTC)
# Timestamp's valid range (0001-01-01 .. 9999-12-31); anything outside is garbage, not a time.
_MIN_TIMESTAMP: Final = -62_135_596_800
_MAX_TIMESTAMP: Final = 253_402_300_799
_SECONDS_BELOW: Final = 10**11  # see the module docstring: smaller epoch numbers are seconds
_MAX_EPOCH_NUMBER: Final = 10**16  # year 9999 is 2.5e14 ms
_MAX_NUMBER_TEXT: Final = 64  # longer "numbers" are junk; also bounds the parsing work
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_INTEGER_TEXT: Final = re.compile(r"[+-]?[0-9]+")
# Plain decimal notation only: float() alone would also take "nan", "inf" and "1_000".
_DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TIME_HINT: Final = "expected epoch milliseconds, epoch seconds or an ISO-8601 string"


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
    document = _parse_payload(payload)
    data = _object(document.get("data"))
    violations: list[FieldViolation] = []

    # The producer comes from the caller (URL, token), but a non-str must still end as a violation.
    producer_text = _valid_unicode(producer) if isinstance(producer, str) else ""
    event = event_pb2.Event(producer=producer_text, source=event_pb2.EVENT_SOURCE_WEBHOOK)
    _put(event, "id", _text(document.get("id")), "", violations)
    event.type = _webhook_type(document.get("event"), violations)
    _set_occur_time(event, document, violations)
    if isinstance(receive_time, datetime):
        _set_timestamp(event.receive_time, _datetime_to_timestamp(receive_time))
    _set_product(event.product, data, violations)
    _set_person(event, data, violations)
    _set_purchase(event.purchase, data, violations)
    _set_subscription(event.subscription, data, event.type, violations)
    _set_strings(event.module, _object(data.get("module")), _ID_NAME_FIELDS, "module", violations)

    rules = [v if v.field else FieldViolation("payload", v.description) for v in _normalize_in_place(event, time.time())]
    violations = _merge(violations, rules)
    if violations:
        raise InvalidArgument(violations)
    return event


def _merge(own: list[FieldViolation], rules: list[FieldViolation]) -> list[FieldViolation]:
    """The converter's own violations, plus the rule violations they do not already explain.

    The converter knows the payload path ("no creation_date or creationDate"), so its message
    wins over the generic "occur_time: required"; an unknown ``event`` explains the missing type.
    """
    if not own:
        return rules
    covered = {violation.field for violation in own}
    if "event" in covered:
        covered.add("type")
    return own + [violation for violation in rules if violation.field not in covered]


# --- parsing ---------------------------------------------------------------------------------


def _parse_payload(payload: object) -> Mapping[str, Any]:
    """The payload's top-level JSON object; any other input is a violation on ``payload``."""
    if isinstance(payload, Mapping):
        return payload
    if isinstance(payload, (bytes, bytearray, memoryview)):
        text: bytes | str = bytes(payload)
    elif isinstance(payload, str):
        text = payload.lstrip("\ufeff")  # json.loads rejects a BOM in str input; senders add one
    else:
        raise _payload_error(f"expected JSON text (bytes or str) or a mapping, got {type(payload).__name__}")
    if not text.strip():
        raise _payload_error("empty: expected a JSON object")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        # Position only: echoing the text could leak the hottok or personal data into logs.
        raise _payload_error(
            f"malformed JSON at line {exc.lineno}, column {exc.colno} (offset {exc.pos}): {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise _payload_error(f"not valid {exc.encoding} text at byte offset {exc.start}") from None
    except RecursionError:
        raise _payload_error("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise _payload_error(f"malformed JSON: {str(exc).split(':', 1)[0]}") from None
    if not isinstance(document, Mapping):
        raise _payload_error(f"the top level must be a JSON object, got {_json_kind(document)}")
    return document


def _payload_error(description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("payload", description)])


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


# --- tolerant access to JSON values ----------------------------------------------------------


def _object(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one: wrong types count as absent."""
    # dict and None first: isinstance() against the Mapping ABC is slow on this hot path.
    if type(value) is dict:
        return value
    if value is None:
        return _EMPTY
    return value if isinstance(value, Mapping) else _EMPTY


def _at(root: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` below ``root``, or None when any step is missing or not an object."""
    node: Any = root
    for key in path:
        if type(node) is not dict and (node is None or not isinstance(node, Mapping)):
            return None
        node = node.get(key)
    return node


def _text(value: Any) -> str:
    """A JSON scalar as trimmed text ("" when absent or not a scalar); ids may be numbers."""
    if value is None:  # the common case: most mapped keys are absent from a given payload
        return ""
    if isinstance(value, str):
        return value.strip()  # may hold a lone surrogate: _put refuses it
    if isinstance(value, bool):  # before int: bool is an int subclass, and True is no id
        return ""
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # beyond Python's int-to-str digit limit: junk, not an id
            return ""
    if isinstance(value, float) and math.isfinite(value):
        # 123.0 is the id 123; other floats keep their shortest exact spelling.
        return str(int(value)) if value.is_integer() and abs(value) < 1e18 else repr(value)
    return ""


def _valid_unicode(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text) if not text.isascii() else text


def _put(message: Any, name: str, text: str, at: str, violations: list[FieldViolation]) -> None:
    """Writes ``text`` to the string field ``name`` of ``message``, which is the canonical field
    ``at.name``. A lone surrogate (JSON "\\ud800", or the bytes of one) is a violation there,
    and protobuf, which refuses to encode one, gets U+FFFD instead: the event stays whole, so
    every other rule still reports. Every other character is the string rule's to judge."""
    if not text.isascii() and _SURROGATE.search(text):
        violations.append(FieldViolation(f"{at}.{name}" if at else name, _character_problem(text) or ""))
        text = _valid_unicode(text)
    setattr(message, name, text)


def _first_text(*values: Any) -> str:
    for value in values:
        text = _text(value)
        if text:
            return text
    return ""


def _number(value: Any) -> int | float | None:
    """A JSON number, or a string holding one in plain decimal notation; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= _MAX_NUMBER_TEXT:
            if _INTEGER_TEXT.fullmatch(text):
                return int(text)
            if _DECIMAL_TEXT.fullmatch(text):
                return float(text)
    return None


def _float(value: Any) -> float | None:
    number = _number(value)
    if number is None:
        return None
    try:
        return float(number)
    except OverflowError:  # an int too large for a double: keep it, normalize rejects inf
        return math.inf if number > 0 else -math.inf


def _int32(value: Any) -> int | None:
    """An integral number that fits int32 (proto refuses more); anything else is absent."""
    number = _number(value)
    if isinstance(number, float):
        if not number.is_integer():  # also False for inf and nan
            return None
        number = int(number)
    if number is None or not _INT32_MIN <= number <= _INT32_MAX:
        return None
    return number


# --- times -----------------------------------------------------------------------------------


def _timestamp(value: Any) -> tuple[int, int] | None:
    """(seconds, nanos) of an epoch number (ms, or s below 10^11), numeric or ISO-8601 string."""
    number = _number(value)
    if number is not None:
        return _epoch_timestamp(number)
    if isinstance(value, str):
        return _iso_timestamp(value.strip())
    return None


def _epoch_timestamp(number: int | float) -> tuple[int, int] | None:
    # Far outside Timestamp's range in any unit; the bound also keeps float maths finite.
    if not -_MAX_EPOCH_NUMBER < number < _MAX_EPOCH_NUMBER:  # False for nan
        return None
    nanos_per_unit = 1_000_000_000 if abs(number) < _SECONDS_BELOW else 1_000_000
    if isinstance(number, int):
        total_nanos = number * nanos_per_unit  # exact: ints are arbitrary precision
    else:
        total_nanos = round(number * nanos_per_unit)
    seconds, nanos = divmod(total_nanos, 1_000_000_000)
    if not _MIN_TIMESTAMP <= seconds <= _MAX_TIMESTAMP:
        return None
    return seconds, nanos


def _iso_timestamp(text: str) -> tuple[int, int] | None:
    if not text or len(text) > _MAX_NUMBER_TEXT:
        return None
    try:
        moment = datetime.fromisoformat(text)
        return _datetime_to_timestamp(moment)
    except (ValueError, OverflowError):  # not ISO-8601, or the offset leaves datetime's range
        return None


def _datetime_to_timestamp(moment: datetime) -> tuple[int, int]:
    """(seconds, nanos) of ``moment``; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_UTC)
    delta = moment - _EPOCH
    return delta.days * 86_400 + delta.seconds, delta.microseconds * 1_000


def _set_timestamp(target: timestamp_pb2.Timestamp, value: tuple[int, int] | None) -> bool:
    if value is None:
        return False
    target.seconds, target.nanos = value  # writing marks the field present, even for the epoch
    return True


def _set_occur_time(event: event_pb2.Event, document: Mapping[str, Any], violations: list[FieldViolation]) -> None:
    present = [key for key in ("creation_date", "creationDate") if document.get(key) is not None]
    for key in present:
        if _set_timestamp(event.occur_time, _timestamp(document[key])):
            return
    if present:
        violations.append(FieldViolation("occur_time", f"{' / '.join(present)} is not a valid time: {_TIME_HINT}"))
    else:
        violations.append(FieldViolation("occur_time", "required: the payload has no creation_date or creationDate"))


# --- event type ------------------------------------------------------------------------------


def _webhook_type(name: Any, violations: list[FieldViolation]) -> int:
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


def _set_strings(
    target: Any,
    source: Mapping[str, Any],
    fields: tuple[tuple[str, tuple[str, ...]], ...],
    at: str,
    violations: list[FieldViolation],
) -> None:
    """Copy each canonical field from the first of its source keys with a value; ``target`` is
    the canonical message at path ``at``.

    Only non-empty values are written, so a target sub-message with nothing to hold stays unset.
    """
    if not source:
        return
    get = source.get
    for name, keys in fields:
        for key in keys:
            value = get(key)
            if value is None:
                continue
            text = _text(value)
            if text:
                _put(target, name, text, at, violations)
                break


def _set_product(product: event_pb2.Product, data: Mapping[str, Any], violations: list[FieldViolation]) -> None:
    candidates = [_object(data.get("product")), _object(_at(data, ("subscription", "product")))]
    # The first object that names the product; failing that, the first with anything in it.
    source = next((c for c in candidates if _text(c.get("id"))), None) or next((c for c in candidates if c), _EMPTY)
    _set_strings(product, source, _ID_NAME_FIELDS, "product", violations)


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
        source = _object(_at(data, path))
        email = _text(source.get("email"))
        if email:
            break
    else:
        searched = ", ".join("data." + ".".join(path) + ".email" for path in paths)
        violations.append(FieldViolation("person.email", f"required: no email at {searched}"))
        return
    person = event.person
    _put(person, "email", email, "person", violations)
    _set_strings(person, source, _PERSON_FIELDS, "person", violations)
    phone = _phone(source)
    if phone:
        _put(person, "phone", phone, "person", violations)
    address = _object(source.get("address"))
    _set_strings(person.address, address, _ADDRESS_FIELDS, "person.address", violations)
    country = _first_text(
        address.get("country_iso"),
        _at(data, ("checkout_country", "iso")),
        _at(data, ("purchase", "checkout_country", "iso")),
    )
    if country:
        _put(person, "country_code", country, "person", violations)


def _phone(person: Mapping[str, Any]) -> str:
    """The person's phone: checkout code + number, a plain phone, or the subscriber phone object."""
    checkout = _join(_text(person.get("checkout_phone_code")), _text(person.get("checkout_phone")))
    if checkout:
        return checkout
    phone = person.get("phone")
    if isinstance(phone, Mapping):
        # Subscriber payloads split it into area code + number; the mobile is the better contact.
        return _join(_text(phone.get("dddCell")), _text(phone.get("cell"))) or _join(
            _text(phone.get("dddPhone")), _text(phone.get("phone"))
        )
    return _text(phone)


def _join(prefix: str, number: str) -> str:
    """``prefix number`` (one space keeps the parts recoverable); "" without a number."""
    if not number:
        return ""
    return f"{prefix} {number}" if prefix else number


# --- purchase, subscription ------------------------------------------------------------------


def _set_purchase(purchase: event_pb2.Purchase, data: Mapping[str, Any], violations: list[FieldViolation]) -> None:
    source = _object(data.get("purchase"))
    payment = _object(source.get("payment"))
    offer = _object(source.get("offer"))
    cart_offer = _object(data.get("offer"))  # the cart event carries offer/country at data level
    _set_strings(purchase, source, (("transaction", ("transaction",)), ("status", ("status",))), "purchase", violations)
    _set_strings(purchase, payment, (("payment_type", ("type",)),), "purchase", violations)
    texts = (
        ("offer_code", _first_text(offer.get("code"), cart_offer.get("code"))),
        ("coupon_code", _first_text(offer.get("coupon_code"), cart_offer.get("coupon_code"))),
        (
            "checkout_country_code",
            _first_text(_at(source, ("checkout_country", "iso")), _at(data, ("checkout_country", "iso"))),
        ),
    )
    for name, text in texts:
        if text:
            _put(purchase, name, text, "purchase", violations)
    _set_money(purchase.price, source.get("price"), "purchase.price", violations)
    _set_money(purchase.full_price, source.get("full_price"), "purchase.full_price", violations)
    # Zero is proto3's "absent"; writing it would create an empty purchase on non-purchase events.
    installments = _int32(payment.get("installments_number"))
    if installments:
        purchase.installments = installments
    recurrence = _int32(source.get("recurrence_number"))
    if recurrence:
        purchase.recurrence_number = recurrence
    _set_timestamp(purchase.order_time, _timestamp(source.get("order_date")))
    _set_timestamp(purchase.approved_time, _timestamp(source.get("approved_date")))


def _set_money(money: event_pb2.Money, value: Any, at: str, violations: list[FieldViolation]) -> None:
    source = _object(value)
    amount = _float(source.get("value"))
    if amount is None:  # a currency without an amount says nothing
        return
    money.value = amount
    money.SetInParent()  # a price of 0 is a real price: keep the message present
    currency = _first_text(source.get("currency_value"), source.get("currency_code"))
    if currency:
        _put(money, "currency_code", currency, at, violations)


def _set_subscription(
    subscription: event_pb2.Subscription, data: Mapping[str, Any], event_type: int, violations: list[FieldViolation]
) -> None:
    source = _object(data.get("subscription"))
    _set_strings(subscription, source, (("id", ("id",)), ("status", ("status",))), "subscription", violations)
    code = _first_text(
        _at(source, ("subscriber", "code")),
        source.get("subscriber_code"),
        _at(data, ("subscriber", "code")),
    )
    if code:
        _put(subscription, "subscriber_code", code, "subscription", violations)
    _set_plan(subscription.plan, _plan_source(data, source, event_type), violations)
    _set_timestamp(
        subscription.next_charge_time,
        _first_timestamp(data.get("date_next_charge"), source.get("dateNextCharge"), source.get("date_next_charge")),
    )


def _plan_source(data: Mapping[str, Any], subscription: Mapping[str, Any], event_type: int) -> Mapping[str, Any]:
    current = _current_plan(data.get("plans"))
    candidates = [_object(subscription.get("plan")), _object(data.get("plan"))]
    # SWITCH_PLAN lists old and new plans; the event is about the one now current.
    candidates.insert(0 if event_type == event_pb2.EVENT_TYPE_SWITCH_PLAN else 2, current)
    return next((c for c in candidates if _text(c.get("id")) or _text(c.get("name"))), _EMPTY)


def _current_plan(plans: Any) -> Mapping[str, Any]:
    if isinstance(plans, list):
        for plan in plans:
            if isinstance(plan, Mapping) and _truthy(plan.get("current")):
                return plan
    return _EMPTY


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _set_plan(plan: event_pb2.Plan, source: Mapping[str, Any], violations: list[FieldViolation]) -> None:
    _set_strings(plan, source, _ID_NAME_FIELDS, "subscription.plan", violations)
    offer = _object(source.get("offer"))
    # SWITCH_PLAN names the offer "key"; the other payloads call it "code".
    offer_code = _first_text(offer.get("code"), offer.get("key"))
    if offer_code:
        _put(plan, "offer_code", offer_code, "subscription.plan", violations)


def _first_timestamp(*values: Any) -> tuple[int, int] | None:
    for value in values:
        parsed = _timestamp(value)
        if parsed is not None:
            return parsed
    return None
