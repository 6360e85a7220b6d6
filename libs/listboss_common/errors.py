"""Service errors that carry a gRPC code and the rich details of google.rpc.Status.

Handlers raise these; the gRPC interceptor in :mod:`listboss_common.grpc_server`
turns them into a ``google.rpc.Status`` with one ``ErrorInfo`` (and a
``BadRequest`` with field violations for bad input, a ``RetryInfo`` when the caller
should wait before trying again), so every service answers errors the same way.

Bounded answers
---------------

An error travels in gRPC trailers (``grpc-message`` and ``grpc-status-details-bin``), which
clients refuse past 8 KiB (``RESOURCE_EXHAUSTED`` instead of the real answer), and a caller's
value quoted into it could be any size. So the rule is kept here, once, for every error of
every service (and the webhook receiver's JSON answers, which are built from the same
errors): a value quoted into a message goes through :func:`quoted` (its first
:data:`MAX_QUOTED_CHARACTERS` characters, and how long it was); and whatever a message,
field path, description or metadata value holds, a :class:`ServiceError` clips it
(:data:`MAX_MESSAGE_CHARACTERS`, :data:`MAX_DESCRIPTION_CHARACTERS`), reports at most
:data:`MAX_VIOLATIONS` field violations and keeps its whole ``google.rpc.Status`` under
:data:`MAX_STATUS_BYTES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "listboss.dev"

#: A caller's value quoted into an error: at most this many of its characters.
MAX_QUOTED_CHARACTERS = 40
#: An error's message (UTF-8 bytes; it travels percent-encoded in ``grpc-message``).
MAX_MESSAGE_CHARACTERS = 1024
#: One field path, field-violation description or ErrorInfo metadata value.
MAX_DESCRIPTION_CHARACTERS = 300
#: Field violations reported by one error; the message says how many more there were.
MAX_VIOLATIONS = 20
#: The serialized google.rpc.Status (base64 in a trailer): with the message, well under 8 KiB.
MAX_STATUS_BYTES = 4096

_ELLIPSIS = "\u2026"
_MORE = " (and {} more field violations)"


def quoted(value: object) -> str:
    """``value`` quoted for an error message, never longer than a short prefix: ``'abc'``, or
    ``'abcdefgh…' (100000 characters)`` for a long one. Characters that are not printable
    show as ``\\u`` escapes, so the text stays one readable line."""
    text = value if isinstance(value, str) else str(value)
    shown = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text[:MAX_QUOTED_CHARACTERS])
    if len(text) <= MAX_QUOTED_CHARACTERS:
        return f"'{shown}'"
    return f"'{shown}{_ELLIPSIS}' ({len(text)} characters)"


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters and ``limit`` UTF-8 bytes, an ellipsis
    marking the cut."""
    if len(text) <= limit and len(text.encode("utf-8", "surrogatepass")) <= limit:
        return text
    cut = text[: limit - 1]
    while len(cut.encode("utf-8", "surrogatepass")) > limit - len(_ELLIPSIS.encode()):
        cut = cut[: max(0, len(cut) - max(1, len(cut) // 8))]
    return cut + _ELLIPSIS


@dataclass(frozen=True)
class FieldViolation:
    """One wrong field of a request: its path (``event.person.email``) and why."""

    field: str
    description: str

    def prefixed(self, prefix: str) -> FieldViolation:
        """The same violation for a field nested under ``prefix``."""
        return FieldViolation(f"{prefix}.{self.field}" if self.field else prefix, self.description)


@dataclass
class ServiceError(Exception):
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()
    # Seconds the caller should wait before trying again: a ``RetryInfo`` detail when set.
    retry_delay: float | None = None

    def __post_init__(self) -> None:
        # The bounds of the module docstring, applied once for every error.
        given = len(self.violations)
        self.violations = tuple(
            FieldViolation(clip(v.field, MAX_DESCRIPTION_CHARACTERS), clip(v.description, MAX_DESCRIPTION_CHARACTERS))
            for v in self.violations[:MAX_VIOLATIONS]
        )
        self.message = clip(self.message, MAX_MESSAGE_CHARACTERS - len(_MORE.format(given)))
        self.metadata = {
            clip(key, MAX_DESCRIPTION_CHARACTERS): clip(value, MAX_DESCRIPTION_CHARACTERS)
            for key, value in self.metadata.items()
        }
        # Room for the count of what is left out, which the message (also in the status) gains.
        while self.violations and self.to_status().ByteSize() > MAX_STATUS_BYTES - 2 * len(_MORE.format(given)):
            self.violations = self.violations[:-1]
        if len(self.violations) < given:
            self.message += _MORE.format(given - len(self.violations))
        super().__init__(self.message)

    def to_status(self) -> status_pb2.Status:
        details = [error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=dict(self.metadata))]
        if self.violations:
            details.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in self.violations
                    ]
                )
            )
        if self.retry_delay is not None:
            retry_info = error_details_pb2.RetryInfo()
            retry_info.retry_delay.FromNanoseconds(round(self.retry_delay * 1e9))
            details.append(retry_info)
        packed = []
        for detail in details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)


class InvalidArgument(ServiceError):
    """Bad input. ``violations`` name every wrong field."""

    def __init__(self, violations: Iterable[FieldViolation], message: str | None = None):
        violations = tuple(violations)
        if message is None:
            message = (
                "; ".join(f"{v.field}: {v.description}" for v in violations[:MAX_VIOLATIONS]) or "invalid argument"
            )
        super().__init__(
            grpc.StatusCode.INVALID_ARGUMENT,
            message,
            "INVALID_ARGUMENT",
            {"fields": ",".join(v.field for v in violations)},
            violations,
        )


def invalid_field(field_path: str, description: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation(field_path, description)])


def unauthenticated(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAUTHENTICATED, message, "UNAUTHENTICATED")


def permission_denied(resource: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"the caller may not access {resource}",
        "PERMISSION_DENIED",
        {"resource": resource},
    )


def not_found(resource: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, f"{resource} not found", "NOT_FOUND", {"resource": resource})


def failed_precondition(message: str, reason: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message, reason, metadata)


def unavailable(message: str, reason: str = "UNAVAILABLE") -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message, reason)


def resource_exhausted(message: str, reason: str, retry_delay: float, **metadata: str) -> ServiceError:
    """A quota used up for now: the answer carries ``RetryInfo`` with ``retry_delay`` seconds."""
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, reason, metadata, retry_delay=retry_delay)


def deadline_exceeded(message: str, reason: str = "DEADLINE_EXCEEDED") -> ServiceError:
    return ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, message, reason)
