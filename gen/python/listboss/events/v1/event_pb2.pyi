import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE_OUT_OF_SHOPPING_CART: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE_BILLET_PRINTED: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE_APPROVED: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE_COMPLETE: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE_CANCELED: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE_EXPIRED: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE_DELAYED: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE_PROTEST: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE_REFUNDED: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE_CHARGEBACK: _ClassVar[EventType]
    EVENT_TYPE_SUBSCRIPTION_CANCELLATION: _ClassVar[EventType]
    EVENT_TYPE_SWITCH_PLAN: _ClassVar[EventType]
    EVENT_TYPE_UPDATE_SUBSCRIPTION_CHARGE_DATE: _ClassVar[EventType]
    EVENT_TYPE_CLUB_FIRST_ACCESS: _ClassVar[EventType]
    EVENT_TYPE_CLUB_MODULE_COMPLETED: _ClassVar[EventType]
    EVENT_TYPE_CONTENT_PROGRESS: _ClassVar[EventType]
    EVENT_TYPE_WEBINAR_REGISTRATION: _ClassVar[EventType]
    EVENT_TYPE_WEBINAR_ATTENDANCE: _ClassVar[EventType]

class EventSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_SOURCE_UNSPECIFIED: _ClassVar[EventSource]
    EVENT_SOURCE_GRPC: _ClassVar[EventSource]
    EVENT_SOURCE_WEBHOOK: _ClassVar[EventSource]

class ProductKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRODUCT_KIND_UNSPECIFIED: _ClassVar[ProductKind]
    PRODUCT_KIND_PRODUCT: _ClassVar[ProductKind]
    PRODUCT_KIND_WEBINAR: _ClassVar[ProductKind]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_PURCHASE_OUT_OF_SHOPPING_CART: EventType
EVENT_TYPE_PURCHASE_BILLET_PRINTED: EventType
EVENT_TYPE_PURCHASE_APPROVED: EventType
EVENT_TYPE_PURCHASE_COMPLETE: EventType
EVENT_TYPE_PURCHASE_CANCELED: EventType
EVENT_TYPE_PURCHASE_EXPIRED: EventType
EVENT_TYPE_PURCHASE_DELAYED: EventType
EVENT_TYPE_PURCHASE_PROTEST: EventType
EVENT_TYPE_PURCHASE_REFUNDED: EventType
EVENT_TYPE_PURCHASE_CHARGEBACK: EventType
EVENT_TYPE_SUBSCRIPTION_CANCELLATION: EventType
EVENT_TYPE_SWITCH_PLAN: EventType
EVENT_TYPE_UPDATE_SUBSCRIPTION_CHARGE_DATE: EventType
EVENT_TYPE_CLUB_FIRST_ACCESS: EventType
EVENT_TYPE_CLUB_MODULE_COMPLETED: EventType
EVENT_TYPE_CONTENT_PROGRESS: EventType
EVENT_TYPE_WEBINAR_REGISTRATION: EventType
EVENT_TYPE_WEBINAR_ATTENDANCE: EventType
EVENT_SOURCE_UNSPECIFIED: EventSource
EVENT_SOURCE_GRPC: EventSource
EVENT_SOURCE_WEBHOOK: EventSource
PRODUCT_KIND_UNSPECIFIED: ProductKind
PRODUCT_KIND_PRODUCT: ProductKind
PRODUCT_KIND_WEBINAR: ProductKind

class Event(_message.Message):
    __slots__ = ("id", "producer", "type", "occur_time", "product", "person", "purchase", "subscription", "module", "source", "receive_time", "content_progress", "webinar", "sealed_person")
    ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    PERSON_FIELD_NUMBER: _ClassVar[int]
    PURCHASE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    WEBINAR_FIELD_NUMBER: _ClassVar[int]
    SEALED_PERSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    producer: str
    type: EventType
    occur_time: _timestamp_pb2.Timestamp
    product: Product
    person: Person
    purchase: Purchase
    subscription: Subscription
    module: ClubModule
    source: EventSource
    receive_time: _timestamp_pb2.Timestamp
    content_progress: ContentProgress
    webinar: WebinarSession
    sealed_person: SealedData
    def __init__(self, id: _Optional[str] = ..., producer: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., product: _Optional[_Union[Product, _Mapping]] = ..., person: _Optional[_Union[Person, _Mapping]] = ..., purchase: _Optional[_Union[Purchase, _Mapping]] = ..., subscription: _Optional[_Union[Subscription, _Mapping]] = ..., module: _Optional[_Union[ClubModule, _Mapping]] = ..., source: _Optional[_Union[EventSource, str]] = ..., receive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., content_progress: _Optional[_Union[ContentProgress, _Mapping]] = ..., webinar: _Optional[_Union[WebinarSession, _Mapping]] = ..., sealed_person: _Optional[_Union[SealedData, _Mapping]] = ...) -> None: ...

class SealedData(_message.Message):
    __slots__ = ("key_id", "nonce", "ciphertext", "key_sequence")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    KEY_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    nonce: bytes
    ciphertext: bytes
    key_sequence: int
    def __init__(self, key_id: _Optional[str] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., key_sequence: _Optional[int] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("id", "name", "kind")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    kind: ProductKind
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[ProductKind, str]] = ...) -> None: ...

class Person(_message.Message):
    __slots__ = ("email", "name", "first_name", "last_name", "phone", "country_code", "address", "document", "document_type")
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_NAME_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    email: str
    name: str
    first_name: str
    last_name: str
    phone: str
    country_code: str
    address: Address
    document: str
    document_type: str
    def __init__(self, email: _Optional[str] = ..., name: _Optional[str] = ..., first_name: _Optional[str] = ..., last_name: _Optional[str] = ..., phone: _Optional[str] = ..., country_code: _Optional[str] = ..., address: _Optional[_Union[Address, _Mapping]] = ..., document: _Optional[str] = ..., document_type: _Optional[str] = ...) -> None: ...

class Address(_message.Message):
    __slots__ = ("street", "number", "complement", "neighborhood", "city", "state", "zip_code", "country", "country_code")
    STREET_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    COMPLEMENT_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORHOOD_FIELD_NUMBER: _ClassVar[int]
    CITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ZIP_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    street: str
    number: str
    complement: str
    neighborhood: str
    city: str
    state: str
    zip_code: str
    country: str
    country_code: str
    def __init__(self, street: _Optional[str] = ..., number: _Optional[str] = ..., complement: _Optional[str] = ..., neighborhood: _Optional[str] = ..., city: _Optional[str] = ..., state: _Optional[str] = ..., zip_code: _Optional[str] = ..., country: _Optional[str] = ..., country_code: _Optional[str] = ...) -> None: ...

class Money(_message.Message):
    __slots__ = ("currency_code", "value")
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    value: float
    def __init__(self, currency_code: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class Purchase(_message.Message):
    __slots__ = ("transaction", "status", "payment_type", "offer_code", "coupon_code", "price", "full_price", "installments", "recurrence_number", "checkout_country_code", "order_time", "approved_time")
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OFFER_CODE_FIELD_NUMBER: _ClassVar[int]
    COUPON_CODE_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    FULL_PRICE_FIELD_NUMBER: _ClassVar[int]
    INSTALLMENTS_FIELD_NUMBER: _ClassVar[int]
    RECURRENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CHECKOUT_COUNTRY_CODE_FIELD_NUMBER: _ClassVar[int]
    ORDER_TIME_FIELD_NUMBER: _ClassVar[int]
    APPROVED_TIME_FIELD_NUMBER: _ClassVar[int]
    transaction: str
    status: str
    payment_type: str
    offer_code: str
    coupon_code: str
    price: Money
    full_price: Money
    installments: int
    recurrence_number: int
    checkout_country_code: str
    order_time: _timestamp_pb2.Timestamp
    approved_time: _timestamp_pb2.Timestamp
    def __init__(self, transaction: _Optional[str] = ..., status: _Optional[str] = ..., payment_type: _Optional[str] = ..., offer_code: _Optional[str] = ..., coupon_code: _Optional[str] = ..., price: _Optional[_Union[Money, _Mapping]] = ..., full_price: _Optional[_Union[Money, _Mapping]] = ..., installments: _Optional[int] = ..., recurrence_number: _Optional[int] = ..., checkout_country_code: _Optional[str] = ..., order_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., approved_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("id", "subscriber_code", "status", "plan", "next_charge_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBER_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    NEXT_CHARGE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    subscriber_code: str
    status: str
    plan: Plan
    next_charge_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., subscriber_code: _Optional[str] = ..., status: _Optional[str] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., next_charge_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("id", "name", "offer_code")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFER_CODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    offer_code: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., offer_code: _Optional[str] = ...) -> None: ...

class ClubModule(_message.Message):
    __slots__ = ("id", "name")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ContentProgress(_message.Message):
    __slots__ = ("content_id", "content_name", "percentage", "completed_lessons", "total_lessons")
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_NAME_FIELD_NUMBER: _ClassVar[int]
    PERCENTAGE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_LESSONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LESSONS_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    content_name: str
    percentage: float
    completed_lessons: int
    total_lessons: int
    def __init__(self, content_id: _Optional[str] = ..., content_name: _Optional[str] = ..., percentage: _Optional[float] = ..., completed_lessons: _Optional[int] = ..., total_lessons: _Optional[int] = ...) -> None: ...

class WebinarSession(_message.Message):
    __slots__ = ("id", "name", "start_time", "attended_minutes")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTENDED_MINUTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    start_time: _timestamp_pb2.Timestamp
    attended_minutes: int
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attended_minutes: _Optional[int] = ...) -> None: ...
