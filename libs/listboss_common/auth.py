"""Bearer tokens: signed, expiring JWTs, each granting one producer or the internal role, with a scope.

A token is a JWT signed with EdDSA (Ed25519). Its claims:

- ``sub``: ``producer:<id>`` or ``internal`` (every producer; internal-only methods);
- ``scope``: ``read`` (list, count, export, get, watch: what the email tool needs) or ``write``
  (everything a producer may do, reads included);
- ``exp`` (required), ``iat``, ``nbf`` (honoured when present), ``iss`` and ``aud`` (checked
  against ``LISTBOSS_TOKEN_ISSUER`` / ``LISTBOSS_TOKEN_AUDIENCE``), and a random ``jti`` by
  which a token can be revoked before it expires.

The services hold public keys only (a JWKS file, :mod:`listboss_common.keys`) and pick the key
by the token header's ``kid``, so two keys verify during a rotation. The algorithm is fixed by
the verifier, never taken from the token: ``alg: none`` or an HMAC made with a public key as
the secret are refused. Verifying needs no database, so any replica of any service checks any
token; the JWKS file and the revocation list are re-read when they change.

Each RPC needs a scope (a table per service, given with its ``ServiceBinding``); the gRPC
interceptor checks it before the handler runs. Handlers then check the producer
(:func:`require_producer_access`) or the internal role (:func:`require_internal`).
"""

from __future__ import annotations

import contextvars
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from listboss_common.config import DEFAULT_TOKEN_AUDIENCE, DEFAULT_TOKEN_ISSUER, ConfigError
from listboss_common.errors import ServiceError, not_found, permission_denied, unauthenticated
from listboss_common.keys import DEFAULT_CHECK_INTERVAL, SigningKey, WatchedFile, parse_jwks

INTERNAL_SUBJECT = "internal"
PRODUCER_SUBJECT_PREFIX = "producer:"
ALGORITHM = "EdDSA"

READ = "read"
WRITE = "write"
SCOPES = (READ, WRITE)

DEFAULT_ISSUER = DEFAULT_TOKEN_ISSUER
DEFAULT_AUDIENCE = DEFAULT_TOKEN_AUDIENCE
# Seconds a clock may be off between the issuer and a service.
LEEWAY_SECONDS = 30
# Verified tokens a verifier remembers (by their text) until they expire: clients reuse tokens.
VERIFIED_TOKENS_CACHED = 1024
# Tokens are short-lived unless asked otherwise: a leaked one is useful for an hour at most.
DEFAULT_TTL_SECONDS = 3600


@dataclass(frozen=True)
class Principal:
    """Who is calling: a producer, or an internal service (``producer`` is None), and what the
    token lets it do (``scope``); ``token_id`` is the token's ``jti``."""

    producer: str | None
    scope: str = WRITE
    token_id: str = ""

    @property
    def internal(self) -> bool:
        return self.producer is None

    def may_access(self, producer: str) -> bool:
        return self.internal or self.producer == producer

    def allows(self, scope: str) -> bool:
        """A write token may do what a read token may."""
        return self.scope == WRITE or self.scope == scope


def issue_token(
    key: SigningKey,
    producer: str | None,
    *,
    scope: str = WRITE,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
    not_before: float | None = None,
) -> str:
    """A token for ``producer`` (None: the internal role), valid for ``ttl_seconds`` from ``now``."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": INTERNAL_SUBJECT if producer is None else PRODUCER_SUBJECT_PREFIX + producer,
        "scope": scope,
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "exp": issued + int(ttl_seconds),
        "jti": secrets.token_urlsafe(16),
    }
    if not_before is not None:
        claims["nbf"] = int(not_before)
    return jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})


def parse_revoked(text: str, source: str) -> frozenset[str]:
    """The revoked ``jti``s of a deny list: one a line; blank lines and ``#`` comments ignored."""
    return frozenset(line.split("#", 1)[0].strip() for line in text.splitlines()) - {""}


# What PyJWT's refusals mean to a caller, without naming the library's classes.
_REFUSALS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim (exp, iat, iss, aud, sub, jti)"),
    (jwt.InvalidSignatureError, "token signature does not verify"),
    (jwt.InvalidAlgorithmError, "token algorithm not accepted (EdDSA only)"),
)


class TokenVerifier:
    """Verifies bearer tokens against the public keys of a JWKS file, and a revocation list."""

    def __init__(
        self,
        keys: WatchedFile[dict[str, Ed25519PublicKey]],
        *,
        revoked: WatchedFile[frozenset[str]] | None = None,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        leeway: float = LEEWAY_SECONDS,
        verified_cache_size: int = VERIFIED_TOKENS_CACHED,
    ):
        self._keys = keys
        self._revoked = revoked
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        # Tokens verified lately, by their exact text: (principal, exp, kid, the key that verified it).
        self._verified: OrderedDict[str, tuple[Principal, float, str, Ed25519PublicKey]] = OrderedDict()
        self._verified_size = verified_cache_size

    @classmethod
    def from_files(
        cls,
        jwks_file: Path | str,
        revoked_file: Path | str | None = None,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
    ) -> TokenVerifier:
        """Reads both files now: ConfigError when the JWKS is missing, empty or holds anything but
        Ed25519 public keys, or when a revocation list is named but cannot be read."""
        if not str(jwks_file):
            raise ConfigError("LISTBOSS_JWKS_FILE must be set: the public keys tokens are verified with")
        keys = WatchedFile(Path(jwks_file), parse_jwks, check_interval=check_interval)
        revoked = None
        if revoked_file:
            revoked = WatchedFile(Path(revoked_file), parse_revoked, check_interval=check_interval)
        return cls(keys, revoked=revoked, issuer=issuer, audience=audience)

    def verify(self, authorization: str | None) -> Principal:
        """The principal of an ``authorization`` header value; raises UNAUTHENTICATED."""
        if not authorization:
            raise unauthenticated("missing authorization: send 'authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated("authorization must be 'Bearer <token>'")
        remembered = self._remembered(token)
        if remembered is not None:
            return remembered
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise unauthenticated("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise unauthenticated("token algorithm not accepted (EdDSA only)")
        key = self._keys.current().get(str(header.get("kid", "")))
        if key is None:
            raise unauthenticated("token signed by an unknown key (kid)")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.InvalidTokenError as error:
            raise unauthenticated(_refusal(error)) from None
        if self._revoked is not None and claims["jti"] in self._revoked.current():
            raise unauthenticated("token revoked")
        principal = _principal(claims)
        self._remember(token, principal, claims["exp"], str(header.get("kid", "")), key)
        return principal

    def _remembered(self, token: str) -> Principal | None:
        """The principal of a token verified before, while it is still valid: unexpired (with
        the leeway), its key still the JWKS's, and not revoked since. A client that reuses one
        token for many calls pays the signature check once; anything else verifies afresh."""
        entry = self._verified.get(token)
        if entry is None:
            return None
        principal, expires, kid, key = entry
        revoked = self._revoked is not None and principal.token_id in self._revoked.current()
        if time.time() > expires + self._leeway or self._keys.current().get(kid) is not key or revoked:
            del self._verified[token]
            return None  # verified again: the refusal names why
        self._verified.move_to_end(token)
        return principal

    def _remember(self, token: str, principal: Principal, expires: object, kid: str, key: Ed25519PublicKey) -> None:
        if not isinstance(expires, int | float) or self._verified_size <= 0:
            return
        self._verified[token] = (principal, float(expires), kid, key)
        if len(self._verified) > self._verified_size:
            self._verified.popitem(last=False)  # the least recently used


def _refusal(error: jwt.InvalidTokenError) -> str:
    for kind, message in _REFUSALS:
        if isinstance(error, kind):
            return message
    return "invalid token"


def _principal(claims: Mapping[str, object]) -> Principal:
    scope = claims.get("scope")
    if scope not in SCOPES:
        raise unauthenticated("token scope must be 'read' or 'write'")
    subject = str(claims["sub"])
    token_id = str(claims["jti"])
    if subject == INTERNAL_SUBJECT:
        return Principal(None, str(scope), token_id)
    producer = subject.removeprefix(PRODUCER_SUBJECT_PREFIX)
    if not subject.startswith(PRODUCER_SUBJECT_PREFIX) or not producer:
        raise unauthenticated("invalid token subject")
    return Principal(producer, str(scope), token_id)


current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("listboss_principal")


def require_scope(principal: Principal, method: str, scopes: Mapping[str, str]) -> None:
    """Checks that ``principal``'s token may call ``method`` (``/package.Service/Method``) under
    ``scopes`` (method path -> scope). A method the table does not name is refused: a new RPC
    is closed until someone decides what it needs."""
    needed = scopes.get(method)
    if needed is None:
        raise ServiceError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{method} is open to no token scope",
            "METHOD_WITHOUT_SCOPE",
            {"method": method},
        )
    if not principal.allows(needed):
        raise ServiceError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{method} needs a token with scope '{needed}'; this token has scope '{principal.scope}'",
            "INSUFFICIENT_SCOPE",
            {"method": method, "required_scope": needed},
        )


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
    "READ",
    "SCOPES",
    "WRITE",
    "Principal",
    "TokenVerifier",
    "current_principal",
    "issue_token",
    "not_found",
    "require_internal",
    "require_producer_access",
    "require_scope",
]
