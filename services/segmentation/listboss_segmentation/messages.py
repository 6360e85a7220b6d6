"""Translation between the protobuf messages and the domain, both ways, in one place.

Requests become domain values (a bad request raises InvalidArgument naming every
wrong field: what cannot be translated, then what :func:`domain.check_segmentation`
finds); domain values become SegmentationService responses and the ContactChange
messages the bus carries. No storage, no rules of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf import timestamp_pb2

from listboss.changes.v1 import contact_change_pb2
from listboss.events.v1 import event_pb2
from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss_common import bus, filtering, personal_data
from listboss_common.decoding import limit_nesting
from listboss_common.errors import FieldViolation, InvalidArgument, invalid_field
from listboss_common.filtering import FieldSpec
from listboss_common.paging import Page, decode_page_token, page_size
from listboss_common.resources import PRODUCT, SEGMENTATION, ResourcePattern, canonical_product_id, is_valid_id
from listboss_segmentation import conditions as cond
from listboss_segmentation import domain

# A request nested past what protobuf reads names the same limit as one it reads.
limit_nesting(pb.Condition.DESCRIPTOR, cond.MAX_DEPTH)

BACKFILL = ResourcePattern("producers/{producer}/products/{product}/segmentations/{segmentation}/backfills/{backfill}")
MAX_REQUEST_ID = 128

# --------------------------------------------------------------------------- enums and times

_CONTACT_DATA_VALUES = {
    name.removeprefix("CONTACT_DATA_").lower(): value
    for name, value in pb.ContactData.items()
    if value != pb.CONTACT_DATA_UNSPECIFIED
}
_CONTACT_DATA_NAMES = {value: name for name, value in _CONTACT_DATA_VALUES.items()}
assert set(_CONTACT_DATA_VALUES) == set(domain.CONTACT_DATA), "ContactData and domain.CONTACT_DATA differ"
_EVENT_TYPE_PREFIX = "EVENT_TYPE_"


def event_type_name(event_type: int) -> str:
    """EVENT_TYPE_PURCHASE_APPROVED -> PURCHASE_APPROVED (the webhook's name, the domain's)."""
    return event_pb2.EventType.Name(event_type).removeprefix(_EVENT_TYPE_PREFIX)


def event_type_value(name: str) -> event_pb2.EventType:
    return event_pb2.EventType.Value(_EVENT_TYPE_PREFIX + name)


def _enum_name(enum, value: int, prefix: str) -> str:
    """The domain's name of an enum value; "" for a value the enum does not know."""
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return ""


def _timestamp(moment) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _contact_data_values(names) -> list[pb.ContactData]:
    return [_CONTACT_DATA_VALUES[name] for name in names]


# --------------------------------------------------------------------------- resources


def product_message(record) -> pb.Product:
    return pb.Product(
        name=PRODUCT.format(record.producer, record.product_id),
        display_name=record.display_name,
        kind=record.kind,
        create_time=_timestamp(record.create_time),
        update_time=_timestamp(record.update_time),
    )


def segmentation_message(product, segmentation: domain.AutomaticSegmentation | domain.CustomSegmentation):
    if isinstance(segmentation, domain.AutomaticSegmentation):
        return automatic_segmentation_message(product, segmentation)
    return custom_segmentation_message(segmentation)


def automatic_segmentation_message(product, segmentation: domain.AutomaticSegmentation) -> pb.Segmentation:
    return pb.Segmentation(
        name=SEGMENTATION.format(product.producer, product.product_id, segmentation.id),
        display_name=segmentation.display_name,
        kind=pb.SEGMENTATION_KIND_AUTOMATIC,
        provider=pb.PROVIDER_SEND,
        event_type=event_type_value(segmentation.event_type),
        state=pb.SEGMENTATION_STATE_ACTIVE,
        action=pb.TagAction(add_tags=[segmentation.add_tag], remove_tags=list(segmentation.remove_tags)),
        # Automatic segmentations exist from the moment their product does.
        create_time=_timestamp(product.create_time),
        update_time=_timestamp(product.create_time),
        etag="automatic-v1",
        contact_data=_contact_data_values(domain.AUTOMATIC_CONTACT_DATA),
    )


def custom_segmentation_message(segmentation: domain.CustomSegmentation) -> pb.Segmentation:
    message = pb.Segmentation(
        name=SEGMENTATION.format(segmentation.producer, segmentation.product, segmentation.segmentation_id),
        display_name=segmentation.display_name,
        kind=pb.SEGMENTATION_KIND_CUSTOM,
        provider=pb.Provider.Value(f"PROVIDER_{segmentation.provider}"),
        event_type=event_type_value(segmentation.event_type),
        state=pb.SegmentationState.Value(f"SEGMENTATION_STATE_{segmentation.state}"),
        action=pb.TagAction(add_tags=segmentation.add_tags, remove_tags=segmentation.remove_tags),
        create_time=_timestamp(segmentation.create_time),
        update_time=_timestamp(segmentation.update_time),
        etag=segmentation.etag,
        contact_data=_contact_data_values(segmentation.contact_data),
    )
    if segmentation.condition is not None:
        message.condition.CopyFrom(condition_message(segmentation.condition))
    return message


def backfill_name(record) -> str:
    return BACKFILL.format(record.producer, record.product_id, record.segmentation_id, record.backfill_id)


def backfill_message(record) -> pb.Backfill:
    return pb.Backfill(
        name=backfill_name(record),
        state=pb.BackfillState.Value(f"BACKFILL_STATE_{record.state}"),
        events_scanned=record.events_scanned,
        events_considered=record.events_considered,
        events_matched=record.events_matched,
        error=record.error,
        create_time=_timestamp(record.create_time),
        update_time=_timestamp(record.update_time),
    )


# --------------------------------------------------------------------------- conditions


def value_message(value: cond.Scalar) -> pb.Value:
    if isinstance(value, cond.Money):
        return pb.Value(money_value=event_pb2.Money(currency_code=value.currency_code, value=value.value))
    if isinstance(value, str):
        return pb.Value(string_value=value)
    return pb.Value(number_value=value)


def condition_message(condition: cond.Condition) -> pb.Condition:
    if isinstance(condition, cond.Clause):
        clause = pb.Clause(field=condition.field, operator=pb.Operator.Value(f"OPERATOR_{condition.operator}"))
        if condition.operator in (cond.IN, cond.NOT_IN):
            clause.values.extend(value_message(v) for v in condition.values)
        elif condition.values:
            clause.value.CopyFrom(value_message(condition.values[0]))
        return pb.Condition(clause=clause)
    if isinstance(condition, cond.Not):
        return pb.Condition(negate=condition_message(condition.term))
    terms = pb.ConditionList(conditions=[condition_message(t) for t in condition.terms])
    return pb.Condition(**{cond.list_kind(condition): terms})


def _value(message: pb.Value, path: str, violations: list[FieldViolation]) -> cond.Scalar | None:
    kind = message.WhichOneof("kind")
    if kind == "string_value":
        return message.string_value
    if kind == "number_value":
        return message.number_value
    if kind == "money_value":
        return cond.Money(message.money_value.currency_code, message.money_value.value)
    violations.append(FieldViolation(path, "set string_value, number_value or money_value"))
    return None


def condition_from_message(message: pb.Condition, path: str, violations: list[FieldViolation]) -> cond.Condition | None:
    """The domain condition of ``message`` (the field at ``path``); structural problems go to
    ``violations``. A tree nested deeper than ``cond.MAX_DEPTH`` levels or with more than
    ``cond.MAX_NODES`` conditions is one violation on ``path``, found before the tree is read
    further: the walk is bounded by the limits, whatever the request holds."""
    size = _condition_size(message)
    if size.depth > cond.MAX_DEPTH:
        violations.append(FieldViolation(path, f"nested deeper than {cond.MAX_DEPTH} levels"))
        return None
    if size.nodes > cond.MAX_NODES:
        violations.append(FieldViolation(path, f"more than {cond.MAX_NODES} conditions"))
        return None
    return _condition_from_message(message, path, violations)


@dataclass
class _ConditionSize:
    depth: int = 0
    nodes: int = 0


def _condition_size(root: pb.Condition) -> _ConditionSize:
    """How deep and how large the tree of ``root`` is, counted with an explicit stack and
    stopping as soon as either passes its limit."""
    size = _ConditionSize()
    stack = [(root, 0)]
    while stack:
        message, depth = stack.pop()
        size.nodes += 1
        size.depth = max(size.depth, depth)
        if size.depth > cond.MAX_DEPTH or size.nodes > cond.MAX_NODES:
            break
        kind = message.WhichOneof("kind")
        if kind == "negate":
            stack.append((message.negate, depth + 1))
        elif kind in ("all", "any"):
            stack.extend((term, depth + 1) for term in getattr(message, kind).conditions)
    return size


def _condition_from_message(
    message: pb.Condition, path: str, violations: list[FieldViolation]
) -> cond.Condition | None:
    """:func:`condition_from_message` on a tree within the limits (so the recursion is too)."""
    kind = message.WhichOneof("kind")
    if kind is None:
        violations.append(FieldViolation(path, "set one of clause, all, any or negate"))
        return None
    if kind == "clause":
        return _clause_from_message(message.clause, f"{path}.clause", violations)
    if kind == "negate":
        inner = _condition_from_message(message.negate, f"{path}.negate", violations)
        return None if inner is None else cond.Not(inner)
    listed = getattr(message, kind).conditions
    if not listed:
        violations.append(FieldViolation(f"{path}.{kind}.conditions", "needs at least one condition"))
        return None
    terms = [
        _condition_from_message(term, f"{path}.{kind}.conditions[{index}]", violations)
        for index, term in enumerate(listed)
    ]
    present = [term for term in terms if term is not None]
    if len(present) != len(terms):
        return None
    return (cond.AllOf if kind == "all" else cond.AnyOf)(tuple(present))


def _clause_from_message(clause: pb.Clause, where: str, violations: list[FieldViolation]) -> cond.Clause | None:
    operator = _enum_name(pb.Operator, clause.operator, "OPERATOR_")
    if operator in ("", "UNSPECIFIED"):
        violations.append(FieldViolation(f"{where}.operator", "is required"))
        return None
    values = []
    if operator in (cond.IN, cond.NOT_IN):
        if clause.HasField("value"):
            violations.append(FieldViolation(f"{where}.value", f"{operator} takes values, not value"))
        for index, item in enumerate(clause.values):
            values.append(_value(item, f"{where}.values[{index}]", violations))
    else:
        if clause.values:
            violations.append(FieldViolation(f"{where}.values", "is only for IN and NOT_IN; use value"))
        if clause.HasField("value"):
            values.append(_value(clause.value, f"{where}.value", violations))
    present = [v for v in values if v is not None]
    if len(present) != len(values):
        return None
    return cond.Clause(clause.field, operator, tuple(present))


# --------------------------------------------------------------------------- requests to domain values

# Every request carries the segmentation's definition in the field "segmentation".
_PREFIX = "segmentation"


def product_registration(request: pb.RegisterProductRequest) -> tuple[str, str, int]:
    """(product id, display name, kind) of a RegisterProduct request."""
    violations = []
    product_id = canonical_product_id(request.product_id)
    if not is_valid_id(product_id):
        violations.append(FieldViolation("product_id", "must be 1-128 letters, digits, '-', '_' or '.'"))
    if problem := domain.check_display_name(request.display_name):
        violations.append(FieldViolation("display_name", problem))
    if request.kind not in (event_pb2.PRODUCT_KIND_PRODUCT, event_pb2.PRODUCT_KIND_WEBINAR):
        violations.append(FieldViolation("kind", "must be PRODUCT_KIND_PRODUCT or PRODUCT_KIND_WEBINAR"))
    if violations:
        raise InvalidArgument(violations)
    return product_id, request.display_name.strip(), request.kind


def _definition(message: pb.Segmentation, violations: list[FieldViolation]) -> dict:
    """The CustomSegmentation fields a producer defines, as ``message`` sets them; what
    cannot be translated goes to ``violations``."""
    condition = None
    if message.HasField("condition"):
        condition = condition_from_message(message.condition, f"{_PREFIX}.condition", violations)
    names = []
    for index, value in enumerate(message.contact_data):
        name = _CONTACT_DATA_NAMES.get(value)
        if name is None:
            violations.append(
                FieldViolation(f"{_PREFIX}.contact_data[{index}]", "must be a known CONTACT_DATA_* value")
            )
        else:
            names.append(name)
    return dict(
        display_name=message.display_name,
        provider=_enum_name(pb.Provider, message.provider, "PROVIDER_"),
        event_type=_enum_name(event_pb2.EventType, message.event_type, _EVENT_TYPE_PREFIX),
        condition=condition,
        contact_data=tuple(names),
        add_tags=tuple(message.action.add_tags),
        remove_tags=tuple(message.action.remove_tags),
    )


def _checked(segmentation: domain.CustomSegmentation, violations: list[FieldViolation]) -> domain.CustomSegmentation:
    """``segmentation`` normalized as it is stored, or InvalidArgument naming ``violations``
    and every problem the domain finds."""
    # Structural problems of the condition are already named; do not report its clauses twice.
    structural = any(v.field.startswith(f"{_PREFIX}.condition") for v in violations)
    for path, description in domain.check_segmentation(segmentation):
        if structural and path.startswith("condition"):
            continue
        violations.append(FieldViolation(f"{_PREFIX}.{path}", description))
    if violations:
        raise InvalidArgument(violations)
    return domain.normalized(segmentation)


def new_segmentation(
    request: pb.CreateSegmentationRequest, producer: str, product_id: str
) -> domain.CustomSegmentation:
    """The segmentation a CreateSegmentation request defines."""
    violations: list[FieldViolation] = []
    segmentation_id = request.segmentation_id or domain.new_segmentation_id()
    if problem := domain.check_segmentation_id(segmentation_id):
        violations.append(FieldViolation("segmentation_id", problem))
    if len(request.request_id) > MAX_REQUEST_ID:
        violations.append(FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID} characters"))
    definition = _definition(request.segmentation, violations)
    return _checked(domain.CustomSegmentation(producer, product_id, segmentation_id, **definition), violations)


def inline_segmentation(
    request: pb.TestSegmentationRequest, producer: str, product_id: str
) -> domain.CustomSegmentation:
    """The inline segmentation of a TestSegmentation request; a name and provider may be left out."""
    violations: list[FieldViolation] = []
    definition = _definition(request.segmentation, violations)
    definition["display_name"] = definition["display_name"] or "test"
    definition["provider"] = definition["provider"] or "SEND"
    if not request.HasField("event"):
        violations.append(FieldViolation("event", "is required: the sample event to test against"))
    return _checked(domain.CustomSegmentation(producer, product_id, "test", **definition), violations)


_UPDATABLE = ("display_name", "provider", "event_type", "condition", "contact_data", "action")
_OUTPUT_ONLY = {
    "name": "is output only: the name never changes",
    "kind": "is output only",
    "state": "is changed by ActivateSegmentation and DeactivateSegmentation",
    "create_time": "is output only",
    "update_time": "is output only",
    "etag": "is output only (send it in segmentation.etag to guard the update)",
}


def updated_segmentation(
    current: domain.CustomSegmentation, request: pb.UpdateSegmentationRequest
) -> domain.CustomSegmentation:
    """``current`` with the fields the request's update mask names (AIP-134: an empty mask
    names every field the message sets, ``*`` every updatable one)."""
    message = request.segmentation
    paths = list(request.update_mask.paths)
    if not paths:
        paths = [
            p
            for p in _UPDATABLE
            if (p in ("condition", "action") and message.HasField(p))
            or (p not in ("condition", "action") and getattr(message, p))
        ]
    elif paths == ["*"]:
        paths = list(_UPDATABLE)
    violations: list[FieldViolation] = []
    untranslated: list[FieldViolation] = []
    definition = _definition(message, untranslated)
    changes: dict[str, Any] = {}
    for index, path in enumerate(paths):
        if path in _OUTPUT_ONLY:
            violations.append(FieldViolation(f"update_mask.paths[{index}]", f"{path!r} {_OUTPUT_ONLY[path]}"))
        elif path in ("action.add_tags", "action.remove_tags"):
            field = path.removeprefix("action.")
            changes[field] = definition[field]
        elif path == "action":
            changes["add_tags"], changes["remove_tags"] = definition["add_tags"], definition["remove_tags"]
        elif path in _UPDATABLE:
            changes[path] = definition[path]
        else:
            allowed = ", ".join(_UPDATABLE)
            violations.append(
                FieldViolation(f"update_mask.paths[{index}]", f"unknown path {path!r}; updatable: {allowed}")
            )
    if not paths:
        violations.append(FieldViolation("update_mask", "names no field to update"))
    # Only the problems of the fields being changed (and what they break) count.
    violations.extend(v for v in untranslated if any(v.field.startswith(f"{_PREFIX}.{p}") for p in paths))
    return _checked(replace(current, **changes), violations)


# --------------------------------------------------------------------------- lists


def _filter_values(enum, prefix: str) -> frozenset[str]:
    names = [n for n, v in enum.items() if v != 0]
    return frozenset(names) | frozenset(n.removeprefix(prefix) for n in names)


_FILTER_PREFIXES = {"event_type": _EVENT_TYPE_PREFIX, "kind": "SEGMENTATION_KIND_", "state": "SEGMENTATION_STATE_"}
_FILTER_ENUMS = {"event_type": event_pb2.EventType, "kind": pb.SegmentationKind, "state": pb.SegmentationState}
SEGMENTATION_FILTER_FIELDS = {
    name: FieldSpec(name, frozenset({"=", "!="}), "enum", _filter_values(_FILTER_ENUMS[name], prefix))
    for name, prefix in _FILTER_PREFIXES.items()
}


def _matches(node: filtering.Node | None, row: dict[str, str]) -> bool:
    if node is None:
        return True
    if isinstance(node, filtering.Comparison):
        equal = row[node.field] == str(node.value).removeprefix(_FILTER_PREFIXES[node.field])
        return equal if node.op == "=" else not equal
    if isinstance(node, filtering.And):
        return all(_matches(t, row) for t in node.terms)
    if isinstance(node, filtering.Or):
        return any(_matches(t, row) for t in node.terms)
    return not _matches(node.term, row)


def segmentation_page(request: pb.ListSegmentationsRequest, product, listed) -> pb.ListSegmentationsResponse:
    """The page of ``listed`` (a product's segmentations in listing order) that the request's
    filter, page size and page token select."""
    try:
        node = filtering.validate(filtering.parse(request.filter), SEGMENTATION_FILTER_FIELDS)
    except filtering.FilterError as error:
        raise invalid_field("filter", str(error)) from None
    limit = page_size(request.page_size)
    position = decode_page_token(request.page_token, request.parent, request.filter)
    # A position is [0, index, id] for automatic ones, [1, creation time, id] for custom ones.
    selected: list[tuple[list, domain.AutomaticSegmentation | domain.CustomSegmentation]] = []
    for index, segmentation in enumerate(listed):
        if isinstance(segmentation, domain.AutomaticSegmentation):
            row = {"event_type": segmentation.event_type, "kind": "AUTOMATIC", "state": "ACTIVE"}
            key = [0, index, segmentation.id]
        else:
            row = {"event_type": segmentation.event_type, "kind": "CUSTOM", "state": segmentation.state}
            key = [1, int(segmentation.create_time.timestamp() * 1_000_000), segmentation.segmentation_id]
        if _matches(node, row) and (position is None or key > position):
            selected.append((key, segmentation))
    page = Page.of(selected, limit, lambda item: item[0])
    return pb.ListSegmentationsResponse(
        segmentations=[segmentation_message(product, s) for _, s in page.items],
        next_page_token=page.next_page_token(request.parent, request.filter),
    )


def product_page(request: pb.ListProductsRequest, records: list, limit: int) -> pb.ListProductsResponse:
    """The response for ``records``, read with one more than ``limit`` to know whether a page follows."""
    page = Page.of(records, limit, lambda record: [record.product_id])
    return pb.ListProductsResponse(
        products=[product_message(r) for r in page.items], next_page_token=page.next_page_token(request.parent)
    )


# --------------------------------------------------------------------------- describe and test


def event_types_message() -> pb.DescribeEventTypesResponse:
    response = pb.DescribeEventTypesResponse(contact_data=_contact_data_values(domain.CONTACT_DATA))
    for event_type, description in cond.EVENT_TYPES.items():
        automatic = domain.AUTOMATIC_BY_EVENT.get(event_type)
        response.event_types.add(
            event_type=event_type_value(event_type),
            description=description,
            automatic_segmentation=automatic.id if automatic else "",
            fields=[
                pb.ConditionField(
                    name=field.name,
                    type=pb.FieldType.Value(f"FIELD_TYPE_{field.type}"),
                    operators=[pb.Operator.Value(f"OPERATOR_{op}") for op in field.operators],
                    description=field.description,
                )
                for field in cond.fields_for(event_type)
            ],
        )
    return response


def explanation_message(explanation: domain.Explanation) -> pb.TestSegmentationResponse:
    rule = explanation.rule
    response = pb.TestSegmentationResponse(
        matched=explanation.matched,
        event_type_matched=explanation.event_type_matched,
        action=pb.TagAction(add_tags=rule.add_tags, remove_tags=rule.remove_tags),
        contact_data=explanation.contact_data,
        explanation=explanation.text,
    )
    for outcome in explanation.clauses:
        clause = response.clauses.add(
            path=outcome.path,
            field=outcome.clause.field,
            operator=pb.Operator.Value(f"OPERATOR_{outcome.clause.operator}"),
            expected=[value_message(v) for v in outcome.clause.values],
            result=outcome.result,
        )
        if outcome.actual is not None:
            clause.actual.CopyFrom(value_message(outcome.actual))
    return response


# --------------------------------------------------------------------------- the bus

_ACTIONS = {
    domain.TagAction.ADD: contact_change_pb2.TagOperation.ACTION_ADD,
    domain.TagAction.REMOVE: contact_change_pb2.TagOperation.ACTION_REMOVE,
}


def change_from(
    event: event_pb2.Event, decision: domain.Decision, backfill: str = ""
) -> contact_change_pb2.ContactChange:
    """The ContactChange that carries ``decision`` for ``event`` (marked with a backfill's name when one made it)."""
    change = _outcome(event.producer, event.product.id, event.product.name, decision.fired, decision.operations)
    change.event.CopyFrom(event)
    change.contact_data.update(decision.contact_data)
    change.backfill = backfill
    return change


def _outcome(
    producer: str,
    product_id: str,
    product_name: str,
    fired: Sequence[domain.Rule],
    operations: Sequence[domain.TagOperation],
) -> contact_change_pb2.ContactChange:
    """A ContactChange holding only what the fired rules do: tag operations and fired segmentations."""
    # SEGMENTATION.format, spelled out: this runs for every operation of every event.
    base = f"producers/{producer}/products/{product_id}/segmentations/"
    automatic = {rule.segmentation_id for rule in fired if rule.automatic}
    operations_messages = [
        contact_change_pb2.TagOperation(
            action=_ACTIONS[operation.action],
            tag_key=operation.tag_key,
            tag_display_name=domain.tag_display_name(operation.tag_key, product_name),
            automatic=operation.segmentation_id in automatic,
            segmentation=base + operation.segmentation_id,
        )
        for operation in operations
    ]
    return contact_change_pb2.ContactChange(
        tag_operations=operations_messages, fired_segmentations=[base + rule.segmentation_id for rule in fired]
    )


# ContactChange's fields on the wire: event (1), contact_data entries (4), sealed_contact_data (6).
_EVENT_FIELD = b"\x0a"
_SEALED_CONTACT_DATA_FIELD = b"\x32"


@dataclass(frozen=True)
class Outcome:
    """What one set of fired rules does for a product's events, encoded once: the tag
    operations and fired segmentations of its ContactChange on the wire, and the contact data
    the rules choose (the automatic choice first)."""

    fired: tuple[domain.Rule, ...]
    encoded: bytes
    contact_data: tuple[str, ...]


class ChangeEncoder:
    """Builds serialized ContactChange messages without protobuf copies.

    A change is its event's serialized bytes, the encoded outcome of the rules that fired and
    the contact data, concatenated (protobuf fields may follow each other in any order, and
    ``ContactChange`` has no field that two parts both set). The outcome depends only on the
    product (id and name) and on which rules fired, so it is built once per combination and
    reused for every event of it: building the tag operations as messages is most of what a
    change costs. The cache holds the fired rules themselves, so a rule set replaced after a
    rule change is never confused with its successor; it is emptied when it grows past
    ``max_entries``.
    """

    def __init__(self, max_entries: int = 4_096):
        self._outcomes: dict[tuple, Outcome] = {}
        self._max_entries = max_entries

    def outcome(self, producer: str, product_id: str, product_name: str, fired: Sequence[domain.Rule]) -> Outcome:
        key = (producer, product_id, product_name, *map(id, fired))
        found = self._outcomes.get(key)
        if found is None:
            if len(self._outcomes) >= self._max_entries:
                self._outcomes.clear()
            operations = [operation for rule in fired for operation in rule.operations]
            encoded = _outcome(producer, product_id, product_name, fired, operations).SerializeToString()
            found = Outcome(tuple(fired), encoded, domain.contact_data_choices(fired))
            self._outcomes[key] = found
        return found

    @staticmethod
    def change(event: bytes, outcome: Outcome, contact_data: bytes = b"", sealed_contact_data: bytes = b"") -> bytes:
        """One serialized ContactChange: ``event`` (serialized), ``outcome``, then either the
        entries of clear contact data (:func:`clear_contact_data`) or a serialized SealedData."""
        parts = [_EVENT_FIELD, bus.varint(len(event)), event, outcome.encoded, contact_data]
        if sealed_contact_data:
            parts += [_SEALED_CONTACT_DATA_FIELD, bus.varint(len(sealed_contact_data)), sealed_contact_data]
        return b"".join(parts)


def clear_contact_data(contact_data: dict[str, str]) -> bytes:
    """ContactChange's ``contact_data`` map on the wire (an event whose person came in clear)."""
    return personal_data.contact_data_plaintext(contact_data)
