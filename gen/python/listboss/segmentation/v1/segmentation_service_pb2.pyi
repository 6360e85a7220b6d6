import datetime

from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
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

class ContactData(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTACT_DATA_UNSPECIFIED: _ClassVar[ContactData]
    CONTACT_DATA_EMAIL: _ClassVar[ContactData]
    CONTACT_DATA_NAME: _ClassVar[ContactData]
    CONTACT_DATA_FIRST_NAME: _ClassVar[ContactData]
    CONTACT_DATA_LAST_NAME: _ClassVar[ContactData]
    CONTACT_DATA_PHONE: _ClassVar[ContactData]
    CONTACT_DATA_COUNTRY: _ClassVar[ContactData]
    CONTACT_DATA_ADDRESS: _ClassVar[ContactData]
    CONTACT_DATA_DOCUMENT: _ClassVar[ContactData]
    CONTACT_DATA_PRODUCT_NAME: _ClassVar[ContactData]
    CONTACT_DATA_TRANSACTION: _ClassVar[ContactData]
    CONTACT_DATA_OFFER_CODE: _ClassVar[ContactData]
    CONTACT_DATA_SUBSCRIPTION_PLAN: _ClassVar[ContactData]

class Operator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATOR_UNSPECIFIED: _ClassVar[Operator]
    OPERATOR_EQUALS: _ClassVar[Operator]
    OPERATOR_NOT_EQUALS: _ClassVar[Operator]
    OPERATOR_IN: _ClassVar[Operator]
    OPERATOR_NOT_IN: _ClassVar[Operator]
    OPERATOR_LESS_THAN: _ClassVar[Operator]
    OPERATOR_LESS_OR_EQUALS: _ClassVar[Operator]
    OPERATOR_GREATER_THAN: _ClassVar[Operator]
    OPERATOR_GREATER_OR_EQUALS: _ClassVar[Operator]
    OPERATOR_EXISTS: _ClassVar[Operator]

class FieldType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FIELD_TYPE_UNSPECIFIED: _ClassVar[FieldType]
    FIELD_TYPE_STRING: _ClassVar[FieldType]
    FIELD_TYPE_NUMBER: _ClassVar[FieldType]
    FIELD_TYPE_MONEY: _ClassVar[FieldType]

class BackfillState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKFILL_STATE_UNSPECIFIED: _ClassVar[BackfillState]
    BACKFILL_STATE_RUNNING: _ClassVar[BackfillState]
    BACKFILL_STATE_SUCCEEDED: _ClassVar[BackfillState]
    BACKFILL_STATE_FAILED: _ClassVar[BackfillState]
SEGMENTATION_KIND_UNSPECIFIED: SegmentationKind
SEGMENTATION_KIND_AUTOMATIC: SegmentationKind
SEGMENTATION_KIND_CUSTOM: SegmentationKind
SEGMENTATION_STATE_UNSPECIFIED: SegmentationState
SEGMENTATION_STATE_INACTIVE: SegmentationState
SEGMENTATION_STATE_ACTIVE: SegmentationState
PROVIDER_UNSPECIFIED: Provider
PROVIDER_SEND: Provider
CONTACT_DATA_UNSPECIFIED: ContactData
CONTACT_DATA_EMAIL: ContactData
CONTACT_DATA_NAME: ContactData
CONTACT_DATA_FIRST_NAME: ContactData
CONTACT_DATA_LAST_NAME: ContactData
CONTACT_DATA_PHONE: ContactData
CONTACT_DATA_COUNTRY: ContactData
CONTACT_DATA_ADDRESS: ContactData
CONTACT_DATA_DOCUMENT: ContactData
CONTACT_DATA_PRODUCT_NAME: ContactData
CONTACT_DATA_TRANSACTION: ContactData
CONTACT_DATA_OFFER_CODE: ContactData
CONTACT_DATA_SUBSCRIPTION_PLAN: ContactData
OPERATOR_UNSPECIFIED: Operator
OPERATOR_EQUALS: Operator
OPERATOR_NOT_EQUALS: Operator
OPERATOR_IN: Operator
OPERATOR_NOT_IN: Operator
OPERATOR_LESS_THAN: Operator
OPERATOR_LESS_OR_EQUALS: Operator
OPERATOR_GREATER_THAN: Operator
OPERATOR_GREATER_OR_EQUALS: Operator
OPERATOR_EXISTS: Operator
FIELD_TYPE_UNSPECIFIED: FieldType
FIELD_TYPE_STRING: FieldType
FIELD_TYPE_NUMBER: FieldType
FIELD_TYPE_MONEY: FieldType
BACKFILL_STATE_UNSPECIFIED: BackfillState
BACKFILL_STATE_RUNNING: BackfillState
BACKFILL_STATE_SUCCEEDED: BackfillState
BACKFILL_STATE_FAILED: BackfillState

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
    __slots__ = ("name", "display_name", "kind", "provider", "event_type", "state", "action", "create_time", "update_time", "etag", "condition", "contact_data")
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
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    CONTACT_DATA_FIELD_NUMBER: _ClassVar[int]
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
    condition: Condition
    contact_data: _containers.RepeatedScalarFieldContainer[ContactData]
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., kind: _Optional[_Union[SegmentationKind, str]] = ..., provider: _Optional[_Union[Provider, str]] = ..., event_type: _Optional[_Union[_event_pb2.EventType, str]] = ..., state: _Optional[_Union[SegmentationState, str]] = ..., action: _Optional[_Union[TagAction, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., condition: _Optional[_Union[Condition, _Mapping]] = ..., contact_data: _Optional[_Iterable[_Union[ContactData, str]]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("clause", "all", "any", "negate")
    CLAUSE_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    ANY_FIELD_NUMBER: _ClassVar[int]
    NEGATE_FIELD_NUMBER: _ClassVar[int]
    clause: Clause
    all: ConditionList
    any: ConditionList
    negate: Condition
    def __init__(self, clause: _Optional[_Union[Clause, _Mapping]] = ..., all: _Optional[_Union[ConditionList, _Mapping]] = ..., any: _Optional[_Union[ConditionList, _Mapping]] = ..., negate: _Optional[_Union[Condition, _Mapping]] = ...) -> None: ...

class ConditionList(_message.Message):
    __slots__ = ("conditions",)
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class Clause(_message.Message):
    __slots__ = ("field", "operator", "value", "values")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    field: str
    operator: Operator
    value: Value
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, field: _Optional[str] = ..., operator: _Optional[_Union[Operator, str]] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("string_value", "number_value", "money_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_VALUE_FIELD_NUMBER: _ClassVar[int]
    MONEY_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    number_value: float
    money_value: _event_pb2.Money
    def __init__(self, string_value: _Optional[str] = ..., number_value: _Optional[float] = ..., money_value: _Optional[_Union[_event_pb2.Money, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("parent", "page_size", "page_token", "filter")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    filter: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListSegmentationsResponse(_message.Message):
    __slots__ = ("segmentations", "next_page_token")
    SEGMENTATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    segmentations: _containers.RepeatedCompositeFieldContainer[Segmentation]
    next_page_token: str
    def __init__(self, segmentations: _Optional[_Iterable[_Union[Segmentation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateSegmentationRequest(_message.Message):
    __slots__ = ("parent", "segmentation", "segmentation_id", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    segmentation: Segmentation
    segmentation_id: str
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., segmentation: _Optional[_Union[Segmentation, _Mapping]] = ..., segmentation_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateSegmentationRequest(_message.Message):
    __slots__ = ("segmentation", "update_mask")
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    segmentation: Segmentation
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, segmentation: _Optional[_Union[Segmentation, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteSegmentationRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class ActivateSegmentationRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeactivateSegmentationRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DescribeEventTypesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeEventTypesResponse(_message.Message):
    __slots__ = ("event_types", "contact_data")
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    CONTACT_DATA_FIELD_NUMBER: _ClassVar[int]
    event_types: _containers.RepeatedCompositeFieldContainer[EventTypeDescription]
    contact_data: _containers.RepeatedScalarFieldContainer[ContactData]
    def __init__(self, event_types: _Optional[_Iterable[_Union[EventTypeDescription, _Mapping]]] = ..., contact_data: _Optional[_Iterable[_Union[ContactData, str]]] = ...) -> None: ...

class EventTypeDescription(_message.Message):
    __slots__ = ("event_type", "description", "fields", "automatic_segmentation")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    AUTOMATIC_SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    event_type: _event_pb2.EventType
    description: str
    fields: _containers.RepeatedCompositeFieldContainer[ConditionField]
    automatic_segmentation: str
    def __init__(self, event_type: _Optional[_Union[_event_pb2.EventType, str]] = ..., description: _Optional[str] = ..., fields: _Optional[_Iterable[_Union[ConditionField, _Mapping]]] = ..., automatic_segmentation: _Optional[str] = ...) -> None: ...

class ConditionField(_message.Message):
    __slots__ = ("name", "type", "operators", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FieldType
    operators: _containers.RepeatedScalarFieldContainer[Operator]
    description: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FieldType, str]] = ..., operators: _Optional[_Iterable[_Union[Operator, str]]] = ..., description: _Optional[str] = ...) -> None: ...

class TestSegmentationRequest(_message.Message):
    __slots__ = ("name", "parent", "segmentation", "event")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    parent: str
    segmentation: Segmentation
    event: _event_pb2.Event
    def __init__(self, name: _Optional[str] = ..., parent: _Optional[str] = ..., segmentation: _Optional[_Union[Segmentation, _Mapping]] = ..., event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ...) -> None: ...

class TestSegmentationResponse(_message.Message):
    __slots__ = ("matched", "event_type_matched", "clauses", "action", "contact_data", "explanation")
    class ContactDataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_MATCHED_FIELD_NUMBER: _ClassVar[int]
    CLAUSES_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CONTACT_DATA_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    matched: bool
    event_type_matched: bool
    clauses: _containers.RepeatedCompositeFieldContainer[ClauseResult]
    action: TagAction
    contact_data: _containers.ScalarMap[str, str]
    explanation: str
    def __init__(self, matched: _Optional[bool] = ..., event_type_matched: _Optional[bool] = ..., clauses: _Optional[_Iterable[_Union[ClauseResult, _Mapping]]] = ..., action: _Optional[_Union[TagAction, _Mapping]] = ..., contact_data: _Optional[_Mapping[str, str]] = ..., explanation: _Optional[str] = ...) -> None: ...

class ClauseResult(_message.Message):
    __slots__ = ("path", "field", "operator", "expected", "actual", "result")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    path: str
    field: str
    operator: Operator
    expected: _containers.RepeatedCompositeFieldContainer[Value]
    actual: Value
    result: bool
    def __init__(self, path: _Optional[str] = ..., field: _Optional[str] = ..., operator: _Optional[_Union[Operator, str]] = ..., expected: _Optional[_Iterable[_Union[Value, _Mapping]]] = ..., actual: _Optional[_Union[Value, _Mapping]] = ..., result: _Optional[bool] = ...) -> None: ...

class BackfillSegmentationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Backfill(_message.Message):
    __slots__ = ("name", "state", "events_scanned", "events_considered", "events_matched", "error", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_SCANNED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_CONSIDERED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_MATCHED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: BackfillState
    events_scanned: int
    events_considered: int
    events_matched: int
    error: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[BackfillState, str]] = ..., events_scanned: _Optional[int] = ..., events_considered: _Optional[int] = ..., events_matched: _Optional[int] = ..., error: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetBackfillRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
