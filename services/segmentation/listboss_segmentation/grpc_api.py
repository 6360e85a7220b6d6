"""The gRPC entrypoint: SegmentationService's methods translate (:mod:`messages`) and call
the use cases (:mod:`handlers`); a use case's refusal becomes a ``google.rpc.Status``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from google.protobuf import empty_pb2
from sqlalchemy.engine import Engine

from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as pb_grpc
from listboss_common.auth import READ, WRITE, require_internal, require_producer_access
from listboss_common.db import DEFAULT_STATEMENT_TIMEOUT, rpc_statement_timeout
from listboss_common.deadlines import database_deadline
from listboss_common.errors import ServiceError, failed_precondition, invalid_field, not_found, unavailable
from listboss_common.paging import decode_page_token, page_size
from listboss_common.resources import PRODUCER, PRODUCT, SEGMENTATION
from listboss_segmentation import domain, handlers, messages
from listboss_segmentation.backfill import Backfiller
from listboss_segmentation.rules import Notifier
from listboss_segmentation.unit_of_work import UnitOfWork

# The token scope each RPC needs, checked before the handler runs; an RPC missing here is refused.
# Reading products, segmentations and backfills and dry-running a rule change nothing: read.
METHOD_SCOPES = {
    "GetProduct": READ,
    "ListProducts": READ,
    "GetSegmentation": READ,
    "ListSegmentations": READ,
    "DescribeEventTypes": READ,
    "TestSegmentation": READ,
    "GetBackfill": READ,
    "RegisterProduct": WRITE,
    "CreateSegmentation": WRITE,
    "UpdateSegmentation": WRITE,
    "DeleteSegmentation": WRITE,
    "ActivateSegmentation": WRITE,
    "DeactivateSegmentation": WRITE,
    "BackfillSegmentation": WRITE,
}


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    def __init__(
        self,
        engine: Engine,
        notify: Notifier | None = None,
        backfiller: Backfiller | None = None,
        unit_of_work: Callable[[], UnitOfWork] | None = None,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
    ):
        # Each RPC's statements end by its deadline, and within ``statement_timeout`` seconds.
        timeout = rpc_statement_timeout(statement_timeout)
        self._uow = unit_of_work or (lambda: UnitOfWork(engine, timeout))
        # Tells every replica's rule cache that a product's rules changed (after the commit).
        self._notify = notify
        self._backfiller = backfiller

    async def _run(self, handler, *args, doing: str = ""):
        """Runs a use case in a worker thread with a unit of work of its own; then, once
        every replica is being told of the rule changes it committed, returns its result:
        events processed after the answer see the change. ``doing`` words its refusals."""
        uow = self._uow()
        try:
            with database_deadline():
                result = await asyncio.to_thread(handler, uow, *args)
        except handlers.Refused as refusal:
            raise _service_error(refusal, doing) from None
        if self._notify is not None:
            for producer, product in uow.changed_products:
                await self._notify(producer, product)
        return result

    # ------------------------------------------------------------------ products

    async def RegisterProduct(self, request: pb.RegisterProductRequest, context) -> pb.Product:
        (producer,) = PRODUCER.parse(request.parent, "parent")
        require_internal(request.parent)
        product_id, display_name, kind = messages.product_registration(request)
        return messages.product_message(
            await self._run(handlers.register_product, producer, product_id, display_name, kind)
        )

    async def GetProduct(self, request: pb.GetProductRequest, context) -> pb.Product:
        return messages.product_message(await self._run(handlers.get_product, *_product_ids(request.name, "name")))

    async def ListProducts(self, request: pb.ListProductsRequest, context) -> pb.ListProductsResponse:
        (producer,) = PRODUCER.parse(request.parent, "parent")
        require_producer_access(producer, request.parent)
        limit = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent)
        records = await self._run(handlers.list_products, producer, position[0] if position else None, limit + 1)
        return messages.product_page(request, records, limit)

    # ------------------------------------------------------------------ segmentations

    async def GetSegmentation(self, request: pb.GetSegmentationRequest, context) -> pb.Segmentation:
        product, segmentation = await self._run(handlers.get_segmentation, *_segmentation_ids(request.name))
        return messages.segmentation_message(product, segmentation)

    async def ListSegmentations(self, request: pb.ListSegmentationsRequest, context) -> pb.ListSegmentationsResponse:
        ids = _product_ids(request.parent, "parent")
        product, listed = await self._run(handlers.list_segmentations, *ids)
        return messages.segmentation_page(request, product, listed)

    async def CreateSegmentation(self, request: pb.CreateSegmentationRequest, context) -> pb.Segmentation:
        producer, product_id = _product_ids(request.parent, "parent")
        await self._run(handlers.get_product, producer, product_id)  # NOT_FOUND before INVALID_ARGUMENT
        segmentation = messages.new_segmentation(request, producer, product_id)
        created = await self._run(handlers.create_segmentation, segmentation, request.request_id)
        return messages.custom_segmentation_message(created)

    async def UpdateSegmentation(self, request: pb.UpdateSegmentationRequest, context) -> pb.Segmentation:
        ids = _segmentation_ids(request.segmentation.name, "segmentation.name")
        current = await self._run(handlers.custom_segmentation, *ids, request.segmentation.etag)
        updated = messages.updated_segmentation(current, request)
        saved = await self._run(handlers.update_segmentation, current, updated, doing="update")
        return messages.custom_segmentation_message(saved)

    async def DeleteSegmentation(self, request: pb.DeleteSegmentationRequest, context) -> empty_pb2.Empty:
        current = await self._run(handlers.custom_segmentation, *_segmentation_ids(request.name), request.etag)
        await self._run(handlers.delete_segmentation, current, doing="delete")
        return empty_pb2.Empty()

    async def _set_state(self, name: str, etag: str, state: str) -> pb.Segmentation:
        current = await self._run(handlers.custom_segmentation, *_segmentation_ids(name), etag)
        doing = "activate" if state == domain.ACTIVE else "deactivate"
        return messages.custom_segmentation_message(await self._run(handlers.set_state, current, state, doing=doing))

    async def ActivateSegmentation(self, request: pb.ActivateSegmentationRequest, context) -> pb.Segmentation:
        return await self._set_state(request.name, request.etag, domain.ACTIVE)

    async def DeactivateSegmentation(self, request: pb.DeactivateSegmentationRequest, context) -> pb.Segmentation:
        return await self._set_state(request.name, request.etag, domain.INACTIVE)

    # ------------------------------------------------------------------ describe and test

    async def DescribeEventTypes(self, request: pb.DescribeEventTypesRequest, context) -> pb.DescribeEventTypesResponse:
        return messages.event_types_message()

    async def TestSegmentation(self, request: pb.TestSegmentationRequest, context) -> pb.TestSegmentationResponse:
        if request.name and request.HasField("segmentation"):
            raise invalid_field("segmentation", "give either name or parent and segmentation, not both")
        if request.name:
            _, segmentation = await self._run(handlers.get_segmentation, *_segmentation_ids(request.name))
        elif request.HasField("segmentation"):
            producer, product_id = _product_ids(request.parent, "parent")
            await self._run(handlers.get_product, producer, product_id)
            segmentation = messages.inline_segmentation(request, producer, product_id)
        else:
            raise invalid_field("name", "give the name of a segmentation, or parent and an inline segmentation")
        if not request.HasField("event"):
            raise invalid_field("event", "is required: the sample event to test against")
        event = request.event
        return messages.explanation_message(domain.explain(segmentation, messages.event_type_name(event.type), event))

    # ------------------------------------------------------------------ backfills

    async def BackfillSegmentation(self, request: pb.BackfillSegmentationRequest, context) -> pb.Backfill:
        segmentation = await self._run(handlers.custom_segmentation, *_segmentation_ids(request.name), doing="backfill")
        if self._backfiller is None:
            raise unavailable("this replica cannot run backfills (no bus connection)")
        backfiller = self._backfiller
        record = await self._run(handlers.create_backfill, segmentation, backfiller.owner, backfiller.lease_seconds)
        backfiller.start(record, segmentation)
        return messages.backfill_message(record)

    async def GetBackfill(self, request: pb.GetBackfillRequest, context) -> pb.Backfill:
        producer, product_id, segmentation_id, backfill_id = messages.BACKFILL.parse(request.name, "name")
        require_producer_access(producer, request.name)
        record = await self._run(handlers.get_backfill, producer, product_id, segmentation_id, backfill_id)
        return messages.backfill_message(record)


# --------------------------------------------------------------------------- names and access


def _product_ids(name: str, field: str) -> tuple[str, str]:
    producer, product_id = PRODUCT.parse(name, field)
    require_producer_access(producer, name)
    return producer, product_id


def _segmentation_ids(name: str, field: str = "name") -> tuple[str, str, str]:
    producer, product_id, segmentation_id = SEGMENTATION.parse(name, field)
    require_producer_access(producer, PRODUCT.format(producer, product_id))
    return producer, product_id, segmentation_id


# --------------------------------------------------------------------------- refusals as errors

_WHILE = {"update": "while it was being updated", "delete": "while it was being deleted"}
_NAMES = {2: PRODUCT, 3: SEGMENTATION, 4: messages.BACKFILL}


def _service_error(refusal: handlers.Refused, doing: str) -> ServiceError:
    name = _NAMES[len(refusal.ids)].format(*refusal.ids)
    if isinstance(refusal, handlers.NotFound):
        return not_found(name)
    if isinstance(refusal, handlers.AutomaticSegmentationLocked):
        if doing == "backfill":
            return failed_precondition(
                f"{name} is an automatic segmentation: it is platform-defined and already applied to "
                "every event; only custom segmentations are backfilled",
                "AUTOMATIC_SEGMENTATION_LOCKED",
                segmentation=name,
            )
        return failed_precondition(
            f"{name} is an automatic segmentation: it is platform-defined and cannot be edited, deactivated or "
            "deleted; create a custom segmentation instead",
            "AUTOMATIC_SEGMENTATION_LOCKED",
            segmentation=name,
        )
    if isinstance(refusal, handlers.EtagMismatch):
        return _aborted(
            name,
            f"{name} changed since it was read (etag {refusal.etag!r}, now {refusal.current!r}); "
            "read it again and retry",
            "ETAG_MISMATCH",
        )
    if isinstance(refusal, handlers.ConcurrentChange):
        return _aborted(
            name, f"{name} changed {_WHILE.get(doing, 'meanwhile')}; read it again and retry", "CONCURRENT_CHANGE"
        )
    if isinstance(refusal, handlers.SegmentationExists):
        return ServiceError(
            grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists", "SEGMENTATION_ALREADY_EXISTS", {"resource": name}
        )
    if isinstance(refusal, handlers.ActiveLimitExceeded):
        problem = refusal.problem
        product = PRODUCT.format(*refusal.ids[:2])
        return failed_precondition(
            f"cannot {doing} {name}: {problem.message.format(product=product)}",
            problem.reason,
            segmentation=name,
            product=product,
            limit=str(problem.limit),
            total=str(problem.total),
        )
    raise TypeError(f"no error for {refusal!r}")


def _aborted(name: str, message: str, reason: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ABORTED, message, reason, {"segmentation": name})
