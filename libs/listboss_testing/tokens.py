"""Tokens the tests authenticate with: every test server verifies against ``AUTH_SECRET``."""

from __future__ import annotations

from listboss_common.auth import issue_token

AUTH_SECRET = "test-secret"


def token(producer: str | None) -> str:
    return issue_token(AUTH_SECRET, producer)


def bearer(producer: str | None) -> tuple[tuple[str, str]]:
    """gRPC metadata authenticating as ``producer`` (None: the internal role)."""
    return (("authorization", f"Bearer {token(producer)}"),)
