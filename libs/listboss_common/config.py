"""Configuration from environment variables.

Every service reads its settings once at start-up from ``LISTBOSS_*`` variables;
docs/operations.md lists them. Tests and the local suite pass the same variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from listboss_common.tls import ServerTls

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
# What tokens must name as their issuer (iss) and audience (aud) unless configured otherwise.
DEFAULT_TOKEN_ISSUER = "listboss"
DEFAULT_TOKEN_AUDIENCE = "listboss"


class ConfigError(ValueError):
    pass


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise ConfigError(f"{name} must be set")
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def env_int_between(name: str, default: int, lowest: int, highest: int) -> int:
    """An integer from variable ``name`` within ``lowest``..``highest``; ``default`` when unset."""
    value = env_int(name, default)
    if not lowest <= value <= highest:
        raise ConfigError(f"{name} must be between {lowest} and {highest}, got {value}")
    return value


def nats_servers(urls: str) -> list[str]:
    """The NATS URLs in ``urls``, a comma-separated list (``nats://a:4222,nats://b:4222``): the
    nodes of one cluster, any of which a client may connect to first."""
    servers = [url.strip() for url in urls.split(",")]
    if not servers or any(not url for url in servers):
        raise ConfigError(f"LISTBOSS_NATS_URL must be one URL or a comma-separated list of URLs, got {urls!r}")
    return servers


@dataclass(frozen=True)
class ServiceConfig:
    """What every service needs: where to listen, the bus, and how to verify tokens."""

    grpc_address: str
    # One NATS URL, or the nodes of a cluster separated by commas (any one reachable will do).
    nats_url: str
    # The JWKS file of the public keys tokens are verified with (listboss_common.auth).
    jwks_file: str
    # Seconds to let in-flight work finish on SIGTERM before cancelling it.
    shutdown_grace: float
    # Where Prometheus scrapes /metrics (host:port); empty: no metrics server.
    metrics_address: str = ""
    # The deny list of revoked token ids (jti), one a line; empty: none.
    revoked_tokens_file: str = ""
    token_issuer: str = DEFAULT_TOKEN_ISSUER
    token_audience: str = DEFAULT_TOKEN_AUDIENCE
    # Certificate and key (and client CA) for every port; None: plaintext (listboss_common.tls).
    tls: ServerTls | None = None

    @classmethod
    def from_env(cls, default_grpc_address: str, default_metrics_address: str = "") -> ServiceConfig:
        return cls(
            grpc_address=env("LISTBOSS_GRPC_ADDRESS", default_grpc_address),
            nats_url=",".join(nats_servers(env("LISTBOSS_NATS_URL", DEFAULT_NATS_URL))),
            jwks_file=env("LISTBOSS_JWKS_FILE"),
            shutdown_grace=float(env_int("LISTBOSS_SHUTDOWN_GRACE_SECONDS", 10)),
            metrics_address=os.environ.get("LISTBOSS_METRICS_ADDRESS", default_metrics_address).strip(),
            revoked_tokens_file=os.environ.get("LISTBOSS_REVOKED_TOKENS_FILE", "").strip(),
            token_issuer=env("LISTBOSS_TOKEN_ISSUER", DEFAULT_TOKEN_ISSUER),
            token_audience=env("LISTBOSS_TOKEN_AUDIENCE", DEFAULT_TOKEN_AUDIENCE),
            tls=_server_tls_from_env(),
        )


def _server_tls_from_env() -> ServerTls | None:
    # Imported here: the tls module raises this module's ConfigError.
    from listboss_common.tls import ServerTls

    return ServerTls.from_env()


# Units of durations written like "30d", "12h", "15m", "90s" (or several: "1d12h").
_DURATION_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
# Units of sizes written like "10G", "500M", "64K" (powers of 1024) or plain bytes.
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``<n><unit>`` pairs with units d, h, m, s (``30d``, ``1d12h``);
    ``0`` is zero. Raises ValueError for anything else."""
    text = text.strip().lower()
    if text == "0":
        return 0.0
    total, number = 0, ""
    for char in text:
        if char.isdigit():
            number += char
        elif char in _DURATION_UNITS and number:
            total += int(number) * _DURATION_UNITS[char]
            number = ""
        else:
            raise ValueError(text)
    if number or not text:
        raise ValueError(text)
    return float(total)


def parse_size(text: str) -> int:
    """Bytes in ``text``: a whole number with an optional unit K, M, G or T (powers of
    1024, an optional trailing B or iB: ``10G``, ``500MiB``). Raises ValueError for anything else."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = text.rstrip("KMGT"), text[len(text.rstrip("KMGT")) :]
    if not number.isdigit() or unit not in _SIZE_UNITS:
        raise ValueError(text)
    return int(number) * _SIZE_UNITS[unit]


def env_duration(name: str, default: float) -> float:
    """Seconds from variable ``name`` (written like ``30d``, ``12h``, ``15m``; ``0``: none)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_duration(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a duration such as 30d, 12h or 15m (0 for no limit), got {raw!r}") from None


def env_size(name: str, default: int) -> int:
    """Bytes from variable ``name`` (written like ``10G``, ``500M``, or plain bytes; ``0``: none)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_size(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a size such as 10G, 500M or 1048576 (0 for no limit), got {raw!r}") from None
