"""``listboss-ops import``: a producer's past sales, sent through the normal pipeline.

A producer who starts using ListBoss already has buyers. Their platform's sales history
becomes canonical events carrying their *original* times (``occur_time`` is when the sale
happened, not now), sent with ``IngestService.BatchIngestEvents`` like any client's events:
ingest validates and stores them, segmentation tags them, contacts applies them. Nothing here
writes a database or the bus directly.

Two formats:

- ``jsonl``: one of the platform's webhook documents (format 2.0.0, what it delivers live and
  what its exports hold) per line. Each becomes an event through ingest's own adapter
  (:func:`listboss_ingest.sources.hotmart.event_from_webhook`): one mapping for a live webhook
  and an imported one.
- ``csv``: one sale per row, with the columns of :data:`CSV_COLUMNS`. Each row is written as
  the webhook document it stands for and goes through the same adapter, so a CSV sale and a
  webhook sale cannot end up mapped differently.

Idempotency: every record has a stable event id. A webhook document keeps its own ``id`` (the
platform's, so a live delivery of the same event later is recognised too); a document without
one, and a CSV row, get ``import-`` and a digest of what identifies them (the document; the
row's transaction and event). Each batch's ``request_id`` is a digest of its event ids, so a
retried batch, or the same import run again within JetStream's duplicate window, is answered
``DUPLICATE``; after the window contacts still skips events already in its history. Running an
import twice never applies anything twice.

Order independence: contacts decides each tag by the newest event for it (occurrence time,
then event id), whatever the arrival order, so importing an old approval after a live refund
leaves the refund's tags.

Failures: a record that cannot become a valid event (bad JSON, no email, an unknown event) is
reported with its line number and skipped; the others go on. ``RESOURCE_EXHAUSTED`` (the
producer's rate limit) is retried after the answer's ``RetryInfo`` delay, ``UNAVAILABLE`` and
``DEADLINE_EXCEEDED`` with exponential back-off, always with the same request (deduplicated):
nothing is skipped because of them. A batch refused that way for longer than ``--retry-for``
seconds stops the import; everything sent so far is kept, and running the same command again
continues (what was sent is recognised).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss.ingest.v1 import ingest_service_pb2_grpc as ingest_grpc
from listboss_common import bus
from listboss_common.errors import FieldViolation, InvalidArgument
from listboss_common.processes import GRPC_CHANNEL_OPTIONS
from listboss_common.tls import ClientTls, grpc_aio_channel
from listboss_ingest.handlers import MAX_BATCH_EVENTS
from listboss_ingest.sources import hotmart
from listboss_tools.ops_targets import ADDRESS_ENV, DEFAULT_ADDRESSES, TOKEN_ENV, Targets

FORMATS: Final = ("jsonl", "csv")
# By file name; anything else needs --format.
FORMAT_BY_SUFFIX: Final = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
DEFAULT_BATCH_SIZE: Final = 500
DEFAULT_RETRY_FOR: Final = 300.0
RPC_TIMEOUT: Final = 30.0
# Back-off while ingest is unreachable: doubled per failure, capped, with jitter.
FIRST_BACKOFF: Final = 0.2
MAX_BACKOFF: Final = 10.0
# Refused lines printed one by one; --json lists them all.
SHOWN_ERRORS: Final = 50

_ACCEPTED: Final = ingest_pb.EventResult.Outcome.OUTCOME_ACCEPTED
_DUPLICATE: Final = ingest_pb.EventResult.Outcome.OUTCOME_DUPLICATE


class ImportProblem(Exception):
    """The import cannot start (a file of the wrong shape) or cannot go on (ingest refuses
    every request): nothing more is sent."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Record:
    """One line of the file: the event it became, or why it could not become one."""

    line: int
    event: event_pb2.Event | None
    violations: Sequence[FieldViolation] = ()


def guess_format(path: Path) -> str | None:
    return FORMAT_BY_SUFFIX.get(path.suffix.lower())


def stable_id(*parts: str) -> str:
    """An event id for a record that has none: the same record always gets the same one."""
    return "import-" + bus.content_id(*parts)


def read_jsonl(lines: Iterable[bytes], producer: str) -> Iterator[Record]:
    """One record per non-blank line, numbered from 1 as an editor counts."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        yield Record(number, *_webhook_event(raw, producer))


def _webhook_event(raw: bytes, producer: str) -> tuple[event_pb2.Event | None, Sequence[FieldViolation]]:
    try:
        document = json.loads(raw)
    except ValueError:
        document = None  # the adapter says what is wrong with it, in its own words
    payload: bytes | dict[str, Any] = raw
    if isinstance(document, dict):
        payload = document
        if not _document_id(document):
            canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            payload = {**document, "id": stable_id(canonical)}
    try:
        return hotmart.event_from_webhook(payload, producer), ()
    except InvalidArgument as error:
        return None, error.violations


def _document_id(document: dict[str, Any]) -> str:
    value = document.get("id")
    return str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""


# -- CSV


@dataclass(frozen=True)
class Column:
    name: str
    aliases: tuple[str, ...]
    meaning: str


# The columns of a sales CSV, in the order docs/operations.md lists them. Names are matched
# case-insensitively, with spaces and hyphens read as underscores; other columns are ignored.
CSV_COLUMNS: Final = (
    Column("transaction", ("transaction_code",), "required: the sale's transaction code"),
    Column(
        "event",
        ("event_type",),
        "the webhook event (PURCHASE_APPROVED, PURCHASE_REFUNDED ...); or give status",
    ),
    Column("status", ("purchase_status",), "the sale's status (APPROVED, REFUNDED, CANCELED ...); or give event"),
    Column("product_id", ("product",), "required: the product's id"),
    Column("product_name", (), "the product's name"),
    Column("buyer_email", ("email",), "required: the buyer's email"),
    Column("buyer_name", ("name",), "the buyer's name"),
    Column("price", ("value",), "what the buyer paid, with a decimal point or comma (97.00, 97,00)"),
    Column("currency", ("currency_code",), "its currency, ISO 4217 (BRL, USD ...)"),
    Column("order_date", (), "when the order was placed"),
    Column("approved_date", (), "when the payment was approved"),
    Column("event_date", ("date",), "when the event happened (default: approved_date, else order_date)"),
    Column("event_id", ("id",), "an id of your own for the event (default: derived from transaction and event)"),
)

# A sale's status as platforms' sales reports spell it -> the webhook event it stands for.
STATUS_EVENTS: Final = {
    "APPROVED": "PURCHASE_APPROVED",
    "COMPLETE": "PURCHASE_COMPLETE",
    "COMPLETED": "PURCHASE_COMPLETE",
    "CANCELED": "PURCHASE_CANCELED",
    "CANCELLED": "PURCHASE_CANCELED",
    "REFUNDED": "PURCHASE_REFUNDED",
    "CHARGEBACK": "PURCHASE_CHARGEBACK",
    "BILLET_PRINTED": "PURCHASE_BILLET_PRINTED",
    "PRINTED_BILLET": "PURCHASE_BILLET_PRINTED",
    "WAITING_PAYMENT": "PURCHASE_BILLET_PRINTED",
    "EXPIRED": "PURCHASE_EXPIRED",
    "DELAYED": "PURCHASE_DELAYED",
    "PROTEST": "PURCHASE_PROTEST",
    "PROTESTED": "PURCHASE_PROTEST",
    "DISPUTE": "PURCHASE_PROTEST",
}
_PURCHASE_EVENTS: Final = frozenset(STATUS_EVENTS.values()) | {"PURCHASE_OUT_OF_SHOPPING_CART"}

# The canonical field of an adapter's violation -> the CSV column that filled it.
_COLUMN_OF_FIELD: Final = {
    "id": "event_id",
    "type": "event",
    "event": "event",
    "occur_time": "event_date",
    "person.email": "buyer_email",
    "person.name": "buyer_name",
    "product.id": "product_id",
    "product.name": "product_name",
    "purchase.transaction": "transaction",
    "purchase.status": "status",
    "purchase.price": "price",
    "purchase.price.value": "price",
    "purchase.price.currency_code": "currency",
    "purchase.order_time": "order_date",
    "purchase.approved_time": "approved_date",
}


def _column_key(header: str) -> str:
    return header.strip().lower().replace(" ", "_").replace("-", "_")


def _column_positions(header: Sequence[str]) -> dict[str, int]:
    """Each known column's position in ``header``; raises ImportProblem without the required ones."""
    keys = [_column_key(name) for name in header]
    positions: dict[str, int] = {}
    for column in CSV_COLUMNS:
        for candidate in (column.name, *column.aliases):
            if candidate in keys:
                positions[column.name] = keys.index(candidate)
                break
    missing = [name for name in ("transaction", "product_id", "buyer_email") if name not in positions]
    if "event" not in positions and "status" not in positions:
        missing.append("event or status")
    if missing:
        raise ImportProblem(
            f"the CSV header lacks the column(s) {', '.join(missing)} (found: {', '.join(header) or 'nothing'}); "
            "the columns are listed in docs/operations.md, 'Importing past sales'"
        )
    return positions


def _delimiter(header_line: str) -> str:
    """Spreadsheets in Brazil and Portugal write ';' where others write ','."""
    return max((",", ";", "\t"), key=header_line.count)


def read_csv(text: io.TextIOBase, producer: str) -> Iterator[Record]:
    """One record per data row; the header names the columns (:data:`CSV_COLUMNS`)."""
    first = text.readline()
    delimiter = _delimiter(first)
    positions = _column_positions(next(csv.reader([first], delimiter=delimiter), []))
    reader = csv.reader(text, delimiter=delimiter)
    line = 2  # the header is line 1
    for row in reader:
        start, line = line, reader.line_num + 2
        if not any(cell.strip() for cell in row):
            continue
        cells = {name: row[index].strip() for name, index in positions.items() if index < len(row)}
        yield Record(start, *_csv_event(cells, producer))


def _csv_event(cells: dict[str, str], producer: str) -> tuple[event_pb2.Event | None, Sequence[FieldViolation]]:
    violations: list[FieldViolation] = []
    event_name = _csv_event_name(cells, violations)
    for name in ("transaction", "product_id", "buyer_email"):
        if not cells.get(name):
            violations.append(FieldViolation(name, "required"))
    occur = cells.get("event_date") or cells.get("approved_date") or cells.get("order_date")
    if not occur:
        violations.append(FieldViolation("event_date", "required: give event_date, approved_date or order_date"))
    if violations:
        return None, violations
    document = {
        "id": cells.get("event_id") or stable_id(cells["transaction"], event_name),
        "event": event_name,
        "creation_date": occur,
        "data": _without_empty(
            {
                "product": {"id": cells.get("product_id"), "name": cells.get("product_name")},
                "buyer": {"email": cells.get("buyer_email"), "name": cells.get("buyer_name")},
                "purchase": {
                    "transaction": cells.get("transaction"),
                    "status": cells.get("status"),
                    "price": {"value": _decimal(cells.get("price")), "currency_value": cells.get("currency")},
                    "order_date": cells.get("order_date"),
                    "approved_date": cells.get("approved_date"),
                },
            }
        ),
    }
    try:
        return hotmart.event_from_webhook(document, producer), ()
    except InvalidArgument as error:
        return None, [FieldViolation(_COLUMN_OF_FIELD.get(v.field, v.field), v.description) for v in error.violations]


def _csv_event_name(cells: dict[str, str], violations: list[FieldViolation]) -> str:
    given = (cells.get("event") or "").upper()
    if given:
        if given in _PURCHASE_EVENTS or given in STATUS_EVENTS:
            return STATUS_EVENTS.get(given, given)
        violations.append(FieldViolation("event", f"unknown event {given[:80]!r}; expected one of {_known_events()}"))
        return ""
    status = (cells.get("status") or "").upper().replace(" ", "_")
    if status in STATUS_EVENTS:
        return STATUS_EVENTS[status]
    if status:
        violations.append(
            FieldViolation("status", f"unknown status {status[:80]!r}; expected one of {', '.join(STATUS_EVENTS)}")
        )
    else:
        violations.append(FieldViolation("event", "required: give the event or the status of the sale"))
    return ""


def _known_events() -> str:
    return ", ".join(sorted(_PURCHASE_EVENTS))


def _decimal(text: str | None) -> str | None:
    """``97,00`` and ``1.497,00`` as ``97.00`` and ``1497.00``; a point alone is already one."""
    if not text:
        return None
    if "," in text:
        text = text.replace(".", "").replace(",", ".")
    return text


def _without_empty(value: Any) -> Any:
    """The document without the empty cells: an empty cell means "not given"."""
    if isinstance(value, dict):
        kept = {key: _without_empty(item) for key, item in value.items()}
        return {key: item for key, item in kept.items() if item not in (None, "", {})}
    return value


# -- files


def open_records(path: Path, file_format: str, producer: str) -> Iterator[Record]:
    if file_format == "csv":
        with path.open(encoding="utf-8-sig", newline="") as text:
            yield from read_csv(text, producer)
    else:
        with path.open("rb") as lines:
            yield from read_jsonl(lines, producer)


def count_records(path: Path, file_format: str) -> int:
    """How many records the file holds, for the progress bar: a quick first pass, which also
    refuses a CSV without the required columns before anything is sent."""
    if file_format == "csv":
        with path.open(encoding="utf-8-sig", newline="") as text:
            first = text.readline()
            _column_positions(next(csv.reader([first], delimiter=_delimiter(first)), []))
            return sum(1 for row in csv.reader(text, delimiter=_delimiter(first)) if any(c.strip() for c in row))
    with path.open("rb") as lines:
        return sum(1 for raw in lines if raw.strip())


# --------------------------------------------------------------------------- sending


@dataclass
class Summary:
    """What an import did; :meth:`as_json` is what ``--json`` prints."""

    file: str
    file_format: str
    producer: str
    dry_run: bool
    records: int = 0
    sent: int = 0
    duplicates: int = 0
    refused: int = 0
    refused_by_reason: Counter[str] = field(default_factory=Counter)
    # (line, field, description) of every refused record.
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    rate_limited_waits: int = 0
    unavailable_retries: int = 0
    stopped: str | None = None
    seconds: float = 0.0

    def refuse(self, line: int, violations: Sequence[FieldViolation]) -> None:
        self.refused += 1
        found = list(violations) or [FieldViolation("event", "refused")]
        self.refused_by_reason[found[0].field] += 1
        self.errors.extend((line, v.field, v.description) for v in found)

    @property
    def ok(self) -> bool:
        return self.refused == 0 and self.stopped is None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "file": self.file,
            "format": self.file_format,
            "producer": self.producer,
            "dry_run": self.dry_run,
            "records": self.records,
            "sent": self.sent,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "refused_by_reason": dict(sorted(self.refused_by_reason.items())),
            "errors": [{"line": line, "field": name, "description": text} for line, name, text in self.errors],
            "rate_limited_waits": self.rate_limited_waits,
            "unavailable_retries": self.unavailable_retries,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 3),
        }


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """The ``RetryInfo`` delay of a refusal, in seconds; None when the answer carries none."""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def request_id(producer: str, events: Sequence[event_pb2.Event]) -> str:
    """The same batch of the same file always has the same id: a resend is a duplicate."""
    return "import-" + bus.content_id(producer, *(event.id for event in events))


class Sender:
    """BatchIngestEvents with a bearer token, retrying what the service asks to be retried."""

    def __init__(
        self,
        address: str,
        token: str,
        tls: ClientTls | None,
        *,
        retry_for: float = DEFAULT_RETRY_FOR,
        on_wait: Callable[[str], None] = lambda _what: None,
    ):
        self.address = address
        self._channel = grpc_aio_channel(address, tls, GRPC_CHANNEL_OPTIONS)
        self._stub = ingest_grpc.IngestServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._retry_for = retry_for
        self._on_wait = on_wait

    async def close(self) -> None:
        await self._channel.close()

    async def send(self, request: ingest_pb.BatchIngestEventsRequest, summary: Summary):
        give_up_at = time.monotonic() + self._retry_for
        backoff = FIRST_BACKOFF
        while True:
            try:
                response = await self._stub.BatchIngestEvents(request, metadata=self._metadata, timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                wait, why = self._retry_after(error, backoff)
                if why == "rate limit":
                    summary.rate_limited_waits += 1
                else:
                    summary.unavailable_retries += 1
                    backoff = min(backoff * 2, MAX_BACKOFF)
                if time.monotonic() + wait > give_up_at:
                    raise ImportProblem(
                        f"ingest at {self.address} kept refusing for {self._retry_for:g} s "
                        f"({error.code().name}: {error.details()}); what was sent is kept: run the same "
                        "command again to continue"
                    ) from None
                self._on_wait(f"waiting {wait:.1f} s ({why})")
                await asyncio.sleep(wait)
                self._on_wait("")
                continue
            return response

    def _retry_after(self, error: grpc.aio.AioRpcError, backoff: float) -> tuple[float, str]:
        """How long to wait before sending the same request again, and why; raises
        ImportProblem for an answer that no wait would change."""
        code = error.code()
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            delay = retry_delay(error)
            if delay is not None:
                # A little jitter so that several importers do not come back together.
                return delay + random.uniform(0, min(delay, 1.0) * 0.2), "rate limit"
            raise ImportProblem(f"ingest refused a batch as too large ({error.details()}): give a smaller --batch-size")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return backoff * random.uniform(1.0, 1.2), "ingest unavailable"
        hint = ""
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            hint = " (a batch larger than the producer's rate-limit burst never passes: give a smaller --batch-size)"
        elif code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            hint = " (give a token of this producer's with write scope, or an internal one: --token)"
        raise ImportProblem(f"ingest at {self.address} refused the import: {code.name}: {error.details()}{hint}")


def batches(records: Iterable[Record], size: int, summary: Summary) -> Iterator[list[Record]]:
    """The records that became events, ``size`` at a time; the others counted as refused."""
    batch: list[Record] = []
    for record in records:
        summary.records += 1
        if record.event is None:
            summary.refuse(record.line, record.violations)
            continue
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def take_answer(batch: Sequence[Record], response: ingest_pb.BatchIngestEventsResponse, summary: Summary) -> None:
    for result in response.results:
        record = batch[result.index]
        if result.outcome == _ACCEPTED:
            summary.sent += 1
        elif result.outcome == _DUPLICATE:
            summary.duplicates += 1
        else:
            prefix = f"events[{result.index}]."
            summary.refuse(
                record.line,
                [FieldViolation(v.field.removeprefix(prefix), v.description) for v in result.field_violations],
            )


@dataclass(frozen=True)
class ImportOptions:
    path: Path
    file_format: str
    producer: str
    batch_size: int = DEFAULT_BATCH_SIZE
    dry_run: bool = False
    # Events per second at most (0: as fast as ingest admits them).
    rate: float = 0.0
    retry_for: float = DEFAULT_RETRY_FOR
    show_progress: bool = True


async def run(
    options: ImportOptions, *, address: str = "", token: str | None = None, tls: ClientTls | None = None
) -> Summary:
    """Reads the file and sends it (or, dry, only reads it); returns what happened."""
    summary = Summary(str(options.path), options.file_format, options.producer, options.dry_run)
    started = time.monotonic()
    try:
        total = count_records(options.path, options.file_format)
    except (UnicodeDecodeError, csv.Error) as error:
        raise ImportProblem(f"{options.path} does not read as {options.file_format} text ({error})") from None
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(stderr=True),
        transient=True,
        disable=not options.show_progress,
    )
    verb = "checking" if options.dry_run else "importing"
    task = progress.add_task(f"{verb} {options.path.name}", total=total, note="")

    def note(text: str) -> None:
        progress.update(task, note=text)

    sender = None
    if not options.dry_run:
        if not token:
            raise ImportProblem("no token")  # the command line checks this first
        sender = Sender(address, token, tls, retry_for=options.retry_for, on_wait=note)
    try:
        with progress:
            records = open_records(options.path, options.file_format, options.producer)
            for batch in batches(records, options.batch_size, summary):
                if sender is not None:
                    await _pace(options.rate, summary.sent + summary.duplicates, started)
                    events = [record.event for record in batch if record.event is not None]
                    request = ingest_pb.BatchIngestEventsRequest(
                        request_id=request_id(options.producer, events), events=events
                    )
                    take_answer(batch, await sender.send(request, summary), summary)
                progress.update(task, completed=summary.records)
            progress.update(task, completed=summary.records)
    except ImportProblem as problem:
        summary.stopped = str(problem)
    finally:
        if sender is not None:
            await sender.close()
        summary.seconds = time.monotonic() - started
    return summary


async def _pace(rate: float, sent: int, started: float) -> None:
    """With ``--rate``, waits until ``sent`` events are no more than the rate allows so far."""
    if rate > 0:
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)


# --------------------------------------------------------------------------- output


def report_text(summary: Summary, out=sys.stdout, err=sys.stderr) -> None:
    for line, name, text in summary.errors[:SHOWN_ERRORS]:
        print(f"listboss-ops: line {line}: {name}: {text}", file=err)
    hidden = len(summary.errors) - SHOWN_ERRORS
    if hidden > 0:
        print(f"listboss-ops: ... and {hidden} more (--json lists every one)", file=err)
    if summary.stopped:
        print(f"listboss-ops: import stopped: {summary.stopped}", file=err)
    reasons = ", ".join(f"{name} {count:,}" for name, count in sorted(summary.refused_by_reason.items()))
    refused = f"{summary.refused:,} refused" + (f" ({reasons})" if reasons else "")
    if summary.dry_run:
        valid = summary.records - summary.refused
        print(
            f"dry run of {summary.file} ({summary.file_format}) for producer {summary.producer}: "
            f"{summary.records:,} records, {valid:,} valid, {refused}; nothing sent",
            file=out,
        )
        return
    waits = []
    if summary.rate_limited_waits:
        waits.append(f"waited for the rate limit {summary.rate_limited_waits:,} times")
    if summary.unavailable_retries:
        waits.append(f"retried {summary.unavailable_retries:,} times while ingest was unavailable")
    print(
        f"import of {summary.file} ({summary.file_format}) for producer {summary.producer}: "
        f"{summary.records:,} records, {summary.sent:,} sent, {summary.duplicates:,} duplicates "
        f"(already imported), {refused} in {summary.seconds:.1f} s" + (f"; {', '.join(waits)}" if waits else ""),
        file=out,
    )


# --------------------------------------------------------------------------- command line


class UsageProblem(Exception):
    """A command line that cannot be run as given (exit status 2)."""


def _batch_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of events: {text!r}") from None
    if not 1 <= value <= MAX_BATCH_EVENTS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH_EVENTS:,}, got {value}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_command(commands, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``listboss-ops import``, added to the ops command line's subcommands."""
    command = commands.add_parser(
        "import",
        parents=list(parents),
        help="send a producer's past sales through the pipeline, with their original times",
        description="Reads the platform's sales history (JSON Lines of its webhook documents, or a CSV of "
        "sales) and sends each record as an event with its original time through "
        "IngestService.BatchIngestEvents. Re-running is safe: every record has a stable event id. A record "
        "that is not valid is reported with its line number and skipped. Exit status 1 when a record was "
        "refused or the import stopped.",
        epilog="CSV columns (the header names them; case, spaces and hyphens do not matter): "
        + "; ".join(f"{column.name}: {column.meaning}" for column in CSV_COLUMNS)
        + ". Dates are ISO-8601 (no zone: UTC) or epoch milliseconds.",
    )
    command.add_argument("file", type=Path, metavar="FILE", help="the sales history: .jsonl or .csv")
    command.add_argument(
        "--format", choices=FORMATS, dest="file_format", help="the file's format (default: from its extension)"
    )
    command.add_argument("--producer", required=True, help="whose sales these are: a producer id or producers/{id}")
    command.add_argument(
        "--batch-size",
        type=_batch_size,
        default=DEFAULT_BATCH_SIZE,
        help="events per BatchIngestEvents call (default: %(default)s)",
    )
    command.add_argument("--dry-run", action="store_true", help="read and validate the file, count, send nothing")
    command.add_argument(
        "--rate",
        type=_non_negative,
        default=0.0,
        metavar="EVENTS_PER_SECOND",
        help="send at most this many events per second, to leave room for live events (default: 0, no pacing)",
    )
    command.add_argument(
        "--retry-for",
        type=_non_negative,
        default=DEFAULT_RETRY_FOR,
        metavar="SECONDS",
        help="how long one batch may be refused for rate limits or an unavailable ingest before the import "
        "stops (default: %(default)s)",
    )
    command.add_argument(
        "--token",
        help=f"bearer token: the producer's (write scope) or internal (default: ${TOKEN_ENV}, else the "
        "suite file's internal token)",
    )
    command.add_argument(
        "--ingest-address",
        metavar="HOST:PORT",
        help=f"ingest's gRPC address (default: the suite file's, else ${ADDRESS_ENV['ingest']}, else "
        f"{DEFAULT_ADDRESSES['ingest']})",
    )
    command.add_argument("--json", action="store_true", help="one JSON object at the end instead, for scripts")
    command.set_defaults(usage=command.format_usage())


def options_from(args: argparse.Namespace) -> ImportOptions:
    path: Path = args.file
    if not path.is_file():
        raise UsageProblem(f"import: no file at {path}")
    file_format = args.file_format or guess_format(path)
    if file_format is None:
        raise UsageProblem(f"import: cannot tell the format of {path.name} from its name: give --format jsonl|csv")
    producer = args.producer.strip().removeprefix("producers/").strip("/")
    if not producer:
        raise UsageProblem("import: --producer is empty")
    return ImportOptions(
        path=path,
        file_format=file_format,
        producer=producer,
        batch_size=args.batch_size,
        dry_run=args.dry_run,
        rate=args.rate,
        retry_for=args.retry_for,
        show_progress=sys.stderr.isatty() and not args.json,
    )


async def command(targets: Targets, args: argparse.Namespace) -> int:
    """Runs ``listboss-ops import``; 0 when every record was sent (or already was), else 1.
    Raises UsageProblem for a command line that cannot run."""
    options = options_from(args)
    if not options.dry_run and not targets.token:
        raise UsageProblem(
            f"import calls IngestService: give --token (or set {TOKEN_ENV}, or --suite-file); listboss-token prints one"
        )
    try:
        summary = await run(options, address=targets.addresses["ingest"], token=targets.token, tls=targets.tls)
    except ImportProblem as problem:
        print(f"listboss-ops: import: {problem}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary.as_json(), ensure_ascii=False))
        if summary.stopped:  # for the person watching the script, too
            print(f"listboss-ops: import stopped: {summary.stopped}", file=sys.stderr)
    else:
        report_text(summary)
    return 0 if summary.ok else 1
