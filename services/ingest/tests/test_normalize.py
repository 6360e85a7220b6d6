"""Tests of canonical-event normalization: the rules every event meets, whatever its source,
the string rule among them."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from listboss.events.v1 import event_pb2
from listboss_common.errors import InvalidArgument
from listboss_ingest import normalize, string_rule
from listboss_ingest.normalize import PRODUCER_PATTERN, normalize_event
from listboss_ingest.sources.hotmart import event_from_webhook

REPO = Path(__file__).resolve().parents[3]
UTC = UTC
PRODUCER = "acme"


def violated(call: Callable[[], object]) -> set[str]:
    """The field paths of the InvalidArgument ``call`` raises (fails when it raises nothing)."""
    with pytest.raises(InvalidArgument) as info:
        call()
    return {violation.field for violation in info.value.violations}


def at_time(when: datetime) -> Any:
    message = event_pb2.Event().occur_time
    message.FromDatetime(when)
    return message


def canonical(**changes: Any) -> event_pb2.Event:
    """A minimal valid canonical event."""
    event = event_pb2.Event(
        id="evt-1",
        producer=PRODUCER,
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id="42", name="Course"),
        person=event_pb2.Person(email="ana@example.com"),
        source=event_pb2.EVENT_SOURCE_GRPC,
    )
    event.occur_time.FromDatetime(datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    for name, value in changes.items():
        setattr(event, name, value)
    return event


# ---------------------------------------------------------------------------------------------
# normalize_event rules
# ---------------------------------------------------------------------------------------------


def test_valid_event_is_returned_as_an_equal_copy() -> None:
    event = canonical()
    result = normalize_event(event)
    assert result == event
    assert result is not event


def test_normalize_does_not_modify_its_argument() -> None:
    event = canonical()
    event.person.email = "  ANA@Example.com "
    before = event.SerializeToString()
    assert normalize_event(event).person.email == "ana@example.com"
    assert event.SerializeToString() == before


def test_normalize_trims_and_upper_cases() -> None:
    event = canonical(id="  evt-9 ")
    event.product.id = " 00042 "
    event.product.name = "  Course  "
    event.person.email = "\tAna@Example.COM "
    event.person.name = " Ana "
    event.person.country_code = " br "
    event.person.address.city = " Uberlândia "
    event.person.address.country_code = "br"
    event.purchase.status = " approved "
    event.purchase.payment_type = "credit_card"
    event.purchase.offer_code = " AbC "
    event.purchase.checkout_country_code = "br "
    event.purchase.price.currency_code = " brl"
    event.purchase.price.value = 10
    event.purchase.full_price.currency_code = "usd"
    event.subscription.status = "active"
    event.subscription.plan.name = " Gold "
    event.module.name = " M1 "

    result = normalize_event(event)
    assert result.id == "evt-9"
    assert result.product == event_pb2.Product(id="42", name="Course")
    assert (result.person.email, result.person.name, result.person.country_code) == ("ana@example.com", "Ana", "BR")
    assert (result.person.address.city, result.person.address.country_code) == ("Uberlândia", "BR")
    assert (result.purchase.status, result.purchase.payment_type) == ("APPROVED", "CREDIT_CARD")
    assert result.purchase.offer_code == "AbC"  # offer codes are case-sensitive
    assert result.purchase.checkout_country_code == "BR"
    assert result.purchase.price == event_pb2.Money(currency_code="BRL", value=10)
    assert result.purchase.full_price.currency_code == "USD"
    assert (result.subscription.status, result.subscription.plan.name, result.module.name) == ("ACTIVE", "Gold", "M1")
    assert normalize_event(result) == result


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("00000", "0"), ("0", "0"), ("007", "7"), ("123", "123"), (" 0042 ", "42"), ("0042a", "0042a")],
)
def test_product_id_leading_zeros(raw: str, expected: str) -> None:
    event = canonical()
    event.product.id = raw
    assert normalize_event(event).product.id == expected


@pytest.mark.parametrize("raw", ["０１", "a b", "-1", "x/y", "ç"])
def test_product_id_must_fit_in_a_resource_name(raw: str) -> None:
    event = canonical()
    event.product.id = raw
    assert violated(lambda: normalize_event(event)) == {"product.id"}


def test_empty_event_reports_every_required_field() -> None:
    assert violated(lambda: normalize_event(event_pb2.Event())) == {
        "id",
        "producer",
        "type",
        "occur_time",
        "person.email",
    }


def test_violations_reach_the_rpc_status() -> None:
    with pytest.raises(InvalidArgument) as info:
        normalize_event(event_pb2.Event())
    status = info.value.to_status()
    assert status.code == 3  # INVALID_ARGUMENT
    assert "person.email" in info.value.metadata["fields"]


@pytest.mark.parametrize("event_id", ["x" * 129, "a b", "a\tb", "a\nb", "a\u200bb", "a\x00b", "   "])
def test_invalid_ids(event_id: str) -> None:
    assert violated(lambda: normalize_event(canonical(id=event_id))) == {"id"}


def test_id_of_128_characters_is_accepted() -> None:
    assert normalize_event(canonical(id="x" * 128)).id == "x" * 128


@pytest.mark.parametrize("producer", ["acme", "a", "0", "acme-co_1", "a" * 63, "9lives"])
def test_valid_producers(producer: str) -> None:
    assert normalize_event(canonical(producer=producer)).producer == producer


@pytest.mark.parametrize("producer", ["Acme", "-acme", "_acme", "acme!", "a" * 64, "acme\n", " acme", "ac me", "açme"])
def test_invalid_producers(producer: str) -> None:
    assert violated(lambda: normalize_event(canonical(producer=producer))) == {"producer"}
    assert PRODUCER_PATTERN.fullmatch(producer) is None


@pytest.mark.parametrize("event_type", [event_pb2.EVENT_TYPE_UNSPECIFIED, 99])
def test_invalid_types(event_type: int) -> None:
    assert violated(lambda: normalize_event(canonical(type=event_type))) == {"type"}


def test_occur_time_bounds() -> None:
    now = datetime.now(UTC)
    ok = [datetime(2000, 1, 1, tzinfo=UTC), now, now + timedelta(hours=23)]
    bad = [datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(1970, 1, 1, tzinfo=UTC), now + timedelta(days=2)]
    for when in ok:
        event = canonical()
        event.occur_time.CopyFrom(at_time(when))
        normalize_event(event)
    for when in bad:
        event = canonical()
        event.occur_time.CopyFrom(at_time(when))
        assert violated(lambda event=event: normalize_event(event)) == {"occur_time"}, when


def test_occur_time_required_and_nanos_checked() -> None:
    event = canonical()
    event.ClearField("occur_time")
    assert violated(lambda: normalize_event(event)) == {"occur_time"}
    event = canonical()
    event.occur_time.nanos = -1
    assert violated(lambda: normalize_event(event)) == {"occur_time"}


def test_product_id_limits() -> None:
    event = canonical()
    event.product.id = "p" * 129
    assert violated(lambda: normalize_event(event)) == {"product.id"}
    event.product.id = "p" * 128
    normalize_event(event)
    event.ClearField("product")
    assert not normalize_event(event).HasField("product")  # a lead without a product


@pytest.mark.parametrize("product_id", ["", "   "])
def test_a_product_without_an_id_is_no_product(product_id: str) -> None:
    event = canonical()
    event.product.id = product_id
    event.product.name = "Curso"
    normalized = normalize_event(event)
    assert not normalized.HasField("product")
    assert normalized.person.email == event.person.email.strip().lower()


@pytest.mark.parametrize(
    "email",
    [
        "a@b.co",
        "first.last+tag@sub.example.com.br",
        "Ana@Example.COM",
        "joão@exemplo.com.br",
        "x" * 240 + "@example.com",
    ],
)
def test_plausible_emails(email: str) -> None:
    event = canonical()
    event.person.email = email
    assert normalize_event(event).person.email == email.lower()


@pytest.mark.parametrize(
    "email",
    [
        "",
        "   ",
        "plainaddress",
        "@example.com",
        "ana@",
        "ana@@example.com",
        "ana@x@example.com",
        "ana@localhost",
        "ana@.example.com",
        "ana@example.com.",
        "ana@example..com",
        "ana maria@example.com",
        "ana@exa\tmple.com",
        "ana\x00@example.com",
        "x" * 243 + "@example.com",
    ],
)
def test_implausible_emails(email: str) -> None:
    event = canonical()
    event.person.email = email
    assert violated(lambda: normalize_event(event)) == {"person.email"}


def test_missing_person_is_a_missing_email() -> None:
    event = canonical()
    event.ClearField("person")
    assert violated(lambda: normalize_event(event)) == {"person.email"}


@pytest.mark.parametrize("value", [-0.01, math.nan, math.inf, -math.inf])
def test_invalid_prices(value: float) -> None:
    event = canonical()
    event.purchase.price.value = value
    event.purchase.full_price.value = value
    assert violated(lambda: normalize_event(event)) == {"purchase.price.value", "purchase.full_price.value"}


def test_negative_counts() -> None:
    event = canonical()
    event.purchase.installments = -1
    event.purchase.recurrence_number = -3
    assert violated(lambda: normalize_event(event)) == {"purchase.installments", "purchase.recurrence_number"}


def test_absent_parts_stay_absent() -> None:
    result = normalize_event(canonical())
    for name in ("purchase", "subscription", "module"):
        assert not result.HasField(name)
    assert not result.person.HasField("address")


# ---------------------------------------------------------------------------------------------
# canonical events beyond the webhooks: CONTENT_PROGRESS, WEBINAR_*
# ---------------------------------------------------------------------------------------------


def progress_event(**fields: Any) -> event_pb2.Event:
    event = canonical(type=event_pb2.EVENT_TYPE_CONTENT_PROGRESS)
    event.content_progress.SetInParent()
    for name, value in fields.items():
        setattr(event.content_progress, name, value)
    return event


def webinar_event(event_type: int = event_pb2.EVENT_TYPE_WEBINAR_ATTENDANCE, **fields: Any) -> event_pb2.Event:
    event = canonical(type=event_type)
    event.webinar.SetInParent()
    for name, value in fields.items():
        setattr(event.webinar, name, value)
    return event


def test_content_progress_is_normalized() -> None:
    event = normalize_event(
        progress_event(
            content_id=" c-1 ", content_name=" Module A ", percentage=100.0, completed_lessons=8, total_lessons=8
        )
    )
    assert (event.content_progress.content_id, event.content_progress.content_name) == ("c-1", "Module A")
    assert normalize_event(progress_event()).content_progress.percentage == 0  # present, all zero: valid
    # Total unknown (0): any completed count is accepted.
    assert normalize_event(progress_event(completed_lessons=3)).content_progress.completed_lessons == 3


def test_content_progress_is_required_for_its_type() -> None:
    assert violated(lambda: normalize_event(canonical(type=event_pb2.EVENT_TYPE_CONTENT_PROGRESS))) == {
        "content_progress"
    }


@pytest.mark.parametrize("percentage", [-0.001, 100.001, math.inf, -math.inf, math.nan, 1e308])
def test_content_progress_percentage_bounds(percentage: float) -> None:
    assert violated(lambda: normalize_event(progress_event(percentage=percentage))) == {"content_progress.percentage"}


@pytest.mark.parametrize(
    ("completed", "total", "fields"),
    [
        (9, 8, {"content_progress.completed_lessons"}),
        (-1, 8, {"content_progress.completed_lessons"}),
        (0, -1, {"content_progress.total_lessons"}),
    ],
)
def test_content_progress_lesson_counts(completed: int, total: int, fields: set[str]) -> None:
    event = progress_event(completed_lessons=completed, total_lessons=total)
    assert violated(lambda: normalize_event(event)) == fields


@pytest.mark.parametrize(
    "event_type", [event_pb2.EVENT_TYPE_WEBINAR_REGISTRATION, event_pb2.EVENT_TYPE_WEBINAR_ATTENDANCE]
)
def test_webinar_id_is_required_for_webinar_events(event_type: int) -> None:
    assert violated(lambda: normalize_event(canonical(type=event_type))) == {"webinar.id"}
    assert violated(lambda: normalize_event(webinar_event(event_type, id="   "))) == {"webinar.id"}
    event = normalize_event(webinar_event(event_type, id=" w-1 ", name=" Live ", attended_minutes=0))
    assert (event.webinar.id, event.webinar.name) == ("w-1", "Live")


def test_webinar_rules() -> None:
    assert violated(lambda: normalize_event(webinar_event(id="w", attended_minutes=-1))) == {"webinar.attended_minutes"}
    assert violated(lambda: normalize_event(webinar_event(id="w" * 129))) == {"webinar.id"}
    bad_start = webinar_event(id="w")
    bad_start.webinar.start_time.nanos = -1
    assert violated(lambda: normalize_event(bad_start)) == {"webinar.start_time"}


def test_beyond_webhook_events_capture_the_contact_like_any_other() -> None:
    event = normalize_event(progress_event(percentage=50))
    event.person.email = " ANA@Example.com "
    assert normalize_event(event).person.email == "ana@example.com"


def test_an_event_too_large_for_the_bus_is_rejected_as_a_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every string has a limit, so today's Event cannot reach 256 KiB: a lower cap shows the
    # backstop still names the event as a whole.
    monkeypatch.setattr(normalize, "MAX_EVENT_BYTES", 1024)
    event = canonical()
    event.product.name = event.person.name = event.person.last_name = "x" * 500
    assert violated(lambda: normalize_event(event)) == {""}
    payload = json.loads((REPO / "tests" / "data" / "hotmart" / "PURCHASE_APPROVED.json").read_text())
    payload["data"]["product"]["name"] = payload["data"]["buyer"]["name"] = "x" * 500
    payload["data"]["buyer"]["last_name"] = "x" * 500
    assert violated(lambda: event_from_webhook(payload, PRODUCER)) == {"payload"}


# ---------------------------------------------------------------------------------------------
# what a store can hold: the string rule (STRING_FIELDS) on every string field
# ---------------------------------------------------------------------------------------------


def _string_paths(descriptor: Any = event_pb2.Event.DESCRIPTOR, prefix: str = "") -> Iterator[str]:
    for field in descriptor.fields:
        if field.type == field.TYPE_STRING:
            yield prefix + field.name
        elif field.type == field.TYPE_MESSAGE:
            yield from _string_paths(field.message_type, f"{prefix}{field.name}.")


EVENT_STRING_PATHS = sorted(_string_paths())


def _put(event: event_pb2.Event, path: str, value: str) -> None:
    *parents, name = path.split(".")
    message = event
    for parent in parents:
        message = getattr(message, parent)
    setattr(message, name, value)


def _value_of_length(path: str, length: int) -> str:
    """A value for ``path`` that its own rules accept, ``length`` characters long."""
    if path == "person.email":
        return "a" * (length - len("@example.com")) + "@example.com"
    if path == "producer":
        return "a" * length
    return "X" * length  # upper case: codes are upper-cased, and an id needs no other form


def test_every_string_field_of_the_event_has_a_limit() -> None:
    # A new string field is checked anyway (MAX_TEXT_LENGTH, trimmed); this asks for a decision.
    assert sorted(string_rule.STRING_FIELDS) == EVENT_STRING_PATHS


@pytest.mark.parametrize("path", EVENT_STRING_PATHS)
@pytest.mark.parametrize("control", ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"])
def test_a_control_character_in_any_string_field_is_a_violation_on_that_field(path: str, control: str) -> None:
    event = canonical()
    _put(event, path, f"qz{control}wy")
    with pytest.raises(InvalidArgument) as info:
        normalize_event(event)
    (violation,) = info.value.violations
    assert violation.field == path
    assert violation.description.endswith(f"found U+{ord(control):04X} at position 2")
    assert "qz" not in violation.description.lower()  # names the character, never the value


@pytest.mark.parametrize("path, limit", sorted((path, limit) for path, (limit, _) in string_rule.STRING_FIELDS.items()))
def test_each_string_field_holds_its_limit_and_not_one_character_more(path: str, limit: int) -> None:
    event = canonical()
    _put(event, path, _value_of_length(path, limit))
    normalize_event(event)
    _put(event, path, _value_of_length(path, limit + 1))
    with pytest.raises(InvalidArgument) as info:
        normalize_event(event)
    assert [(v.field, v.description) for v in info.value.violations] == [(path, f"must be at most {limit} characters")]


def test_limits_count_characters_not_bytes() -> None:
    event = canonical()
    event.person.name = "é" * 500
    event.product.name = "\U0001f600" * 500  # 2,000 bytes of UTF-8
    assert normalize_event(event).product.name == "\U0001f600" * 500


def test_limits_apply_to_the_normalized_value() -> None:
    event = canonical()
    event.person.name = "\n  " + "x" * 500 + "\t\r\n"  # the line breaks around it are trimmed away
    assert normalize_event(event).person.name == "x" * 500


@pytest.mark.parametrize(
    "name",
    [
        "Ana\u00a0Maria",
        "Zoë \u200bO'Brien",
        "Ana \u2028",
        "\ufffd",
        "\ufeffAna",
        "Jos\u00e9 \U0001f600",
        "\u0130stanbul",
    ],
)
def test_printable_unicode_and_format_characters_are_stored(name: str) -> None:
    event = canonical()
    event.person.name = name
    assert normalize_event(event).person.name == name.strip()


def test_one_violation_per_field_the_string_rules() -> None:
    # id's own rule ("printable, no whitespace") objects too: the string rule's answer is kept.
    event = canonical(id="a\x00b")
    with pytest.raises(InvalidArgument) as info:
        normalize_event(event)
    assert [(v.field, v.description) for v in info.value.violations] == [
        (
            "id",
            "must not contain control characters (U+0000-U+001F, U+007F-U+009F; tab and line breaks included): "
            "found U+0000 at position 1",
        )
    ]


def test_every_bad_string_is_reported_together() -> None:
    event = canonical()
    event.person.name = "A\x00B"
    event.person.address.city = "x" * 501
    event.subscription.plan.offer_code = "\x7f"
    assert violated(lambda: normalize_event(event)) == {
        "person.name",
        "person.address.city",
        "subscription.plan.offer_code",
    }


def test_the_rule_follows_the_descriptors_into_repeated_fields_and_maps() -> None:
    """A message with repeated and map fields (a contact change carries an event, repeated tag
    operations and strings, and a map of contact data) is covered without a line about it."""
    from listboss.changes.v1 import contact_change_pb2

    rule = string_rule.string_rule(contact_change_pb2.ContactChange.DESCRIPTOR)
    change = contact_change_pb2.ContactChange(
        event=canonical(),
        fired_segmentations=["ok", " padded ", "bad\x00"],
        contact_data={"name": " Ana ", "phone": "1\x852", "bad\x01key": "x"},
    )
    change.event.person.name = "A\x00B"
    change.tag_operations.add(tag_key="ok")
    change.tag_operations.add(tag_key="x" * 501)
    violations: list = []
    rule(change, violations, "")
    assert {v.field for v in violations} == {
        "event.person.name",
        "tag_operations[1].tag_key",
        "fired_segmentations[2]",
        'contact_data["phone"]',
        'contact_data["bad\\u0001key"]',  # the key is escaped: a path never holds a control
    }
    assert list(change.fired_segmentations)[:2] == ["ok", "padded"]
    assert change.contact_data["name"] == "Ana"


def test_a_recursive_message_type_is_followed_once() -> None:
    from google.protobuf import struct_pb2

    rule = string_rule.string_rule(struct_pb2.Struct.DESCRIPTOR)  # Struct -> Value -> Struct ...
    struct = struct_pb2.Struct()
    struct.update({"a\x00": "ok"})
    violations: list = []
    rule(struct, violations, "")
    assert [v.field for v in violations] == ['fields["a\\u0000"]']


def test_the_rule_reads_a_field_named_like_a_python_keyword() -> None:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file = descriptor_pb2.FileDescriptorProto(name="keyword_test.proto", package="keyword_test", syntax="proto3")
    message = file.message_type.add(name="Envelope")
    message.field.add(name="from", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    message.field.add(name="to", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    pool = descriptor_pool.DescriptorPool()
    envelope_class = message_factory.GetMessageClass(pool.Add(file).message_types_by_name["Envelope"])
    envelope = envelope_class(**{"from": "  Ana  ", "to": "B\x00"})
    violations: list = []
    string_rule.string_rule(envelope.DESCRIPTOR)(envelope, violations, "")
    assert getattr(envelope, "from") == "Ana"
    assert [v.field for v in violations] == ["to"]


@pytest.mark.parametrize(
    ("set_time", "field"),
    [
        (lambda e: e.purchase.order_time, "purchase.order_time"),
        (lambda e: e.purchase.approved_time, "purchase.approved_time"),
        (lambda e: e.subscription.next_charge_time, "subscription.next_charge_time"),
        (lambda e: e.webinar.start_time, "webinar.start_time"),
    ],
)
@pytest.mark.parametrize("seconds", [253_402_300_800, -62_135_596_801, 2**62])
def test_a_time_beyond_the_timestamp_range_names_its_field(set_time, field: str, seconds: int) -> None:
    event = canonical()
    set_time(event).seconds = seconds
    assert field in violated(lambda: normalize_event(event))
