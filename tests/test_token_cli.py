"""``listboss-token`` issues tokens the services accept, and makes and retires signing keys.

The CLI runs as a subprocess, as a developer runs it; its tokens are checked with the same
TokenVerifier the services use, against the JWKS file ``keygen`` wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from listboss_common.auth import READ, WRITE, Principal, TokenVerifier
from listboss_common.errors import ServiceError
from listboss_common.keys import SigningKey


def _command() -> list[str]:
    """The installed console script; the module through this Python when it is missing."""
    script = Path(sys.executable).parent / "listboss-token"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "listboss_tools.token"]


def run_token_cli(*args: str, env_key_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTBOSS_TOKEN_")}
    if env_key_file is not None:
        env["LISTBOSS_TOKEN_KEY_FILE"] = str(env_key_file)
    return subprocess.run([*_command(), *args], env=env, capture_output=True, text=True, timeout=60)


def printed(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout  # one line, so $(listboss-token ...) works
    return lines[0]


def keygen(keys: Path, *extra: str) -> Path:
    """Runs ``keygen`` into ``keys``; returns the private key file it wrote."""
    before = set(keys.glob("*.pem"))
    printed(run_token_cli("keygen", "--out-dir", str(keys), *extra))
    (written,) = set(keys.glob("*.pem")) - before
    return written


def verify(keys: Path, token: str) -> Principal:
    return TokenVerifier.from_files(keys / "jwks.json").verify(f"Bearer {token}")


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def key_file(keys: Path) -> Path:
    return keygen(keys)


def test_keygen_writes_a_private_key_and_publishes_only_its_public_half(keys: Path, key_file: Path) -> None:
    assert key_file.stat().st_mode & 0o077 == 0
    published = json.loads((keys / "jwks.json").read_text())["keys"]
    assert [jwk["kid"] for jwk in published] == [key_file.stem]
    assert published[0]["kty"] == "OKP" and published[0]["crv"] == "Ed25519"
    assert "d" not in published[0]


def test_producer_token_from_key_file(keys: Path, key_file: Path) -> None:
    token = printed(run_token_cli("--producer", "alice", "--key-file", str(key_file)))

    principal = verify(keys, token)
    assert (principal.producer, principal.scope) == ("alice", WRITE)


def test_producer_resource_name_is_accepted(keys: Path, key_file: Path) -> None:
    token = printed(run_token_cli("--producer", "producers/alice", "--key-file", str(key_file)))

    assert verify(keys, token).producer == "alice"


def test_read_scope_and_ttl(keys: Path, key_file: Path) -> None:
    token = printed(
        run_token_cli("--producer", "alice", "--scope", "read", "--ttl", "15m", "--key-file", str(key_file))
    )

    assert verify(keys, token).scope == READ
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 15 * 60


def test_tokens_are_short_lived_by_default(keys: Path, key_file: Path) -> None:
    for who in (("--producer", "alice"), ("--internal",)):
        claims = jwt.decode(
            printed(run_token_cli(*who, "--key-file", str(key_file))), options={"verify_signature": False}
        )
        assert claims["exp"] - claims["iat"] == 3600, who


def test_every_token_has_its_own_id(keys: Path, key_file: Path) -> None:
    tokens = [printed(run_token_cli("--producer", "alice", "--key-file", str(key_file))) for _ in range(2)]

    assert verify(keys, tokens[0]).token_id != verify(keys, tokens[1]).token_id


def test_internal_token_from_environment(keys: Path, key_file: Path) -> None:
    token = printed(run_token_cli("--internal", env_key_file=key_file))

    assert verify(keys, token).internal


def test_key_file_wins_over_environment(keys: Path, key_file: Path, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other")

    token = printed(run_token_cli("--producer", "bob", "--key-file", str(key_file), env_key_file=other))

    assert verify(keys, token).producer == "bob"


def test_jwk_private_key_file_is_accepted(keys: Path, tmp_path: Path) -> None:
    key = SigningKey.generate("jwk-key")
    jwk_file = tmp_path / "key.jwk"
    jwk = {**key.public_jwk(), "d": jwt.utils.base64url_encode(key.private.private_bytes_raw()).decode()}
    jwk_file.write_text(json.dumps(jwk))
    (keys / "jwks.json").parent.mkdir(parents=True)
    (keys / "jwks.json").write_text(json.dumps({"keys": [key.public_jwk()]}))

    token = printed(run_token_cli("--producer", "alice", "--key-file", str(jwk_file)))

    assert jwt.get_unverified_header(token)["kid"] == "jwk-key"
    assert verify(keys, token).producer == "alice"


def test_token_of_a_key_not_in_the_jwks_does_not_verify(keys: Path, key_file: Path, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")

    token = printed(run_token_cli("--producer", "alice", "--key-file", str(stranger)))

    with pytest.raises(ServiceError, match="unknown key"):
        verify(keys, token)


def test_rotation_with_keygen_and_retire(keys: Path, key_file: Path) -> None:
    old_token = printed(run_token_cli("--producer", "alice", "--key-file", str(key_file)))
    new_key = keygen(keys)
    new_token = printed(run_token_cli("--producer", "alice", "--key-file", str(new_key)))

    assert verify(keys, old_token).producer == verify(keys, new_token).producer == "alice"

    printed(run_token_cli("retire", "--jwks", str(keys / "jwks.json"), "--kid", key_file.stem))

    assert verify(keys, new_token).producer == "alice"
    with pytest.raises(ServiceError, match="unknown key"):
        verify(keys, old_token)
    last = run_token_cli("retire", "--jwks", str(keys / "jwks.json"), "--kid", new_key.stem)
    assert last.returncode != 0
    assert "last key" in last.stderr


def test_missing_key_file_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key.pem"

    result = run_token_cli("--producer", "alice", "--key-file", str(missing))

    assert result.returncode != 0
    assert result.stdout == ""
    assert str(missing) in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--producer", "alice", "--internal"),
        ("--producer", ""),
        ("--producer", "alice", "--scope", "admin"),
        ("--producer", "alice", "--ttl", "0"),
        ("--producer", "alice", "--ttl", "1y"),
    ],
)
def test_bad_arguments_are_rejected(args: tuple[str, ...], key_file: Path) -> None:
    result = run_token_cli(*args, env_key_file=key_file)

    assert result.returncode != 0
    assert result.stdout == ""
