"""Requests protobuf cannot parse: INVALID_ARGUMENT naming each string field that is not UTF-8.

A client whose encoder does not check (one that encodes a lone surrogate, say) sends bytes
protobuf refuses to parse; grpc would answer a bare UNKNOWN. :func:`decoder` hands the handler
an :class:`_Undecodable` instead, and :func:`refusing_undecodable` raises its error there, once
the interceptor has authenticated the caller: an ``InvalidArgument`` whose violations name the
fields (``events[3].person.name``), found by walking the wire format
(:func:`invalid_utf8_fields`). Nothing of such a request is stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from listboss_common.errors import FieldViolation, InvalidArgument

# Enough to fix a request; a list of every bad field of 10,000 events would only be noise.
MAX_REPORTED_FIELDS = 100


class _Undecodable:
    """What the decoder hands the handler in place of a request protobuf refused to parse."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidArgument):
        self.error = error


def decoder(request_class: type[Message]) -> Callable[[bytes], Message | _Undecodable]:
    """A request deserializer for ``request_class`` that never raises (see the module docstring)."""
    parse = request_class.FromString

    def decode(data: bytes) -> Message | _Undecodable:
        try:
            return parse(data)
        except DecodeError:
            # The handler raises it: there the interceptor has authenticated the caller and
            # turns it into a rich status (a decoder's exception would be a bare UNKNOWN).
            return _Undecodable(_undecodable_error(request_class.DESCRIPTOR, data))

    return decode


def refusing_undecodable(behavior: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    """``behavior`` (a servicer method) preceded by raising the error of an undecodable request."""

    async def handle(request: Any, context: Any) -> Any:
        if type(request) is _Undecodable:
            raise request.error
        return await behavior(request, context)

    return handle


def _undecodable_error(descriptor: Descriptor, data: bytes) -> InvalidArgument:
    paths = invalid_utf8_fields(descriptor, data)
    if not paths:  # broken framing rather than a bad string: nothing to point at
        return InvalidArgument([], message=f"the request is not a valid {descriptor.name} message")
    violations = [
        FieldViolation(
            path,
            "must be UTF-8 text: protobuf string fields cannot hold a lone surrogate (U+D800-U+DFFF) "
            "or bytes that are not UTF-8",
        )
        for path in paths[:MAX_REPORTED_FIELDS]
    ]
    return InvalidArgument(violations)


def invalid_utf8_fields(descriptor: Descriptor, data: bytes | memoryview, prefix: str = "") -> list[str]:
    """The paths of the string fields in ``data``, the wire form of a ``descriptor`` message,
    that are not UTF-8 (``events[3].person.name``). Sub-messages protobuf parses are skipped, so
    a 10,000-event batch costs a walk of its top level plus the bad events. Unknown fields are
    not looked at (protobuf does not check them); malformed framing ends the walk."""
    found: list[str] = []
    seen: dict[int, int] = {}  # field number -> occurrences so far, the index of a repeated field
    data = memoryview(data)
    position, end = 0, len(data)
    try:
        while position < end:
            key, position = _varint(data, position)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                position = _varint(data, position)[1]
                continue
            if wire_type in (1, 5):
                position += 8 if wire_type == 1 else 4
                continue
            if wire_type != 2:  # groups: no proto3 message has them
                break
            length, position = _varint(data, position)
            chunk = data[position : position + length]
            position += length
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            path = prefix + field.name
            if field.is_repeated:  # map entries too: labels[0].value
                index = seen.get(number, 0)
                seen[number] = index + 1
                path = f"{path}[{index}]"
            if field.type == FieldDescriptor.TYPE_STRING:
                try:
                    str(chunk, "utf-8")
                except UnicodeDecodeError:
                    found.append(path)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                try:
                    message_factory.GetMessageClass(field.message_type).FromString(chunk)  # C: most parts are fine
                except DecodeError:
                    found.extend(invalid_utf8_fields(field.message_type, chunk, path + "."))
    except IndexError:  # a varint or a length that runs past the end
        pass
    return found


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
