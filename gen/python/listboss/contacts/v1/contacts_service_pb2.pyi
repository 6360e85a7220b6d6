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

class ContactSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTACT_SOURCE_UNSPECIFIED: _ClassVar[ContactSource]
    CONTACT_SOURCE_AUTO: _ClassVar[ContactSource]

class TagKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TAG_KIND_UNSPECIFIED: _ClassVar[TagKind]
    TAG_KIND_AUTOMATIC: _ClassVar[TagKind]
    TAG_KIND_CUSTOM: _ClassVar[TagKind]

class ContactView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTACT_VIEW_UNSPECIFIED: _ClassVar[ContactView]
    CONTACT_VIEW_BASIC: _ClassVar[ContactView]
    CONTACT_VIEW_FULL: _ClassVar[ContactView]
CONTACT_SOURCE_UNSPECIFIED: ContactSource
CONTACT_SOURCE_AUTO: ContactSource
TAG_KIND_UNSPECIFIED: TagKind
TAG_KIND_AUTOMATIC: TagKind
TAG_KIND_CUSTOM: TagKind
CONTACT_VIEW_UNSPECIFIED: ContactView
CONTACT_VIEW_BASIC: ContactView
CONTACT_VIEW_FULL: ContactView

class Contact(_message.Message):
    __slots__ = ("name", "email", "display_name", "phone", "country_code", "source", "tags", "first_event_time", "last_event_time", "create_time", "update_time", "attributes", "purchase_traits", "product_purchase_traits")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    FIRST_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_TRAITS_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_PURCHASE_TRAITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    email: str
    display_name: str
    phone: str
    country_code: str
    source: ContactSource
    tags: _containers.RepeatedCompositeFieldContainer[ContactTag]
    first_event_time: _timestamp_pb2.Timestamp
    last_event_time: _timestamp_pb2.Timestamp
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    attributes: _containers.ScalarMap[str, str]
    purchase_traits: PurchaseTraits
    product_purchase_traits: _containers.RepeatedCompositeFieldContainer[ProductPurchaseTraits]
    def __init__(self, name: _Optional[str] = ..., email: _Optional[str] = ..., display_name: _Optional[str] = ..., phone: _Optional[str] = ..., country_code: _Optional[str] = ..., source: _Optional[_Union[ContactSource, str]] = ..., tags: _Optional[_Iterable[_Union[ContactTag, _Mapping]]] = ..., first_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., purchase_traits: _Optional[_Union[PurchaseTraits, _Mapping]] = ..., product_purchase_traits: _Optional[_Iterable[_Union[ProductPurchaseTraits, _Mapping]]] = ...) -> None: ...

class PurchaseTraits(_message.Message):
    __slots__ = ("purchase_count", "spent", "first_purchase_time", "last_purchase_time")
    PURCHASE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    FIRST_PURCHASE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_PURCHASE_TIME_FIELD_NUMBER: _ClassVar[int]
    purchase_count: int
    spent: _containers.RepeatedCompositeFieldContainer[_event_pb2.Money]
    first_purchase_time: _timestamp_pb2.Timestamp
    last_purchase_time: _timestamp_pb2.Timestamp
    def __init__(self, purchase_count: _Optional[int] = ..., spent: _Optional[_Iterable[_Union[_event_pb2.Money, _Mapping]]] = ..., first_purchase_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_purchase_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ProductPurchaseTraits(_message.Message):
    __slots__ = ("product", "traits")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    product: str
    traits: PurchaseTraits
    def __init__(self, product: _Optional[str] = ..., traits: _Optional[_Union[PurchaseTraits, _Mapping]] = ...) -> None: ...

class ContactTag(_message.Message):
    __slots__ = ("tag", "key", "display_name", "product", "kind", "apply_time", "segmentation", "event_id")
    TAG_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    APPLY_TIME_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    tag: str
    key: str
    display_name: str
    product: str
    kind: TagKind
    apply_time: _timestamp_pb2.Timestamp
    segmentation: str
    event_id: str
    def __init__(self, tag: _Optional[str] = ..., key: _Optional[str] = ..., display_name: _Optional[str] = ..., product: _Optional[str] = ..., kind: _Optional[_Union[TagKind, str]] = ..., apply_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., segmentation: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...

class Tag(_message.Message):
    __slots__ = ("name", "key", "display_name", "product", "kind", "contact_count", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTACT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    display_name: str
    product: str
    kind: TagKind
    contact_count: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., display_name: _Optional[str] = ..., product: _Optional[str] = ..., kind: _Optional[_Union[TagKind, str]] = ..., contact_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetContactRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListContactsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "filter", "order_by")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    filter: str
    order_by: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListContactsResponse(_message.Message):
    __slots__ = ("contacts", "next_page_token")
    CONTACTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    contacts: _containers.RepeatedCompositeFieldContainer[Contact]
    next_page_token: str
    def __init__(self, contacts: _Optional[_Iterable[_Union[Contact, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListTagsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "product")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    product: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., product: _Optional[str] = ...) -> None: ...

class ListTagsResponse(_message.Message):
    __slots__ = ("tags", "next_page_token")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    next_page_token: str
    def __init__(self, tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class HistoryEvent(_message.Message):
    __slots__ = ("name", "type", "occur_time", "record_time", "contact", "email", "contact_created", "added_tags", "removed_tags", "fired_segmentations")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    RECORD_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    CONTACT_CREATED_FIELD_NUMBER: _ClassVar[int]
    ADDED_TAGS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_TAGS_FIELD_NUMBER: _ClassVar[int]
    FIRED_SEGMENTATIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: _event_pb2.EventType
    occur_time: _timestamp_pb2.Timestamp
    record_time: _timestamp_pb2.Timestamp
    contact: str
    email: str
    contact_created: bool
    added_tags: _containers.RepeatedScalarFieldContainer[str]
    removed_tags: _containers.RepeatedScalarFieldContainer[str]
    fired_segmentations: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[_event_pb2.EventType, str]] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., record_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., contact: _Optional[str] = ..., email: _Optional[str] = ..., contact_created: _Optional[bool] = ..., added_tags: _Optional[_Iterable[str]] = ..., removed_tags: _Optional[_Iterable[str]] = ..., fired_segmentations: _Optional[_Iterable[str]] = ...) -> None: ...

class ListEventsRequest(_message.Message):
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

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[HistoryEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[HistoryEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CountContactsRequest(_message.Message):
    __slots__ = ("parent", "filter")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    parent: str
    filter: str
    def __init__(self, parent: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class CountContactsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class ExportContactsRequest(_message.Message):
    __slots__ = ("parent", "filter", "order_by", "view")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    parent: str
    filter: str
    order_by: str
    view: ContactView
    def __init__(self, parent: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ..., view: _Optional[_Union[ContactView, str]] = ...) -> None: ...

class ExportContactsResponse(_message.Message):
    __slots__ = ("contacts",)
    CONTACTS_FIELD_NUMBER: _ClassVar[int]
    contacts: _containers.RepeatedCompositeFieldContainer[Contact]
    def __init__(self, contacts: _Optional[_Iterable[_Union[Contact, _Mapping]]] = ...) -> None: ...

class DeleteContactRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetProductDashboardRequest(_message.Message):
    __slots__ = ("name", "start_time", "end_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ProductDashboard(_message.Message):
    __slots__ = ("name", "start_time", "end_time", "contact_count", "contacts_captured", "event_count", "events_by_type", "days", "tags")
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTACT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONTACTS_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_BY_TYPE_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    contact_count: int
    contacts_captured: int
    event_count: int
    events_by_type: _containers.RepeatedCompositeFieldContainer[EventTypeCount]
    days: _containers.RepeatedCompositeFieldContainer[DailyFigures]
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    def __init__(self, name: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., contact_count: _Optional[int] = ..., contacts_captured: _Optional[int] = ..., event_count: _Optional[int] = ..., events_by_type: _Optional[_Iterable[_Union[EventTypeCount, _Mapping]]] = ..., days: _Optional[_Iterable[_Union[DailyFigures, _Mapping]]] = ..., tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ...) -> None: ...

class EventTypeCount(_message.Message):
    __slots__ = ("type", "count")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    type: _event_pb2.EventType
    count: int
    def __init__(self, type: _Optional[_Union[_event_pb2.EventType, str]] = ..., count: _Optional[int] = ...) -> None: ...

class DailyFigures(_message.Message):
    __slots__ = ("day", "event_count", "contacts_captured")
    DAY_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONTACTS_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    day: _timestamp_pb2.Timestamp
    event_count: int
    contacts_captured: int
    def __init__(self, day: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_count: _Optional[int] = ..., contacts_captured: _Optional[int] = ...) -> None: ...

class TagChange(_message.Message):
    __slots__ = ("id", "contact", "tag", "tag_key", "action", "event", "segmentation", "occur_time", "commit_time", "kind", "audience")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[TagChange.Action]
        ACTION_ADDED: _ClassVar[TagChange.Action]
        ACTION_REMOVED: _ClassVar[TagChange.Action]
    ACTION_UNSPECIFIED: TagChange.Action
    ACTION_ADDED: TagChange.Action
    ACTION_REMOVED: TagChange.Action
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[TagChange.Kind]
        KIND_TAG: _ClassVar[TagChange.Kind]
        KIND_AUDIENCE_ENTERED: _ClassVar[TagChange.Kind]
        KIND_AUDIENCE_EXITED: _ClassVar[TagChange.Kind]
    KIND_UNSPECIFIED: TagChange.Kind
    KIND_TAG: TagChange.Kind
    KIND_AUDIENCE_ENTERED: TagChange.Kind
    KIND_AUDIENCE_EXITED: TagChange.Kind
    ID_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    TAG_KEY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    contact: str
    tag: str
    tag_key: str
    action: TagChange.Action
    event: str
    segmentation: str
    occur_time: _timestamp_pb2.Timestamp
    commit_time: _timestamp_pb2.Timestamp
    kind: TagChange.Kind
    audience: str
    def __init__(self, id: _Optional[str] = ..., contact: _Optional[str] = ..., tag: _Optional[str] = ..., tag_key: _Optional[str] = ..., action: _Optional[_Union[TagChange.Action, str]] = ..., event: _Optional[str] = ..., segmentation: _Optional[str] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., commit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[TagChange.Kind, str]] = ..., audience: _Optional[str] = ...) -> None: ...

class WatchTagChangesRequest(_message.Message):
    __slots__ = ("parent", "tags", "cursor", "audiences")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    AUDIENCES_FIELD_NUMBER: _ClassVar[int]
    parent: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    cursor: str
    audiences: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, parent: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., cursor: _Optional[str] = ..., audiences: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchTagChangesResponse(_message.Message):
    __slots__ = ("change", "cursor")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    change: TagChange
    cursor: str
    def __init__(self, change: _Optional[_Union[TagChange, _Mapping]] = ..., cursor: _Optional[str] = ...) -> None: ...

class Audience(_message.Message):
    __slots__ = ("name", "display_name", "filter", "member_count", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    filter: str
    member_count: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., filter: _Optional[str] = ..., member_count: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class GetAudienceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListAudiencesRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAudiencesResponse(_message.Message):
    __slots__ = ("audiences", "next_page_token")
    AUDIENCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    audiences: _containers.RepeatedCompositeFieldContainer[Audience]
    next_page_token: str
    def __init__(self, audiences: _Optional[_Iterable[_Union[Audience, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateAudienceRequest(_message.Message):
    __slots__ = ("parent", "audience", "audience_id", "publish_existing_entries")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_EXISTING_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    parent: str
    audience: Audience
    audience_id: str
    publish_existing_entries: bool
    def __init__(self, parent: _Optional[str] = ..., audience: _Optional[_Union[Audience, _Mapping]] = ..., audience_id: _Optional[str] = ..., publish_existing_entries: _Optional[bool] = ...) -> None: ...

class UpdateAudienceRequest(_message.Message):
    __slots__ = ("audience", "update_mask")
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    audience: Audience
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, audience: _Optional[_Union[Audience, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteAudienceRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...
