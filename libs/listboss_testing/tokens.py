"""Tokens the tests authenticate with.

One Ed25519 signing key per test session, made on first use in a temporary folder (removed
when the session ends) beside the JWKS file holding its public half. Every test server
(:mod:`listboss_testing.grpc_servers`) and every service process a test starts
(``LISTBOSS_JWKS_FILE``: :func:`auth_env`) verifies against that file, so :func:`token` and
:func:`bearer` are accepted everywhere, as write tokens unless asked for ``scope="read"``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from listboss_common.auth import WRITE, TokenVerifier, issue_token
from listboss_common.keys import SigningKey, write_jwks


@cache
def _session_keys() -> tuple[SigningKey, Path]:
    folder = Path(tempfile.mkdtemp(prefix="listboss-test-keys-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    key = SigningKey.generate()
    jwks = folder / "jwks.json"
    write_jwks(jwks, [key])
    return key, jwks


def signing_key() -> SigningKey:
    """The session's private key (what an issuer holds)."""
    return _session_keys()[0]


def jwks_file() -> Path:
    """The session's JWKS file: the public key every test server verifies with."""
    return _session_keys()[1]


def auth_env() -> dict[str, str]:
    """The environment a service process needs to accept :func:`token`'s tokens."""
    return {"LISTBOSS_JWKS_FILE": str(jwks_file())}


def token_verifier() -> TokenVerifier:
    return TokenVerifier.from_files(jwks_file())


def token(producer: str | None, scope: str = WRITE) -> str:
    """A token for ``producer`` (None: the internal role) with ``scope``, valid for an hour."""
    return issue_token(signing_key(), producer, scope=scope)


def bearer(producer: str | None, scope: str = WRITE) -> tuple[tuple[str, str]]:
    """gRPC metadata authenticating as ``producer`` (None: the internal role)."""
    return (("authorization", f"Bearer {token(producer, scope)}"),)
