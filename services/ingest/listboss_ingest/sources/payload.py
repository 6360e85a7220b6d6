"""Reading a platform's webhook payload: what every source adapter needs.

JSON parsing that answers a violation on ``payload`` for any input it cannot use; tolerant
access (a missing key, a null, a list or a value of the wrong type counts as absent; numbers
may arrive as strings and ids as numbers); times; writing text into the canonical event with
the lone-surrogate check; and :func:`finish`, an adapter's last step (the canonical rules).
An adapter (``sources/<platform>.py``) maps its platform's paths with these and documents them.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from google.protobuf import timestamp_pb2

from listboss.events.v1 import event_pb2
from listboss_common.errors import FieldViolation, InvalidArgument
from listboss_ingest.normalize import MAX_TIMESTAMP_SECONDS, MIN_TIMESTAMP_SECONDS, normalize_and_report
from listboss_ingest.string_rule import LONE_SURROGATE, character_problem, without_lone_surrogates

EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_UTC: Final = UTC
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=_UTC)
# Timestamp's valid range (0001-01-01 .. 9999-12-31); anything outside is garbage, not a time.
_MIN_TIMESTAMP: Final = MIN_TIMESTAMP_SECONDS
_MAX_TIMESTAMP: Final = MAX_TIMESTAMP_SECONDS
# Smaller epoch numbers are seconds: 10^11 ms is March 1973, 10^11 s is year 5138, so the two
# never overlap for plausible dates.
_SECONDS_BELOW: Final = 10**11
_MAX_EPOCH_NUMBER: Final = 10**16  # year 9999 is 2.5e14 ms
_MAX_NUMBER_TEXT: Final = 64  # longer "numbers" are junk; also bounds the parsing work
_INT32_MAX: Final = 2**31 - 1
_INTEGER_TEXT: Final = re.compile(r"[+-]?[0-9]+")
# Plain decimal notation only: float() alone would also take "nan", "inf" and "1_000".
_DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: What :func:`as_timestamp` accepts, for violations.
TIME_HINT: Final = "expected epoch milliseconds, epoch seconds or an ISO-8601 string"


def finish(
    event: event_pb2.Event, violations: list[FieldViolation], explains: Mapping[str, str] = MappingProxyType({})
) -> event_pb2.Event:
    """An adapter's last step: the canonical rules (:func:`normalize_and_report`) on the
    ``event`` it built, their violations merged with its own ``violations``. Returns the
    normalized event or raises :class:`InvalidArgument` listing every violation.

    The adapter knows the payload path ("no creation_date or creationDate"), so its violation
    wins over the generic one of the same canonical field ("occur_time: required");
    ``explains`` maps a payload field to the canonical field a violation on it explains too
    (an unknown ``event`` name explains the missing ``type``). A violation of the whole event
    ("" : too large) is reported on ``payload``.
    """
    rules = [
        v if v.field else FieldViolation("payload", v.description) for v in normalize_and_report(event, time.time())
    ]
    if violations:
        covered = {violation.field for violation in violations}
        covered.update(canonical for own, canonical in explains.items() if own in covered)
        violations = violations + [violation for violation in rules if violation.field not in covered]
    else:
        violations = rules
    if violations:
        raise InvalidArgument(violations)
    return event


# --- parsing ---------------------------------------------------------------------------------


def parse_payload(payload: object) -> Mapping[str, Any]:
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


def as_object(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one: wrong types count as absent."""
    # dict and None first: isinstance() against the Mapping ABC is slow on this hot path.
    if type(value) is dict:
        return value
    if value is None:
        return EMPTY
    return value if isinstance(value, Mapping) else EMPTY


def value_at(root: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` below ``root``, or None when any step is missing or not an object."""
    node: Any = root
    for key in path:
        if type(node) is not dict and (node is None or not isinstance(node, Mapping)):
            return None
        node = node.get(key)
    return node


def as_text(value: Any) -> str:
    """A JSON scalar as trimmed text ("" when absent or not a scalar); ids may be numbers."""
    if value is None:  # the common case: most mapped keys are absent from a given payload
        return ""
    if isinstance(value, str):
        return value.strip()  # may hold a lone surrogate: put_text refuses it
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


def is_true(value: Any) -> bool:
    """JSON true, or the string "true" in any case."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def first_text(*values: Any) -> str:
    for value in values:
        text = as_text(value)
        if text:
            return text
    return ""


def as_number(value: Any) -> int | float | None:
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


def as_float(value: Any) -> float | None:
    number = as_number(value)
    if number is None:
        return None
    try:
        return float(number)
    except OverflowError:  # an int too large for a double: keep it, normalize rejects inf
        return math.inf if number > 0 else -math.inf


# --- numbers the canonical event keeps ------------------------------------------------------
#
# One rule for every count and time an adapter reads: no number there (missing, null, or a value
# that is not a number: tolerant reading) is absent; a number that the canonical field cannot hold
# (2**80 installments, an epoch 1e400, NaN) is a violation on that canonical field, naming the
# payload path, never dropped in silence. Amounts (as_float) go to Money, whose rule is
# normalize's: finite and >= 0.

#: A count's range: what proto's int32 holds, and no count is negative.
_COUNT_RANGE: Final = f"a whole number from 0 to {_INT32_MAX}"


def count_field(value: Any, at: str, path: str, violations: list[FieldViolation]) -> int | None:
    """The count at payload ``path`` (``data.purchase.recurrence_number``) for canonical field
    ``at``; None when absent, a violation when it is a number out of range."""
    number = as_number(value)
    if number is None:
        return None
    if isinstance(number, float):
        if not number.is_integer():  # also False for inf and nan
            violations.append(FieldViolation(at, f"{path} must be {_COUNT_RANGE}"))
            return None
        number = int(number)
    if not 0 <= number <= _INT32_MAX:
        violations.append(FieldViolation(at, f"{path} must be {_COUNT_RANGE}"))
        return None
    return number


def time_field(value: Any, at: str, path: str, violations: list[FieldViolation]) -> tuple[int, int] | None:
    """The time at payload ``path`` for canonical field ``at``; None when absent (or text that is
    no time), a violation when it is a number no Timestamp can hold (years 1-9999)."""
    number = as_number(value)
    if number is None:
        return as_timestamp(value)
    parsed = _epoch_timestamp(number)
    if parsed is None:
        violations.append(FieldViolation(at, f"{path} is out of range: {TIME_HINT} from year 1 to 9999"))
    return parsed


# --- times -----------------------------------------------------------------------------------


def as_timestamp(value: Any) -> tuple[int, int] | None:
    """(seconds, nanos) of an epoch number (ms, or s below 10^11), numeric or ISO-8601 string."""
    number = as_number(value)
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
    # Exact for ints (arbitrary precision); floats are rounded to the nanosecond.
    total_nanos = number * nanos_per_unit if isinstance(number, int) else round(number * nanos_per_unit)
    seconds, nanos = divmod(total_nanos, 1_000_000_000)
    if not _MIN_TIMESTAMP <= seconds <= _MAX_TIMESTAMP:
        return None
    return seconds, nanos


def _iso_timestamp(text: str) -> tuple[int, int] | None:
    if not text or len(text) > _MAX_NUMBER_TEXT:
        return None
    try:
        moment = datetime.fromisoformat(text)
        return datetime_to_timestamp(moment)
    except (ValueError, OverflowError):  # not ISO-8601, or the offset leaves datetime's range
        return None


def datetime_to_timestamp(moment: datetime) -> tuple[int, int]:
    """(seconds, nanos) of ``moment``; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_UTC)
    delta = moment - _EPOCH
    return delta.days * 86_400 + delta.seconds, delta.microseconds * 1_000


def set_timestamp(target: timestamp_pb2.Timestamp, value: tuple[int, int] | None) -> bool:
    if value is None:
        return False
    target.seconds, target.nanos = value  # writing marks the field present, even for the epoch
    return True


# --- writing the canonical event -------------------------------------------------------------


def put_text(message: Any, name: str, text: str, at: str, violations: list[FieldViolation]) -> None:
    """Writes ``text`` to the string field ``name`` of ``message``, which is the canonical field
    ``at.name``. A lone surrogate (JSON "\\ud800", or the bytes of one) is a violation there,
    and protobuf, which refuses to encode one, gets U+FFFD instead: the event stays whole, so
    every other rule still reports. Every other character is the string rule's to judge."""
    if not text.isascii() and LONE_SURROGATE.search(text):
        violations.append(FieldViolation(f"{at}.{name}" if at else name, character_problem(text) or ""))
        text = without_lone_surrogates(text)
    setattr(message, name, text)


def set_strings(
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
            text = as_text(value)
            if text:
                put_text(target, name, text, at, violations)
                break
