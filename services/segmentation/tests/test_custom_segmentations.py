"""Custom segmentations over real gRPC (SQLite and PostgreSQL): the resource's lifecycle,
every validation error, locked automatic segmentations, DescribeEventTypes,
TestSegmentation and grpcurl through reflection. (The conditions themselves:
test_conditions.py; the pure rules: test_domain.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from listboss.events.v1 import event_pb2
from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss_ingest.sources.hotmart import event_from_webhook
from listboss_segmentation import conditions as cond
from listboss_segmentation import domain, storage
from listboss_segmentation.grpc_api import SegmentationServicer
from listboss_testing import bearer, token

WEBHOOKS = Path(__file__).resolve().parents[3] / "tests" / "data" / "hotmart"
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
ALICE = bearer("alice")
INTERNAL = bearer(None)
PARENT = "producers/alice/products/42"


def webhook_event(name: str) -> event_pb2.Event:
    return event_from_webhook((WEBHOOKS / f"{name}.json").read_text(), "alice")


# --- gRPC fixtures and helpers --------------------------------------------------------------------


class Notifications:
    def __init__(self):
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, producer, product):
        self.seen.append((producer, product))


@pytest.fixture
def notifications():
    return Notifications()


@pytest.fixture
async def served(engine, notifications, serve):
    return await serve(SegmentationServicer(engine, notify=notifications))


@pytest.fixture
def server(served) -> int:
    return served[1]


@pytest.fixture
async def service(served):
    stub = served[0]
    for product in ("42", "43"):
        await stub.RegisterProduct(
            pb.RegisterProductRequest(
                parent="producers/alice", product_id=product, display_name="Course", kind=event_pb2.PRODUCT_KIND_PRODUCT
            ),
            metadata=INTERNAL,
        )
    await stub.RegisterProduct(
        pb.RegisterProductRequest(
            parent="producers/bob", product_id="7", display_name="Bob's", kind=event_pb2.PRODUCT_KIND_WEBINAR
        ),
        metadata=INTERNAL,
    )
    return stub


def billet_buyers(**overrides) -> pb.Segmentation:
    segmentation = pb.Segmentation(
        display_name="Billet buyers of offer X",
        provider=pb.PROVIDER_SEND,
        event_type=event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED,
        condition=pb.Condition(
            all=pb.ConditionList(
                conditions=[
                    pb.Condition(
                        clause=pb.Clause(
                            field="payment_type", operator=pb.OPERATOR_EQUALS, value=pb.Value(string_value="billet")
                        )
                    ),
                    pb.Condition(
                        clause=pb.Clause(
                            field="offer_code",
                            operator=pb.OPERATOR_IN,
                            values=[pb.Value(string_value="X"), pb.Value(string_value="test")],
                        )
                    ),
                ]
            )
        ),
        contact_data=[pb.CONTACT_DATA_NAME, pb.CONTACT_DATA_PHONE],
        action=pb.TagAction(add_tags=["billet-buyers"]),
    )
    for key, value in overrides.items():
        if isinstance(value, pb.Condition | pb.TagAction):
            getattr(segmentation, key).CopyFrom(value)
        elif key in ("contact_data",):
            del segmentation.contact_data[:]
            segmentation.contact_data.extend(value)
        elif value is None:
            segmentation.ClearField(key)
        else:
            setattr(segmentation, key, value)
    return segmentation


async def create(
    service, segmentation=None, segmentation_id="billet-buyers", parent=PARENT, metadata=ALICE, request_id=""
):
    return await service.CreateSegmentation(
        pb.CreateSegmentationRequest(
            parent=parent,
            segmentation=segmentation or billet_buyers(),
            segmentation_id=segmentation_id,
            request_id=request_id,
        ),
        metadata=metadata,
    )


async def rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def details(error):
    status = rpc_status.from_call(error)
    assert status is not None
    found = {}
    for detail in status.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                found[kind.__name__] = message
    return found


def violations(error) -> set[str]:
    bad_request = details(error).get("BadRequest")
    return {v.field for v in bad_request.field_violations} if bad_request else set()


def reason(error) -> str:
    return details(error)["ErrorInfo"].reason


# --- the lifecycle ----------------------------------------------------------------------------------


async def test_lifecycle_create_get_list_update_activate_deactivate_delete(service, notifications):
    created = await create(service)
    name = f"{PARENT}/segmentations/billet-buyers"
    assert created.name == name
    assert created.kind == pb.SEGMENTATION_KIND_CUSTOM
    assert created.state == pb.SEGMENTATION_STATE_INACTIVE
    assert created.etag and created.create_time == created.update_time
    # Codes the events carry upper-cased are stored upper-cased.
    assert created.condition.all.conditions[0].clause.value.string_value == "BILLET"
    assert list(created.contact_data) == [pb.CONTACT_DATA_NAME, pb.CONTACT_DATA_PHONE]
    assert await service.GetSegmentation(pb.GetSegmentationRequest(name=name), metadata=ALICE) == created
    assert notifications.seen == []  # an inactive segmentation changes no rule

    listed = await service.ListSegmentations(pb.ListSegmentationsRequest(parent=PARENT), metadata=ALICE)
    assert len(listed.segmentations) == 16
    assert listed.segmentations[-1] == created

    updated = await service.UpdateSegmentation(
        pb.UpdateSegmentationRequest(
            segmentation=pb.Segmentation(name=name, display_name="Billet buyers (X)", etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=ALICE,
    )
    assert updated.display_name == "Billet buyers (X)"
    assert updated.etag != created.etag
    assert updated.condition == created.condition  # untouched: not in the mask

    stale = await rpc_error(
        service.UpdateSegmentation(
            pb.UpdateSegmentationRequest(
                segmentation=pb.Segmentation(name=name, display_name="Again", etag=created.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=ALICE,
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED and reason(stale) == "ETAG_MISMATCH"

    active = await service.ActivateSegmentation(pb.ActivateSegmentationRequest(name=name), metadata=ALICE)
    assert active.state == pb.SEGMENTATION_STATE_ACTIVE
    assert notifications.seen == [("alice", "42")]
    again = await service.ActivateSegmentation(pb.ActivateSegmentationRequest(name=name), metadata=ALICE)
    assert again == active and notifications.seen == [("alice", "42")]  # nothing changed, nothing announced

    filtered = await service.ListSegmentations(
        pb.ListSegmentationsRequest(parent=PARENT, filter="kind = CUSTOM AND state = ACTIVE"), metadata=ALICE
    )
    assert [s.name for s in filtered.segmentations] == [name]
    by_type = await service.ListSegmentations(
        pb.ListSegmentationsRequest(parent=PARENT, filter='event_type = "PURCHASE_BILLET_PRINTED"'), metadata=ALICE
    )
    assert [s.name for s in by_type.segmentations] == [f"{PARENT}/segmentations/auto-billet-printed", name]
    automatic = await service.ListSegmentations(
        pb.ListSegmentationsRequest(parent=PARENT, filter="kind = AUTOMATIC"), metadata=ALICE
    )
    assert len(automatic.segmentations) == 15

    inactive = await service.DeactivateSegmentation(
        pb.DeactivateSegmentationRequest(name=name, etag=active.etag), metadata=ALICE
    )
    assert inactive.state == pb.SEGMENTATION_STATE_INACTIVE
    assert notifications.seen == [("alice", "42")] * 2

    wrong_etag = await rpc_error(
        service.DeleteSegmentation(pb.DeleteSegmentationRequest(name=name, etag=active.etag), metadata=ALICE)
    )
    assert wrong_etag.code() == grpc.StatusCode.ABORTED
    await service.DeleteSegmentation(pb.DeleteSegmentationRequest(name=name, etag=inactive.etag), metadata=ALICE)
    gone = await rpc_error(service.GetSegmentation(pb.GetSegmentationRequest(name=name), metadata=ALICE))
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_update_mask_rules(service):
    created = await create(service)
    name = created.name

    async def update(segmentation, paths):
        return await service.UpdateSegmentation(
            pb.UpdateSegmentationRequest(segmentation=segmentation, update_mask=field_mask_pb2.FieldMask(paths=paths)),
            metadata=ALICE,
        )

    # Clearing the condition: named in the mask, unset in the message.
    cleared = await update(pb.Segmentation(name=name), ["condition"])
    assert not cleared.HasField("condition")
    # The action's parts on their own.
    tagged = await update(
        pb.Segmentation(name=name, action=pb.TagAction(remove_tags=["leads"])), ["action.remove_tags"]
    )
    assert list(tagged.action.add_tags) == ["billet-buyers"] and list(tagged.action.remove_tags) == ["leads"]
    # An empty mask means every field set.
    renamed = await update(pb.Segmentation(name=name, display_name="Renamed"), [])
    assert renamed.display_name == "Renamed" and list(renamed.action.remove_tags) == ["leads"]
    for paths, field in (
        (["state"], "update_mask.paths[0]"),
        (["name"], "update_mask.paths[0]"),
        (["display_name", "colour"], "update_mask.paths[1]"),
    ):
        error = await rpc_error(update(pb.Segmentation(name=name, display_name="x"), paths))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violations(error) == {field}
    # Changing the event type makes the condition's fields unavailable: named.
    error = await rpc_error(
        update(
            pb.Segmentation(
                name=name, event_type=event_pb2.EVENT_TYPE_CLUB_FIRST_ACCESS, condition=billet_buyers().condition
            ),
            ["event_type", "condition"],
        )
    )
    assert violations(error) == {
        "segmentation.condition.all.conditions[0].clause.field",
        "segmentation.condition.all.conditions[1].clause.field",
    }


async def test_request_id_makes_create_safe_to_retry(service):
    first = await create(service, segmentation_id="", request_id="req-1")
    assert first.name.startswith(f"{PARENT}/segmentations/seg-")
    retry = await create(service, segmentation_id="", request_id="req-1")
    assert retry == first
    taken = await rpc_error(create(service, segmentation_id=first.name.rsplit("/", 1)[1], request_id="req-2"))
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
    await create(service, segmentation_id="named")
    duplicate = await rpc_error(create(service, segmentation_id="named"))
    assert duplicate.code() == grpc.StatusCode.ALREADY_EXISTS
    listed = await service.ListSegmentations(
        pb.ListSegmentationsRequest(parent=PARENT, filter="kind = CUSTOM"), metadata=ALICE
    )
    assert len(listed.segmentations) == 2


async def test_list_pages_through_automatic_and_custom(service):
    for index in range(3):
        await create(service, segmentation_id=f"custom-{index}")
    names, token_ = [], ""
    while True:
        page = await service.ListSegmentations(
            pb.ListSegmentationsRequest(parent=PARENT, page_size=5, page_token=token_), metadata=ALICE
        )
        names.extend(s.name for s in page.segmentations)
        token_ = page.next_page_token
        if not token_:
            break
    assert len(names) == 18 == len(set(names))
    assert names[-3:] == [f"{PARENT}/segmentations/custom-{i}" for i in range(3)]
    first = await service.ListSegmentations(pb.ListSegmentationsRequest(parent=PARENT, page_size=5), metadata=ALICE)
    changed = await rpc_error(
        service.ListSegmentations(
            pb.ListSegmentationsRequest(
                parent=PARENT, page_size=5, page_token=first.next_page_token, filter="kind = CUSTOM"
            ),
            metadata=ALICE,
        )
    )
    assert violations(changed) == {"page_token"}
    for bad in ("colour = red", "kind = SOMETIMES", "state > ACTIVE", "kind ="):
        error = await rpc_error(
            service.ListSegmentations(pb.ListSegmentationsRequest(parent=PARENT, filter=bad), metadata=ALICE)
        )
        assert violations(error) == {"filter"}, bad


# --- validation ------------------------------------------------------------------------------------


def _clause(field, operator, value=None, values=()):
    result = pb.Clause(field=field, operator=operator, values=list(values))
    if value is not None:
        result.value.CopyFrom(value)
    return pb.Condition(clause=result)


S = lambda text: pb.Value(string_value=text)  # noqa: E731
N = lambda number: pb.Value(number_value=number)  # noqa: E731
C = "segmentation.condition.clause"

INVALID = [
    ({"display_name": ""}, {"segmentation.display_name"}),
    ({"display_name": "x" * 201}, {"segmentation.display_name"}),
    ({"provider": pb.PROVIDER_UNSPECIFIED}, {"segmentation.provider"}),
    ({"event_type": event_pb2.EVENT_TYPE_UNSPECIFIED}, {"segmentation.event_type"}),
    ({"event_type": 99, "condition": None}, {"segmentation.event_type"}),
    ({"action": pb.TagAction()}, {"segmentation.action"}),
    ({"action": pb.TagAction(add_tags=[""])}, {"segmentation.action.add_tags[0]"}),
    ({"action": pb.TagAction(add_tags=["x" * 65])}, {"segmentation.action.add_tags[0]"}),
    ({"action": pb.TagAction(add_tags=["Billet Buyers"])}, {"segmentation.action.add_tags[0]"}),
    ({"action": pb.TagAction(add_tags=["a--b"])}, {"segmentation.action.add_tags[0]"}),
    ({"action": pb.TagAction(add_tags=["ok", "purchase-approved"])}, {"segmentation.action.add_tags[1]"}),
    ({"action": pb.TagAction(remove_tags=["cart-abandoned"])}, {"segmentation.action.remove_tags[0]"}),
    ({"action": pb.TagAction(add_tags=["a", "a"])}, {"segmentation.action.add_tags[1]"}),
    ({"action": pb.TagAction(add_tags=["a"], remove_tags=["a"])}, {"segmentation.action.remove_tags[0]"}),
    ({"action": pb.TagAction(add_tags=[f"t{i}" for i in range(21)])}, {"segmentation.action.add_tags"}),
    ({"contact_data": [77]}, {"segmentation.contact_data[0]"}),
    ({"contact_data": [pb.CONTACT_DATA_PHONE, pb.CONTACT_DATA_PHONE]}, {"segmentation.contact_data[1]"}),
    ({"condition": pb.Condition()}, {"segmentation.condition"}),
    ({"condition": pb.Condition(all=pb.ConditionList())}, {"segmentation.condition.all.conditions"}),
    ({"condition": _clause("colour", pb.OPERATOR_EQUALS, S("red"))}, {f"{C}.field"}),
    # A field the event type does not offer: module is for CLUB_MODULE_COMPLETED.
    ({"condition": _clause("module", pb.OPERATOR_EQUALS, S("Intro"))}, {f"{C}.field"}),
    ({"condition": _clause("payment_type", pb.OPERATOR_UNSPECIFIED, S("PIX"))}, {f"{C}.operator"}),
    ({"condition": _clause("payment_type", pb.OPERATOR_GREATER_THAN, S("PIX"))}, {f"{C}.operator"}),
    ({"condition": _clause("payment_type", pb.OPERATOR_EQUALS, N(3))}, {f"{C}.value"}),
    ({"condition": _clause("installments", pb.OPERATOR_EQUALS, S("3"))}, {f"{C}.value"}),
    ({"condition": _clause("price", pb.OPERATOR_LESS_THAN, N(100))}, {f"{C}.value"}),
    (
        {"condition": _clause("price", pb.OPERATOR_LESS_THAN, pb.Value(money_value=event_pb2.Money(value=100)))},
        {f"{C}.value"},
    ),
    ({"condition": _clause("payment_type", pb.OPERATOR_EQUALS)}, {f"{C}.value"}),
    ({"condition": _clause("payment_type", pb.OPERATOR_EQUALS, S(""))}, {f"{C}.value"}),
    ({"condition": _clause("payment_type", pb.OPERATOR_EQUALS, pb.Value())}, {f"{C}.value"}),
    ({"condition": _clause("payment_type", pb.OPERATOR_IN)}, {f"{C}.values"}),
    # Structural problems are named alone: the clause's other checks wait for a well-formed clause.
    ({"condition": _clause("payment_type", pb.OPERATOR_IN, S("PIX"))}, {f"{C}.value"}),
    ({"condition": _clause("payment_type", pb.OPERATOR_EQUALS, values=[S("PIX")])}, {f"{C}.values"}),
    ({"condition": _clause("payment_type", pb.OPERATOR_IN, values=[S("PIX"), N(2)])}, {f"{C}.values[1]"}),
    ({"condition": _clause("payment_type", pb.OPERATOR_EXISTS, S("PIX"))}, {f"{C}.value"}),
]


@pytest.mark.parametrize(("overrides", "fields"), INVALID)
async def test_create_validates_every_field(service, overrides, fields):
    error = await rpc_error(create(service, billet_buyers(**overrides)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == fields
    listed = await service.ListSegmentations(
        pb.ListSegmentationsRequest(parent=PARENT, filter="kind = CUSTOM"), metadata=ALICE
    )
    assert list(listed.segmentations) == []


async def test_create_validates_ids_depth_and_many_problems_at_once(service):
    for bad_id in ("Upper", "auto-mine", "-x", "x" * 64, "a/b"):
        error = await rpc_error(create(service, segmentation_id=bad_id))
        assert violations(error) == {"segmentation_id"}, bad_id
    deep = _clause("payment_type", pb.OPERATOR_EXISTS)
    for _ in range(cond.MAX_DEPTH + 1):
        deep = pb.Condition(negate=deep)
    error = await rpc_error(create(service, billet_buyers(condition=deep)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = await rpc_error(
        create(service, billet_buyers(display_name="", action=pb.TagAction()), segmentation_id="Bad")
    )
    assert violations(error) == {"segmentation_id", "segmentation.display_name", "segmentation.action"}


async def test_producers_touch_only_their_own_products(service):
    await create(service)
    name = f"{PARENT}/segmentations/billet-buyers"
    bob = bearer("bob")
    for call in (
        create(service, metadata=bob),
        service.GetSegmentation(pb.GetSegmentationRequest(name=name), metadata=bob),
        service.ActivateSegmentation(pb.ActivateSegmentationRequest(name=name), metadata=bob),
        service.DeleteSegmentation(pb.DeleteSegmentationRequest(name=name), metadata=bob),
        service.ListSegmentations(pb.ListSegmentationsRequest(parent=PARENT), metadata=bob),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    missing = await rpc_error(create(service, parent="producers/alice/products/404"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    error = await rpc_error(create(service, metadata=()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    # The internal role may act for any producer.
    assert (await create(service, metadata=INTERNAL, segmentation_id="by-platform")).name.endswith("by-platform")


async def test_automatic_segmentations_are_locked(service):
    name = f"{PARENT}/segmentations/auto-purchase-approved"
    automatic = await service.GetSegmentation(pb.GetSegmentationRequest(name=name), metadata=ALICE)
    calls = (
        service.UpdateSegmentation(
            pb.UpdateSegmentationRequest(
                segmentation=pb.Segmentation(name=name, display_name="Mine now"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=ALICE,
        ),
        service.DeleteSegmentation(pb.DeleteSegmentationRequest(name=name), metadata=ALICE),
        service.DeactivateSegmentation(pb.DeactivateSegmentationRequest(name=name), metadata=ALICE),
        service.ActivateSegmentation(pb.ActivateSegmentationRequest(name=name), metadata=ALICE),
        service.BackfillSegmentation(pb.BackfillSegmentationRequest(name=name), metadata=ALICE),
    )
    for call in calls:
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason(error) == "AUTOMATIC_SEGMENTATION_LOCKED"
        assert "platform-defined" in error.details() or "automatic segmentation" in error.details()
    assert await service.GetSegmentation(pb.GetSegmentationRequest(name=name), metadata=ALICE) == automatic
    assert list(automatic.contact_data) == [pb.CONTACT_DATA_EMAIL, pb.CONTACT_DATA_NAME]


# --- describe and test ------------------------------------------------------------------------------


async def test_describe_event_types(service):
    described = await service.DescribeEventTypes(pb.DescribeEventTypesRequest(), metadata=ALICE)
    by_type = {d.event_type: d for d in described.event_types}
    assert len(by_type) == 18
    billet = by_type[event_pb2.EVENT_TYPE_PURCHASE_BILLET_PRINTED]
    fields = {f.name: f for f in billet.fields}
    assert {
        "payment_type",
        "offer_code",
        "coupon_code",
        "price",
        "installments",
        "recurrence_number",
        "subscription_plan",
        "checkout_country",
    } <= set(fields)
    assert fields["price"].type == pb.FIELD_TYPE_MONEY
    assert pb.OPERATOR_IN not in fields["price"].operators
    assert list(fields["payment_type"].operators) == [
        pb.OPERATOR_EQUALS,
        pb.OPERATOR_NOT_EQUALS,
        pb.OPERATOR_IN,
        pb.OPERATOR_NOT_IN,
        pb.OPERATOR_EXISTS,
    ]
    assert billet.automatic_segmentation == "auto-billet-printed"
    progress = {f.name: f for f in by_type[event_pb2.EVENT_TYPE_CONTENT_PROGRESS].fields}
    assert progress["course_progress"].type == pb.FIELD_TYPE_NUMBER
    assert "module" in {f.name for f in by_type[event_pb2.EVENT_TYPE_CLUB_MODULE_COMPLETED].fields}
    assert {f.name for f in by_type[event_pb2.EVENT_TYPE_WEBINAR_ATTENDANCE].fields} >= {
        "webinar_id",
        "attended_minutes",
    }
    assert pb.CONTACT_DATA_ADDRESS in described.contact_data


async def test_test_segmentation_explains_clause_by_clause(service):
    await create(service)
    name = f"{PARENT}/segmentations/billet-buyers"
    sample = webhook_event("PURCHASE_BILLET_PRINTED")
    result = await service.TestSegmentation(pb.TestSegmentationRequest(name=name, event=sample), metadata=ALICE)
    assert not result.matched and result.event_type_matched  # the sample paid by card
    assert [(c.path, c.field, c.result) for c in result.clauses] == [
        ("all.conditions[0].clause", "payment_type", False),
        ("all.conditions[1].clause", "offer_code", True),
    ]
    assert result.clauses[0].actual.string_value == "CREDIT_CARD"
    assert result.clauses[0].expected[0].string_value == "BILLET"
    assert result.clauses[1].operator == pb.OPERATOR_IN and len(result.clauses[1].expected) == 2
    assert "all.conditions[0].clause" in result.explanation

    sample.purchase.payment_type = "BILLET"
    result = await service.TestSegmentation(pb.TestSegmentationRequest(name=name, event=sample), metadata=ALICE)
    assert result.matched and list(result.action.add_tags) == ["billet-buyers"]
    assert result.contact_data["name"] == "Teste Comprador" and result.contact_data["phone"]
    assert "billet-buyers" in result.explanation

    approved = webhook_event("PURCHASE_APPROVED")
    result = await service.TestSegmentation(pb.TestSegmentationRequest(name=name, event=approved), metadata=ALICE)
    assert not result.matched and not result.event_type_matched

    inline = billet_buyers(
        condition=_clause(
            "price", pb.OPERATOR_GREATER_THAN, pb.Value(money_value=event_pb2.Money(currency_code="brl", value=1000))
        )
    )
    result = await service.TestSegmentation(
        pb.TestSegmentationRequest(parent=PARENT, segmentation=inline, event=sample), metadata=ALICE
    )
    assert result.matched
    assert result.clauses[0].actual.money_value == event_pb2.Money(currency_code="BRL", value=1500)
    bad = await rpc_error(
        service.TestSegmentation(
            pb.TestSegmentationRequest(
                parent=PARENT, segmentation=billet_buyers(condition=_clause("module", 1, S("x")))
            ),
            metadata=ALICE,
        )
    )
    assert violations(bad) == {"event", f"{C}.field"}
    automatic = await service.TestSegmentation(
        pb.TestSegmentationRequest(name=f"{PARENT}/segmentations/auto-billet-printed", event=sample), metadata=ALICE
    )
    assert automatic.matched and list(automatic.action.remove_tags) == ["cart-abandoned"]


# --- grpcurl through reflection ---------------------------------------------------------------------


def grpcurl(port: int, method: str, body: dict, producer: str | None = "alice") -> subprocess.CompletedProcess:
    args = [GRPCURL, "-plaintext", "-d", json.dumps(body)]
    if producer is not None:
        args += ["-H", f"authorization: Bearer {token(producer)}"]
    return subprocess.run(
        [*args, f"127.0.0.1:{port}", f"listboss.segmentation.v1.SegmentationService/{method}"],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_grpcurl_drives_the_lifecycle(service, server):
    async def call(method, body, ok=True):
        result = await asyncio.to_thread(grpcurl, server, method, body)
        assert (result.returncode == 0) is ok, result.stderr
        return json.loads(result.stdout) if ok else result.stderr

    described = await call("DescribeEventTypes", {})
    # grpcurl prints the proto field names.
    assert any(d["event_type"] == "EVENT_TYPE_PURCHASE_BILLET_PRINTED" for d in described["event_types"])
    created = await call(
        "CreateSegmentation",
        {
            "parent": PARENT,
            "segmentationId": "billet-buyers",
            "segmentation": {
                "displayName": "Billet buyers of offer X",
                "provider": "PROVIDER_SEND",
                "eventType": "EVENT_TYPE_PURCHASE_BILLET_PRINTED",
                "condition": {
                    "all": {
                        "conditions": [
                            {
                                "clause": {
                                    "field": "payment_type",
                                    "operator": "OPERATOR_EQUALS",
                                    "value": {"stringValue": "BILLET"},
                                }
                            },
                            {
                                "clause": {
                                    "field": "offer_code",
                                    "operator": "OPERATOR_EQUALS",
                                    "value": {"stringValue": "X"},
                                }
                            },
                        ]
                    }
                },
                "contactData": ["CONTACT_DATA_NAME"],
                "action": {"addTags": ["billet-buyers"]},
            },
        },
    )
    assert created["state"] == "SEGMENTATION_STATE_INACTIVE"
    sample = json_format.MessageToDict(webhook_event("PURCHASE_BILLET_PRINTED"))
    sample["purchase"].update(paymentType="BILLET", offerCode="X")
    tested = await call("TestSegmentation", {"name": created["name"], "event": sample})
    assert tested["matched"] is True and [c["result"] for c in tested["clauses"]] == [True, True]
    active = await call("ActivateSegmentation", {"name": created["name"]})
    assert active["state"] == "SEGMENTATION_STATE_ACTIVE"
    error = await call("DeleteSegmentation", {"name": f"{PARENT}/segmentations/auto-purchase-approved"}, ok=False)
    assert "FailedPrecondition" in error and "platform-defined" in error
    error = await call("CreateSegmentation", {"parent": PARENT, "segmentation": {"displayName": "x"}}, ok=False)
    assert "InvalidArgument" in error


def test_a_stale_revision_saves_nothing(engine):
    segmentation = domain.CustomSegmentation(
        "alice", "42", "stale", "Stale", "SEND", "PURCHASE_APPROVED", None, (), ("x",), ()
    )
    with engine.begin() as connection:
        created = storage.create_segmentation(connection, segmentation, "req")
        with pytest.raises(storage.AlreadyExists):
            storage.create_segmentation(connection, segmentation, None)
        assert storage.find_by_request(connection, "alice", "42", "req") == created
        saved = storage.save_segmentation(connection, created, created.revision)
        assert saved.revision == created.revision + 1 and saved.etag != created.etag
        from dataclasses import replace

        assert storage.save_segmentation(connection, replace(created, display_name="Late"), created.revision) is None
        assert not storage.delete_segmentation(connection, "alice", "42", "stale", created.revision)
        assert storage.delete_segmentation(connection, "alice", "42", "stale", saved.revision)
        assert storage.get_segmentation(connection, "alice", "42", "stale") is None
