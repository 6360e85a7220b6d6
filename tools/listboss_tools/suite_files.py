"""The local suite's data folder (``var/`` by default): the token signing key (``signing-key.pem``,
private) and the JWKS the services verify with (``jwks.json``), the producers'
webhook tokens, the data key that seals persons on the bus (``data-key``) and ``suite.json``, all private to their owner. Read by the suite
(:mod:`listboss_tools.suite`), the token CLI and the demo."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from listboss_common.auth import issue_token
from listboss_common.config import ConfigError
from listboss_common.keys import SigningKey, add_to_jwks, parse_jwks, write_replacing
from listboss_common.personal_data import new_data_key

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT / "var"
SIGNING_KEY_FILE_NAME = "signing-key.pem"
JWKS_FILE_NAME = "jwks.json"
WEBHOOK_TOKENS_FILE_NAME = "webhook-tokens.json"
DATA_KEY_FILE_NAME = "data-key"
SUITE_FILE_NAME = "suite.json"
# The producer whose tokens the suite prints and the demo uses.
DEMO_PRODUCER = "demo"


def write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` readable by its owner only, replacing the file at once (a
    reader never sees half of it): what it holds lets anyone act as a producer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def read_or_create_signing_key(key_file: Path, jwks_file: Path) -> SigningKey:
    """The Ed25519 key kept in ``key_file`` (PEM), created on first use, with its public JWK
    added to ``jwks_file`` when missing there (other keys in that file stay: a rotation).

    Persisting it keeps issued tokens valid across restarts of the suite, until they expire.
    """
    if key_file.exists():
        key = SigningKey.load(key_file)
    else:
        key = SigningKey.generate()
        write_replacing(key_file, key.pem(), mode=0o600)
    published = parse_jwks(jwks_file.read_text(), str(jwks_file)) if jwks_file.exists() else {}
    if key.kid not in published:
        add_to_jwks(jwks_file, key.public_jwk())
    return key


def read_or_create_data_key(path: Path) -> str:
    """The ``LISTBOSS_DATA_KEY`` kept in ``path``, created on first use.

    Persisting it keeps the persons already sealed in the suite's JetStream readable
    across restarts: a new key would make every one of them read as erased."""
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
    key = new_data_key()
    write_private(path, key + "\n")
    return key


def fresh_suite_token(data_dir: Path, producer: str | None) -> str | None:
    """A new write token for ``producer`` (None: the internal role) signed with the suite's key in
    ``data_dir``; None when that key cannot be read. The tokens in ``suite.json`` expire within
    the hour: the tools that read the file make a fresh one this way when they can."""
    try:
        key = SigningKey.load(data_dir / SIGNING_KEY_FILE_NAME)
    except ConfigError:
        return None
    return issue_token(key, producer)


def read_or_create_webhook_tokens(path: Path, producer: str) -> dict[str, str]:
    """The producers' webhook tokens kept in ``path`` (JSON), with a random one for
    ``producer`` added on first use. Ingest reads the file at start."""
    tokens: dict[str, str] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text())
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            tokens = {str(k): str(v) for k, v in loaded.items()}
    if tokens.get(producer):
        return tokens
    tokens[producer] = secrets.token_urlsafe(24)
    write_private(path, json.dumps(tokens, indent=2) + "\n")
    return tokens
