"""Tests of canonical-event normalization and of the webhook (format 2.0.0) conversion.

The webhook fixtures are real payloads delivered by the platform, kept in ``tests/data/hotmart``.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "data" / "hotmart"

from listboss_ingest import normalize
from listboss_ingest.normalize import PRODUCER_PATTERN, event_from_webhook, normalize_event

from listboss.events.v1 import event_pb2
from listboss_common.errors import InvalidArgument

UTC = timezone.utc
PRODUCER = "acme"
BUYER_EMAIL = "testecomprador271101postman15@example.com"
HOTTOK = "<REDACTED_HOTTOK>"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def raw_fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def fixture(name: str) -> dict[str, Any]:
    return json.loads(raw_fixture(name))


def seconds_nanos(ms: int) -> tuple[int, int]:
    return ms // 1000, (ms % 1000) * 1_000_000


def ts(message: Any) -> tuple[int, int]:
    return message.seconds, message.nanos


def violated(call: Callable[[], object]) -> set[str]:
    """The field paths of the InvalidArgument ``call`` raises (fails when it raises nothing)."""
    with pytest.raises(InvalidArgument) as info:
        call()
    return {violation.field for violation in info.value.violations}


def description(call: Callable[[], object], field: str) -> str:
    with pytest.raises(InvalidArgument) as info:
        call()
    return next(v.description for v in info.value.violations if v.field == field)


def convert(payload: Any, producer: str = PRODUCER) -> event_pb2.Event:
    return event_from_webhook(payload, producer)


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


ALL_NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))
PURCHASE_STATUS = {
    "PURCHASE_APPROVED": "APPROVED",
    "PURCHASE_BILLET_PRINTED": "BILLET_PRINTED",
    "PURCHASE_CANCELED": "CANCELED",
    "PURCHASE_CHARGEBACK": "CHARGEBACK",
    "PURCHASE_COMPLETE": "COMPLETED",
    "PURCHASE_DELAYED": "DELAYED",
    "PURCHASE_EXPIRED": "EXPIRED",
    "PURCHASE_PROTEST": "DISPUTE",
    "PURCHASE_REFUNDED": "REFUNDED",
}


# ---------------------------------------------------------------------------------------------
# the 15 real fixtures
# ---------------------------------------------------------------------------------------------


def test_all_fifteen_fixtures_are_present() -> None:
    assert len(ALL_NAMES) == 15
    assert set(PURCHASE_STATUS) | {
        "PURCHASE_OUT_OF_SHOPPING_CART",
        "SUBSCRIPTION_CANCELLATION",
        "SWITCH_PLAN",
        "UPDATE_SUBSCRIPTION_CHARGE_DATE",
        "CLUB_FIRST_ACCESS",
        "CLUB_MODULE_COMPLETED",
    } == set(ALL_NAMES)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_fixture_envelope(name: str) -> None:
    payload = fixture(name)
    received = datetime(2025, 11, 16, 0, 0, 1, tzinfo=UTC)
    event = event_from_webhook(raw_fixture(name), PRODUCER, receive_time=received)

    assert event.type == event_pb2.EventType.Value(f"EVENT_TYPE_{name}")
    assert event.id == payload["id"]
    assert event.producer == PRODUCER
    assert event.source == event_pb2.EVENT_SOURCE_WEBHOOK
    assert ts(event.occur_time) == seconds_nanos(payload.get("creation_date") or payload["creationDate"])
    assert event.receive_time.ToDatetime(tzinfo=UTC) == received
    # Already canonical: normalizing again changes nothing.
    assert normalize_event(event) == event


@pytest.mark.parametrize("name", ALL_NAMES)
def test_fixture_same_event_from_bytes_str_and_mapping(name: str) -> None:
    raw = raw_fixture(name)
    from_bytes = convert(raw)
    assert convert(raw.decode()) == from_bytes
    assert convert(bytearray(raw)) == from_bytes
    assert convert(json.loads(raw)) == from_bytes


@pytest.mark.parametrize("name", sorted(PURCHASE_STATUS))
def test_purchase_fixtures(name: str) -> None:
    event = convert(raw_fixture(name))

    assert event.product == event_pb2.Product(id="0", name="Produto test postback2")
    person = event.person
    assert person.email == BUYER_EMAIL  # "testeComprador..." in the payload
    assert (person.name, person.first_name, person.last_name) == ("Teste Comprador", "Teste", "Comprador")
    assert person.phone == "999999999 99999999900"
    assert (person.document, person.document_type) == ("69526128664", "CPF")
    assert person.country_code == "BR"
    assert person.address == event_pb2.Address(
        street="Avenida Francisco Galassi",
        number="10",
        complement="Perto do shopping",
        neighborhood="Tubalina",
        city="Uberlândia",
        state="Minas Gerais",
        zip_code="38400123",
        country="Brasil",
        country_code="BR",
    )

    purchase = event.purchase
    assert purchase.transaction == "HP16015479281022"
    assert purchase.status == PURCHASE_STATUS[name]
    assert purchase.payment_type == "CREDIT_CARD"
    assert purchase.installments == 12
    assert purchase.recurrence_number == 0
    assert (purchase.offer_code, purchase.coupon_code) == ("test", "SHHUHA")
    assert purchase.price == event_pb2.Money(value=1500, currency_code="BRL")
    assert purchase.full_price == event_pb2.Money(value=1500, currency_code="BRL")
    assert purchase.checkout_country_code == "BR"
    assert ts(purchase.order_time) == seconds_nanos(1511783344000)
    assert ts(purchase.approved_time) == seconds_nanos(1511783346000)

    subscription = event.subscription
    assert subscription.status == "ACTIVE"
    assert subscription.subscriber_code == "I9OT62C3"
    assert subscription.plan == event_pb2.Plan(id="123", name="plano de teste")
    assert subscription.id == ""
    assert not subscription.HasField("next_charge_time")
    assert not event.HasField("module")


def test_cart_abandonment_fixture() -> None:
    event = convert(raw_fixture("PURCHASE_OUT_OF_SHOPPING_CART"))

    assert event.type == event_pb2.EVENT_TYPE_PURCHASE_OUT_OF_SHOPPING_CART
    assert event.id == "fd17c748-fa1a-405a-907f-2eb014b2f99a"
    assert ts(event.occur_time) == seconds_nanos(1763247745960)
    assert event.product == event_pb2.Product(id="123456", name="Produto test postback2 com ç e á")
    assert event.person == event_pb2.Person(
        email="teste@hotmart.com.br", name="Postback2 teste", phone="999999999", country_code="BR"
    )
    # The cart event carries the offer and checkout country at data level.
    assert event.purchase == event_pb2.Purchase(offer_code="n82b9jqz", checkout_country_code="BR")
    assert not event.HasField("subscription")
    assert not event.HasField("module")


def test_club_first_access_fixture() -> None:
    event = convert(raw_fixture("CLUB_FIRST_ACCESS"))

    assert event.type == event_pb2.EVENT_TYPE_CLUB_FIRST_ACCESS
    assert event.id == "7fe795fa-285c-430f-9a91-afce10a9216f"
    assert ts(event.occur_time) == seconds_nanos(1763247745996)  # from "creationDate"
    assert event.product == event_pb2.Product(id="0", name="Produto test postback2")
    assert event.person == event_pb2.Person(email="teste@hotmart.com.br", name="Test Name")
    for absent in ("purchase", "subscription", "module"):
        assert not event.HasField(absent)


def test_club_module_completed_fixture() -> None:
    event = convert(raw_fixture("CLUB_MODULE_COMPLETED"))

    assert event.type == event_pb2.EVENT_TYPE_CLUB_MODULE_COMPLETED
    assert event.id == "082eb61b-20b4-4627-9f84-de030e548080"
    assert ts(event.occur_time) == seconds_nanos(1763247745900)
    assert event.product.id == "0"  # "00000" in the payload
    assert event.person == event_pb2.Person(email="teste@hotmart.com.br", name="Test Name")
    assert event.module == event_pb2.ClubModule(id="hash123", name="Mudule test name")
    assert not event.HasField("purchase")


def test_subscription_cancellation_fixture() -> None:
    event = convert(raw_fixture("SUBSCRIPTION_CANCELLATION"))

    assert event.type == event_pb2.EVENT_TYPE_SUBSCRIPTION_CANCELLATION
    assert event.id == "e276dd75-8c7d-43d2-8398-f42e62060b99"
    assert ts(event.occur_time) == seconds_nanos(1763247745837)
    assert event.product == event_pb2.Product(id="788921", name="Product name com ç e á")
    # The subscriber's phone object holds only empty strings: no phone.
    assert event.person == event_pb2.Person(email="test@hotmart.com", name="User name")
    subscription = event.subscription
    assert subscription.id == "4148584"
    assert subscription.subscriber_code == "0000aaaa"  # codes keep their zeros
    assert subscription.plan == event_pb2.Plan(id="114680", name="Subscription Plan Name")
    assert ts(subscription.next_charge_time) == seconds_nanos(1617105600000)
    assert not event.HasField("purchase")


def test_switch_plan_fixture() -> None:
    event = convert(raw_fixture("SWITCH_PLAN"))

    assert event.type == event_pb2.EVENT_TYPE_SWITCH_PLAN
    assert event.id == "0c0ced4b-d92d-4b2a-b438-0a6473c6b4d5"
    assert ts(event.occur_time) == seconds_nanos(1763247745719)
    assert event.product == event_pb2.Product(id="0", name="Produto test postback2")
    assert event.person == event_pb2.Person(email="teste@hotmart.com.br")
    subscription = event.subscription
    assert subscription.subscriber_code == "9W2LNSG4"
    assert subscription.status == "ACTIVE"
    # The plan whose "current" is true (listed first here; see the next test for other orders).
    assert subscription.plan == event_pb2.Plan(id="654321", name="Novo produto test postback2", offer_code="n6hup357")


def test_switch_plan_picks_the_current_plan() -> None:
    payload = fixture("SWITCH_PLAN")
    payload["data"]["plans"].reverse()
    assert convert(payload).subscription.plan.id == "654321"
    for plan in payload["data"]["plans"]:
        plan["current"] = not plan["current"]
    assert convert(payload).subscription.plan == event_pb2.Plan(
        id="123456", name="Plano teste com ç e á", offer_code="n6hup355"
    )


def test_update_subscription_charge_date_fixture() -> None:
    event = convert(raw_fixture("UPDATE_SUBSCRIPTION_CHARGE_DATE"))

    assert event.type == event_pb2.EVENT_TYPE_UPDATE_SUBSCRIPTION_CHARGE_DATE
    assert event.id == "adb0a577-8574-4fab-93e5-051473f97fb6"
    assert ts(event.occur_time) == seconds_nanos(1763247745640)  # from "creationDate"
    assert event.product == event_pb2.Product(id="0", name="Product test postback2")
    assert event.person == event_pb2.Person(email="test@hotmart.com", name="Test")
    subscription = event.subscription
    assert subscription.subscriber_code == "00000000"
    assert subscription.status == "ACTIVE"
    assert subscription.plan == event_pb2.Plan(id="0", name="Plan Test", offer_code="000000")
    assert subscription.next_charge_time.ToDatetime(tzinfo=UTC) == datetime(2022, 10, 25, 12, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# the hottok never reaches the event
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_no_fixture_leaks_the_hottok(name: str) -> None:
    serialized = convert(raw_fixture(name)).SerializeToString()
    assert b"hottok" not in serialized.lower()
    assert HOTTOK.encode() not in serialized


def test_hottok_anywhere_in_the_payload_is_never_copied() -> None:
    token = "tok-9f8e7d6c5b4a"
    payload = fixture("PURCHASE_APPROVED")
    payload["hottok"] = token
    data = payload["data"]
    data["hottok"] = token
    for obj in (data["buyer"], data["buyer"]["address"], data["product"], data["purchase"], data["subscription"]):
        obj["hottok"] = token
    data["buyer"]["HOTTOK"] = {"hottok": token}

    event = convert(payload)
    serialized = event.SerializeToString()
    assert token.encode() not in serialized
    assert b"hottok" not in serialized.lower()
    assert token not in str(event)


def test_errors_do_not_echo_the_hottok() -> None:
    token = "tok-secret-123456"
    payload = {"hottok": token, "event": "NOPE", "data": {"buyer": {"hottok": token}}}
    with pytest.raises(InvalidArgument) as info:
        convert(payload)
    assert token not in info.value.message
    assert token not in str(info.value.to_status())
    truncated = json.dumps({"hottok": token, "id": "x"})[:-3].encode()
    with pytest.raises(InvalidArgument) as info:
        convert(truncated)
    assert token not in str(info.value.to_status())


# ---------------------------------------------------------------------------------------------
# malformed and quirky payloads
# ---------------------------------------------------------------------------------------------


def approved(mutate: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """The PURCHASE_APPROVED fixture after ``mutate`` (which edits it in place)."""
    payload = fixture("PURCHASE_APPROVED")
    mutate(payload)
    return payload


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = payload
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = payload
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


YEAR_3000_MS = int(datetime(3000, 1, 1, tzinfo=UTC).timestamp() * 1000)

# (label, payload, violated fields). Each payload must be rejected with exactly these fields.
REJECTED: list[tuple[str, Any, set[str]]] = [
    ("truncated JSON", raw_fixture("PURCHASE_APPROVED")[:200], {"payload"}),
    ("truncated str", raw_fixture("CLUB_FIRST_ACCESS").decode()[:-2], {"payload"}),
    ("trailing garbage", raw_fixture("CLUB_FIRST_ACCESS") + b"}", {"payload"}),
    ("empty bytes", b"", {"payload"}),
    ("empty str", "", {"payload"}),
    ("blank", b"  \n\t ", {"payload"}),
    ("top-level list", b'[{"event": "PURCHASE_APPROVED"}]', {"payload"}),
    ("top-level string", b'"PURCHASE_APPROVED"', {"payload"}),
    ("top-level number", b"42", {"payload"}),
    ("top-level null", b"null", {"payload"}),
    ("not utf-8", b'{"id": "\xff\xfe"}', {"payload"}),
    ("nested too deeply", b"[" * 200_000, {"payload"}),
    ("huge integer literal", b'{"id": ' + b"9" * 5000 + b"}", {"payload"}),
    ("not a payload type", 42, {"payload"}),
    ("None", None, {"payload"}),
    ("data is a string", approved(_set("data", "oops")), {"person.email", "product.id"}),
    ("data is a list", approved(_set("data", [1, 2])), {"person.email", "product.id"}),
    ("data missing", approved(_delete("data")), {"person.email", "product.id"}),
    ("buyer is null", approved(_set("data.buyer", None)), {"person.email"}),
    ("buyer is a list", approved(_set("data.buyer", [{"email": "a@b.co"}])), {"person.email"}),
    ("email missing", approved(_delete("data.buyer.email")), {"person.email"}),
    ("email blank", approved(_set("data.buyer.email", "   ")), {"person.email"}),
    ("email is an object", approved(_set("data.buyer.email", {"a": 1})), {"person.email"}),
    ("invalid email", approved(_set("data.buyer.email", "not-an-email")), {"person.email"}),
    ("email without domain dot", approved(_set("data.buyer.email", "ana@localhost")), {"person.email"}),
    ("email with two @", approved(_set("data.buyer.email", "ana@x@example.com")), {"person.email"}),
    ("email with inner space", approved(_set("data.buyer.email", "ana maria@example.com")), {"person.email"}),
    ("creation_date 1970 (s)", approved(_set("creation_date", 1000)), {"occur_time"}),
    ("creation_date 1970 (ms)", approved(_set("creation_date", 100_000_000_000)), {"occur_time"}),
    ("creation_date year 3000", approved(_set("creation_date", YEAR_3000_MS)), {"occur_time"}),
    ("creation_date garbage", approved(_set("creation_date", "yesterday")), {"occur_time"}),
    ("creation_date out of range", approved(_set("creation_date", 10**30)), {"occur_time"}),
    ("creation_date NaN", approved(_set("creation_date", math.nan)), {"occur_time"}),
    ("creation_date boolean", approved(_set("creation_date", True)), {"occur_time"}),
    ("creation_date missing", approved(_delete("creation_date")), {"occur_time"}),
    ("unknown event", approved(_set("event", "PURCHASE_TELEPORTED")), {"event"}),
    ("event missing", approved(_delete("event")), {"event"}),
    ("event is a number", approved(_set("event", 3)), {"event"}),
    ("event UNSPECIFIED", approved(_set("event", "UNSPECIFIED")), {"event"}),
    ("id missing", approved(_delete("id")), {"id"}),
    ("id with spaces", approved(_set("id", "a b")), {"id"}),
    ("id too long", approved(_set("id", "x" * 129)), {"id"}),
    ("product null", approved(_set("data.product", None)), {"product.id"}),
    ("product id blank", approved(_set("data.product.id", " ")), {"product.id"}),
    ("negative price", approved(_set("data.purchase.price.value", -1)), {"purchase.price.value"}),
    ("price NaN", approved(_set("data.purchase.price.value", math.nan)), {"purchase.price.value"}),
    ("full price infinite", approved(_set("data.purchase.full_price.value", "1e999")), {"purchase.full_price.value"}),
    (
        "negative installments",
        approved(_set("data.purchase.payment.installments_number", "-2")),
        {"purchase.installments"},
    ),
    ("negative recurrence", approved(_set("data.purchase.recurrence_number", -1)), {"purchase.recurrence_number"}),
    (
        "everything wrong at once",
        {"event": "NOPE", "creation_date": 5, "id": " ", "data": {"buyer": {"email": "x"}}},
        {"event", "occur_time", "id", "person.email", "product.id"},
    ),
]


@pytest.mark.parametrize(("label", "payload", "fields"), REJECTED, ids=[case[0] for case in REJECTED])
def test_rejected_payloads(label: str, payload: Any, fields: set[str]) -> None:
    assert violated(lambda: convert(payload)) == fields


def test_malformed_json_says_where() -> None:
    text = description(lambda: convert(b'{\n  "id": "x",\n  "event" "PURCHASE_APPROVED"\n}'), "payload")
    assert "line 3" in text and "column 11" in text


def test_top_level_must_be_an_object() -> None:
    assert "array" in description(lambda: convert(b"[]"), "payload")


def test_missing_email_names_the_paths_searched() -> None:
    text = description(lambda: convert(approved(_set("data.buyer", None))), "person.email")
    for path in ("data.buyer.email", "data.user.email", "data.subscriber.email", "data.subscription.user.email"):
        assert path in text


def test_unknown_event_is_named() -> None:
    text = description(lambda: convert(approved(_set("event", "PURCHASE_TELEPORTED"))), "event")
    assert "PURCHASE_TELEPORTED" in text


def test_bad_creation_date_names_the_key() -> None:
    assert "creation_date" in description(lambda: convert(approved(_set("creation_date", "soon"))), "occur_time")


def test_invalid_producer_is_reported() -> None:
    assert violated(lambda: convert(raw_fixture("CLUB_FIRST_ACCESS"), "Not A Producer")) == {"producer"}


def test_email_is_trimmed_and_lower_cased() -> None:
    event = convert(approved(_set("data.buyer.email", "  Ana.Maria+Promo@Example.COM\t")))
    assert event.person.email == "ana.maria+promo@example.com"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1763247745737, (1763247745, 737_000_000)),  # epoch ms
        ("1763247745737", (1763247745, 737_000_000)),  # numeric string
        (1763247745, (1763247745, 0)),  # seconds, below 10^11
        (1763247745.5, (1763247745, 500_000_000)),  # fractional seconds
        (" 1763247745 ", (1763247745, 0)),
        ("2025-11-15T22:22:25.737Z", (1763245345, 737_000_000)),  # ISO-8601, UTC
        ("2025-11-15T19:22:25.737-03:00", (1763245345, 737_000_000)),  # with an offset
        ("2025-11-15T22:22:25", (1763245345, 0)),  # naive = UTC
    ],
)
def test_creation_date_forms(value: Any, expected: tuple[int, int]) -> None:
    assert ts(convert(approved(_set("creation_date", value))).occur_time) == expected


def test_creation_date_camel_case_is_read_when_snake_case_missing() -> None:
    payload = approved(_delete("creation_date"))
    payload["creationDate"] = 1763247745001
    assert ts(convert(payload).occur_time) == (1763247745, 1_000_000)


def test_numbers_as_strings_and_ids_as_numbers() -> None:
    def mutate(payload: dict[str, Any]) -> None:
        data = payload["data"]
        data["purchase"]["price"] = {"value": "1500.50", "currency_value": " brl "}
        data["purchase"]["full_price"]["value"] = "1600"
        data["purchase"]["payment"]["installments_number"] = "12"
        data["purchase"]["recurrence_number"] = "3"
        data["purchase"]["order_date"] = "1511783344000"
        data["product"]["id"] = "000123"
        data["subscription"]["plan"]["id"] = 123.0
        data["buyer"]["document"] = 69526128664
        payload["id"] = 987654321

    event = convert(approved(mutate))
    assert event.id == "987654321"
    assert event.purchase.price == event_pb2.Money(value=1500.5, currency_code="BRL")
    assert event.purchase.full_price.value == 1600
    assert event.purchase.installments == 12
    assert event.purchase.recurrence_number == 3
    assert ts(event.purchase.order_time) == seconds_nanos(1511783344000)
    assert event.product.id == "123"
    assert event.subscription.plan.id == "123"
    assert event.person.document == "69526128664"


def test_free_purchase_keeps_a_zero_price() -> None:
    event = convert(approved(_set("data.purchase.price", {"value": 0, "currency_value": "BRL"})))
    assert event.purchase.HasField("price")
    assert event.purchase.price == event_pb2.Money(value=0, currency_code="BRL")


def test_wrong_types_in_optional_parts_count_as_absent() -> None:
    def mutate(payload: dict[str, Any]) -> None:
        data = payload["data"]
        data["purchase"]["payment"] = "CREDIT_CARD"
        data["purchase"]["price"] = [1500]
        data["purchase"]["full_price"] = {"value": "abc", "currency_value": "BRL"}
        data["purchase"]["offer"] = None
        data["purchase"]["order_date"] = {"ms": 1}
        data["purchase"]["payment"] = 7
        data["subscription"] = ["ACTIVE"]
        data["buyer"]["address"] = "Avenida"
        data["buyer"]["first_name"] = None
        data["buyer"]["last_name"] = True
        data["module"] = 5

    event = convert(approved(mutate))
    purchase = event.purchase
    assert purchase.transaction == "HP16015479281022"
    assert not purchase.HasField("price") and not purchase.HasField("full_price")
    assert (purchase.payment_type, purchase.installments, purchase.offer_code) == ("", 0, "")
    assert not purchase.HasField("order_time")
    assert not event.HasField("subscription")
    assert not event.HasField("module")
    assert not event.person.HasField("address")
    assert event.person.country_code == "BR"  # falls back to the checkout country
    assert (event.person.first_name, event.person.last_name) == ("", "")


def test_event_name_is_case_insensitive_and_trimmed() -> None:
    assert convert(approved(_set("event", " purchase_approved "))).type == event_pb2.EVENT_TYPE_PURCHASE_APPROVED


def test_person_falls_back_to_other_paths() -> None:
    payload = approved(_delete("data.buyer"))
    payload["data"]["user"] = {"email": "User@Example.com", "name": "U"}
    assert convert(payload).person == event_pb2.Person(email="user@example.com", name="U", country_code="BR")


def test_subscriber_phone_object_is_used_when_filled() -> None:
    payload = fixture("SUBSCRIPTION_CANCELLATION")
    payload["data"]["subscriber"]["phone"] = {"dddPhone": "34", "phone": "32323232", "dddCell": "", "cell": ""}
    assert convert(payload).person.phone == "34 32323232"
    payload["data"]["subscriber"]["phone"].update(dddCell="34", cell="999998888")
    assert convert(payload).person.phone == "34 999998888"


def test_plan_from_data_plan_with_offer_code() -> None:
    payload = fixture("UPDATE_SUBSCRIPTION_CHARGE_DATE")
    payload["data"]["plan"] = {"id": "77", "name": " Gold ", "offer": {"code": "abc"}}
    assert convert(payload).subscription.plan == event_pb2.Plan(id="77", name="Gold", offer_code="abc")


def test_a_lone_surrogate_in_a_mapped_value_is_a_violation_on_its_canonical_field() -> None:
    payload = approved(_set("data.buyer.name", "Ana \ud800"))
    assert violated(lambda: convert(payload)) == {"person.name"}
    assert "U+D800 at position 4" in description(lambda: convert(payload), "person.name")


def test_mapping_payload_is_not_modified() -> None:
    payload = fixture("PURCHASE_APPROVED")
    payload["data"]["buyer"]["email"] = "  UPPER@Example.COM "
    before = copy.deepcopy(payload)
    convert(payload)
    assert payload == before


def test_receive_time_naive_is_utc_and_default_is_unset() -> None:
    event = event_from_webhook(raw_fixture("CLUB_FIRST_ACCESS"), PRODUCER, receive_time=datetime(2025, 1, 2, 3, 4, 5))
    assert event.receive_time.ToDatetime(tzinfo=UTC) == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert not convert(raw_fixture("CLUB_FIRST_ACCESS")).HasField("receive_time")


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
        "product.id",
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
        assert violated(lambda: normalize_event(event)) == {"occur_time"}, when


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
    assert violated(lambda: normalize_event(event)) == {"product.id"}


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
# property: any JSON-like input ends as an Event or an InvalidArgument
# ---------------------------------------------------------------------------------------------


def _keys_of(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield key
            yield from _keys_of(child)
    elif isinstance(value, list):
        for child in value:
            yield from _keys_of(child)


FIXTURE_DOCS = [fixture(name) for name in ALL_NAMES]
KNOWN_KEYS = sorted({key for doc in FIXTURE_DOCS for key in _keys_of(doc)} | {"street", "zip_code", "key"})
TRICKY_STRINGS = [
    "",
    " ",
    "0",
    "00000",
    "12",
    "-1",
    "1500.50",
    "1e400",
    "NaN",
    "true",
    "1763247745737",
    "2022-10-25T12:00:00.000Z",
    "9999-12-31T23:59:59+00:00",
    "a@b.co",
    "  Ana@Example.COM ",
    "ana@localhost",
    "PURCHASE_APPROVED",
    "switch_plan",
    "CLUB_FIRST_ACCESS",
    "\ud800",
    "x" * 200,
    "hottok",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(TRICKY_STRINGS)
)
json_keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=5),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replaced(doc: Any, path: tuple[Any, ...], replacement: Any) -> Any:
    if not path:
        return replacement
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = replacement
    return doc


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(FIXTURE_DOCS)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        doc = _replaced(doc, path, draw(json_values))
    return doc


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Top-level objects shaped like a webhook, with arbitrary contents."""
    doc = draw(st.dictionaries(json_keys, json_values, max_size=4))
    doc.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": json_values,
                    "event": st.sampled_from(sorted(PURCHASE_STATUS) + ["SWITCH_PLAN", "CLUB_FIRST_ACCESS"])
                    | json_values,
                    "creation_date": st.integers(min_value=-(10**16), max_value=10**16) | json_values,
                    "creationDate": json_values,
                    "hottok": st.text(max_size=8),
                    "data": json_values,
                },
            )
        )
    )
    return doc


@st.composite
def encoded(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> Any:
    """A document as a mapping, str or bytes, maybe cut short."""
    doc = draw(documents)
    form = draw(st.sampled_from(["object", "str", "bytes", "truncated"]))
    if form == "object":
        return doc
    text = json.dumps(doc)
    if form == "str":
        return text
    if form == "bytes":
        return text.encode()
    return text.encode()[: draw(st.integers(min_value=0, max_value=len(text)))]


PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis folder written into the repo
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _assert_event_or_invalid_argument(payload: Any) -> None:
    try:
        event = event_from_webhook(payload, PRODUCER, receive_time=datetime(2025, 1, 1, tzinfo=UTC))
    except InvalidArgument as exc:
        assert exc.violations, "an InvalidArgument must name at least one field"
        return
    assert isinstance(event, event_pb2.Event)
    assert event.source == event_pb2.EVENT_SOURCE_WEBHOOK
    assert normalize_event(event) == event
    event.SerializeToString()


@PROPERTY_SETTINGS
@given(encoded(mutated_fixtures()))
def test_property_mutated_fixtures(payload: Any) -> None:
    snapshot = json.dumps(payload) if isinstance(payload, Mapping) else None
    _assert_event_or_invalid_argument(payload)
    if snapshot is not None:
        assert json.dumps(payload) == snapshot  # the caller's object is only read


@PROPERTY_SETTINGS
@given(encoded(envelopes()))
def test_property_webhook_shaped_objects(payload: Any) -> None:
    _assert_event_or_invalid_argument(payload)


@PROPERTY_SETTINGS
@given(json_values | st.text(max_size=40) | st.binary(max_size=40))
def test_property_arbitrary_values(payload: Any) -> None:
    _assert_event_or_invalid_argument(payload)


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
        progress_event(content_id=" c-1 ", content_name=" Module A ", percentage=100.0, completed_lessons=8,
                       total_lessons=8)
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
    assert violated(lambda: normalize_event(progress_event(percentage=percentage))) == {
        "content_progress.percentage"
    }


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
    assert violated(lambda: normalize_event(webinar_event(id="w", attended_minutes=-1))) == {
        "webinar.attended_minutes"
    }
    assert violated(lambda: normalize_event(webinar_event(id="w" * 129))) == {"webinar.id"}
    bad_start = webinar_event(id="w")
    bad_start.webinar.start_time.nanos = -1
    assert violated(lambda: normalize_event(bad_start)) == {"webinar.start_time"}


def test_beyond_webhook_events_capture_the_contact_like_any_other() -> None:
    event = normalize_event(progress_event(percentage=50))
    event.person.email = " ANA@Example.com "
    assert normalize_event(event).person.email == "ana@example.com"


@pytest.mark.parametrize("name", ["CONTENT_PROGRESS", "WEBINAR_REGISTRATION", "WEBINAR_ATTENDANCE"])
def test_grpc_only_types_are_unknown_as_webhooks(name: str) -> None:
    payload = fixture("CLUB_FIRST_ACCESS")
    payload["event"] = name
    assert "event" in violated(lambda: convert(payload))


def test_an_event_too_large_for_the_bus_is_rejected_as_a_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every string has a limit, so today's Event cannot reach 256 KiB: a lower cap shows the
    # backstop still names the event as a whole.
    monkeypatch.setattr(normalize, "MAX_EVENT_BYTES", 1024)
    event = canonical()
    event.product.name = event.person.name = event.person.last_name = "x" * 500
    assert violated(lambda: normalize_event(event)) == {""}
    payload = fixture("PURCHASE_APPROVED")
    payload["data"]["product"]["name"] = payload["data"]["buyer"]["name"] = "x" * 500
    payload["data"]["buyer"]["last_name"] = "x" * 500
    assert violated(lambda: convert(payload)) == {"payload"}


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
    assert sorted(normalize.STRING_FIELDS) == EVENT_STRING_PATHS


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


@pytest.mark.parametrize("path, limit", sorted((path, limit) for path, (limit, _) in normalize.STRING_FIELDS.items()))
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
    ["Ana\u00a0Maria", "Zoë \u200bO'Brien", "Ana \u2028", "\ufffd", "\ufeffAna", "Jos\u00e9 \U0001f600", "\u0130stanbul"],
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
        ("id", "must not contain control characters (U+0000-U+001F, U+007F-U+009F; tab and line breaks included): "
               "found U+0000 at position 1")
    ]


def test_every_bad_string_is_reported_together() -> None:
    event = canonical()
    event.person.name = "A\x00B"
    event.person.address.city = "x" * 501
    event.subscription.plan.offer_code = "\x7f"
    assert violated(lambda: normalize_event(event)) == {
        "person.name", "person.address.city", "subscription.plan.offer_code",
    }


def test_the_rule_follows_the_descriptors_into_repeated_fields_and_maps() -> None:
    """A message with repeated and map fields (a contact change carries an event, repeated tag
    operations and strings, and a map of contact data) is covered without a line about it."""
    from listboss.changes.v1 import contact_change_pb2

    rule = normalize.string_rule(contact_change_pb2.ContactChange.DESCRIPTOR)
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

    rule = normalize.string_rule(struct_pb2.Struct.DESCRIPTOR)  # Struct -> Value -> Struct ...
    struct = struct_pb2.Struct()
    struct.update({"a\x00": "ok"})
    violations: list = []
    rule(struct, violations, "")
    assert [v.field for v in violations] == ['fields["a\\u0000"]']


# --- the string rule through the webhook converter ----------------------------------------------


@pytest.mark.parametrize(
    "path, canonical_field",
    [
        ("data.buyer.name", "person.name"),
        ("data.buyer.email", "person.email"),
        ("data.buyer.address.city", "person.address.city"),
        ("data.buyer.checkout_phone", "person.phone"),
        ("data.product.name", "product.name"),
        ("data.purchase.offer.code", "purchase.offer_code"),
        ("data.purchase.price.currency_value", "purchase.price.currency_code"),
        ("data.purchase.transaction", "purchase.transaction"),
        ("id", "id"),
    ],
)
@pytest.mark.parametrize("bad", ["Ana\x00Maria", "Ana\ud800", "\udfffAna", "Ana\x85Maria"])
def test_an_unstorable_webhook_value_is_a_violation_on_its_canonical_field(
    path: str, canonical_field: str, bad: str
) -> None:
    payload = approved(_set(path, bad))
    assert violated(lambda: convert(payload)) == {canonical_field}
    assert violated(lambda: convert(json.dumps(payload).encode())) == {canonical_field}  # as "\ud800" escapes


def test_the_bytes_of_a_lone_surrogate_in_the_body_are_refused_like_its_escape() -> None:
    body = raw_fixture("PURCHASE_APPROVED").replace(b'"Teste Comprador"', b'"Teste \xed\xa0\x80"')
    assert b"\xed\xa0\x80" in body
    assert "lone surrogates" in description(lambda: convert(body), "person.name")


def test_a_lone_surrogate_where_the_table_reads_nothing_does_not_refuse_the_webhook() -> None:
    payload = approved(_set("data.producer.name", "Producer \ud800"))
    assert convert(json.dumps(payload).encode()).id == payload["id"]


def test_an_over_long_webhook_value_is_a_violation_on_its_canonical_field() -> None:
    payload = approved(_set("data.product.name", "x" * 501))
    assert description(lambda: convert(payload), "product.name") == "must be at most 500 characters"


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
    normalize.string_rule(envelope.DESCRIPTOR)(envelope, violations, "")
    assert getattr(envelope, "from") == "Ana"
    assert [v.field for v in violations] == ["to"]
