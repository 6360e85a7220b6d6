"""Service errors that carry a gRPC code and the rich details of google.rpc.Status.

Handlers raise these; the gRPC interceptor in :mod:`listboss_common.grpc_server`
turns them into a ``google.rpc.Status`` with one ``ErrorInfo`` (and a
``BadRequest`` with field violations for bad input), so every service answers
errors the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "listboss.dev"


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

    def __post_init__(self) -> None:
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
            message = "; ".join(f"{v.field}: {v.description}" for v in violations) or "invalid argument"
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
