"""Ed25519 signing keys and the JWKS file the services verify tokens with.

The party that issues tokens (``listboss-token``, the local suite, the tests) holds a private
key; every service holds only the public half, published in a JWKS file (RFC 7517: ``{"keys":
[...]}``). Each key is named by its ``kid``, by default the key's RFC 7638 thumbprint, so the
same key always has the same name whether it was read from PEM or from a JWK. A JWKS may hold
several keys: that is how a key rotation works (publish the new key beside the old, sign with
the new, later drop the old).

A JWKS that could weaken verification is refused as a whole (:class:`~listboss_common.config.
ConfigError`): empty, holding a private part (``d``), a symmetric (``oct``) key, or any key
other than OKP/Ed25519.

:class:`WatchedFile` re-reads a file when it changes (checking its identity at most every few
seconds), so the JWKS and the revocation list take effect without restarting anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from listboss_common.config import ConfigError

log = structlog.get_logger("listboss.keys")

# Seconds between two looks at a watched file's identity (inode, size, modification time).
DEFAULT_CHECK_INTERVAL = 2.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def thumbprint(key: Ed25519PublicKey) -> str:
    """The key's RFC 7638 JWK thumbprint (SHA-256), the default ``kid``."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64(_raw_public(key))}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(canonical).digest())


def public_jwk(key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    """The public JWK of ``key``, as a JWKS publishes it."""
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(_raw_public(key)), "kid": kid, "alg": "EdDSA", "use": "sig"}


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key and the ``kid`` its tokens name in their header."""

    private: Ed25519PrivateKey
    kid: str

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        return cls(private, kid or thumbprint(private.public_key()))

    @classmethod
    def load(cls, path: Path, kid: str | None = None) -> SigningKey:
        """Reads a PEM (PKCS #8) or JWK private key; ``kid`` overrides the file's (a JWK's
        ``kid``, else the thumbprint). Raises ConfigError naming the file."""
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ConfigError(f"cannot read the signing key {path}: {error.strerror}") from None
        if data.lstrip().startswith(b"{"):
            private, file_kid = _private_from_jwk(path, data)
        else:
            try:
                loaded = serialization.load_pem_private_key(data, password=None)
            except (ValueError, TypeError):
                raise ConfigError(f"{path} holds no unencrypted PEM or JWK private key") from None
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ConfigError(f"{path} is not an Ed25519 key")
            private, file_kid = loaded, None
        return cls(private, kid or file_kid or thumbprint(private.public_key()))

    def public_jwk(self) -> dict[str, str]:
        return public_jwk(self.private.public_key(), self.kid)

    def pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _private_from_jwk(path: Path, data: bytes) -> tuple[Ed25519PrivateKey, str | None]:
    try:
        jwk = json.loads(data)
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON") from None
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" not in jwk:
        raise ConfigError(f"{path} is not an Ed25519 private JWK (kty OKP, crv Ed25519, with d)")
    try:
        private = Ed25519PrivateKey.from_private_bytes(_unb64(str(jwk["d"])))
    except ValueError:
        raise ConfigError(f"{path}: the private key part d is not a valid Ed25519 key") from None
    kid = jwk.get("kid")
    return private, str(kid) if kid else None


def parse_jwks(text: str, source: str) -> dict[str, Ed25519PublicKey]:
    """The public keys of a JWKS document, by ``kid``; ConfigError for anything weak or unclear."""
    if not text.strip():
        raise ConfigError(f"{source} is empty: it must hold the Ed25519 public keys tokens are verified with")
    try:
        document = json.loads(text)
    except ValueError:
        raise ConfigError(f"{source} is not valid JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f'{source} holds no keys: expected {{"keys": [...]}} with at least one Ed25519 public key')
    found: dict[str, Ed25519PublicKey] = {}
    for position, jwk in enumerate(keys):
        where = f"{source}: key {position + 1}"
        if not isinstance(jwk, dict):
            raise ConfigError(f"{where} is not a JSON object")
        if jwk.get("kty") == "oct":
            raise ConfigError(f"{where} is a symmetric (oct) key; only Ed25519 public keys are accepted")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ConfigError(
                f"{where} has kty {jwk.get('kty')!r} crv {jwk.get('crv')!r}; only OKP Ed25519 is accepted"
            )
        if "d" in jwk:
            raise ConfigError(f"{where} holds a private key part (d): publish only public keys")
        if jwk.get("alg", "EdDSA") != "EdDSA":
            raise ConfigError(f"{where} names alg {jwk.get('alg')!r}; only EdDSA is accepted")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ConfigError(f"{where} has no kid")
        if kid in found:
            raise ConfigError(f"{where}: kid {kid!r} appears twice")
        try:
            found[kid] = Ed25519PublicKey.from_public_bytes(_unb64(str(jwk.get("x", ""))))
        except (ValueError, TypeError):
            raise ConfigError(f"{where} (kid {kid!r}): x is not an Ed25519 public key") from None
    return found


def write_jwks(path: Path, keys: Iterable[SigningKey]) -> None:
    """Publishes the public halves of ``keys`` as the JWKS at ``path`` (replacing it at once)."""
    write_replacing(path, json.dumps({"keys": [key.public_jwk() for key in keys]}, indent=2) + "\n", mode=0o644)


def add_to_jwks(path: Path, jwk: Mapping[str, str]) -> int:
    """Adds ``jwk`` to the JWKS at ``path`` (created when missing), replacing a key of the same
    kid; returns how many keys the file then holds. The file is replaced at once."""
    keys: list[Any] = []
    if path.exists():
        parse_jwks(path.read_text(), str(path))  # refuse to extend a file the services would refuse
        keys = json.loads(path.read_text())["keys"]
    keys = [key for key in keys if key.get("kid") != jwk["kid"]] + [dict(jwk)]
    write_replacing(path, json.dumps({"keys": keys}, indent=2) + "\n", mode=0o644)
    return len(keys)


def remove_from_jwks(path: Path, kid: str) -> int:
    """Drops the key ``kid`` from the JWKS at ``path``; returns how many keys remain. Refuses to
    drop the last key (the services would refuse the file)."""
    keys = json.loads(path.read_text()).get("keys", []) if path.exists() else []
    remaining = [key for key in keys if key.get("kid") != kid]
    if len(remaining) == len(keys):
        raise ConfigError(f"{path} has no key {kid!r}")
    if not remaining:
        raise ConfigError(f"{kid!r} is the last key of {path}: add the new key first")
    write_replacing(path, json.dumps({"keys": remaining}, indent=2) + "\n", mode=0o644)
    return len(remaining)


def write_replacing(path: Path, content: str | bytes, *, mode: int) -> None:
    """Writes ``path`` with permissions ``mode`` through a temporary file and a rename, so a
    service re-reading it never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content.encode() if isinstance(content, str) else content)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


T = TypeVar("T")


class WatchedFile(Generic[T]):
    """What ``parse`` makes of a file, re-read when the file changes.

    The first read happens at construction and raises ConfigError when the file is missing
    or ``parse`` refuses it. Afterwards, :meth:`current` looks at the file's identity at most
    every ``check_interval`` seconds; a changed file is parsed again. A change that cannot be
    read or is refused keeps the last good content (and is logged): a broken edit must not
    lock every caller out, nor let anyone in.
    """

    def __init__(
        self,
        path: Path,
        parse: Callable[[str, str], T],
        *,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        self._parse = parse
        self._check_interval = check_interval
        self._clock = clock
        try:
            identity = self._identity()
            self._value = parse(self.path.read_text(), str(self.path))
        except FileNotFoundError:
            raise ConfigError(f"{self.path} does not exist") from None
        except OSError as error:
            raise ConfigError(f"cannot read {self.path}: {error.strerror}") from None
        self._seen = identity
        self._checked = clock()
        self._failed: str | None = None  # the last refused change, logged once

    def _identity(self) -> tuple[int, int, int]:
        stat = self.path.stat()
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def current(self) -> T:
        now = self._clock()
        if now - self._checked >= self._check_interval:
            self._checked = now
            self._reload_if_changed()
        return self._value

    def _reload_if_changed(self) -> None:
        try:
            identity = self._identity()
            if identity == self._seen:
                return
            value = self._parse(self.path.read_text(), str(self.path))
        except (OSError, ConfigError) as error:
            if self._failed != str(error):
                log.error("kept the last good content of a changed file", path=str(self.path), reason=str(error))
            self._failed = str(error)
            return
        self._value, self._seen, self._failed = value, identity, None
        log.info("re-read a changed file", path=str(self.path))
