"""The producers' webhook tokens ("hottok"): configuration and constant-time checking.

The platform sends each producer's secret token in the ``X-HOTMART-HOTTOK`` header of every
webhook. Tokens are configured at start-up from either or both of:

* ``LISTBOSS_WEBHOOK_TOKENS_FILE``: a JSON object ``{"producer": "hottok", ...}``;
* ``LISTBOSS_WEBHOOK_TOKENS``: ``producer=hottok,producer2=hottok2`` (whitespace around
  items is ignored); it wins over the file for a producer named in both.

A token is a secret: it never appears in a log line, an error message or a ``repr``.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path

from listboss_common.config import ConfigError
from listboss_ingest.normalize import PRODUCER_PATTERN

TOKENS_FILE_VARIABLE = "LISTBOSS_WEBHOOK_TOKENS_FILE"
TOKENS_VARIABLE = "LISTBOSS_WEBHOOK_TOKENS"

# Compared against when the producer is unknown, so that an unknown producer costs the
# same as a wrong token and cannot be told apart by timing.
_NO_TOKEN = b"\0" * 32


class WebhookTokens:
    """The producers' tokens; :meth:`verify` answers in constant time for a given length."""

    def __init__(self, tokens: Mapping[str, str]):
        for producer, token in tokens.items():
            if not isinstance(producer, str) or PRODUCER_PATTERN.fullmatch(producer) is None:
                raise ConfigError(f"webhook tokens: {producer!r} is not a valid producer id")
            if not isinstance(token, str) or not token.strip():
                raise ConfigError(f"webhook tokens: the token of producer {producer!r} must be a non-empty string")
        self._tokens = {producer: token.strip().encode() for producer, token in tokens.items()}

    def __repr__(self) -> str:  # never the tokens themselves
        return f"WebhookTokens(producers={sorted(self._tokens)})"

    @property
    def producers(self) -> list[str]:
        return sorted(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def verify(self, producer: str, presented: str | None) -> bool:
        """True when ``presented`` is ``producer``'s token. False for a missing or wrong token
        and for an unknown producer alike."""
        expected = self._tokens.get(producer)
        given = (presented or "").strip().encode("utf-8", "surrogateescape")
        matches = hmac.compare_digest(given, expected if expected is not None else _NO_TOKEN)
        return matches and expected is not None and bool(given)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WebhookTokens:
        environ = os.environ if environ is None else environ
        tokens: dict[str, str] = {}
        path = environ.get(TOKENS_FILE_VARIABLE, "").strip()
        if path:
            tokens.update(_read_file(Path(path)))
        tokens.update(parse_tokens(environ.get(TOKENS_VARIABLE, "")))
        return cls(tokens)


def _read_file(path: Path) -> dict[str, str]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{TOKENS_FILE_VARIABLE}: cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        # The message of a JSON error may quote the file: keep the position only.
        raise ConfigError(
            f"{TOKENS_FILE_VARIABLE}: {path} is not valid JSON (line {getattr(error, 'lineno', '?')})"
        ) from None
    if not isinstance(document, dict):
        raise ConfigError(f'{TOKENS_FILE_VARIABLE}: {path} must hold a JSON object {{"producer": "token"}}')
    return document


def parse_tokens(text: str) -> dict[str, str]:
    """``"alice=t1, bob=t2"`` -> ``{"alice": "t1", "bob": "t2"}``; raises ConfigError naming the item."""
    tokens: dict[str, str] = {}
    for number, item in enumerate(text.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        producer, equals, token = item.partition("=")
        if not equals or not producer.strip() or not token.strip():
            raise ConfigError(f"{TOKENS_VARIABLE}: item {number} must be producer=token")
        tokens[producer.strip()] = token.strip()
    return tokens
