"""Validation and normalization of canonical events: the rules every event meets, whatever
its source.

* :func:`normalize_event` checks a canonical ``Event`` (as sent over gRPC) and returns a
  normalized copy, or raises :class:`~listboss_common.errors.InvalidArgument` naming every
  wrong field (paths relative to the event: ``person.email``, ``occur_time``...);
  :func:`normalize_in_place` does the same without the copy.
* :func:`normalize_and_report` normalizes in place and returns the violations instead of
  raising them: how a source adapter (:mod:`listboss_ingest.sources`, one per platform; it
  turns a webhook payload into an ``Event``) ends, through ``sources.payload.finish``, which
  merges them with its own.

The string rule (the first row below) is :mod:`listboss_ingest.string_rule`.

Rules enforced by :func:`normalize_event`
-----------------------------------------

::

    field                           | rule
    --------------------------------+--------------------------------------------------------------------------
    every string field              | what a store can hold, checked on the normalized value (STRING_FIELDS):
                                    | - no control character: U+0000-U+001F (NUL, and tab, LF, CR too: no
                                    |   field is free text, each holds one line), U+007F, U+0080-U+009F
                                    | - no lone surrogate, U+D800-U+DFFF (a JSON "\\ud800" in a webhook; over
                                    |   gRPC the transport refuses one, see listboss_common.decoding)
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
    product                         | optional: an event without a product, or whose product.id is empty
                                    | once trimmed, goes on without one (product cleared): its contact is
                                    | captured and its history recorded, no tag applies (docs/api.md,
                                    | "Events without a product")
    product.id                      | trimmed; an all-digits id loses its leading zeros ("00000" -> "0",
                                    | "0042" -> "42"); letters, digits, '-', '_', '.'
    person.email                    | required, trimmed, lower-cased; exactly one '@', a non-empty local part,
                                    | a domain with a dot (not at either end, no ".."), no spaces
    purchase.price, .full_price     | when present: value finite and >= 0; currency code upper case
    purchase.installments,          | must be >= 0
    .recurrence_number              |
    every Timestamp but occur_time  | when present (purchase.order_time, .approved_time,
                                    | subscription.next_charge_time, webinar.start_time): valid nanos,
                                    | seconds within Timestamp's range (0001-01-01 to 9999-12-31)
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
"""

from __future__ import annotations

import math
import re
import time
from typing import Final

from google.protobuf import timestamp_pb2

from listboss.events.v1 import event_pb2
from listboss_common.errors import FieldViolation, InvalidArgument
from listboss_common.resources import canonical_product_id, is_valid_id
from listboss_ingest.string_rule import (
    MAX_EMAIL_LENGTH,
    MAX_ID_LENGTH,
    MAX_PRODUCT_ID_LENGTH,
    MAX_TEXT_LENGTH,
    STRING_FIELDS,
    event_strings,
)

__all__ = [
    "MAX_EMAIL_LENGTH",
    "MAX_EVENT_BYTES",
    "MAX_ID_LENGTH",
    "MAX_PRODUCT_ID_LENGTH",
    "MAX_TEXT_LENGTH",
    "PRODUCER_PATTERN",
    "STRING_FIELDS",
    "normalize_and_report",
    "normalize_event",
    "normalize_in_place",
]


#: A producer id: lower-case letters, digits, "-" and "_", 1-63 characters, starting with a
#: letter or digit (it is the {producer} of resource names, so it must be URL-friendly).
#: Used with ``fullmatch`` (``$`` would accept a trailing newline).
PRODUCER_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")

#: A normalized event's serialized size; keeps every bus message under nats-server's 1 MiB.
MAX_EVENT_BYTES: Final = 256 * 1024

_MIN_OCCUR_SECONDS: Final = 946_684_800  # 2000-01-01T00:00:00Z
_MAX_FUTURE_SECONDS: Final = 86_400  # clocks drift; a day is generous, more is a bug
_MAX_NANOS: Final = 999_999_999
#: Timestamp's valid range (0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z), in epoch seconds.
MIN_TIMESTAMP_SECONDS: Final = -62_135_596_800
MAX_TIMESTAMP_SECONDS: Final = 253_402_300_799

_UNSPECIFIED: Final = event_pb2.EVENT_TYPE_UNSPECIFIED
_KNOWN_TYPES: Final = frozenset(v for v in event_pb2.EventType.values() if v != _UNSPECIFIED)


def normalize_event(event: event_pb2.Event) -> event_pb2.Event:
    """Return a validated, normalized copy of a canonical ``event``; the argument is not changed.

    Raises :class:`InvalidArgument` listing every violation (see the module docstring). The
    result is a fixed point: normalizing it again returns an equal event.
    """
    out = event_pb2.Event()
    out.CopyFrom(event)  # the only copy: everything below edits ``out`` in place
    violations = normalize_and_report(out, time.time())
    if violations:
        raise InvalidArgument(violations)
    return out


def normalize_in_place(event: event_pb2.Event) -> event_pb2.Event:
    """:func:`normalize_event` without the copy: ``event`` itself is normalized and returned.

    For callers that own the message (a batch request's events). On InvalidArgument the event
    may be partly normalized.
    """
    violations = normalize_and_report(event, time.time())
    if violations:
        raise InvalidArgument(violations)
    return event


def normalize_and_report(event: event_pb2.Event, now: float) -> list[FieldViolation]:
    """Normalize ``event`` in place and return what is wrong with it (empty when valid);
    ``now`` (epoch seconds) bounds ``occur_time``."""
    violations: list[FieldViolation] = []
    # Every string first: the rules below read trimmed, upper-cased values.
    event_strings(event, violations, "")
    _check_id(event.id, violations)
    _check_producer(event.producer, violations)
    _check_type(event.type, violations)
    _check_occur_time(event, now, violations)
    _normalize_product(event, violations)
    _normalize_person(event, violations)
    # HasField guards keep absent sub-messages absent (reading is free, writing would create them).
    if event.HasField("purchase"):
        _check_purchase(event.purchase, violations)
    if event.HasField("subscription") and event.subscription.HasField("next_charge_time"):
        _check_time(event.subscription.next_charge_time, "subscription.next_charge_time", violations)
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
    first: list[FieldViolation] = []
    for v in violations:
        if v.field not in seen:
            seen.add(v.field)
            first.append(v)
    return first


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
        return  # a lead without a product: captured, tagged by nothing (module docstring)
    product = event.product
    product_id = canonical_product_id(product.id)
    if product_id != product.id:
        product.id = product_id
    if not product_id:
        # A name or kind without an id names no product: the event goes on without one.
        event.ClearField("product")
    elif not is_valid_id(product_id):
        # It becomes a segment of resource names (producers/p/products/{id}).
        violations.append(
            FieldViolation(
                "product.id", "must start with a letter or digit and hold only letters, digits, '-', '_', '.'"
            )
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
    for name in ("order_time", "approved_time"):
        if purchase.HasField(name):
            _check_time(getattr(purchase, name), f"purchase.{name}", violations)


def _check_time(moment: timestamp_pb2.Timestamp, field: str, violations: list[FieldViolation]) -> None:
    """The rule of every optional Timestamp: a time protobuf and every store can hold."""
    if not 0 <= moment.nanos <= _MAX_NANOS:
        violations.append(FieldViolation(field, "nanos must be between 0 and 999999999"))
    elif not MIN_TIMESTAMP_SECONDS <= moment.seconds <= MAX_TIMESTAMP_SECONDS:
        violations.append(FieldViolation(field, "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"))


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
    if webinar.HasField("start_time"):
        _check_time(webinar.start_time, "webinar.start_time", violations)
