"""The whole suite on one machine: nats-server (JetStream in ``<data-dir>/nats``) and the three
services as child processes, started and stopped together.

:class:`Suite` is what ``listboss-suite`` (``./dev run``, :mod:`listboss_tools.suite_cli`)
runs, and what the end-to-end tests, the fault-injection tests and the benchmarks use
in-process::

    with Suite.on_free_ports(tmp_path) as suite:
        channel = grpc.insecure_channel(suite.contacts_address)
        metadata = [("authorization", f"Bearer {suite.producer_token('demo')}")]

How a part is started, watched and stopped is :mod:`listboss_common.processes`; where the
services keep their data is :mod:`listboss_tools.databases`; the data folder's files (token signing
key and JWKS, webhook tokens, ``suite.json``) are :mod:`listboss_tools.suite_files`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from listboss_common.auth import WRITE, issue_token
from listboss_common.keys import SigningKey
from listboss_common.processes import (
    GRPC_CHANNEL_OPTIONS,
    STOP_GRACE,
    Child,
    NatsServer,
    ProcessError,
    ServiceProcess,
    free_port,
    health_status,
    nats_cluster,
    port_in_use,
    stop_all,
    wait_serving,
)
from listboss_tools.databases import (
    DATABASE_NAMES,
    check_database_choice,
    ensure_postgres_database,
    postgres_url,
    service_database_url,
)
from listboss_tools.suite_files import (
    DATA_KEY_FILE_NAME,
    DEFAULT_DATA_DIR,
    DEMO_PRODUCER,
    JWKS_FILE_NAME,
    REPO_ROOT,
    SIGNING_KEY_FILE_NAME,
    SUITE_FILE_NAME,
    WEBHOOK_TOKENS_FILE_NAME,
    read_or_create_data_key,
    read_or_create_signing_key,
    read_or_create_webhook_tokens,
    write_private,
)

# Importable from here, as they always were: tests and tools take them with the Suite.
__all__ = [
    "DEFAULT_DATA_DIR",
    "DEMO_PRODUCER",
    "GRPC_CHANNEL_OPTIONS",
    "JWKS_FILE_NAME",
    "REPO_ROOT",
    "SIGNING_KEY_FILE_NAME",
    "SUITE_FILE_NAME",
    "Suite",
    "SuiteError",
    "free_port",
    "health_status",
    "postgres_url",
]

# The order services start in; they stop all together (each drains on its own).
SERVICE_NAMES = ("ingest", "segmentation", "contacts")
PARTS = ("nats", *SERVICE_NAMES)

DEFAULT_PORTS = {
    "nats": 4322,  # not 4222: a system nats-server may already listen there
    "ingest": 50051,
    "segmentation": 50052,
    "contacts": 50053,
    "http": 8080,
}

# Each service's Prometheus endpoint (LISTBOSS_METRICS_ADDRESS): a free port unless one is given,
# so the suite never collides with a Prometheus exporter already on 9101-9103.
METRICS_PARTS = {name: f"{name}_metrics" for name in SERVICE_NAMES}

START_TIMEOUT = 30.0
# How long the tokens the suite prints and hands out stay valid: short, like every token.
DEV_TOKEN_TTL_SECONDS = 3600


def replica_names(service: str, replicas: int) -> tuple[str, ...]:
    """The parts that run replicas of ``service`` beyond the first: ``contacts-2``, ``contacts-3``, ..."""
    return tuple(f"{service}-{index}" for index in range(2, replicas + 1))


def contacts_replica_names(replicas: int) -> tuple[str, ...]:
    return replica_names("contacts", replicas)


def service_of(part: str) -> str:
    """The service a part runs: ``contacts`` for ``contacts-2``; the part's own name otherwise."""
    return part.partition("-")[0]


class SuiteError(ProcessError):
    """The suite could not start, or a part of it failed."""


_COLORS = ("\033[36m", "\033[33m", "\033[35m", "\033[32m")
_RESET = "\033[0m"


class _Printer:
    """Writes lines from several threads without interleaving them."""

    def __init__(self, output: TextIO | None):
        self._output = output
        self._lock = threading.Lock()
        self.color = bool(output is not None and hasattr(output, "isatty") and output.isatty())

    def write(self, text: str) -> None:
        if self._output is None:
            return
        with self._lock:
            self._output.write(text if text.endswith("\n") else text + "\n")
            self._output.flush()

    def prefixed(self, name: str) -> Callable[[str], None]:
        """What a part's output lines go through: ``name |`` before each, in a colour of its own."""
        label = f"{name:<{max(map(len, PARTS))}} |"
        if self.color:
            label = f"{_COLORS[PARTS.index(service_of(name)) % len(_COLORS)]}{label}{_RESET}"
        return lambda line: self.write(f"{label} {line}")


class Suite:
    """nats-server and the three services as child processes, started and stopped together.

    Ports given as 0 are replaced by free ports when the suite is created, so the
    address properties are valid before :meth:`start`. ``database`` is
    ``"sqlite"`` (files in ``data_dir``) or a PostgreSQL SQLAlchemy URL whose
    database part is replaced by ``listboss_segmentation`` / ``listboss_contacts``.
    ``extra_env`` is added to every service's environment (it may override the
    ``LISTBOSS_*`` variables). ``output`` receives the children's prefixed output
    (None, the default: keep only each child's last lines, for error reports and
    :meth:`last_output`).

    ``contacts_replicas`` runs that many contacts processes (parts ``contacts``, ``contacts-2``,
    ...), each on a free gRPC and metrics port of its own, sharing the durable consumer of
    changes. More than one needs PostgreSQL: on SQLite nothing keeps a second replica from
    relaying the tag-change outbox beside the first. ``ingest_replicas`` and
    ``segmentation_replicas`` do the same for those services (``ingest-2`` has a webhook port of
    its own too; more than one segmentation replica needs PostgreSQL as well).

    ``nats_nodes`` above 1 runs that many nats-servers as one JetStream cluster (parts ``nats``,
    ``nats-2``, ...; :func:`~listboss_common.processes.nats_cluster`), and the services are
    given every node's URL. How many replicas their streams get is theirs to set
    (``LISTBOSS_STREAM_REPLICAS`` in ``extra_env``).
    """

    def __init__(
        self,
        data_dir: Path | str = DEFAULT_DATA_DIR,
        *,
        host: str = "127.0.0.1",
        nats_port: int = DEFAULT_PORTS["nats"],
        ingest_port: int = DEFAULT_PORTS["ingest"],
        segmentation_port: int = DEFAULT_PORTS["segmentation"],
        contacts_port: int = DEFAULT_PORTS["contacts"],
        http_port: int = DEFAULT_PORTS["http"],
        ingest_metrics_port: int = 0,
        segmentation_metrics_port: int = 0,
        contacts_metrics_port: int = 0,
        database: str = "sqlite",
        database_suffix: str = "",
        contacts_replicas: int = 1,
        ingest_replicas: int = 1,
        segmentation_replicas: int = 1,
        nats_nodes: int = 1,
        extra_env: Mapping[str, str] | None = None,
        output: TextIO | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_grace: float = STOP_GRACE,
    ):
        check_database_choice(database)
        # On PostgreSQL, databases named listboss_<service>_<suffix>: a suite of its own on a
        # server other runs share (tests), instead of the fixed listboss_<service>.
        self.database_suffix = database_suffix
        self.replicas = {
            "ingest": ingest_replicas,
            "segmentation": segmentation_replicas,
            "contacts": contacts_replicas,
        }
        for service, count in self.replicas.items():
            if count < 1:
                raise ValueError(f"{service}_replicas must be at least 1, got {count}")
            if count > 1 and service in DATABASE_NAMES and database == "sqlite":
                raise ValueError(
                    f"more than one {service} replica needs PostgreSQL (--database postgresql+psycopg://...)"
                )
        if nats_nodes < 1:
            raise ValueError(f"nats_nodes must be at least 1, got {nats_nodes}")
        self.contacts_replicas = contacts_replicas
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.database = database
        self.extra_env = dict(extra_env or {})
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.ports = self._resolve_ports(
            {
                "nats": nats_port,
                "ingest": ingest_port,
                "segmentation": segmentation_port,
                "contacts": contacts_port,
                "http": http_port,
                "ingest_metrics": ingest_metrics_port,
                "segmentation_metrics": segmentation_metrics_port,
                "contacts_metrics": contacts_metrics_port,
                **{
                    port_name: 0
                    for service, count in self.replicas.items()
                    for replica in replica_names(service, count)
                    for port_name in (
                        replica,
                        f"{replica}_metrics",
                        *((f"{replica}_http",) if service == "ingest" else ()),
                    )
                },
            }
        )
        self._printer = _Printer(output)
        if nats_nodes == 1:
            self._nats_nodes = [
                NatsServer(
                    self.data_dir / "nats", host=host, port=self.ports["nats"], echo=self._printer.prefixed("nats")
                )
            ]
        else:
            self._nats_nodes = nats_cluster(
                self.data_dir, nats_nodes, host=host, ports=[self.ports["nats"]], echo=self._printer.prefixed
            )
            self.ports.update((node.name, node.port) for node in self._nats_nodes[1:])
        self._nats = self._nats_nodes[0]
        self._services: dict[str, ServiceProcess] = {}  # the started ones
        self._started = False
        self._signing_key: SigningKey | None = None
        self._wrote_suite_file = False
        self.stopping = False
        # Set (e.g. by a second Ctrl-C) to skip the rest of the stop grace period.
        self.hurry = threading.Event()

    @classmethod
    def on_free_ports(cls, data_dir: Path | str, **options) -> Suite:
        """A suite whose every part listens on a free port (tests, benchmarks)."""
        free_ports: dict[str, Any] = {f"{part}_port": 0 for part in DEFAULT_PORTS}
        return cls(data_dir, **free_ports, **options)

    def _resolve_ports(self, requested: dict[str, int]) -> dict[str, int]:
        taken = {port for port in requested.values() if port}
        ports: dict[str, int] = {}
        for name, port in requested.items():
            while port == 0:
                # Two binds in a row can hand out the same port: pick again.
                candidate = free_port(self.host)
                if candidate not in taken:
                    port = candidate
                    taken.add(port)
            ports[name] = port
        return ports

    # -- addresses and tokens -------------------------------------------------

    def _address(self, name: str) -> str:
        return f"{self.host}:{self.ports[name]}"

    @property
    def nats_url(self) -> str:
        """The first (or only) NATS node's URL."""
        return self._nats.url

    @property
    def nats_urls(self) -> list[str]:
        """Every NATS node's URL, the first one's first."""
        return [node.url for node in self._nats_nodes]

    @property
    def nats_parts(self) -> tuple[str, ...]:
        """The NATS nodes' parts: ``nats``, then ``nats-2``, ... in a cluster."""
        return tuple(node.name for node in self._nats_nodes)

    @property
    def ingest_address(self) -> str:
        return self._address("ingest")

    @property
    def segmentation_address(self) -> str:
        return self._address("segmentation")

    @property
    def contacts_address(self) -> str:
        return self._address("contacts")

    def addresses(self, service: str) -> list[str]:
        """The gRPC address of every replica of ``service``, the first one's first."""
        return [self._address(name) for name in self.service_parts if service_of(name) == service]

    @property
    def contacts_addresses(self) -> list[str]:
        """The gRPC address of every contacts replica, the first one's first."""
        return self.addresses("contacts")

    def address_of(self, part: str) -> str:
        """The gRPC address of one service part (``contacts-2``, ...)."""
        return self._address(part)

    def webhook_url_of(self, part: str, producer: str) -> str:
        """The webhook URL of one ingest part (``ingest``, ``ingest-2``, ...)."""
        http = "http" if part == "ingest" else f"{part}_http"
        return f"http://{self._address(http)}/webhooks/hotmart/{producer}"

    @property
    def service_parts(self) -> tuple[str, ...]:
        """The service processes this suite runs, in the order they start."""
        return (
            *SERVICE_NAMES,
            *(name for service in SERVICE_NAMES for name in replica_names(service, self.replicas[service])),
        )

    @property
    def http_address(self) -> str:
        return self._address("http")

    @property
    def grpc_addresses(self) -> dict[str, str]:
        return {name: self._address(name) for name in SERVICE_NAMES}

    def metrics_url(self, service: str) -> str:
        """Where Prometheus scrapes ``service`` (``ingest``, ``segmentation``, ``contacts``)."""
        return f"http://{self._address(f'{service}_metrics')}/metrics"

    @property
    def metrics_urls(self) -> dict[str, str]:
        return {name: self.metrics_url(name) for name in SERVICE_NAMES}

    def webhook_url(self, producer: str = "{producer}") -> str:
        return f"http://{self.http_address}/webhooks/hotmart/{producer}"

    @property
    def signing_key_file(self) -> Path:
        """The private key the suite's tokens are signed with (``listboss-token`` reads it too)."""
        return self.data_dir / SIGNING_KEY_FILE_NAME

    @property
    def jwks_file(self) -> Path:
        """The public keys the services verify tokens with (``LISTBOSS_JWKS_FILE``)."""
        return self.data_dir / JWKS_FILE_NAME

    @property
    def data_key_file(self) -> Path:
        return self.data_dir / DATA_KEY_FILE_NAME

    @property
    def data_key(self) -> str:
        """The suite's ``LISTBOSS_DATA_KEY``, created in the data folder on first use."""
        return read_or_create_data_key(self.data_key_file)

    @property
    def suite_file(self) -> Path:
        return self.data_dir / SUITE_FILE_NAME

    @property
    def webhook_tokens_file(self) -> Path:
        return self.data_dir / WEBHOOK_TOKENS_FILE_NAME

    @property
    def demo_hottok(self) -> str:
        """The development webhook token of producer ``demo`` (X-HOTMART-HOTTOK)."""
        return read_or_create_webhook_tokens(self.webhook_tokens_file, DEMO_PRODUCER)[DEMO_PRODUCER]

    @property
    def signing_key(self) -> SigningKey:
        """The data folder's signing key, created (and published in the JWKS) on first use."""
        if self._signing_key is None:
            self._signing_key = read_or_create_signing_key(self.signing_key_file, self.jwks_file)
        return self._signing_key

    def producer_token(self, producer: str = DEMO_PRODUCER, scope: str = WRITE) -> str:
        """A fresh token for ``producer`` valid for DEV_TOKEN_TTL_SECONDS."""
        return issue_token(self.signing_key, producer, scope=scope, ttl_seconds=DEV_TOKEN_TTL_SECONDS)

    @property
    def demo_token(self) -> str:
        return self.producer_token(DEMO_PRODUCER)

    @property
    def internal_token(self) -> str:
        return issue_token(self.signing_key, None, ttl_seconds=DEV_TOKEN_TTL_SECONDS)

    def database_url(self, service: str) -> str:
        if self.database_suffix and self.database != "sqlite":
            return postgres_url(self.database, f"listboss_{service}_{self.database_suffix}")
        return service_database_url(self.database, self.data_dir, service)

    def info(self) -> dict[str, object]:
        """What ``suite.json`` holds: where everything listens, and development tokens."""
        return {
            "pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "nats_url": self.nats_url,
            "services": {
                "ingest": {
                    "grpc": self.ingest_address,
                    "http": self.http_address,
                    "webhook_url": self.webhook_url(),
                    "metrics_url": self.metrics_url("ingest"),
                },
                "segmentation": {"grpc": self.segmentation_address, "metrics_url": self.metrics_url("segmentation")},
                "contacts": {"grpc": self.contacts_address, "metrics_url": self.metrics_url("contacts")},
            },
            "producer": DEMO_PRODUCER,
            "tokens": {"producer": self.demo_token, "internal": self.internal_token, "hottok": self.demo_hottok},
        }

    # -- starting ---------------------------------------------------------------

    def start(self) -> None:
        """Starts nats-server and the services; returns once all answer SERVING.

        Raises SuiteError (after stopping whatever had started) naming the part
        that failed and showing its last output lines.
        """
        if self._started:
            raise SuiteError("the suite is already started")
        self._started = True
        self.stopping = False
        self.hurry.clear()
        try:
            self._check_ports_free()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._signing_key = read_or_create_signing_key(self.signing_key_file, self.jwks_file)
            read_or_create_webhook_tokens(self.webhook_tokens_file, DEMO_PRODUCER)
            read_or_create_data_key(self.data_key_file)
            self._prepare_databases()
            for node in self._nats_nodes:
                node.start()
            for node in self._nats_nodes:
                node.wait_healthy(self.start_timeout)
            for name in self.service_parts:
                self._services[name] = self._service(name)
                self._services[name].start()
            wait_serving(list(self._services.values()), self.start_timeout)
            write_private(self.suite_file, json.dumps(self.info(), indent=2) + "\n")
            self._wrote_suite_file = True
        except BaseException:
            # KeyboardInterrupt included: never leave half a suite running.
            self.stop()
            raise

    def _check_ports_free(self) -> None:
        busy = {name: port for name, port in self.ports.items() if port_in_use(self.host, port)}
        if busy:
            listed = ", ".join(f"{name} {self.host}:{port}" for name, port in busy.items())
            hint = f" (another suite may be running: see {self.suite_file})" if self.suite_file.exists() else ""
            raise SuiteError(f"ports already in use: {listed}{hint}; choose others with the --*-port options")

    def _prepare_databases(self) -> None:
        if self.database == "sqlite":
            return
        for service in DATABASE_NAMES:
            warning = ensure_postgres_database(self.database_url(service))
            if warning:
                self._printer.write(f"warning: {warning}")

    def service_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LISTBOSS_GRPC_ADDRESS": self._address(name),
                "LISTBOSS_METRICS_ADDRESS": self._address(f"{name}_metrics"),
                "LISTBOSS_NATS_URL": ",".join(self.nats_urls),
                "LISTBOSS_JWKS_FILE": str(self.jwks_file),
                "LISTBOSS_DATA_KEY": self.data_key,
                # Console logs on a terminal; JSON lines when captured (tests, files).
                "LISTBOSS_LOG_FORMAT": os.environ.get(
                    "LISTBOSS_LOG_FORMAT", "console" if self._printer.color else "json"
                ),
                # The output goes through a pipe: flush each line as it is written.
                "PYTHONUNBUFFERED": "1",
            }
        )
        if service_of(name) in DATABASE_NAMES:
            env["LISTBOSS_DATABASE_URL"] = self.database_url(service_of(name))
        if service_of(name) == "ingest":
            env["LISTBOSS_HTTP_ADDRESS"] = self._address("http" if name == "ingest" else f"{name}_http")
            env["LISTBOSS_WEBHOOK_TOKENS_FILE"] = str(self.webhook_tokens_file)
        env.update(self.extra_env)
        return env

    def _service(self, name: str) -> ServiceProcess:
        return ServiceProcess(
            name,
            self.service_env(name),
            address=self._address(name),
            echo=self._printer.prefixed(name),
            program=service_of(name),
        )

    # -- running ---------------------------------------------------------------

    def _children(self) -> dict[str, Child]:
        """The parts started so far, by name."""
        if not self._started:
            return {}
        children = {node.name: node.child for node in self._nats_nodes if node.child is not None}
        children.update((name, service.child) for name, service in self._services.items() if service.child)
        return children

    def _child(self, name: str) -> Child:
        """The running or exited child of part ``name``; KeyError for a part not started."""
        return self._children()[name]

    def exited(self) -> list[tuple[str, int]]:
        """The children that have exited, with their exit codes (empty while all run)."""
        return [(name, code) for name, child in self._children().items() if (code := child.poll()) is not None]

    def say(self, text: str) -> None:
        """Prints to the suite's output without interleaving with the children's lines."""
        self._printer.write(text)

    def last_output(self, name: str) -> str:
        return self._child(name).last_output()

    def pid(self, name: str) -> int:
        return self._child(name).pid

    # -- faults (the fault-injection tests) -----------------------------------------

    def kill(self, name: str) -> int:
        """Kills one part (``"nats"`` or a service) with SIGKILL, as a crash would: nothing
        drains, nothing is flushed. Returns its exit code; :meth:`restart` brings it back."""
        return self._child(name).kill()

    def restart(self, name: str) -> None:
        """Starts again one part that has exited: nats-server on the same port and store
        (``<data_dir>/nats``), a service with the same environment and port. Returns once
        nats-server greets, or once the service answers SERVING (the others are not waited on).
        """
        if name not in self.nats_parts and name not in self.service_parts:
            raise SuiteError(f"unknown part {name!r}")
        child = self._children().get(name)
        if child is not None and child.poll() is None:
            raise SuiteError(f"{name} is still running: kill it first")
        if name in self.nats_parts:
            self._nats_nodes[self.nats_parts.index(name)].start()
            return
        service = self._services.setdefault(name, self._service(name))
        service.start()
        wait_serving([service], self.start_timeout, when="while restarting", poll=0.1)

    # -- stopping ---------------------------------------------------------------

    def stop(self) -> dict[str, int]:
        """Stops the services (SIGTERM, then SIGKILL after the grace period), then nats-server.

        Safe to call more than once and after a failed start. Returns each
        child's exit code.
        """
        self.stopping = True
        children = self._children()
        nats = [children.pop(name) for name in self.nats_parts if name in children]
        # Services first: while they drain they still need NATS to ack and publish.
        codes = stop_all(children.values(), self.stop_grace, hurry=self.hurry, say=self._printer.write)
        if nats:
            codes.update(stop_all(nats, self.stop_grace, hurry=self.hurry, say=self._printer.write))
        for node in self._nats_nodes:
            node.child = None  # gone: a start after this one begins from nothing
        self._services.clear()
        self._started = False
        # Only our own: a start that failed on busy ports must not remove the file
        # of the suite that holds them.
        if self._wrote_suite_file:
            self.suite_file.unlink(missing_ok=True)
            self._wrote_suite_file = False
        return codes

    def __enter__(self) -> Suite:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
