"""``listboss-demo`` (``./dev demo``): feeds the example webhooks into a running suite.

It sends each of the platform's example webhooks (``tests/data/hotmart/*.json``)
to ``IngestService.IngestWebhook`` as producer ``demo``, then waits until
ContactsService shows the captured contacts with their tags and each product's
history, and prints them. Addresses and the token come from ``var/suite.json``
(written by ``./dev run``) unless given as options. Against services serving TLS, give
``--cacert`` (and ``--cert`` / ``--key`` under mutual TLS) or the ``LISTBOSS_TLS_*`` variables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from listboss.contacts.v1 import contacts_service_pb2, contacts_service_pb2_grpc
from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2, ingest_service_pb2_grpc
from listboss_common.config import ConfigError
from listboss_common.processes import GRPC_CHANNEL_OPTIONS, health_status
from listboss_common.tls import CA_FILE_ENV, CLIENT_CERT_FILE_ENV, CLIENT_KEY_FILE_ENV, ClientTls, grpc_channel
from listboss_tools.suite_files import (
    DEFAULT_DATA_DIR,
    DEMO_PRODUCER,
    REPO_ROOT,
    SUITE_FILE_NAME,
    fresh_suite_token,
)

DEFAULT_SUITE_FILE = DEFAULT_DATA_DIR / SUITE_FILE_NAME
DEFAULT_WEBHOOKS_DIR = REPO_ROOT / "tests" / "data" / "hotmart"
RPC_TIMEOUT = 10.0
PAGE_SIZE = 1000


class DemoError(Exception):
    pass


@dataclass(frozen=True)
class Target:
    """Where the suite listens and how to authenticate to it."""

    ingest: str
    contacts: str
    token: str
    producer: str
    tls: ClientTls | None = None  # None: plaintext

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]

    @property
    def parent(self) -> str:
        return f"producers/{self.producer}"

    def product_parent(self, product_id: str) -> str:
        return f"{self.parent}/products/{product_id}"


@dataclass
class Sent:
    """What the webhooks became: what the contacts service must end up showing."""

    emails: set[str] = field(default_factory=set)
    # product id -> the ids of the events recorded for it
    events_by_product: dict[str, set[str]] = field(default_factory=dict)
    product_names: dict[str, str] = field(default_factory=dict)
    rejected: int = 0

    def record(self, event: event_pb2.Event) -> None:
        if event.person.email:
            self.emails.add(event.person.email)
        if event.product.id:
            self.events_by_product.setdefault(event.product.id, set()).add(event.id)
            self.product_names.setdefault(event.product.id, event.product.name)


# ---------------------------------------------------------------------------
# Finding the suite.
# ---------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="listboss-demo",
        description="Send the example webhooks to a running suite (./dev run) and show the contacts, tags and history.",
    )
    add = parser.add_argument
    add("--suite-file", type=Path, default=DEFAULT_SUITE_FILE, help="written by ./dev run (default: %(default)s)")
    add("--ingest", help="ingest's gRPC address (default: from the suite file)")
    add("--contacts", help="contacts' gRPC address (default: from the suite file)")
    add("--token", help="bearer token for the producer (default: from the suite file)")
    add("--producer", default=DEMO_PRODUCER, help="the producer the webhooks belong to (default: %(default)s)")
    add("--webhooks", type=Path, default=DEFAULT_WEBHOOKS_DIR, help="folder of webhook JSON (default: %(default)s)")
    add("--cacert", type=Path, help=f"CA of the services' certificates: talk TLS (default: ${CA_FILE_ENV})")
    add("--cert", type=Path, help=f"client certificate for mutual TLS (default: ${CLIENT_CERT_FILE_ENV})")
    add("--key", type=Path, help=f"its private key (default: ${CLIENT_KEY_FILE_ENV})")
    add("--timeout", type=float, default=15.0, help="seconds to wait for the data to show up (default: %(default)s)")
    return parser.parse_args(argv)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_suite_file(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DemoError(f"cannot read {path}: {error}") from None
    pid = info.get("pid")
    if isinstance(pid, int) and not _pid_alive(pid):
        # Left behind by a suite that was killed: its addresses mean nothing now.
        raise DemoError(
            f"the suite isn't running ({path} is left from process {pid}, which is gone): start it with ./dev run"
        )
    return info


def resolve_target(args: argparse.Namespace) -> Target:
    """Options win over the suite file; the suite file fills in the rest."""
    info: dict[str, Any] = {}
    if not (args.ingest and args.contacts and args.token):
        found = _read_suite_file(args.suite_file)
        if found is None:
            raise DemoError(
                f"the suite isn't running: {args.suite_file} not found. Start it with ./dev run "
                "(or pass --ingest, --contacts and --token)"
            )
        info = found
    services = info.get("services", {})
    tokens = info.get("tokens", {})
    # The suite's producer token grants its own producer only; the internal one grants any.
    suite_token = tokens.get("producer") if info.get("producer") == args.producer else tokens.get("internal")
    if not args.token and info.get("data_dir"):
        # The tokens in the suite file expire; the suite's signing key makes a fresh one.
        suite_token = fresh_suite_token(Path(info["data_dir"]), args.producer) or suite_token
    try:
        return Target(
            ingest=args.ingest or services["ingest"]["grpc"],
            contacts=args.contacts or services["contacts"]["grpc"],
            token=args.token or suite_token or "",
            producer=args.producer,
            tls=_client_tls(args),
        )
    except (KeyError, TypeError):
        raise DemoError(f"{args.suite_file} lacks the service addresses; restart the suite") from None


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    try:
        return ClientTls.from_env(ca_file=args.cacert, cert_file=args.cert, key_file=args.key)
    except ConfigError as error:
        raise DemoError(str(error)) from None


def check_reachable(target: Target) -> None:
    for name, address in (("ingest", target.ingest), ("contacts", target.contacts)):
        status = health_status(address, timeout=3.0, tls=target.tls)
        if status != "SERVING":
            raise DemoError(f"the suite isn't running: {name} at {address} answers {status}. Start it with ./dev run")


# ---------------------------------------------------------------------------
# Sending the webhooks.
# ---------------------------------------------------------------------------


def webhook_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DemoError(f"no webhook examples (*.json) in {folder}")
    return files


def _short_type(event_type: int) -> str:
    return event_pb2.EventType.Name(event_type).removeprefix("EVENT_TYPE_")


def _describe_rpc_error(error: grpc.RpcError) -> str:
    return f"{error.code().name}: {error.details()}"


def send_webhooks(target: Target, files: list[Path], channel: grpc.Channel) -> Sent:
    ingest = ingest_service_pb2_grpc.IngestServiceStub(channel)
    sent = Sent()
    print(f"Sending {len(files)} example webhooks to {target.ingest} as {target.parent}\n")
    print(f"  {'event':<32} {'email':<44} result")
    for path in files:
        payload = path.read_text(encoding="utf-8")
        request = ingest_service_pb2.IngestWebhookRequest(parent=target.parent, payload=payload)
        try:
            response = ingest.IngestWebhook(request, metadata=target.metadata, timeout=RPC_TIMEOUT)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED):
                raise DemoError(f"ingest at {target.ingest}: {_describe_rpc_error(error)}") from None
            sent.rejected += 1
            print(f"  {_webhook_event_name(payload):<32} {'':<44} rejected ({_describe_rpc_error(error)})")
            continue
        event = response.event
        sent.record(event)
        outcome = "duplicate (already accepted)" if response.duplicate else "accepted"
        print(f"  {_short_type(event.type):<32} {event.person.email:<44} {outcome}")
    return sent


def _webhook_event_name(payload: str) -> str:
    """The webhook's event name for a line about a rejected one (ingest returned no event)."""
    try:
        return str(json.loads(payload).get("event", "?"))
    except (json.JSONDecodeError, AttributeError):
        return "(not JSON)"


# ---------------------------------------------------------------------------
# Waiting for the contacts and printing them.
# ---------------------------------------------------------------------------


def _all_pages(call: Callable[..., Any], request: Any, items: str, metadata: list[tuple[str, str]]) -> Iterator[Any]:
    while True:
        response = call(request, metadata=metadata, timeout=RPC_TIMEOUT)
        yield from getattr(response, items)
        if not response.next_page_token:
            return
        request.page_token = response.next_page_token


@dataclass
class Snapshot:
    contacts: list[contacts_service_pb2.Contact]
    tags: list[contacts_service_pb2.Tag]
    history: dict[str, list[contacts_service_pb2.HistoryEvent]]

    def missing(self, sent: Sent) -> list[str]:
        """What the contacts service does not show yet (empty once it all has arrived)."""
        problems = []
        by_email = {contact.email: contact for contact in self.contacts}
        for email in sorted(sent.emails):
            contact = by_email.get(email)
            if contact is None:
                problems.append(f"contact {email} not captured")
            elif not contact.tags:
                problems.append(f"contact {email} has no tags")
        for product, event_ids in sorted(sent.events_by_product.items()):
            recorded = {entry.name.rsplit("/", 1)[-1] for entry in self.history.get(product, [])}
            if not event_ids <= recorded:
                found = len(event_ids & recorded)
                problems.append(f"history of product {product} has {found} of {len(event_ids)} events")
        return problems


def take_snapshot(target: Target, sent: Sent, channel: grpc.Channel) -> Snapshot:
    stub = contacts_service_pb2_grpc.ContactsServiceStub(channel)
    pb = contacts_service_pb2

    def everything(call: Callable[..., Any], request: Any, items: str) -> list[Any]:
        return list(_all_pages(call, request, items, target.metadata))

    return Snapshot(
        contacts=everything(
            stub.ListContacts, pb.ListContactsRequest(parent=target.parent, page_size=PAGE_SIZE), "contacts"
        ),
        tags=everything(stub.ListTags, pb.ListTagsRequest(parent=target.parent, page_size=PAGE_SIZE), "tags"),
        history={
            product: everything(
                stub.ListEvents,
                pb.ListEventsRequest(parent=target.product_parent(product), page_size=PAGE_SIZE),
                "events",
            )
            for product in sent.events_by_product
        },
    )


# Errors that waiting does not cure.
_FATAL_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED)


def wait_for_contacts(target: Target, sent: Sent, channel: grpc.Channel, timeout: float) -> Snapshot:
    """Polls until every contact, tag and history entry shows up; the pipeline is asynchronous."""
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    while True:
        try:
            snapshot = take_snapshot(target, sent, channel)
            problems = snapshot.missing(sent)
            if not problems:
                return snapshot
        except grpc.RpcError as error:
            if error.code() in _FATAL_CODES:
                raise DemoError(f"contacts at {target.contacts}: {_describe_rpc_error(error)}") from None
            problems = [f"contacts at {target.contacts}: {_describe_rpc_error(error)}"]
        if time.monotonic() > deadline:
            listed = "\n  ".join(problems)
            raise DemoError(f"the data never showed up within {timeout:.0f} s:\n  {listed}")
        time.sleep(0.25)


def _product_id(resource: str) -> str:
    return resource.rsplit("/", 1)[-1]


def print_snapshot(snapshot: Snapshot, sent: Sent, target: Target) -> None:
    def product_label(product_id: str) -> str:
        name = sent.product_names.get(product_id)
        return f"{product_id} ({name})" if name else product_id

    print(f"\nContacts of {target.parent} ({len(snapshot.contacts)})\n")
    print(f"  {'email':<44} {'name':<24} source")
    for contact in sorted(snapshot.contacts, key=lambda c: c.email):
        source = contacts_service_pb2.ContactSource.Name(contact.source).removeprefix("CONTACT_SOURCE_")
        print(f"  {contact.email:<44} {contact.display_name or '-':<24} {source}")
        for tag in sorted(contact.tags, key=lambda t: (t.product, t.key)):
            print(f"      tag {tag.key:<28} product {product_label(_product_id(tag.product))}")

    labels = {_product_id(tag.product): product_label(_product_id(tag.product)) for tag in snapshot.tags}
    labels.update({product: product_label(product) for product in snapshot.history})
    width = max((len(label) for label in labels.values()), default=7) + 2

    print(f"\nTags of {target.parent} ({len(snapshot.tags)})\n")
    print(f"  {'tag':<28} {'product':<{width}} contacts")
    for tag in sorted(snapshot.tags, key=lambda t: (t.product, t.key)):
        print(f"  {tag.key:<28} {labels[_product_id(tag.product)]:<{width}} {tag.contact_count}")

    print("\nHistory per product\n")
    print(f"  {'product':<{width}} events")
    for product, entries in sorted(snapshot.history.items()):
        print(f"  {labels[product]:<{width}} {len(entries):>6}")


# ---------------------------------------------------------------------------
# The command.
# ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    target = resolve_target(args)
    if not target.token:
        raise DemoError("no token: pass --token (e.g. $(listboss-token --producer demo))")
    files = webhook_files(args.webhooks)
    check_reachable(target)
    with (
        grpc_channel(target.ingest, target.tls, GRPC_CHANNEL_OPTIONS) as ingest_channel,
        grpc_channel(target.contacts, target.tls, GRPC_CHANNEL_OPTIONS) as contacts_channel,
    ):
        sent = send_webhooks(target, files, ingest_channel)
        if not sent.emails:
            raise DemoError("ingest accepted none of the webhooks")
        print(f"\nWaiting for the contacts at {target.contacts} (up to {args.timeout:.0f} s)...")
        snapshot = wait_for_contacts(target, sent, contacts_channel, args.timeout)
    print_snapshot(snapshot, sent, target)
    if sent.rejected:
        print(f"\nlistboss-demo: {sent.rejected} of {len(files)} webhooks were rejected", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        return run(args)
    except DemoError as error:
        print(f"\nlistboss-demo: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # Piped into head or less and closed early: not an error worth a traceback.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
