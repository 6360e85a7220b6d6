from listboss.events.v1 import event_pb2 as _event_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContactChange(_message.Message):
    __slots__ = ("event", "tag_operations", "fired_segmentations", "contact_data", "backfill", "sealed_contact_data")
    class ContactDataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TAG_OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    FIRED_SEGMENTATIONS_FIELD_NUMBER: _ClassVar[int]
    CONTACT_DATA_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_FIELD_NUMBER: _ClassVar[int]
    SEALED_CONTACT_DATA_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    tag_operations: _containers.RepeatedCompositeFieldContainer[TagOperation]
    fired_segmentations: _containers.RepeatedScalarFieldContainer[str]
    contact_data: _containers.ScalarMap[str, str]
    backfill: str
    sealed_contact_data: _event_pb2.SealedData
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., tag_operations: _Optional[_Iterable[_Union[TagOperation, _Mapping]]] = ..., fired_segmentations: _Optional[_Iterable[str]] = ..., contact_data: _Optional[_Mapping[str, str]] = ..., backfill: _Optional[str] = ..., sealed_contact_data: _Optional[_Union[_event_pb2.SealedData, _Mapping]] = ...) -> None: ...

class ContactChangeBatch(_message.Message):
    __slots__ = ("changes",)
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ContactChange]
    def __init__(self, changes: _Optional[_Iterable[_Union[ContactChange, _Mapping]]] = ...) -> None: ...

class TagOperation(_message.Message):
    __slots__ = ("action", "tag_key", "tag_display_name", "automatic", "segmentation")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[TagOperation.Action]
        ACTION_ADD: _ClassVar[TagOperation.Action]
        ACTION_REMOVE: _ClassVar[TagOperation.Action]
    ACTION_UNSPECIFIED: TagOperation.Action
    ACTION_ADD: TagOperation.Action
    ACTION_REMOVE: TagOperation.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TAG_KEY_FIELD_NUMBER: _ClassVar[int]
    TAG_DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    AUTOMATIC_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    action: TagOperation.Action
    tag_key: str
    tag_display_name: str
    automatic: bool
    segmentation: str
    def __init__(self, action: _Optional[_Union[TagOperation.Action, str]] = ..., tag_key: _Optional[str] = ..., tag_display_name: _Optional[str] = ..., automatic: _Optional[bool] = ..., segmentation: _Optional[str] = ...) -> None: ...
