"""A throwaway PostgreSQL cluster that a test creates, stops and starts at will.

Made with the server's own ``initdb`` and ``pg_ctl`` (Debian's ``postgresql`` package puts
them in ``/usr/lib/postgresql/<version>/bin``) in a temporary folder, on a free port on
127.0.0.1 with trust authentication: never the shared server at 5432, which other tests and
developers use. PostgreSQL refuses to run as root, so as root (CI, the development
machines) both run through ``runuser -u postgres`` on a folder owned by that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from listboss_tools.suite import free_port

HOST = "127.0.0.1"
SHARED_PORT = 5432
COMMAND_TIMEOUT = 90.0


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine, or the cluster could not be made."""


def postgres_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]
    found = [d for d in found if (d / "initdb").is_file()]
    if not found:
        which = shutil.which("pg_ctl")
        if which and shutil.which("initdb"):
            return Path(which).parent
        raise PostgresUnavailable("initdb and pg_ctl not found (apt-get install postgresql)")
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)


class ThrowawayPostgres:
    """One PostgreSQL cluster in a temporary folder, on its own port.

    :meth:`destroy` stops it (immediately) and removes the folder; call it in a finalizer.
    """

    def __init__(self) -> None:
        self.bin_dir = postgres_bin_dir()
        self.port = free_port(HOST)
        if self.port == SHARED_PORT:  # free_port never hands it out while the shared server runs
            raise PostgresUnavailable("refusing to use the shared server's port 5432")
        # Not under pytest's tmp folder: that one is private to root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="listboss-faults-pg-"))
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)
        self.stops = 0

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the cluster's ``postgres`` database (a Suite replaces the database part)."""
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/postgres"

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if check and result.returncode != 0:
            raise PostgresUnavailable(
                f"{program} {' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{self.log_tail()}"
            )
        return result

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Starts the server and returns once it accepts connections."""
        options = " ".join(
            [
                f"-p {self.port}",
                f"-c listen_addresses={HOST}",
                f"-c unix_socket_directories={self.root}",
                # A throwaway cluster: durability across a machine crash is not what is tested.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options, "-w", "-t", "60", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stops the server: ``fast`` (connections cut, clean shutdown) or ``immediate`` (as a crash)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")
        self.stops += 1

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def destroy(self, keep_log: Path | None = None) -> None:
        """Stops the server if it runs and removes its folder (copying its log to ``keep_log`` first)."""
        try:
            if self.data_dir.exists() and self.running():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop", check=False)
        finally:
            if keep_log is not None and self.log_file.exists():
                with contextlib.suppress(OSError):
                    shutil.copyfile(self.log_file, keep_log)
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres(keep_log: Path):
    """A started :class:`ThrowawayPostgres`, destroyed afterwards (its log kept at ``keep_log``);
    skips the test when this machine has no PostgreSQL binaries, unless
    ``LISTBOSS_REQUIRE_POSTGRES=1`` makes that a failure."""
    try:
        server = ThrowawayPostgres()
    except PostgresUnavailable as error:
        if os.environ.get("LISTBOSS_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(str(error))
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy(keep_log=keep_log)
