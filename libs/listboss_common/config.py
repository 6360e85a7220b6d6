"""Configuration from environment variables.

Every service reads its settings once at start-up from ``LISTBOSS_*`` variables;
docs/operations.md lists them. Tests and the local suite pass the same variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


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


@dataclass(frozen=True)
class ServiceConfig:
    """What every service needs: where to listen, the bus, and the token secret."""

    grpc_address: str
    nats_url: str
    auth_secret: str
    # Seconds to let in-flight work finish on SIGTERM before cancelling it.
    shutdown_grace: float
    # Where Prometheus scrapes /metrics (host:port); empty: no metrics server.
    metrics_address: str = ""

    @classmethod
    def from_env(cls, default_grpc_address: str, default_metrics_address: str = "") -> ServiceConfig:
        return cls(
            grpc_address=env("LISTBOSS_GRPC_ADDRESS", default_grpc_address),
            nats_url=env("LISTBOSS_NATS_URL", DEFAULT_NATS_URL),
            auth_secret=env("LISTBOSS_AUTH_SECRET"),
            shutdown_grace=float(env_int("LISTBOSS_SHUTDOWN_GRACE_SECONDS", 10)),
            metrics_address=os.environ.get("LISTBOSS_METRICS_ADDRESS", default_metrics_address).strip(),
        )
