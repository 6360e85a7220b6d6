"""Bearer tokens: each grants one producer, or the internal service role.

A token is ``lb1.<subject>.<signature>`` where the subject is ``producer:<id>``
or ``internal`` and the signature is an HMAC-SHA256 of the subject under the
secret every service shares (``LISTBOSS_AUTH_SECRET``). Verifying needs no
database, so any replica of any service can check any token.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import hmac
from dataclasses import dataclass

from listboss_common.errors import not_found, permission_denied, unauthenticated

_PREFIX = "lb1"
INTERNAL_SUBJECT = "internal"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a producer, or an internal service (``producer`` is None)."""

    producer: str | None

    @property
    def internal(self) -> bool:
        return self.producer is None

    def may_access(self, producer: str) -> bool:
        return self.internal or self.producer == producer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, subject: str) -> str:
    return _b64(hmac.new(secret.encode(), subject.encode(), hashlib.sha256).digest())


def issue_token(secret: str, producer: str | None) -> str:
    """A token for ``producer``, or for the internal role when ``producer`` is None."""
    subject = INTERNAL_SUBJECT if producer is None else f"producer:{producer}"
    return f"{_PREFIX}.{_b64(subject.encode())}.{_signature(secret, subject)}"


class TokenVerifier:
    def __init__(self, secret: str):
        if not secret:
            raise ValueError("the token secret must not be empty")
        self._secret = secret

    def verify(self, authorization: str | None) -> Principal:
        """The principal of an ``authorization`` header value; raises UNAUTHENTICATED."""
        if not authorization:
            raise unauthenticated("missing authorization: send 'authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated("authorization must be 'Bearer <token>'")
        try:
            prefix, subject_b64, signature = token.strip().split(".")
            subject = _unb64(subject_b64).decode()
        except ValueError:
            raise unauthenticated("malformed token") from None
        if prefix != _PREFIX or not hmac.compare_digest(signature, _signature(self._secret, subject)):
            raise unauthenticated("invalid token")
        if subject == INTERNAL_SUBJECT:
            return Principal(producer=None)
        kind, _, producer = subject.partition(":")
        if kind != "producer" or not producer:
            raise unauthenticated("invalid token subject")
        return Principal(producer=producer)


current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("listboss_principal")


def require_producer_access(producer: str, resource: str) -> Principal:
    """Checks that the caller may touch ``producer``'s data.

    Another producer's resource answers PERMISSION_DENIED naming only the
    resource the caller asked for, never anything of the other producer's.
    """
    principal = current_principal.get(None)
    if principal is None:
        raise unauthenticated("no authenticated caller")
    if not principal.may_access(producer):
        raise permission_denied(resource)
    return principal


def require_internal(resource: str) -> Principal:
    principal = current_principal.get(None)
    if principal is None:
        raise unauthenticated("no authenticated caller")
    if not principal.internal:
        raise permission_denied(resource)
    return principal


__all__ = [
    "Principal",
    "TokenVerifier",
    "current_principal",
    "issue_token",
    "not_found",
    "require_internal",
    "require_producer_access",
]
