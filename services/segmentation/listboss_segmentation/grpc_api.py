"""The gRPC entrypoint: translates SegmentationService requests to storage and domain calls."""

from __future__ import annotations

import uuid
from dataclasses import replace

import grpc
from google.protobuf import empty_pb2, timestamp_pb2
from sqlalchemy.engine import Engine

from listboss.events.v1 import event_pb2
from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as pb_grpc
from listboss_common import db, filtering
from listboss_common.auth import require_internal, require_producer_access
from listboss_common.errors import (
    FieldViolation,
    InvalidArgument,
    ServiceError,
    failed_precondition,
    invalid_field,
    not_found,
    unavailable,
)
from listboss_common.filtering import FieldSpec
from listboss_common.paging import decode_page_token, encode_page_token, page_size
from listboss_common.resources import (
    PRODUCER,
    PRODUCT,
    SEGMENTATION,
    ResourcePattern,
    canonical_product_id,
    is_valid_id,
)
from listboss_segmentation import conditions as cond
from listboss_segmentation import domain, storage
from listboss_segmentation.backfill import Backfiller, backfill_name
from listboss_segmentation.events import event_type_name
from listboss_segmentation.rules import Notifier

BACKFILL = ResourcePattern("producers/{producer}/products/{product}/segmentations/{segmentation}/backfills/{backfill}")

_MAX_DISPLAY_NAME = 200


def _timestamp(moment) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def product_message(record: storage.ProductRecord) -> pb.Product:
    return pb.Product(
        name=PRODUCT.format(record.producer, record.product_id),
        display_name=record.display_name,
        kind=record.kind,
        create_time=_timestamp(record.create_time),
        update_time=_timestamp(record.update_time),
    )


def automatic_segmentation_message(
    producer: str, product: storage.ProductRecord, segmentation: domain.AutomaticSegmentation
) -> pb.Segmentation:
    return pb.Segmentation(
        name=SEGMENTATION.format(producer, product.product_id, segmentation.id),
        display_name=segmentation.display_name,
        kind=pb.SEGMENTATION_KIND_AUTOMATIC,
        provider=pb.PROVIDER_SEND,
        event_type=event_pb2.EventType.Value(f"EVENT_TYPE_{segmentation.event_type}"),
        state=pb.SEGMENTATION_STATE_ACTIVE,
        action=pb.TagAction(add_tags=[segmentation.add_tag], remove_tags=list(segmentation.remove_tags)),
        # Automatic segmentations exist from the moment their product does.
        create_time=_timestamp(product.create_time),
        update_time=_timestamp(product.create_time),
        etag="automatic-v1",
        contact_data=[_CONTACT_DATA_VALUES[c] for c in domain.AUTOMATIC_CONTACT_DATA],
    )


# --------------------------------------------------------------------------- translation

_CONTACT_DATA_VALUES = {
    name.removeprefix("CONTACT_DATA_").lower(): value
    for name, value in pb.ContactData.items()
    if value != pb.CONTACT_DATA_UNSPECIFIED
}
_CONTACT_DATA_NAMES = {value: name for name, value in _CONTACT_DATA_VALUES.items()}
assert set(_CONTACT_DATA_VALUES) == set(domain.CONTACT_DATA), "ContactData and domain.CONTACT_DATA differ"


def _enum_name(enum, value: int, prefix: str) -> str:
    try:
        return enum.Name(value).removeprefix(prefix)
    except ValueError:
        return ""


def event_type_value(name: str) -> int:
    return event_pb2.EventType.Value(f"EVENT_TYPE_{name}")


def value_message(value) -> pb.Value:
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
    return pb.Condition(all=terms) if isinstance(condition, cond.All) else pb.Condition(any=terms)


def _value(message: pb.Value, path: str, violations: list[FieldViolation]):
    kind = message.WhichOneof("kind")
    if kind == "string_value":
        return message.string_value
    if kind == "number_value":
        return message.number_value
    if kind == "money_value":
        return cond.Money(message.money_value.currency_code, message.money_value.value)
    violations.append(FieldViolation(path, "set string_value, number_value or money_value"))
    return None


def condition_from_message(
    message: pb.Condition, path: str, violations: list[FieldViolation], depth: int = 0
) -> cond.Condition | None:
    """The domain condition of ``message``; structural problems go to ``violations``."""
    if depth > cond.MAX_DEPTH:
        violations.append(FieldViolation(path, f"is nested too deeply (at most {cond.MAX_DEPTH} levels)"))
        return None
    kind = message.WhichOneof("kind")
    if kind is None:
        violations.append(FieldViolation(path, "set one of clause, all, any or negate"))
        return None
    if kind == "clause":
        clause = message.clause
        operator = _enum_name(pb.Operator, clause.operator, "OPERATOR_")
        where = f"{path}.clause"
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
        if any(v is None for v in values):
            return None
        return cond.Clause(clause.field, operator, tuple(values))
    if kind == "negate":
        inner = condition_from_message(message.negate, f"{path}.negate", violations, depth + 1)
        return None if inner is None else cond.Not(inner)
    listed = getattr(message, kind).conditions
    if not listed:
        violations.append(FieldViolation(f"{path}.{kind}.conditions", "needs at least one condition"))
        return None
    terms = [
        condition_from_message(term, f"{path}.{kind}.conditions[{index}]", violations, depth + 1)
        for index, term in enumerate(listed)
    ]
    if any(term is None for term in terms):
        return None
    return (cond.All if kind == "all" else cond.Any)(tuple(terms))


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
        contact_data=[_CONTACT_DATA_VALUES[c] for c in segmentation.contact_data],
    )
    if segmentation.condition is not None:
        message.condition.CopyFrom(condition_message(segmentation.condition))
    return message


def _contact_data(values, path: str, violations: list[FieldViolation]) -> tuple[str, ...]:
    names = []
    for index, value in enumerate(values):
        name = _CONTACT_DATA_NAMES.get(value)
        if name is None:
            violations.append(FieldViolation(f"{path}[{index}]", "must be a known CONTACT_DATA_* value"))
        else:
            names.append(name)
    return tuple(names)


class _Definition:
    """The parts of a Segmentation message a producer defines, translated to the domain."""

    def __init__(self, message: pb.Segmentation, prefix: str):
        self.violations: list[FieldViolation] = []
        self.display_name = message.display_name
        self.provider = _enum_name(pb.Provider, message.provider, "PROVIDER_")
        self.event_type = _enum_name(event_pb2.EventType, message.event_type, "EVENT_TYPE_")
        self.condition = (
            condition_from_message(message.condition, f"{prefix}.condition", self.violations)
            if message.HasField("condition")
            else None
        )
        self.contact_data = _contact_data(message.contact_data, f"{prefix}.contact_data", self.violations)
        self.add_tags = tuple(message.action.add_tags)
        self.remove_tags = tuple(message.action.remove_tags)


def _check(segmentation: domain.CustomSegmentation, prefix: str, violations: list[FieldViolation]) -> None:
    # Structural problems of the condition are already named; do not report its clauses twice.
    structural = any(v.field.startswith(f"{prefix}.condition") for v in violations)
    for path, description in domain.check_segmentation(segmentation):
        if structural and path.startswith("condition"):
            continue
        violations.append(FieldViolation(f"{prefix}.{path}", description))
    if violations:
        raise InvalidArgument(violations)


def locked(name: str) -> ServiceError:
    return failed_precondition(
        f"{name} is an automatic segmentation: it is platform-defined and cannot be edited, deactivated or "
        "deleted; create a custom segmentation instead",
        "AUTOMATIC_SEGMENTATION_LOCKED",
        segmentation=name,
    )


def aborted(name: str, message: str, reason: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ABORTED, message, reason, {"segmentation": name})


def already_exists(name: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists", "SEGMENTATION_ALREADY_EXISTS", {"resource": name}
    )


def limit_exceeded(name: str, doing: str, problem: domain.LimitExceeded) -> ServiceError:
    producer, product_id, _ = SEGMENTATION.parse(name)
    product = PRODUCT.format(producer, product_id)
    return failed_precondition(
        f"cannot {doing} {name}: {problem.message.format(product=product)}",
        problem.reason,
        segmentation=name,
        product=product,
        limit=str(problem.limit),
        total=str(problem.total),
    )


def save_within_limits(
    connection, segmentation: domain.CustomSegmentation, expected_revision: int, doing: str
) -> domain.CustomSegmentation | None:
    """Saves a segmentation that is to be ACTIVE, if the product's ACTIVE ones stay within
    the limits. The product stays locked from the count to the commit, so two concurrent
    activations cannot both take the last place."""
    storage.lock_product(connection, segmentation.producer, segmentation.product)
    active = storage.list_segmentations(connection, segmentation.producer, segmentation.product, state=domain.ACTIVE)
    problem = domain.check_active_limits(active, segmentation)
    if problem is not None:
        name = SEGMENTATION.format(segmentation.producer, segmentation.product, segmentation.segmentation_id)
        raise limit_exceeded(name, doing, problem)
    return storage.save_segmentation(connection, segmentation, expected_revision)


def backfill_message(record: storage.BackfillRecord) -> pb.Backfill:
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


def _filter_values(enum, prefix: str, skip: int = 0) -> frozenset[str]:
    names = [n for n, v in enum.items() if v != skip]
    return frozenset(names) | frozenset(n.removeprefix(prefix) for n in names)


SEGMENTATION_FILTER_FIELDS = {
    "event_type": FieldSpec("event_type", frozenset({"=", "!="}), "enum",
                            _filter_values(event_pb2.EventType, "EVENT_TYPE_")),
    "kind": FieldSpec("kind", frozenset({"=", "!="}), "enum", _filter_values(pb.SegmentationKind, "SEGMENTATION_KIND_")),
    "state": FieldSpec("state", frozenset({"=", "!="}), "enum",
                       _filter_values(pb.SegmentationState, "SEGMENTATION_STATE_")),
}
_FILTER_PREFIXES = {"event_type": "EVENT_TYPE_", "kind": "SEGMENTATION_KIND_", "state": "SEGMENTATION_STATE_"}


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


_UPDATABLE = ("display_name", "provider", "event_type", "condition", "contact_data", "action")
_OUTPUT_ONLY = {
    "name": "is output only: the name never changes",
    "kind": "is output only",
    "state": "is changed by ActivateSegmentation and DeactivateSegmentation",
    "create_time": "is output only",
    "update_time": "is output only",
    "etag": "is output only (send it in segmentation.etag to guard the update)",
}
_MAX_REQUEST_ID = 128


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    def __init__(self, engine: Engine, notify: Notifier | None = None, backfiller: Backfiller | None = None):
        self._engine = engine
        # Tells every replica's rule cache that a product's rules changed (after the commit).
        self._notify = notify
        self._backfiller = backfiller

    async def _write(self, function, *args):
        return await db.write(self._engine, function, *args)

    async def _changed(self, producer: str, product: str) -> None:
        if self._notify is not None:
            await self._notify(producer, product)

    async def _read(self, function, *args):
        return await db.read(self._engine, function, *args)

    async def _product(self, name: str, field: str) -> storage.ProductRecord:
        producer, product_id = PRODUCT.parse(name, field)
        require_producer_access(producer, name)
        record = await self._read(storage.get_product, producer, product_id)
        if record is None:
            raise not_found(name)
        return record

    async def RegisterProduct(self, request: pb.RegisterProductRequest, context) -> pb.Product:
        (producer,) = PRODUCER.parse(request.parent, "parent")
        require_internal(request.parent)
        violations = []
        product_id = canonical_product_id(request.product_id)
        if not is_valid_id(product_id):
            violations.append(FieldViolation("product_id", "must be 1-128 letters, digits, '-', '_' or '.'"))
        if not request.display_name.strip():
            violations.append(FieldViolation("display_name", "is required"))
        elif len(request.display_name) > _MAX_DISPLAY_NAME:
            violations.append(FieldViolation("display_name", f"must be at most {_MAX_DISPLAY_NAME} characters"))
        if request.kind not in (event_pb2.PRODUCT_KIND_PRODUCT, event_pb2.PRODUCT_KIND_WEBINAR):
            violations.append(FieldViolation("kind", "must be PRODUCT_KIND_PRODUCT or PRODUCT_KIND_WEBINAR"))
        if violations:
            raise InvalidArgument(violations)

        record = await self._write(
            storage.register_product, producer, product_id, request.display_name.strip(), request.kind
        )
        return product_message(record)

    async def GetProduct(self, request: pb.GetProductRequest, context) -> pb.Product:
        return product_message(await self._product(request.name, "name"))

    async def ListProducts(self, request: pb.ListProductsRequest, context) -> pb.ListProductsResponse:
        (producer,) = PRODUCER.parse(request.parent, "parent")
        require_producer_access(producer, request.parent)
        limit = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent)
        after = position[0] if position else None
        records = await self._read(storage.list_products, producer, after, limit + 1)
        response = pb.ListProductsResponse(products=[product_message(r) for r in records[:limit]])
        if len(records) > limit:
            response.next_page_token = encode_page_token([records[limit - 1].product_id], request.parent)
        return response

    async def _segmentation(self, name: str, field: str = "name"):
        """(product, automatic or None, custom or None) for a segmentation name; NOT_FOUND when neither."""
        producer, product_id, segmentation_id = SEGMENTATION.parse(name, field)
        product = await self._product(PRODUCT.format(producer, product_id), field)
        automatic = domain.AUTOMATIC_BY_ID.get(segmentation_id)
        if automatic is not None:
            return product, automatic, None
        custom = await self._read(storage.get_segmentation, producer, product_id, segmentation_id)
        if custom is None:
            raise not_found(name)
        return product, None, custom

    async def _custom(self, name: str, etag: str = "") -> domain.CustomSegmentation:
        """The custom segmentation to change: automatic ones are locked, a stale etag is ABORTED."""
        _, automatic, custom = await self._segmentation(name)
        if automatic is not None:
            raise locked(name)
        if etag and etag != custom.etag:
            raise aborted(name, f"{name} changed since it was read (etag {etag!r}, now {custom.etag!r}); "
                                "read it again and retry", "ETAG_MISMATCH")
        return custom

    async def GetSegmentation(self, request: pb.GetSegmentationRequest, context) -> pb.Segmentation:
        product, automatic, custom = await self._segmentation(request.name)
        if automatic is not None:
            return automatic_segmentation_message(product.producer, product, automatic)
        return custom_segmentation_message(custom)

    async def ListSegmentations(
        self, request: pb.ListSegmentationsRequest, context
    ) -> pb.ListSegmentationsResponse:
        product = await self._product(request.parent, "parent")
        try:
            node = filtering.validate(filtering.parse(request.filter), SEGMENTATION_FILTER_FIELDS)
        except filtering.FilterError as error:
            raise invalid_field("filter", str(error)) from None
        limit = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent, request.filter)
        custom = await self._read(storage.list_segmentations, product.producer, product.product_id)
        # One order for both kinds: automatic ones in the table's order, then custom in creation order.
        everything: list[tuple[list, pb.Segmentation]] = []
        for index, automatic in enumerate(domain.AUTOMATIC_SEGMENTATIONS):
            row = {"event_type": automatic.event_type, "kind": "AUTOMATIC", "state": "ACTIVE"}
            if _matches(node, row):
                everything.append(([0, index, automatic.id], automatic))
        for segmentation in custom:
            row = {"event_type": segmentation.event_type, "kind": "CUSTOM", "state": segmentation.state}
            if _matches(node, row):
                key = [1, int(segmentation.create_time.timestamp() * 1_000_000), segmentation.segmentation_id]
                everything.append((key, segmentation))
        if position is not None:
            everything = [item for item in everything if item[0] > position]
        page = everything[:limit]
        response = pb.ListSegmentationsResponse(
            segmentations=[
                automatic_segmentation_message(product.producer, product, s)
                if isinstance(s, domain.AutomaticSegmentation)
                else custom_segmentation_message(s)
                for _, s in page
            ]
        )
        if len(everything) > limit:
            response.next_page_token = encode_page_token(page[-1][0], request.parent, request.filter)
        return response

    async def CreateSegmentation(self, request: pb.CreateSegmentationRequest, context) -> pb.Segmentation:
        product = await self._product(request.parent, "parent")
        violations: list[FieldViolation] = []
        segmentation_id = request.segmentation_id or f"seg-{uuid.uuid4().hex[:12]}"
        if problem := domain.check_segmentation_id(segmentation_id):
            violations.append(FieldViolation("segmentation_id", problem))
        if len(request.request_id) > _MAX_REQUEST_ID:
            violations.append(FieldViolation("request_id", f"must be at most {_MAX_REQUEST_ID} characters"))
        definition = _Definition(request.segmentation, "segmentation")
        violations.extend(definition.violations)
        segmentation = domain.CustomSegmentation(
            producer=product.producer,
            product=product.product_id,
            segmentation_id=segmentation_id,
            display_name=definition.display_name,
            provider=definition.provider,
            event_type=definition.event_type,
            condition=definition.condition,
            contact_data=definition.contact_data,
            add_tags=definition.add_tags,
            remove_tags=definition.remove_tags,
        )
        _check(segmentation, "segmentation", violations)
        segmentation = domain.normalized(segmentation)
        name = SEGMENTATION.format(product.producer, product.product_id, segmentation_id)

        def write(connection):
            if request.request_id:
                earlier = storage.find_by_request(connection, product.producer, product.product_id, request.request_id)
                if earlier is not None:
                    return earlier
            try:
                return storage.create_segmentation(connection, segmentation, request.request_id)
            except storage.AlreadyExists:
                if request.request_id:  # a concurrent retry of the same request won the race
                    earlier = storage.find_by_request(
                        connection, product.producer, product.product_id, request.request_id
                    )
                    if earlier is not None:
                        return earlier
                raise already_exists(name) from None

        created = await self._write(write)
        # Inactive segmentations do nothing; no rule changes to announce.
        return custom_segmentation_message(created)

    async def UpdateSegmentation(self, request: pb.UpdateSegmentationRequest, context) -> pb.Segmentation:
        name = request.segmentation.name
        SEGMENTATION.parse(name, "segmentation.name")
        current = await self._custom(name, request.segmentation.etag)
        violations: list[FieldViolation] = []
        paths = list(request.update_mask.paths)
        message = request.segmentation
        if not paths:
            paths = [p for p in _UPDATABLE if (p in ("condition", "action") and message.HasField(p))
                     or (p not in ("condition", "action") and getattr(message, p))]
        elif paths == ["*"]:
            paths = list(_UPDATABLE)
        changes: dict[str, object] = {}
        definition = _Definition(message, "segmentation")
        for index, path in enumerate(paths):
            if path in _OUTPUT_ONLY:
                violations.append(FieldViolation(f"update_mask.paths[{index}]", f"{path!r} {_OUTPUT_ONLY[path]}"))
            elif path in ("action.add_tags", "action.remove_tags"):
                changes[path.removeprefix("action.")] = getattr(definition, path.removeprefix("action."))
            elif path == "action":
                changes["add_tags"], changes["remove_tags"] = definition.add_tags, definition.remove_tags
            elif path in _UPDATABLE:
                changes[path] = getattr(definition, path)
            else:
                allowed = ", ".join(_UPDATABLE)
                violations.append(FieldViolation(f"update_mask.paths[{index}]", f"unknown path {path!r}; "
                                                 f"updatable: {allowed}"))
        if not paths:
            violations.append(FieldViolation("update_mask", "names no field to update"))
        # Only the problems of the fields being changed (and what they break) count.
        violations.extend(v for v in definition.violations
                          if any(v.field.startswith(f"segmentation.{p}") for p in paths))
        updated = replace(current, **changes)
        _check(updated, "segmentation", violations)
        updated = domain.normalized(updated)
        if current.state == domain.ACTIVE:  # its new tags or event type count against the limits
            saved = await self._write(save_within_limits, updated, current.revision, "update")
        else:
            saved = await self._write(storage.save_segmentation, updated, current.revision)
        if saved is None:
            raise aborted(name, f"{name} changed while it was being updated; read it again and retry",
                          "CONCURRENT_CHANGE")
        if current.state == domain.ACTIVE:
            await self._changed(saved.producer, saved.product)
        return custom_segmentation_message(saved)

    async def DeleteSegmentation(self, request: pb.DeleteSegmentationRequest, context) -> empty_pb2.Empty:
        current = await self._custom(request.name, request.etag)
        deleted = await self._write(storage.delete_segmentation, current.producer, current.product,
                                    current.segmentation_id, current.revision)
        if not deleted:
            raise aborted(request.name, f"{request.name} changed while it was being deleted; read it again and "
                          "retry", "CONCURRENT_CHANGE")
        await self._changed(current.producer, current.product)
        return empty_pb2.Empty()

    async def _set_state(self, name: str, etag: str, state: str) -> pb.Segmentation:
        current = await self._custom(name, etag)
        if current.state == state:
            return custom_segmentation_message(current)  # already there: nothing changes
        if state == domain.ACTIVE:
            saved = await self._write(save_within_limits, replace(current, state=state), current.revision,
                                      "activate")
        else:
            saved = await self._write(storage.save_segmentation, replace(current, state=state), current.revision)
        if saved is None:
            raise aborted(name, f"{name} changed meanwhile; read it again and retry", "CONCURRENT_CHANGE")
        # Answer only once every replica is being told: events processed after
        # this answer see the new state.
        await self._changed(saved.producer, saved.product)
        return custom_segmentation_message(saved)

    async def ActivateSegmentation(self, request: pb.ActivateSegmentationRequest, context) -> pb.Segmentation:
        return await self._set_state(request.name, request.etag, domain.ACTIVE)

    async def DeactivateSegmentation(
        self, request: pb.DeactivateSegmentationRequest, context
    ) -> pb.Segmentation:
        return await self._set_state(request.name, request.etag, domain.INACTIVE)

    async def DescribeEventTypes(
        self, request: pb.DescribeEventTypesRequest, context
    ) -> pb.DescribeEventTypesResponse:
        response = pb.DescribeEventTypesResponse(
            contact_data=[_CONTACT_DATA_VALUES[name] for name in domain.CONTACT_DATA]
        )
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

    async def TestSegmentation(
        self, request: pb.TestSegmentationRequest, context
    ) -> pb.TestSegmentationResponse:
        violations: list[FieldViolation] = []
        if request.name and request.HasField("segmentation"):
            raise invalid_field("segmentation", "give either name or parent and segmentation, not both")
        if request.name:
            _, automatic, custom = await self._segmentation(request.name)
            if automatic is not None:
                event_type, condition = automatic.event_type, None
                add, remove, choices = (automatic.add_tag,), automatic.remove_tags, domain.AUTOMATIC_CONTACT_DATA
            else:
                event_type, condition = custom.event_type, custom.condition
                add, remove, choices = custom.add_tags, custom.remove_tags, custom.contact_data
        elif request.HasField("segmentation"):
            product = await self._product(request.parent, "parent")
            definition = _Definition(request.segmentation, "segmentation")
            violations.extend(definition.violations)
            inline = domain.CustomSegmentation(
                producer=product.producer, product=product.product_id, segmentation_id="test",
                display_name=definition.display_name or "test", provider=definition.provider or "SEND",
                event_type=definition.event_type, condition=definition.condition,
                contact_data=definition.contact_data, add_tags=definition.add_tags,
                remove_tags=definition.remove_tags,
            )
            if not request.HasField("event"):
                violations.append(FieldViolation("event", "is required: the sample event to test against"))
            _check(inline, "segmentation", violations)
            inline = domain.normalized(inline)
            event_type, condition = inline.event_type, inline.condition
            add, remove, choices = inline.add_tags, inline.remove_tags, inline.contact_data
        else:
            raise invalid_field("name", "give the name of a segmentation, or parent and an inline segmentation")
        if not request.HasField("event"):
            raise invalid_field("event", "is required: the sample event to test against")
        event = request.event
        type_matched = event_type_name(event.type) == event_type
        result, outcomes = cond.explain(condition, event)
        matched = type_matched and result
        response = pb.TestSegmentationResponse(
            matched=matched,
            event_type_matched=type_matched,
            action=pb.TagAction(add_tags=add, remove_tags=remove),
        )
        for outcome in outcomes:
            clause = response.clauses.add(
                path=outcome.path,
                field=outcome.clause.field,
                operator=pb.Operator.Value(f"OPERATOR_{outcome.clause.operator}"),
                expected=[value_message(v) for v in outcome.clause.values],
                result=outcome.result,
            )
            if outcome.actual is not None:
                clause.actual.CopyFrom(value_message(outcome.actual))
        if matched:
            response.contact_data.update(domain.contact_data(choices, event))
            did = [*(f"add {k}" for k in add), *(f"remove {k}" for k in remove)]
            response.explanation = "matches: it would " + ", ".join(did)
        elif not type_matched:
            response.explanation = (f"does not match: the event is {event_type_name(event.type)}, the segmentation "
                                    f"is for {event_type}")
        else:
            failed = [o.path for o in outcomes if not o.result]
            response.explanation = "does not match: the condition is false" + (
                f" (false clauses: {', '.join(failed)})" if failed else ""
            )
        return response

    async def BackfillSegmentation(self, request: pb.BackfillSegmentationRequest, context) -> pb.Backfill:
        _, automatic, custom = await self._segmentation(request.name)
        if automatic is not None:
            raise failed_precondition(
                f"{request.name} is an automatic segmentation: it is platform-defined and already applied to "
                "every event; only custom segmentations are backfilled",
                "AUTOMATIC_SEGMENTATION_LOCKED",
                segmentation=request.name,
            )
        if self._backfiller is None:
            raise unavailable("this replica cannot run backfills (no bus connection)")
        backfill_id = uuid.uuid4().hex[:16]
        record = await self._write(storage.create_backfill, custom.producer, custom.product,
                                   custom.segmentation_id, backfill_id)
        self._backfiller.start(record, custom)
        return backfill_message(record)

    async def GetBackfill(self, request: pb.GetBackfillRequest, context) -> pb.Backfill:
        producer, product_id, segmentation_id, backfill_id = BACKFILL.parse(request.name, "name")
        require_producer_access(producer, request.name)
        record = await self._read(storage.get_backfill, producer, product_id, segmentation_id, backfill_id)
        if record is None:
            raise not_found(request.name)
        return backfill_message(record)
