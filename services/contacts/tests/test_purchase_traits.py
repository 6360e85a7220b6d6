"""Purchase traits and the filters over traits and contact data, on SQLite and PostgreSQL:
what each event type does to a purchase, traits exact under any order and redelivery,
GetContact showing them, List/Count/Export filtering by them, the evaluation of a filter
for given contacts, and erasure taking them away."""

from __future__ import annotations

import time

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from listboss.changes.v1 import contact_change_pb2
from listboss.contacts.v1 import contacts_service_pb2 as pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as pb_grpc
from listboss.events.v1 import event_pb2
from listboss_contacts import domain, queries, schema
from listboss_contacts.apply import TagIds, apply_changes
from listboss_contacts.erasure import erase_contact
from listboss_contacts.grpc_api import METHOD_SCOPES, ContactsServicer
from listboss_testing import bearer, binding

SERVICE = pb.DESCRIPTOR.services_by_name["ContactsService"]
ALICE = bearer("alice")
ADD = contact_change_pb2.TagOperation.ACTION_ADD
NOW = int(time.time())
DAY = 86_400
E = event_pb2


def purchase(
    event_id: str,
    email: str,
    seconds: int,
    transaction: str,
    event_type: int = E.EVENT_TYPE_PURCHASE_APPROVED,
    *,
    price: float = 100.0,
    currency: str = "BRL",
    product: str = "7",
    data: dict[str, str] | None = None,
    adds: tuple[str, ...] = (),
) -> contact_change_pb2.ContactChange:
    event = E.Event(
        id=event_id,
        producer="alice",
        type=event_type,
        product=E.Product(id=product, name="Course"),
        person=E.Person(email=email),
        purchase=E.Purchase(transaction=transaction, price=E.Money(currency_code=currency, value=price)),
    )
    event.occur_time.FromSeconds(seconds)
    change = contact_change_pb2.ContactChange(event=event, contact_data={"email": email, **(data or {})})
    for key in adds:
        change.tag_operations.add(action=ADD, tag_key=key, automatic=True, segmentation="seg")
    return change


def apply(engine, changes) -> None:
    with engine.begin() as connection:
        apply_changes(connection, changes, TagIds())


def traits_of(engine, email: str) -> list[tuple]:
    with engine.connect() as connection:
        contact_id = connection.execute(
            sa.select(schema.contacts.c.id).where(schema.contacts.c.email == email)
        ).scalar()
        return [
            (t.product, t.purchases, t.first_purchase_time // 1_000_000, t.last_purchase_time // 1_000_000, t.spent)
            for t in queries.purchase_traits(connection, contact_id)
        ]


def test_the_event_types_that_decide_a_purchase_are_the_ones_named():
    named = {E.EventType.Name(number) for number in domain.PURCHASE_COUNTED_TYPES}
    assert named == {"EVENT_TYPE_PURCHASE_APPROVED", "EVENT_TYPE_PURCHASE_COMPLETE"}
    taken_back = {E.EventType.Name(number) for number in domain.PURCHASE_TAKEN_BACK_TYPES}
    assert taken_back == {
        f"EVENT_TYPE_PURCHASE_{name}" for name in ("CANCELED", "EXPIRED", "PROTEST", "REFUNDED", "CHARGEBACK")
    }


def test_approved_purchases_count_per_product_and_producer_and_a_refund_takes_one_back(engine):
    apply(
        engine,
        [
            purchase("e1", "ana@x.com", 1000, "T1", price=97.5),
            purchase("e2", "ana@x.com", 2000, "T2", price=400, product="8"),
            purchase("e3", "ana@x.com", 3000, "T3", price=10, currency="usd", product="8"),
            # A cart abandoned names a transaction but decides nothing about it.
            purchase("e4", "ana@x.com", 3500, "T4", E.EVENT_TYPE_PURCHASE_OUT_OF_SHOPPING_CART),
        ],
    )
    assert traits_of(engine, "ana@x.com") == [
        ("", 3, 1000, 3000, [("BRL", 497_500_000), ("USD", 10_000_000)]),
        ("7", 1, 1000, 1000, [("BRL", 97_500_000)]),
        ("8", 2, 2000, 3000, [("BRL", 400_000_000), ("USD", 10_000_000)]),
    ]
    apply(engine, [purchase("e5", "ana@x.com", 4000, "T3", E.EVENT_TYPE_PURCHASE_REFUNDED, currency="USD")])
    assert traits_of(engine, "ana@x.com") == [
        ("", 2, 1000, 2000, [("BRL", 497_500_000)]),
        ("7", 1, 1000, 1000, [("BRL", 97_500_000)]),
        ("8", 1, 2000, 2000, [("BRL", 400_000_000)]),
    ]
    # Complete after approved: still one purchase.
    apply(engine, [purchase("e6", "ana@x.com", 5000, "T1", E.EVENT_TYPE_PURCHASE_COMPLETE, price=97.5)])
    assert traits_of(engine, "ana@x.com")[0][:2] == ("", 2)


def test_a_chargeback_arriving_before_its_approval_and_redelivery_end_the_same(engine):
    approval = purchase("e1", "bia@x.com", 1000, "T1")
    chargeback = purchase("e2", "bia@x.com", 2000, "T1", E.EVENT_TYPE_PURCHASE_CHARGEBACK)
    other = purchase("e3", "bia@x.com", 1500, "T2", price=50)
    apply(engine, [chargeback])
    apply(engine, [approval, other, approval])
    apply(engine, [chargeback, other])
    assert traits_of(engine, "bia@x.com") == [
        ("", 1, 1500, 1500, [("BRL", 50_000_000)]),
        ("7", 1, 1500, 1500, [("BRL", 50_000_000)]),
    ]


def test_a_product_whose_every_purchase_is_taken_back_leaves_the_traits(engine):
    apply(engine, [purchase("e1", "ana@x.com", 1000, "T1"), purchase("e2", "ana@x.com", 1100, "T2", product="8")])
    apply(engine, [purchase("e3", "ana@x.com", 2000, "T2", E.EVENT_TYPE_PURCHASE_CHARGEBACK, product="8")])
    assert traits_of(engine, "ana@x.com") == [
        ("", 1, 1000, 1000, [("BRL", 100_000_000)]),
        ("7", 1, 1000, 1000, [("BRL", 100_000_000)]),
    ]
    apply(engine, [purchase("e4", "ana@x.com", 2100, "T1", E.EVENT_TYPE_PURCHASE_EXPIRED)])
    assert traits_of(engine, "ana@x.com") == []
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.contact_spending)).scalar() == 0


def test_erasure_removes_purchases_and_traits(engine):
    apply(engine, [purchase("e1", "ana@x.com", 1000, "T1")])
    with engine.begin() as connection:
        contact_id = connection.execute(sa.select(schema.contacts.c.id)).scalar_one()
        assert erase_contact(connection, "alice", contact_id)
    with engine.connect() as connection:
        for table in (schema.purchases, schema.contact_traits, schema.contact_spending):
            assert connection.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


# --------------------------------------------------------------------------- over gRPC


@pytest.fixture
async def stub(engine, grpc_server):
    servicer = ContactsServicer(engine, None)
    served = await grpc_server(
        [binding(SERVICE, pb_grpc.add_ContactsServiceServicer_to_server, servicer, METHOD_SCOPES)]
    )
    yield pb_grpc.ContactsServiceStub(served.channel)
    await served.close()


def shop(engine) -> None:
    """ana: two purchases (one recent), PT, gold; bia: one big purchase long ago, BR, a phone;
    caio: bought and was refunded; duda: never bought, PT."""
    apply(
        engine,
        [
            purchase("a1", "ana@x.com", NOW - 90 * DAY, "TA1", data={"country_code": "PT", "plan": "gold"}),
            purchase("a2", "ana@x.com", NOW - 2 * DAY, "TA2", product="8", adds=("vip",)),
            purchase("b1", "bia@x.com", NOW - 400 * DAY, "TB1", price=997, data={"country_code": "BR", "phone": "+55"}),
            purchase("c1", "caio@x.com", NOW - 10 * DAY, "TC1", price=600),
            purchase("c2", "caio@x.com", NOW - 9 * DAY, "TC1", E.EVENT_TYPE_PURCHASE_REFUNDED, price=600),
            purchase(
                "d1",
                "duda@x.com",
                NOW - DAY,
                "TD1",
                E.EVENT_TYPE_PURCHASE_OUT_OF_SHOPPING_CART,
                data={"country_code": "PT", "plan": "silver"},
            ),
        ],
    )


FILTERS = [
    ("purchases >= 2", ["ana@x.com"]),
    ("purchases >= 1", ["ana@x.com", "bia@x.com"]),
    ("purchases < 1", ["caio@x.com", "duda@x.com"]),
    ("purchases = 0 AND country = 'PT'", ["duda@x.com"]),
    ("spent.BRL > 500", ["bia@x.com"]),
    ("spent.brl <= 200", ["ana@x.com", "caio@x.com", "duda@x.com"]),
    ("spent.USD > 0", []),
    ("purchases.8 >= 1", ["ana@x.com"]),
    ("spent.BRL.7 >= 100 AND NOT purchases.8 >= 1", ["bia@x.com"]),
    ("last_purchase_time >= now - 30d", ["ana@x.com"]),
    ("last_purchase_time < now-30d", ["bia@x.com"]),
    ("NOT last_purchase_time >= now - 4w", ["bia@x.com", "caio@x.com", "duda@x.com"]),
    ("first_purchase_time.7 < now - 365d", ["bia@x.com"]),
    ("first_purchase_time < 2000-01-01T00:00:00Z", []),
    ('country = "PT"', ["ana@x.com", "duda@x.com"]),
    ('country = "pt" AND tag = "vip"', ["ana@x.com"]),
    ('country != "PT"', ["bia@x.com", "caio@x.com"]),
    ("phone:*", ["bia@x.com"]),
    ("NOT phone:*", ["ana@x.com", "caio@x.com", "duda@x.com"]),
    ('attributes.plan = "gold"', ["ana@x.com"]),
    ("attributes.plan:*", ["ana@x.com", "duda@x.com"]),
    ('attributes.plan != "gold"', ["bia@x.com", "caio@x.com", "duda@x.com"]),
    ('attributes.plan = "gold" OR spent.BRL > 900', ["ana@x.com", "bia@x.com"]),
]


@pytest.mark.parametrize(("text", "expected"), FILTERS)
async def test_list_count_and_export_filter_by_traits_and_contact_data(engine, stub, text, expected):
    shop(engine)
    listed = await stub.ListContacts(pb.ListContactsRequest(parent="producers/alice", filter=text), metadata=ALICE)
    assert [c.email for c in listed.contacts] == expected
    counted = await stub.CountContacts(pb.CountContactsRequest(parent="producers/alice", filter=text), metadata=ALICE)
    assert counted.count == len(expected)
    exported = [
        c.email
        async for chunk in stub.ExportContacts(
            pb.ExportContactsRequest(parent="producers/alice", filter=text, order_by="email desc"), metadata=ALICE
        )
        for c in chunk.contacts
    ]
    assert exported == sorted(expected, reverse=True)
    # The same filter evaluated for given contacts, and over every contact.
    with engine.connect() as connection:
        ids = dict(connection.execute(sa.select(schema.contacts.c.email, schema.contacts.c.id)).all())
        node = queries.parse_contact_filter(text)
        every = queries.all_matching_contact_ids(connection, "alice", node)
        some = queries.matching_contact_ids(connection, "alice", node, [ids["ana@x.com"], ids["duda@x.com"]])
    assert every == {ids[email] for email in expected}
    assert some == {ids[email] for email in expected if email in ("ana@x.com", "duda@x.com")}


async def test_relative_times_are_measured_from_the_instant_given(engine):
    shop(engine)
    node = queries.parse_contact_filter("last_purchase_time >= now - 30d")
    assert queries.has_relative_time(node)
    assert not queries.has_relative_time(queries.parse_contact_filter("purchases >= 1"))
    with engine.connect() as connection:
        ids = dict(connection.execute(sa.select(schema.contacts.c.email, schema.contacts.c.id)).all())
        later = (NOW + 60 * DAY) * 1_000_000
        assert queries.all_matching_contact_ids(connection, "alice", node, now=later) == set()
        earlier = (NOW - 80 * DAY) * 1_000_000
        assert queries.matching_contact_ids(connection, "alice", node, ids.values(), now=earlier) == {ids["ana@x.com"]}


async def test_get_contact_shows_its_purchase_traits(engine, stub):
    shop(engine)
    with engine.connect() as connection:
        ids = dict(connection.execute(sa.select(schema.contacts.c.email, schema.contacts.c.id)).all())
    ana = await stub.GetContact(
        pb.GetContactRequest(name=f"producers/alice/contacts/{ids['ana@x.com']}"), metadata=ALICE
    )
    assert ana.purchase_traits.purchase_count == 2
    assert [(m.currency_code, m.value) for m in ana.purchase_traits.spent] == [("BRL", 200.0)]
    assert ana.purchase_traits.first_purchase_time.seconds == NOW - 90 * DAY
    assert ana.purchase_traits.last_purchase_time.seconds == NOW - 2 * DAY
    assert [(p.product, p.traits.purchase_count) for p in ana.product_purchase_traits] == [
        ("producers/alice/products/7", 1),
        ("producers/alice/products/8", 1),
    ]
    caio = await stub.GetContact(
        pb.GetContactRequest(name=f"producers/alice/contacts/{ids['caio@x.com']}"), metadata=ALICE
    )
    assert not caio.HasField("purchase_traits") and not caio.product_purchase_traits


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('purchases >= "two"', "field 'purchases' expects a number, got 'two' (at position 0)"),
        ("spent > 1", "unknown field 'spent'"),
        ("country = 5", "field 'country' expects a string"),
        ("tag = 'a' AND last_purchase_time > now - 3x", "expected a duration such as 30d"),
        ("last_purchase_time > yesterday", "invalid timestamp 'yesterday' for field 'last_purchase_time'"),
        ("purchases : 1", "operator ':' is not supported for field 'purchases'"),
    ],
)
async def test_bad_trait_filters_are_invalid_argument_naming_the_problem(stub, text, fragment):
    with pytest.raises(grpc.RpcError) as error:
        await stub.CountContacts(pb.CountContactsRequest(parent="producers/alice", filter=text), metadata=ALICE)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = error_details_pb2.BadRequest()
    [detail] = [d for d in rpc_status.from_call(error.value).details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR)]
    detail.Unpack(violations)
    assert [v.field for v in violations.field_violations] == ["filter"]
    assert fragment in violations.field_violations[0].description
