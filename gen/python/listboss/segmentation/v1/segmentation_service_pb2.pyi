import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from listboss.events.v1 import event_pb2 as _event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SegmentationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEGMENTATION_KIND_UNSPECIFIED: _ClassVar[SegmentationKind]
    SEGMENTATION_KIND_AUTOMATIC: _ClassVar[SegmentationKind]
    SEGMENTATION_KIND_CUSTOM: _ClassVar[SegmentationKind]

class SegmentationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEGMENTATION_STATE_UNSPECIFIED: _ClassVar[SegmentationState]
    SEGMENTATION_STATE_INACTIVE: _ClassVar[SegmentationState]
    SEGMENTATION_STATE_ACTIVE: _ClassVar[SegmentationState]

class Provider(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_UNSPECIFIED: _ClassVar[Provider]
    PROVIDER_SEND: _ClassVar[Provider]
SEGMENTATION_KIND_UNSPECIFIED: SegmentationKind
SEGMENTATION_KIND_AUTOMATIC: SegmentationKind
SEGMENTATION_KIND_CUSTOM: SegmentationKind
SEGMENTATION_STATE_UNSPECIFIED: SegmentationState
SEGMENTATION_STATE_INACTIVE: SegmentationState
SEGMENTATION_STATE_ACTIVE: SegmentationState
PROVIDER_UNSPECIFIED: Provider
PROVIDER_SEND: Provider

class Product(_message.Message):
    __slots__ = ("name", "display_name", "kind", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    kind: _event_pb2.ProductKind
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., kind: _Optional[_Union[_event_pb2.ProductKind, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterProductRequest(_message.Message):
    __slots__ = ("parent", "product_id", "display_name", "kind")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    parent: str
    product_id: str
    display_name: str
    kind: _event_pb2.ProductKind
    def __init__(self, parent: _Optional[str] = ..., product_id: _Optional[str] = ..., display_name: _Optional[str] = ..., kind: _Optional[_Union[_event_pb2.ProductKind, str]] = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListProductsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProductsResponse(_message.Message):
    __slots__ = ("products", "next_page_token")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    next_page_token: str
    def __init__(self, products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Segmentation(_message.Message):
    __slots__ = ("name", "display_name", "kind", "provider", "event_type", "state", "action", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    kind: SegmentationKind
    provider: Provider
    event_type: _event_pb2.EventType
    state: SegmentationState
    action: TagAction
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., kind: _Optional[_Union[SegmentationKind, str]] = ..., provider: _Optional[_Union[Provider, str]] = ..., event_type: _Optional[_Union[_event_pb2.EventType, str]] = ..., state: _Optional[_Union[SegmentationState, str]] = ..., action: _Optional[_Union[TagAction, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class TagAction(_message.Message):
    __slots__ = ("add_tags", "remove_tags")
    ADD_TAGS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_TAGS_FIELD_NUMBER: _ClassVar[int]
    add_tags: _containers.RepeatedScalarFieldContainer[str]
    remove_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, add_tags: _Optional[_Iterable[str]] = ..., remove_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSegmentationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListSegmentationsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSegmentationsResponse(_message.Message):
    __slots__ = ("segmentations", "next_page_token")
    SEGMENTATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    segmentations: _containers.RepeatedCompositeFieldContainer[Segmentation]
    next_page_token: str
    def __init__(self, segmentations: _Optional[_Iterable[_Union[Segmentation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
