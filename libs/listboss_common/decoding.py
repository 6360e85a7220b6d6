"""Requests protobuf cannot read answer INVALID_ARGUMENT naming the field, not a bare UNKNOWN.

protobuf refuses to parse a message nested deeper than it reads (100 levels) and a string
field that is not UTF-8; grpc would then answer with no status details at all.
:func:`tolerant` wraps a method's request deserializer so that it never raises: it hands the
handler an :class:`Undecodable` instead, and the server's interceptor raises its error once
the caller is authenticated (:mod:`listboss_common.grpc_server`).

The error names what it can find by walking the wire format with an explicit stack (no
recursion, whatever the depth; the walk costs one pass over the bytes):

* a message type whose nesting a service limits (:func:`limit_nesting`, e.g. a segmentation's
  ``Condition`` at most 8 levels): ``segmentation.condition: nested deeper than 8 levels``,
  on the outermost field of that type;
* a string field that is not UTF-8: ``events[3].person.name: must be UTF-8 text ...``;
* otherwise: "the request is not a valid X message".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

from listboss_common.errors import FieldViolation, InvalidArgument

# Enough to fix a request; more would be noise.
_MAX_REPORTED: Final = 20

#: Message full name -> (levels, what a violation calls them): see :func:`limit_nesting`.
_NESTING_LIMITS: dict[str, int] = {}


def limit_nesting(message: Descriptor, levels: int) -> None:
    """Declares that ``message`` (a recursive type) may nest at most ``levels`` levels below
    its outermost occurrence; an undecodable request nested deeper names that outermost field
    and the limit. The service's own validation applies the same limit to what protobuf reads."""
    _NESTING_LIMITS[message.full_name] = levels


@dataclass(frozen=True)
class Undecodable:
    """What a tolerant deserializer hands the handler in place of a request it could not parse."""

    error: InvalidArgument


def tolerant(deserializer: Callable[[bytes], Any], descriptor: Descriptor) -> Callable[[bytes], Any]:
    """``deserializer`` (of ``descriptor`` messages) answering :class:`Undecodable` instead of raising."""

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return Undecodable(undecodable_error(descriptor, data))

    return decode


def undecodable_error(descriptor: Descriptor, data: bytes) -> InvalidArgument:
    """Why ``data`` is not a ``descriptor`` message, as field violations where it can tell."""
    violations = _problems(descriptor, memoryview(data))
    if not violations:
        return InvalidArgument([], message=f"the request is not a valid {descriptor.name} message")
    return InvalidArgument(violations)


@dataclass
class _Frame:
    descriptor: Descriptor
    data: memoryview
    path: str
    # For each limited type: (its levels so far on this chain, the path of its outermost field).
    nesting: dict[str, tuple[int, str]]
    position: int = 0
    # How many of each repeated field came so far: the index of the next one.
    counts: dict[int, int] = field(default_factory=dict)


def _problems(descriptor: Descriptor, data: memoryview) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    reported: set[str] = set()
    stack = [_Frame(descriptor, data, "", {})]
    while stack and len(found) < _MAX_REPORTED:
        frame = stack[-1]
        step = _next_field(frame)
        if step is None:
            stack.pop()
            continue
        found_field, chunk, path = step
        if found_field.type == FieldDescriptor.TYPE_STRING:
            try:
                str(chunk, "utf-8")
            except UnicodeDecodeError:
                found.append(
                    FieldViolation(
                        path,
                        "must be UTF-8 text: protobuf string fields cannot hold a lone surrogate "
                        "(U+D800-U+DFFF) or bytes that are not UTF-8",
                    )
                )
            continue
        if found_field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        child = found_field.message_type
        nesting = frame.nesting
        limit = _NESTING_LIMITS.get(child.full_name)
        if limit is not None:
            levels, outermost = nesting.get(child.full_name, (-1, path))
            levels += 1
            if levels > limit:
                if outermost not in reported:
                    reported.add(outermost)
                    found.append(FieldViolation(outermost, f"nested deeper than {limit} levels"))
                continue  # nothing below it is worth reading
            nesting = {**nesting, child.full_name: (levels, outermost)}
        stack.append(_Frame(child, chunk, path + ".", nesting))
    return found


def _next_field(frame: _Frame) -> tuple[FieldDescriptor, memoryview, str] | None:
    """The next length-delimited known field of ``frame`` (advancing it), or None at its end
    or at broken framing."""
    data, end = frame.data, len(frame.data)
    try:
        while frame.position < end:
            key, position = _varint(data, frame.position)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                frame.position = _varint(data, position)[1]
                continue
            if wire_type in (1, 5):
                frame.position = position + (8 if wire_type == 1 else 4)
                continue
            if wire_type != 2:  # groups: no proto3 message has them
                return None
            length, position = _varint(data, position)
            if position + length > end:
                return None
            frame.position = position + length
            known = frame.descriptor.fields_by_number.get(number)
            if known is None:
                continue
            path = frame.path + known.name
            if known.is_repeated:
                index = frame.counts.get(number, 0)
                frame.counts[number] = index + 1
                path = f"{path}[{index}]"
            return known, data[position : position + length], path
    except IndexError:  # a varint that runs past the end
        return None
    return None


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")
