"""Tests of the Hotmart adapter: the platform's webhook (format 2.0.0) becomes a canonical event.

The webhook fixtures are real payloads delivered by the platform, kept in ``tests/data/hotmart``.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from listboss.events.v1 import event_pb2
from listboss_common.errors import InvalidArgument
from listboss_ingest.normalize import normalize_event
from listboss_ingest.sources.hotmart import event_from_webhook

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "data" / "hotmart"
UTC = UTC
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


def approved(mutate: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """The PURCHASE_APPROVED fixture after ``mutate`` (which edits it in place)."""
    payload = fixture("PURCHASE_APPROVED")
    mutate(payload)
    return payload


def set_path(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = payload
        for key in parents:
            node = node[key]
        node[last] = value

    return mutate


def delete_path(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = payload
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


#: The 15 real payloads, by event name.
ALL_NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))
#: The purchase events' fixtures and the status each carries.
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
    ("data is a string", approved(set_path("data", "oops")), {"person.email"}),
    ("data is a list", approved(set_path("data", [1, 2])), {"person.email"}),
    ("data missing", approved(delete_path("data")), {"person.email"}),
    ("buyer is null", approved(set_path("data.buyer", None)), {"person.email"}),
    ("buyer is a list", approved(set_path("data.buyer", [{"email": "a@b.co"}])), {"person.email"}),
    ("email missing", approved(delete_path("data.buyer.email")), {"person.email"}),
    ("email blank", approved(set_path("data.buyer.email", "   ")), {"person.email"}),
    ("email is an object", approved(set_path("data.buyer.email", {"a": 1})), {"person.email"}),
    ("invalid email", approved(set_path("data.buyer.email", "not-an-email")), {"person.email"}),
    ("email without domain dot", approved(set_path("data.buyer.email", "ana@localhost")), {"person.email"}),
    ("email with two @", approved(set_path("data.buyer.email", "ana@x@example.com")), {"person.email"}),
    ("email with inner space", approved(set_path("data.buyer.email", "ana maria@example.com")), {"person.email"}),
    ("creation_date 1970 (s)", approved(set_path("creation_date", 1000)), {"occur_time"}),
    ("creation_date 1970 (ms)", approved(set_path("creation_date", 100_000_000_000)), {"occur_time"}),
    ("creation_date year 3000", approved(set_path("creation_date", YEAR_3000_MS)), {"occur_time"}),
    ("creation_date garbage", approved(set_path("creation_date", "yesterday")), {"occur_time"}),
    ("creation_date out of range", approved(set_path("creation_date", 10**30)), {"occur_time"}),
    ("creation_date NaN", approved(set_path("creation_date", math.nan)), {"occur_time"}),
    ("creation_date boolean", approved(set_path("creation_date", True)), {"occur_time"}),
    ("creation_date missing", approved(delete_path("creation_date")), {"occur_time"}),
    ("unknown event", approved(set_path("event", "PURCHASE_TELEPORTED")), {"event"}),
    ("event missing", approved(delete_path("event")), {"event"}),
    ("event is a number", approved(set_path("event", 3)), {"event"}),
    ("event UNSPECIFIED", approved(set_path("event", "UNSPECIFIED")), {"event"}),
    ("id missing", approved(delete_path("id")), {"id"}),
    ("id with spaces", approved(set_path("id", "a b")), {"id"}),
    ("id too long", approved(set_path("id", "x" * 129)), {"id"}),
    ("negative price", approved(set_path("data.purchase.price.value", -1)), {"purchase.price.value"}),
    ("price NaN", approved(set_path("data.purchase.price.value", math.nan)), {"purchase.price.value"}),
    (
        "full price infinite",
        approved(set_path("data.purchase.full_price.value", "1e999")),
        {"purchase.full_price.value"},
    ),
    (
        "negative installments",
        approved(set_path("data.purchase.payment.installments_number", "-2")),
        {"purchase.installments"},
    ),
    ("negative recurrence", approved(set_path("data.purchase.recurrence_number", -1)), {"purchase.recurrence_number"}),
    # A number present but out of its canonical field's range is refused, never dropped.
    (
        "installments beyond int32",
        approved(set_path("data.purchase.payment.installments_number", 2**80)),
        {"purchase.installments"},
    ),
    (
        "installments not whole",
        approved(set_path("data.purchase.payment.installments_number", 2.5)),
        {"purchase.installments"},
    ),
    (
        "recurrence beyond int32",
        approved(set_path("data.purchase.recurrence_number", 2**80)),
        {"purchase.recurrence_number"},
    ),
    ("order date beyond any time", approved(set_path("data.purchase.order_date", 2**80)), {"purchase.order_time"}),
    ("approved date infinite", approved(set_path("data.purchase.approved_date", 1e400)), {"purchase.approved_time"}),
    (
        "approved date not a number",
        approved(set_path("data.purchase.approved_date", float("nan"))),
        {"purchase.approved_time"},
    ),
    (
        "approved date huge text",
        approved(set_path("data.purchase.approved_date", "9" * 40)),
        {"purchase.approved_time"},
    ),
    (
        "next charge beyond any time",
        approved(set_path("data.date_next_charge", -(2**70))),
        {"subscription.next_charge_time"},
    ),
    (
        "everything wrong at once",
        {"event": "NOPE", "creation_date": 5, "id": " ", "data": {"buyer": {"email": "x"}}},
        {"event", "occur_time", "id", "person.email"},
    ),
]


@pytest.mark.parametrize(("label", "payload", "fields"), REJECTED, ids=[case[0] for case in REJECTED])
def test_rejected_payloads(label: str, payload: Any, fields: set[str]) -> None:
    assert violated(lambda: convert(payload)) == fields


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("data.purchase.payment.installments_number", 2**80, "purchase.installments"),
        ("data.purchase.recurrence_number", 2**80, "purchase.recurrence_number"),
        ("data.purchase.order_date", 2**80, "purchase.order_time"),
        ("data.purchase.approved_date", 1e400, "purchase.approved_time"),
    ],
)
def test_an_out_of_range_number_names_its_payload_path(path: str, value: Any, field: str) -> None:
    text = description(lambda: convert(approved(set_path(path, value))), field)
    assert path in text
    assert str(value) not in text  # the limit, not the value


def test_a_value_that_is_no_number_is_still_absent() -> None:
    event = convert(approved(set_path("data.purchase.payment.installments_number", "twelve")))
    assert event.purchase.installments == 0
    event = convert(approved(set_path("data.purchase.approved_date", {"when": "later"})))
    assert not event.purchase.HasField("approved_time")


# A lead is never lost for its product: a person with a usable email is an event, with or without one.
# (label, fixture, damages, whether the event keeps a product)
PRODUCTLESS: list[tuple[str, str, list[Callable[[dict[str, Any]], object]], bool]] = [
    ("product missing", "PURCHASE_APPROVED", [delete_path("data.product")], False),
    ("product null", "PURCHASE_APPROVED", [set_path("data.product", None)], False),
    ("product a placeholder string", "PURCHASE_APPROVED", [set_path("data.product", "Rua Exemplo, 123")], False),
    ("product a list", "PURCHASE_APPROVED", [set_path("data.product", [{"id": 1}])], False),
    ("product id blank", "PURCHASE_APPROVED", [set_path("data.product.id", " ")], False),
    ("product id an object", "PURCHASE_APPROVED", [set_path("data.product.id", {"value": 1})], False),
    ("product id missing", "PURCHASE_APPROVED", [delete_path("data.product.id")], False),
    (
        "subscription a placeholder, product only there",
        "SUBSCRIPTION_CANCELLATION",
        [delete_path("data.product"), set_path("data.subscription", "Av. Paulista, 1000")],
        False,
    ),
    ("subscription a placeholder", "SUBSCRIPTION_CANCELLATION", [set_path("data.subscription", "Av. Paulista")], True),
    ("purchase a placeholder", "PURCHASE_APPROVED", [set_path("data.purchase", "n/a")], True),
]


@pytest.mark.parametrize(
    ("label", "name", "damages", "keeps_product"), PRODUCTLESS, ids=[case[0] for case in PRODUCTLESS]
)
def test_an_event_naming_a_person_is_accepted_whatever_its_product(
    label: str, name: str, damages: list[Callable[[dict[str, Any]], object]], keeps_product: bool
) -> None:
    payload = fixture(name)
    for damage in damages:
        damage(payload)
    event = convert(payload)
    assert event.person.email
    assert event.HasField("product") == keeps_product
    if label.startswith("subscription"):
        assert not event.subscription.id
    if label.startswith("purchase"):
        assert not event.purchase.transaction


def test_a_placeholder_where_the_person_is_expected_is_still_refused() -> None:
    payload = approved(set_path("data.buyer", "Rua Exemplo, 123"))
    assert "person.email" in violated(lambda: convert(payload))


def test_malformed_json_says_where() -> None:
    text = description(lambda: convert(b'{\n  "id": "x",\n  "event" "PURCHASE_APPROVED"\n}'), "payload")
    assert "line 3" in text and "column 11" in text


def test_top_level_must_be_an_object() -> None:
    assert "array" in description(lambda: convert(b"[]"), "payload")


def test_missing_email_names_the_paths_searched() -> None:
    text = description(lambda: convert(approved(set_path("data.buyer", None))), "person.email")
    for path in ("data.buyer.email", "data.user.email", "data.subscriber.email", "data.subscription.user.email"):
        assert path in text


def test_unknown_event_is_named() -> None:
    text = description(lambda: convert(approved(set_path("event", "PURCHASE_TELEPORTED"))), "event")
    assert "PURCHASE_TELEPORTED" in text


def test_bad_creation_date_names_the_key() -> None:
    assert "creation_date" in description(lambda: convert(approved(set_path("creation_date", "soon"))), "occur_time")


def test_invalid_producer_is_reported() -> None:
    assert violated(lambda: convert(raw_fixture("CLUB_FIRST_ACCESS"), "Not A Producer")) == {"producer"}


def test_email_is_trimmed_and_lower_cased() -> None:
    event = convert(approved(set_path("data.buyer.email", "  Ana.Maria+Promo@Example.COM\t")))
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
    assert ts(convert(approved(set_path("creation_date", value))).occur_time) == expected


def test_creation_date_camel_case_is_read_when_snake_case_missing() -> None:
    payload = approved(delete_path("creation_date"))
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
    event = convert(approved(set_path("data.purchase.price", {"value": 0, "currency_value": "BRL"})))
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
    assert convert(approved(set_path("event", " purchase_approved "))).type == event_pb2.EVENT_TYPE_PURCHASE_APPROVED


def test_person_falls_back_to_other_paths() -> None:
    payload = approved(delete_path("data.buyer"))
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
    payload = approved(set_path("data.buyer.name", "Ana \ud800"))
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


@pytest.mark.parametrize("name", ["CONTENT_PROGRESS", "WEBINAR_REGISTRATION", "WEBINAR_ATTENDANCE"])
def test_grpc_only_types_are_unknown_as_webhooks(name: str) -> None:
    payload = fixture("CLUB_FIRST_ACCESS")
    payload["event"] = name
    assert "event" in violated(lambda: convert(payload))


# --- the string rule through the adapter ----------------------------------------------------


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
    payload = approved(set_path(path, bad))
    assert violated(lambda: convert(payload)) == {canonical_field}
    assert violated(lambda: convert(json.dumps(payload).encode())) == {canonical_field}  # as "\ud800" escapes


def test_the_bytes_of_a_lone_surrogate_in_the_body_are_refused_like_its_escape() -> None:
    body = raw_fixture("PURCHASE_APPROVED").replace(b'"Teste Comprador"', b'"Teste \xed\xa0\x80"')
    assert b"\xed\xa0\x80" in body
    assert "lone surrogates" in description(lambda: convert(body), "person.name")


def test_a_lone_surrogate_where_the_table_reads_nothing_does_not_refuse_the_webhook() -> None:
    payload = approved(set_path("data.producer.name", "Producer \ud800"))
    assert convert(json.dumps(payload).encode()).id == payload["id"]


def test_an_over_long_webhook_value_is_a_violation_on_its_canonical_field() -> None:
    payload = approved(set_path("data.product.name", "x" * 501))
    assert description(lambda: convert(payload), "product.name") == "must be at most 500 characters"
