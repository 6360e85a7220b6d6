"""The string rule: what every string field of a canonical event may hold, and how it is
normalized (trimmed, codes upper-cased) before it is checked.

One plan per message type, built once from the protobuf descriptors (:class:`_Strings`), so a
string field added to the protos is covered unchanged; :data:`STRING_FIELDS` gives each field of
the Event its limit and treatment. The rule itself is a row of the table in
:mod:`listboss_ingest.normalize`'s docstring. Source adapters (:mod:`listboss_ingest.sources`)
use :func:`character_problem` and :data:`LONE_SURROGATE` to refuse a lone surrogate before
protobuf sees it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from listboss.events.v1 import event_pb2
from listboss_common.errors import FieldViolation

__all__ = [
    "KEEP",
    "LONE_SURROGATE",
    "MAX_EMAIL_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_PRODUCT_ID_LENGTH",
    "MAX_TEXT_LENGTH",
    "STRING_FIELDS",
    "TRIM",
    "UPPER",
    "StringRule",
    "character_problem",
    "event_strings",
    "string_rule",
    "without_lone_surrogates",
]

MAX_ID_LENGTH: Final = 128  # ids and codes (the event's id has always had this limit)
MAX_PRODUCT_ID_LENGTH: Final = MAX_ID_LENGTH
MAX_EMAIL_LENGTH: Final = 254  # RFC 5321 path limit minus the angle brackets
MAX_TEXT_LENGTH: Final = 500  # names, address lines, and a string field STRING_FIELDS does not list

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
        # Set by ingest itself when it seals the person; a caller's value is discarded.
        "sealed_person.key_id": (32, KEEP),
    }
)
_UNLISTED_STRING: Final = (MAX_TEXT_LENGTH, TRIM)

#: Characters no string of the event may hold, whatever the field: C0 controls (tab, LF and CR
#: included: no canonical field is free text, each holds one line), DEL, C1 controls, and lone
#: surrogates (not Unicode: protobuf refuses to encode them, so only a source adapter can
#: meet one, from a JSON "\ud800"). PostgreSQL refuses NUL in text outright.
_UNSTORABLE: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: A lone surrogate: what a JSON "\ud800" decodes to, and what protobuf refuses to encode.
LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


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

    __slots__ = ("containers", "messages", "strings")

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
        for name, limit, treatment, item_plan, is_map in self.containers:
            _normalize_container(getattr(message, name), prefix + name, limit, treatment, item_plan, is_map, violations)


def _normalize_container(
    values: Any,
    path: str,
    limit: int,
    treatment: int,
    plan: _Strings | None,
    is_map: bool,
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
    problem = character_problem(value)
    if problem is None and len(value) > limit:
        problem = f"must be at most {limit} characters"
    if problem is not None:
        violations.append(FieldViolation(path, problem))


def character_problem(value: str) -> str | None:
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


def without_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so that protobuf can encode it."""
    return LONE_SURROGATE.sub("\ufffd", text) if not text.isascii() else text


#: The string rule for the canonical Event (a :data:`StringRule`).
event_strings: Final = string_rule(event_pb2.Event.DESCRIPTOR)
