"""``listboss-token`` prints tokens the services accept.

The CLI runs as a subprocess, as a developer runs it; its token is checked with
the same TokenVerifier the services use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from listboss_common.auth import Principal, TokenVerifier
from listboss_common.errors import ServiceError

SECRET = "test-secret-for-the-token-cli"


def _command() -> list[str]:
    """The installed console script; the module through this Python when it is missing."""
    script = Path(sys.executable).parent / "listboss-token"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "listboss_tools.token"]


def run_token_cli(*args: str, env_secret: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LISTBOSS_AUTH_SECRET"}
    if env_secret is not None:
        env["LISTBOSS_AUTH_SECRET"] = env_secret
    return subprocess.run([*_command(), *args], env=env, capture_output=True, text=True, timeout=60)


def printed_token(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # the token alone, so $(listboss-token ...) works
    return lines[0]


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth-secret"
    path.write_text(SECRET + "\n")
    return path


def test_producer_token_from_secret_file(secret_file: Path) -> None:
    token = printed_token(run_token_cli("--producer", "alice", "--secret-file", str(secret_file)))

    assert TokenVerifier(SECRET).verify(f"Bearer {token}") == Principal(producer="alice")


def test_producer_resource_name_is_accepted(secret_file: Path) -> None:
    token = printed_token(run_token_cli("--producer", "producers/alice", "--secret-file", str(secret_file)))

    assert TokenVerifier(SECRET).verify(f"Bearer {token}") == Principal(producer="alice")


def test_internal_token_from_environment() -> None:
    token = printed_token(run_token_cli("--internal", env_secret=SECRET))

    principal = TokenVerifier(SECRET).verify(f"Bearer {token}")
    assert principal.internal


def test_secret_file_wins_over_environment(secret_file: Path) -> None:
    token = printed_token(
        run_token_cli("--producer", "bob", "--secret-file", str(secret_file), env_secret="another-secret")
    )

    assert TokenVerifier(SECRET).verify(f"Bearer {token}") == Principal(producer="bob")


def test_token_does_not_verify_under_another_secret(secret_file: Path) -> None:
    token = printed_token(run_token_cli("--producer", "alice", "--secret-file", str(secret_file)))

    with pytest.raises(ServiceError):
        TokenVerifier("a-different-secret").verify(f"Bearer {token}")


def test_missing_secret_file_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"

    result = run_token_cli("--producer", "alice", "--secret-file", str(missing))

    assert result.returncode != 0
    assert result.stdout == ""
    assert str(missing) in result.stderr


@pytest.mark.parametrize("args", [(), ("--producer", "alice", "--internal"), ("--producer", "")])
def test_bad_arguments_are_rejected(args: tuple[str, ...]) -> None:
    result = run_token_cli(*args, env_secret=SECRET)

    assert result.returncode != 0
    assert result.stdout == ""
