"""The gRPC entrypoint: translates SegmentationService requests to storage and domain calls."""

from __future__ import annotations

import asyncio

from google.protobuf import timestamp_pb2
from sqlalchemy.engine import Engine

from listboss.events.v1 import event_pb2
from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as pb_grpc
from listboss_common.auth import require_internal, require_producer_access
from listboss_common.errors import FieldViolation, InvalidArgument, not_found
from listboss_common.paging import decode_page_token, encode_page_token, page_size
from listboss_common.resources import PRODUCER, PRODUCT, SEGMENTATION, canonical_product_id, is_valid_id
from listboss_segmentation import domain, storage

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
    )


class SegmentationServicer(pb_grpc.SegmentationServiceServicer):
    def __init__(self, engine: Engine):
        self._engine = engine

    async def _read(self, function, *args):
        def run():
            with self._engine.connect() as connection:
                return function(connection, *args)

        return await asyncio.to_thread(run)

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

        def write():
            with self._engine.begin() as connection:
                return storage.register_product(
                    connection, producer, product_id, request.display_name.strip(), request.kind
                )

        return product_message(await asyncio.to_thread(write))

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

    async def GetSegmentation(self, request: pb.GetSegmentationRequest, context) -> pb.Segmentation:
        producer, product_id, segmentation_id = SEGMENTATION.parse(request.name, "name")
        product = await self._product(PRODUCT.format(producer, product_id), "name")
        segmentation = domain.AUTOMATIC_BY_ID.get(segmentation_id)
        if segmentation is None:
            raise not_found(request.name)
        return automatic_segmentation_message(producer, product, segmentation)

    async def ListSegmentations(
        self, request: pb.ListSegmentationsRequest, context
    ) -> pb.ListSegmentationsResponse:
        product = await self._product(request.parent, "parent")
        limit = page_size(request.page_size)
        position = decode_page_token(request.page_token, request.parent)
        start = int(position[0]) if position else 0
        everything = domain.AUTOMATIC_SEGMENTATIONS
        page = everything[start : start + limit]
        response = pb.ListSegmentationsResponse(
            segmentations=[automatic_segmentation_message(product.producer, product, s) for s in page]
        )
        if start + limit < len(everything):
            response.next_page_token = encode_page_token([start + limit], request.parent)
        return response
