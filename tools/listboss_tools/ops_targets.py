"""Where ``listboss-ops`` finds the running suite: NATS, each service's gRPC address, the
services' databases and a bearer token.

An option given on the command line wins; then the local suite's ``suite.json`` when
``--suite-file`` names it (``./dev run`` writes ``var/suite.json``: NATS, the gRPC
addresses and an internal token, not the databases); then the environment; then the
defaults of a single machine. Databases are read, never written: an SQLite file that does
not exist is an error here, not a new empty database.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from listboss_common.tls import ClientTls
from listboss_tools.suite_files import fresh_suite_token

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
SERVICES = ("ingest", "segmentation", "contacts")
DEFAULT_ADDRESSES = {"ingest": "127.0.0.1:50051", "segmentation": "127.0.0.1:50052", "contacts": "127.0.0.1:50053"}
# LISTBOSS_GRPC_ADDRESS is each service's own listening address; an operator's shell names all three.
ADDRESS_ENV = {name: f"LISTBOSS_{name.upper()}_GRPC_ADDRESS" for name in SERVICES}
DATABASE_ENV = {name: f"LISTBOSS_{name.upper()}_DATABASE_URL" for name in ("segmentation", "contacts")}
TOKEN_ENV = "LISTBOSS_TOKEN"
DATABASE_CONNECT_TIMEOUT = 5


class TargetError(Exception):
    """A target that cannot be used as given (a suite file that does not read, a bad URL)."""


@dataclass
class Targets:
    nats_url: str
    addresses: dict[str, str]
    databases: dict[str, str | None] = field(default_factory=dict)
    token: str | None = None
    # How to reach TLS gRPC ports (--cacert, --cert, --key or LISTBOSS_TLS_*); None: plaintext.
    tls: ClientTls | None = None


def read_suite_file(path: Path) -> dict:
    try:
        found = json.loads(path.read_text())
    except OSError as error:
        raise TargetError(f"cannot read the suite file {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise TargetError(f"the suite file {path} is not JSON: {error}") from None
    if not isinstance(found, dict):
        raise TargetError(f"the suite file {path} holds no object")
    return found


def resolve(
    *,
    nats_url: str | None = None,
    suite_file: Path | None = None,
    addresses: dict[str, str | None] | None = None,
    databases: dict[str, str | None] | None = None,
    token: str | None = None,
    environ: dict[str, str] | None = None,
) -> Targets:
    env = os.environ if environ is None else environ
    suite = read_suite_file(suite_file) if suite_file else {}
    found_services = suite.get("services")
    services: dict = found_services if isinstance(found_services, dict) else {}
    given = addresses or {}

    def address(name: str) -> str:
        from_suite = (services.get(name) or {}).get("grpc") if isinstance(services.get(name), dict) else None
        return given.get(name) or from_suite or env.get(ADDRESS_ENV[name]) or DEFAULT_ADDRESSES[name]

    found_tokens = suite.get("tokens")
    tokens: dict = found_tokens if isinstance(found_tokens, dict) else {}
    suite_token = tokens.get("internal")
    if isinstance(suite.get("data_dir"), str):
        # The file's token expires within the hour; the suite's signing key makes a fresh one.
        suite_token = fresh_suite_token(Path(suite["data_dir"]), None) or suite_token
    chosen_databases = {
        name: (databases or {}).get(name) or env.get(DATABASE_ENV[name]) or None for name in DATABASE_ENV
    }
    for name, url in chosen_databases.items():
        if url:
            check_database_url(url, name)
    return Targets(
        nats_url=nats_url or suite.get("nats_url") or env.get("LISTBOSS_NATS_URL") or DEFAULT_NATS_URL,
        addresses={name: address(name) for name in SERVICES},
        databases=chosen_databases,
        token=token or env.get(TOKEN_ENV) or suite_token or None,
    )


def check_database_url(url: str, service: str) -> None:
    try:
        make_url(url)
    except ArgumentError:
        raise TargetError(f"--{service}-database: not an SQLAlchemy URL: {url!r}") from None


def read_engine(url: str) -> Engine:
    """An engine that reads ``url``. Raises TargetError for an SQLite file that does not exist
    (connecting would create an empty one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or not Path(path).is_file():
            raise TargetError(f"no SQLite database at {path or '(none)'}")
        return sa.create_engine(url, connect_args={"timeout": 10})
    return sa.create_engine(
        url,
        poolclass=sa.pool.NullPool,
        # pg_stat_activity names the operator's sessions beside the services'.
        connect_args={"connect_timeout": DATABASE_CONNECT_TIMEOUT, "application_name": "listboss-ops"},
    )


def safe_url(url: str) -> str:
    """``url`` without its password, for output."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
