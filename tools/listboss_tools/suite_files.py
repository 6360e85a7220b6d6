"""The local suite's data folder (``var/`` by default): the token secret, the producers'
webhook tokens and ``suite.json``, all private to their owner. Read by the suite
(:mod:`listboss_tools.suite`), the token CLI and the demo."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT / "var"
SECRET_FILE_NAME = "auth-secret"
WEBHOOK_TOKENS_FILE_NAME = "webhook-tokens.json"
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


def read_or_create_secret(path: Path) -> str:
    """The HMAC secret kept in ``path``, created on first use.

    Persisting it keeps issued tokens valid across restarts of the suite.
    """
    if path.exists():
        secret = path.read_text().strip()
        if secret:
            return secret
    secret = secrets.token_urlsafe(32)
    write_private(path, secret + "\n")
    return secret


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
