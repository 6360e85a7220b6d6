"""``listboss-ops``: operating a running ListBoss from the command line.

    listboss-ops status [--contacts-database URL] [--segmentation-database URL] [--json]
    listboss-ops backfills list [--segmentation-database URL] [--state S] [--producer P] [--json]
    listboss-ops backfills resume (NAME... | --stuck) [--token T] [--force] [--json]
    listboss-ops migrations status [--segmentation-database URL] [--contacts-database URL] [--json]
    listboss-ops deadletters list [--producer P] [--stream S] [--json]
    listboss-ops deadletters show SEQ [--json]
    listboss-ops deadletters replay (SEQ... | --all [--producer P] [--stream S])
    listboss-ops deadletters purge (SEQ... | --all [--producer P] [--stream S])
    listboss-ops import FILE --producer P [--format jsonl|csv] [--batch-size N] [--dry-run] [--json]

``--nats-url``, ``--suite-file`` and the TLS options ``--cacert`` (the CA of the services'
certificates), ``--cert`` / ``--key`` (a client certificate, for mutual TLS) go before or after
the command; without them ``LISTBOSS_TLS_CA_FILE``, ``LISTBOSS_TLS_CLIENT_CERT_FILE`` and
``LISTBOSS_TLS_CLIENT_KEY_FILE`` apply, and with none of these the gRPC calls are plaintext. Where each part is found
(an option, then the local suite's ``suite.json`` given with ``--suite-file``, then the
environment, then the defaults) is :mod:`listboss_tools.ops_targets`; what ``status``
gathers is :mod:`listboss_tools.ops_status`, backfills :mod:`listboss_tools.ops_backfills`,
migrations :mod:`listboss_tools.ops_migrations`. Tables for people by default, ``--json``
for scripts. ``--nats-url`` defaults to ``$LISTBOSS_NATS_URL``, else
nats://127.0.0.1:4222. SEQ is a dead letter's sequence in LISTBOSS_DEADLETTER, as
``list`` prints it. ``--stream`` names the original stream (LISTBOSS_EVENTS or
LISTBOSS_CHANGES; ``events`` and ``changes`` will do). The dead letters' format is in
:mod:`listboss_tools.deadletters`. ``import`` (past sales, through ingest) is
:mod:`listboss_tools.ops_import`.

Exit status: 0 when everything asked for was done and is healthy (an empty stream
included), 1 when something is unhealthy or failed (``status`` found a problem, a database
behind its head revision, NATS unreachable, a sequence with no dead letter, a replay or a
resume refused), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
import nats
import nats.errors
import nats.js.errors
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from listboss_common.config import ConfigError
from listboss_common.tls import CA_FILE_ENV, CLIENT_CERT_FILE_ENV, CLIENT_KEY_FILE_ENV, ClientTls
from listboss_tools import deadletters, ops_backfills, ops_import, ops_migrations, ops_status
from listboss_tools.ops_targets import (
    ADDRESS_ENV,
    DATABASE_ENV,
    DEFAULT_ADDRESSES,
    DEFAULT_NATS_URL,
    SERVICES,
    TOKEN_ENV,
    TargetError,
    Targets,
    read_engine,
    resolve,
)

CONNECT_TIMEOUT = 5.0
PROG = "listboss-ops"

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


class Failed(Exception):
    pass


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a sequence number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"sequence numbers start at 1, got {value}")
    return value


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"minutes must be more than 0, got {text}")
    return value


def _backfill_name(text: str) -> str:
    try:
        ops_backfills.parse_backfill_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip("/")


def _tls_options(parser: argparse.ArgumentParser, default: object) -> None:
    """--cacert, --cert and --key, for services serving TLS (mutual TLS: --cert and --key)."""
    parser.add_argument(
        "--cacert",
        type=Path,
        default=default,
        help=f"CA of the services' certificates: talk TLS (default: ${CA_FILE_ENV}; none: plaintext)",
    )
    parser.add_argument(
        "--cert",
        type=Path,
        default=default,
        help=f"client certificate for mutual TLS (default: ${CLIENT_CERT_FILE_ENV})",
    )
    parser.add_argument("--key", type=Path, default=default, help=f"its private key (default: ${CLIENT_KEY_FILE_ENV})")


def build_parser() -> argparse.ArgumentParser:
    # --nats-url and --suite-file are accepted before or after the command; the top level holds the default.
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--nats-url",
        default=argparse.SUPPRESS,
        help=f"NATS server (default: the suite file's, else $LISTBOSS_NATS_URL, else {DEFAULT_NATS_URL})",
    )
    connection.add_argument(
        "--suite-file",
        type=Path,
        default=argparse.SUPPRESS,
        help="the local suite's suite.json (./dev run writes var/suite.json): NATS, the "
        "services' addresses and an internal token",
    )
    _tls_options(connection, argparse.SUPPRESS)

    parser = argparse.ArgumentParser(prog=PROG, description="Operate a running ListBoss.")
    parser.add_argument(
        "--nats-url",
        default=None,
        help=f"NATS server (default: the suite file's, else $LISTBOSS_NATS_URL, else {DEFAULT_NATS_URL})",
    )
    parser.add_argument(
        "--suite-file", type=Path, default=None, help="the local suite's suite.json (./dev run writes var/suite.json)"
    )
    _tls_options(parser, None)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    def address(command: argparse.ArgumentParser, service: str) -> None:
        command.add_argument(
            f"--{service}-address",
            metavar="HOST:PORT",
            help=f"{service}'s gRPC address (default: the suite file's, else "
            f"${ADDRESS_ENV[service]}, else {DEFAULT_ADDRESSES[service]})",
        )

    def database(command: argparse.ArgumentParser, service: str, what: str) -> None:
        command.add_argument(
            f"--{service}-database",
            metavar="URL",
            help=f"the {service} database's SQLAlchemy URL, read only ({what}; default: ${DATABASE_ENV[service]})",
        )

    def as_json(command: argparse.ArgumentParser, what: str = "one JSON object instead, for scripts") -> None:
        command.add_argument("--json", action="store_true", help=what)

    def stuck_after(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--stuck-after",
            type=_minutes,
            metavar="MINUTES",
            default=ops_backfills.DEFAULT_STUCK_MINUTES,
            help="a RUNNING backfill not updated for this long is stuck (default: %(default)s)",
        )

    # -- status
    status = groups.add_parser(
        "status",
        parents=[connection],
        help="health, consumer lag, outbox, dead letters, backfills",
        description="Each service's gRPC health; per durable consumer, JetStream's pending, ack-pending and "
        "redelivered counts; dead letters per stream and consumer; with --contacts-database the tag-change "
        "outbox backlog; with --segmentation-database the backfills running and stuck. Exit status 1 when "
        "something needs attention (listed under 'problems').",
    )
    for service in SERVICES:
        address(status, service)
    database(status, "contacts", "the tag-change outbox backlog")
    database(status, "segmentation", "backfills running and stuck")
    stuck_after(status)
    as_json(status)

    # -- backfills
    backfills = groups.add_parser(
        "backfills",
        help="list backfills, resume stuck ones",
        description="Backfills of custom segmentations, from the segmentation database.",
    )
    backfill_actions = backfills.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = backfill_actions.add_parser(
        "list",
        parents=[connection],
        help="every backfill, oldest first",
        description="Every backfill, oldest first: state, counts, when last "
        "updated; stuck = RUNNING and not updated for --stuck-after minutes.",
    )
    database(listing, "segmentation", "required")
    listing.add_argument(
        "--state", choices=("running", "succeeded", "failed", "stuck"), help="only the backfills in this state"
    )
    listing.add_argument("--producer", help="only this producer's backfills")
    stuck_after(listing)
    as_json(listing, "one JSON object per line instead, for scripts")
    resume = backfill_actions.add_parser(
        "resume",
        parents=[connection],
        help="start a stuck backfill's segmentation again",
        description="Calls SegmentationService.BackfillSegmentation again for each backfill's segmentation (a "
        "new backfill; a second run changes nothing the first one did). Refuses a backfill that is still "
        "running (updated within --stuck-after minutes) unless --force.",
    )
    resume.add_argument(
        "names", nargs="*", type=_backfill_name, metavar="NAME", help="a backfill's name, as list prints it"
    )
    resume.add_argument("--stuck", action="store_true", help="every stuck backfill (reads --segmentation-database)")
    resume.add_argument("--force", action="store_true", help="resume even one that looks alive")
    resume.add_argument(
        "--token",
        help=f"bearer token: internal, or the producer's (default: ${TOKEN_ENV}, else "
        "the suite file's internal token; listboss-token --internal prints one)",
    )
    address(resume, "segmentation")
    database(resume, "segmentation", "for --stuck")
    stuck_after(resume)
    as_json(resume, "one JSON object per line instead, for scripts")
    resume.set_defaults(usage=resume.format_usage())

    # -- migrations
    migrations = groups.add_parser(
        "migrations",
        help="each database's schema revision against head",
        description="Alembic revisions of the services' databases.",
    )
    migration_actions = migrations.add_subparsers(dest="action", metavar="ACTION", required=True)
    migration_status = migration_actions.add_parser(
        "status",
        help="each database's current revision against the newest this code knows",
        description="Each given database's current Alembic revision against head. Exit status 1 unless every "
        "one is at head.",
    )
    database(migration_status, "segmentation", "at least one database is required")
    database(migration_status, "contacts", "at least one database is required")
    as_json(migration_status)
    migration_status.set_defaults(usage=migration_status.format_usage())

    # -- dead letters
    dead = groups.add_parser(
        "deadletters",
        help="list, show, replay or purge what the workers could not process",
        description="Dead letters: what the bus workers could not process, in the stream "
        f"{deadletters.STREAM} (listboss.deadletter.<stream>.<consumer>).",
    )
    actions = dead.add_subparsers(dest="action", metavar="ACTION", required=True)

    def filters(command: argparse.ArgumentParser) -> None:
        command.add_argument("--producer", help="only the dead letters of this producer")
        command.add_argument(
            "--stream",
            type=deadletters.stream_name,
            help="only those from this original stream: LISTBOSS_EVENTS or LISTBOSS_CHANGES",
        )

    listing = actions.add_parser(
        "list",
        parents=[connection],
        help="one line per dead letter, oldest first",
        description="One line per dead letter, oldest first: its sequence, age, original "
        "subject, producer, event ids and error.",
    )
    filters(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line instead, for scripts")

    show = actions.add_parser(
        "show",
        parents=[connection],
        help="everything about one dead letter",
        description="Headers and the body decoded as JSON.",
    )
    show.add_argument("seq", type=_positive, metavar="SEQ", help="the dead letter's sequence, as list prints it")
    show.add_argument("--json", action="store_true", help="one JSON object (headers, body) for scripts")

    for name, summary in (
        ("replay", "publish dead letters to their original subjects again, then delete them"),
        ("purge", "delete dead letters"),
    ):
        command = actions.add_parser(
            name,
            parents=[connection],
            help=summary,
            description=summary[0].upper() + summary[1:] + ". Give sequences, or --all "
            "(narrowed by --producer and --stream).",
        )
        command.add_argument(
            "seqs", type=_positive, nargs="*", metavar="SEQ", help="a dead letter's sequence, as list prints it"
        )
        command.add_argument("--all", action="store_true", help="every dead letter (matching the filters)")
        filters(command)
        command.set_defaults(usage=command.format_usage())

    # -- import
    ops_import.add_command(groups, [connection])
    return parser


def _check_selection(args: argparse.Namespace) -> None:
    if args.all and args.seqs:
        raise UsageError(f"{args.action}: give sequences or --all, not both")
    if not args.all and not args.seqs:
        raise UsageError(f"{args.action}: give the sequences of the dead letters, or --all")
    if args.seqs and (args.producer or args.stream):
        raise UsageError(f"{args.action}: --producer and --stream narrow --all; they do not go with sequences")


# --------------------------------------------------------------------------- formatting


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _ids(ids: Sequence[str], shown: int = 2) -> str:
    if not ids:
        return "-"
    text = ",".join(_cut(i, 36) for i in ids[:shown])
    return text if len(ids) <= shown else f"{text} +{len(ids) - shown} more"


_COLUMNS = "{seq:>8}  {age:>5}  {subject:<28}  {producer:<16}  {events:<40}  {error}"


def _line(summary: dict) -> str:
    return _COLUMNS.format(
        seq=summary["seq"],
        age=_age(summary["age_seconds"]),
        subject=_cut(summary["original_subject"] or "?", 28),
        producer=_cut(summary["producer"] or "?", 16),
        events=_cut(_ids(summary["event_ids"]), 40),
        error=_cut((summary["error"] or "-").replace("\n", " "), 120),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _show_text(letter: deadletters.DeadLetter) -> str:
    summary = letter.summary(_now())
    lines = [
        f"dead letter {letter.seq} on {letter.subject}",
        f"  dead-lettered  {summary['dead_letter_time'] or '?'} ({_age(summary['age_seconds'])} ago)",
        f"  stored         {deadletters.rfc3339(letter.stored) if letter.stored else '?'} in {deadletters.STREAM}",
        f"  original       {letter.original_subject or '?'} ({letter.original_stream or '?'} sequence "
        f"{letter.header(deadletters.STREAM_SEQUENCE) or '?'}, consumer {letter.consumer or '?'})",
        f"  producer       {letter.producer or '?'}",
        f"  event ids      {', '.join(letter.event_ids) or '-'}",
        f"  deliveries     {letter.header(deadletters.DELIVERIES) or '?'}",
        f"  error          {letter.error or '-'}",
        "headers:",
        *(f"  {name}: {value}" for name, value in letter.headers.items()),
    ]
    if not letter.headers:
        lines.append("  (none)")
    batch, problem = letter.decode()
    if batch is None:
        preview = letter.data[:1024]
        lines.append(f"body: {len(letter.data)} bytes that do not decode ({problem})")
        lines.append(f"  {preview!r}" + (" (first 1024 bytes)" if len(letter.data) > len(preview) else ""))
    else:
        lines.append(f"body: {type(batch).__name__}, {len(letter.data)} bytes")
        lines.append(json.dumps(letter.body_json(), indent=2, ensure_ascii=False))
    return "\n".join(lines)


def _show_json(letter: deadletters.DeadLetter) -> str:
    found = letter.summary(_now())
    found["headers"] = dict(letter.headers)
    batch, problem = letter.decode()
    found["body"] = letter.body_json()
    found["body_type"] = type(batch).__name__ if batch is not None else None
    found["body_error"] = problem or None
    if batch is None:
        found["body_hex"] = letter.data.hex()
    return json.dumps(found, ensure_ascii=False)


# --------------------------------------------------------------------------- commands


def _matches(letter: deadletters.DeadLetter, producer: str | None) -> bool:
    return producer is None or letter.producer == producer


async def _list(js, args: argparse.Namespace) -> int:
    count = 0
    now = _now()
    async for letter in deadletters.read(js, args.stream):
        if not _matches(letter, args.producer):
            continue
        summary = letter.summary(now)
        if args.json:
            print(json.dumps(summary, ensure_ascii=False))
        else:
            if count == 0:
                print(
                    _COLUMNS.format(
                        seq="SEQ",
                        age="AGE",
                        subject="ORIGINAL SUBJECT",
                        producer="PRODUCER",
                        events="EVENT IDS",
                        error="ERROR",
                    )
                )
            print(_line(summary))
        count += 1
    if count == 0 and not args.json:
        print("no dead letters" + _narrowed(args), file=sys.stderr)
    return EXIT_OK


def _narrowed(args: argparse.Namespace) -> str:
    parts = []
    if args.producer:
        parts.append(f"producer {args.producer}")
    if args.stream:
        parts.append(f"stream {args.stream}")
    return f" (for {', '.join(parts)})" if parts else ""


async def _show(js, args: argparse.Namespace) -> int:
    letter = await deadletters.get(js, args.seq)
    if letter is None:
        raise Failed(f"no dead letter {args.seq} in {deadletters.STREAM}")
    print(_show_json(letter) if args.json else _show_text(letter))
    return EXIT_OK


async def _selected(js, args: argparse.Namespace) -> list[int]:
    """The sequences the command acts on: those given, or every match of --all."""
    if args.seqs:
        return list(dict.fromkeys(args.seqs))
    return [letter.seq async for letter in deadletters.read(js, args.stream) if _matches(letter, args.producer)]


async def _replay(js, args: argparse.Namespace) -> int:
    seqs = await _selected(js, args)
    if not seqs:
        print("no dead letters to replay" + _narrowed(args), file=sys.stderr)
        return EXIT_OK
    done = failed = 0
    with _progress(len(seqs), "replaying") as progress:
        task = progress.add_task("replaying", total=len(seqs))
        for seq in seqs:
            if await _replay_one(js, seq):
                done += 1
            else:
                failed += 1
            progress.advance(task)
    print(f"{done} replayed, {failed} failed")
    return EXIT_OK if failed == 0 else EXIT_FAILED


async def _replay_one(js, seq: int) -> bool:
    """Replays one dead letter; False (the error printed) when it was not."""
    letter = await deadletters.get(js, seq)
    if letter is None:
        _error(f"dead letter {seq}: not found (already replayed or purged?)")
        return False
    try:
        result = await deadletters.replay(js, letter)
    except deadletters.ReplayRefused as refused:
        _error(f"dead letter {seq} not replayed: {refused}")
        return False
    except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as error:
        _error(f"dead letter {seq} not replayed (kept): the publish to {letter.original_subject} failed: {error!r}")
        return False
    note = " (JetStream already held it from an earlier replay: stored once)" if result.duplicate else ""
    gone = "dead letter deleted" if result.deleted else "dead letter was already gone"
    print(f"replayed {seq} -> {result.subject} ({result.stream} sequence {result.stream_seq}){note}; {gone}")
    return True


async def _purge(js, args: argparse.Namespace) -> int:
    seqs = await _selected(js, args)
    if not seqs:
        print("no dead letters to purge" + _narrowed(args), file=sys.stderr)
        return EXIT_OK
    done = failed = 0
    for seq in seqs:
        if await deadletters.delete(js, seq):
            print(f"purged {seq}")
            done += 1
        else:
            _error(f"dead letter {seq}: not found")
            failed += 1
    print(f"{done} purged, {failed} failed")
    return EXIT_OK if failed == 0 else EXIT_FAILED


DEADLETTER_COMMANDS = {"list": _list, "show": _show, "replay": _replay, "purge": _purge}


# --------------------------------------------------------------------------- rendering (rich)


def _console() -> Console:
    # Off a terminal (a pipe, a file) rich would wrap tables at 80 columns: give them room.
    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def _busy(what: str):
    """A spinner on stderr while something slow runs, only on a terminal."""
    if sys.stderr.isatty():
        return Console(stderr=True).status(what)
    return contextlib.nullcontext()


def _progress(total: int, what: str):
    """A progress bar on stderr for ``total`` steps, only on a terminal and for more than one."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=total < 2 or not sys.stderr.isatty(),
    )


def _table(*columns: str, numeric: Sequence[str] = ()) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left", overflow="fold")
    return table


_HEALTH_STYLE = {"SERVING": "green"}


def _status_text(found: dict) -> None:
    console = _console()
    services = _table("SERVICE", "ADDRESS", "HEALTH")
    for name, service in found["services"].items():
        style = _HEALTH_STYLE.get(service["health"], "bold red")
        services.add_row(name, service["address"], f"[{style}]{service['health']}[/]")
    console.print(services)

    if found["nats"]["error"]:
        console.print(f"[bold red]NATS at {found['nats']['url']}: {found['nats']['error']}[/]")
    else:
        lag = _table(
            "STREAM",
            "CONSUMER",
            "PENDING",
            "ACK PENDING",
            "REDELIVERED",
            "OWNER",
            numeric=("PENDING", "ACK PENDING", "REDELIVERED"),
        )
        for item in found["consumers"]:
            # A partition's consumer is worked by one replica at a time: which one now.
            owner = item.get("owner", "")
            lag.add_row(
                item["stream"],
                item["consumer"],
                f"{item['pending']:,}",
                f"{item['ack_pending']:,}",
                f"{item['redelivered']:,}",
                owner if owner is not None else "[yellow]unclaimed[/]",
            )
        console.print(lag if found["consumers"] else "consumers: none")
        dead = found["dead_letters"]
        if dead["total"]:
            letters = _table("DEAD LETTERS FROM", "CONSUMER", "COUNT", numeric=("COUNT",))
            for item in dead["by_consumer"]:
                letters.add_row(item["stream"], item["consumer"] or "?", f"[bold red]{item['count']:,}[/]")
            console.print(letters)
        else:
            console.print("dead letters: [green]none[/]")

    outbox = found["outbox"]
    if outbox is None:
        console.print("tag-change outbox: not checked (give --contacts-database)")
    elif outbox["error"]:
        console.print(f"tag-change outbox: [bold red]{outbox['error']}[/]")
    else:
        oldest = f", oldest {_age(outbox['oldest_age_seconds'])}" if outbox["rows"] else ""
        console.print(f"tag-change outbox: {outbox['rows']:,} rows waiting{oldest}")

    backfills = found["backfills"]
    if backfills is None:
        console.print("backfills: not checked (give --segmentation-database)")
    elif backfills["error"]:
        console.print(f"backfills: [bold red]{backfills['error']}[/]")
    else:
        stuck = backfills["stuck"]
        console.print(
            f"backfills: {backfills['running']} running, "
            + (f"[bold red]{len(stuck)} stuck[/]" if stuck else "none stuck")
            + f" (no progress for {backfills['stuck_after_minutes']:g} min)"
        )
        if stuck:
            console.print(_backfills_table(stuck))

    if found["problems"]:
        console.print("[bold red]problems:[/]")
        for problem in found["problems"]:
            console.print(f"  - {problem}")
    else:
        console.print("[green]all healthy[/]")


def _backfill_state(item: dict) -> str:
    if item["stuck"]:
        return "[bold red]RUNNING (stuck)[/]"
    if item["superseded_by"]:
        return "[yellow]RUNNING (superseded)[/]"
    return {"SUCCEEDED": "[green]SUCCEEDED[/]", "FAILED": "[red]FAILED[/]"}.get(item["state"], item["state"])


def _backfills_table(items: list[dict]) -> Table:
    table = _table(
        "NAME",
        "STATE",
        "SCANNED",
        "CONSIDERED",
        "MATCHED",
        "UPDATED",
        "OWNER",
        "LEASE",
        "ERROR",
        numeric=("SCANNED", "CONSIDERED", "MATCHED"),
    )
    for item in items:
        table.add_row(
            item["name"],
            _backfill_state(item),
            f"{item['events_scanned']:,}",
            f"{item['events_considered']:,}",
            f"{item['events_matched']:,}",
            f"{_age(item['idle_seconds'])} ago",
            item["owner"] or "",
            _lease(item),
            _cut(item["error"] or "", 60),
        )
    return table


def _lease(item: dict) -> str:
    if item["state"] != "RUNNING":
        return ""
    left = item["lease_seconds_left"]
    return f"{_age(left)} left" if left > 0 else f"expired {_age(-left)} ago"


# --------------------------------------------------------------------------- status, backfills, migrations


async def _status(targets: Targets, args: argparse.Namespace) -> int:
    with _busy("asking the services, NATS and the databases…"):
        found = await ops_status.gather(targets, args.stuck_after)
    if args.json:
        print(json.dumps(found, ensure_ascii=False))
    else:
        _status_text(found)
    return EXIT_OK if found["ok"] else EXIT_FAILED


def _segmentation_engine(targets: Targets, why: str):
    url = targets.databases.get("segmentation")
    if not url:
        raise UsageError(
            f"{why} reads the segmentation database: give --segmentation-database URL "
            f"(or set {DATABASE_ENV['segmentation']})"
        )
    try:
        return read_engine(url)
    except TargetError as error:
        raise Failed(f"segmentation database: {error}") from None


def _read_backfills(targets: Targets, args: argparse.Namespace, why: str) -> list[dict]:
    engine = _segmentation_engine(targets, why)
    try:
        return ops_backfills.read(engine, _now(), args.stuck_after)
    except Exception as error:
        raise Failed(f"cannot read the backfills: {type(error).__name__}: {str(error).splitlines()[0]}") from None
    finally:
        engine.dispose()


async def _backfills_list(targets: Targets, args: argparse.Namespace) -> int:
    items = await asyncio.to_thread(_read_backfills, targets, args, "backfills list")
    if args.producer:
        items = [item for item in items if item["producer"] == args.producer]
    if args.state == "stuck":
        items = [item for item in items if item["stuck"]]
    elif args.state:
        items = [item for item in items if item["state"] == args.state.upper()]
    if args.json:
        for item in items:
            print(json.dumps(item, ensure_ascii=False))
    elif items:
        _console().print(_backfills_table(items))
    else:
        print("no backfills" + (f" ({args.state})" if args.state else ""), file=sys.stderr)
    return EXIT_OK


def _rpc_problem(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details()}"


async def _backfills_resume(targets: Targets, args: argparse.Namespace) -> int:
    if args.stuck == bool(args.names):
        raise UsageError("resume: give backfill names, or --stuck" + (", not both" if args.stuck else ""))
    if not targets.token:
        raise UsageError(
            f"resume calls SegmentationService: give --token (or set {TOKEN_ENV}, or --suite-file); "
            "listboss-token --internal prints one"
        )
    if args.stuck:
        names = [
            item["name"]
            for item in await asyncio.to_thread(_read_backfills, targets, args, "resume --stuck")
            if item["stuck"]
        ]
        if not names:
            print("no stuck backfills", file=sys.stderr)
            return EXIT_OK
    else:
        names = list(dict.fromkeys(args.names))
    resumer = ops_backfills.Resumer(targets.addresses["segmentation"], targets.token, targets.tls)
    done = failed = 0
    try:
        for name in names:
            segmentation, _ = ops_backfills.parse_backfill_name(name)
            outcome: dict = {"name": name, "resumed": False, "backfill": None, "error": None}
            try:
                current = ops_backfills.message_dict(await resumer.get(name))
                idle = (
                    (_now() - dt.datetime.fromisoformat(current["update_time"])).total_seconds()
                    if current["update_time"]
                    else None
                )
                if (
                    current["state"] == "RUNNING"
                    and idle is not None
                    and idle < args.stuck_after * 60
                    and not args.force
                ):
                    outcome["error"] = (
                        f"still running (updated {_age(idle)} ago, under --stuck-after "
                        f"{args.stuck_after:g} min): not resumed; --force starts another anyway"
                    )
                else:
                    started = await resumer.start(segmentation)
                    outcome.update(resumed=True, backfill=ops_backfills.message_dict(started))
            except grpc.aio.AioRpcError as error:
                outcome["error"] = _rpc_problem(error)
            if outcome["resumed"]:
                done += 1
            else:
                failed += 1
            if args.json:
                print(json.dumps(outcome, ensure_ascii=False))
            elif outcome["resumed"]:
                print(f"resumed {name}: new backfill {outcome['backfill']['name']} ({outcome['backfill']['state']})")
            else:
                _error(f"{name}: {outcome['error']}")
    finally:
        await resumer.close()
    if not args.json:
        print(f"{done} resumed, {failed} failed")
    return EXIT_OK if failed == 0 else EXIT_FAILED


async def _migrations_status(targets: Targets, args: argparse.Namespace) -> int:
    chosen = {service: url for service, url in targets.databases.items() if url}
    if not chosen:
        raise UsageError(
            "migrations status: give --segmentation-database and/or --contacts-database "
            f"(or set {DATABASE_ENV['segmentation']} / {DATABASE_ENV['contacts']})"
        )
    with _busy("reading the databases' revisions\u2026"):
        found = [await asyncio.to_thread(ops_migrations.status, service, url) for service, url in chosen.items()]
    ok = all(item["state"] == "at-head" for item in found)
    if args.json:
        print(json.dumps({"ok": ok, "databases": found}, ensure_ascii=False))
    else:
        table = _table("SERVICE", "DATABASE", "CURRENT", "HEAD", "STATE", "PENDING")
        for item in found:
            style = "green" if item["state"] == "at-head" else "bold red"
            table.add_row(
                item["service"],
                item["database"],
                item["current"] or "-",
                item["head"] or "-",
                f"[{style}]{item['state']}[/]" + (f": {item['error']}" if item["error"] else ""),
                ", ".join(item["pending"]) or "-",
            )
        _console().print(table)
    return EXIT_OK if ok else EXIT_FAILED


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


async def _connect(url: str):
    async def quiet(_error: Exception) -> None:  # failures are reported once, below
        pass

    try:
        # Two attempts, then give up (nats-py's 0 would mean "retry for ever").
        return await nats.connect(
            url,
            name=PROG,
            connect_timeout=CONNECT_TIMEOUT,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
            error_cb=quiet,
        )
    except Exception as error:  # NoServersError, OSError, a bad URL...
        raise Failed(
            f"cannot connect to NATS at {url} ({type(error).__name__}: {error}); pass --nats-url or set "
            "LISTBOSS_NATS_URL (the local suite, ./dev run, listens on nats://127.0.0.1:4322)"
        ) from None


async def _deadletters(targets: Targets, args: argparse.Namespace) -> int:
    nc = await _connect(targets.nats_url)
    try:
        return await DEADLETTER_COMMANDS[args.action](nc.jetstream(), args)
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as error:
        raise Failed(
            f"JetStream does not answer at {targets.nats_url} ({error!r}): is nats-server running with -js?"
        ) from None
    except (TimeoutError, nats.errors.TimeoutError) as error:
        raise Failed(f"NATS at {targets.nats_url} did not answer in time ({error!r})") from None
    except (nats.errors.Error, nats.js.errors.Error) as error:
        raise Failed(f"NATS at {targets.nats_url} answered with an error: {error}") from None
    finally:
        await nc.close()


async def _import(targets: Targets, args: argparse.Namespace) -> int:
    try:
        return await ops_import.command(targets, args)
    except ops_import.UsageProblem as error:
        raise UsageError(str(error)) from None


def _command(args: argparse.Namespace):
    if args.group == "deadletters":
        return _deadletters
    return {
        ("status", None): _status,
        ("backfills", "list"): _backfills_list,
        ("backfills", "resume"): _backfills_resume,
        ("migrations", "status"): _migrations_status,
        ("import", None): _import,
    }[(args.group, getattr(args, "action", None))]


def _targets(args: argparse.Namespace) -> Targets:
    try:
        targets = resolve(
            nats_url=args.nats_url,
            suite_file=args.suite_file,
            addresses={service: getattr(args, f"{service}_address", None) for service in SERVICES},
            databases={service: getattr(args, f"{service}_database", None) for service in DATABASE_ENV},
            token=getattr(args, "token", None),
        )
    except TargetError as error:
        raise UsageError(str(error)) from None
    try:
        targets.tls = ClientTls.from_env(ca_file=args.cacert, cert_file=args.cert, key_file=args.key)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    try:
        if args.group == "deadletters" and args.action in ("replay", "purge"):
            _check_selection(args)
        targets = _targets(args)
        args.nats_url = targets.nats_url
        return asyncio.run(_command(args)(targets, args))
    except UsageError as error:
        print(getattr(args, "usage", parser.format_usage()), end="", file=sys.stderr)
        _error(str(error))
        return EXIT_USAGE
    except Failed as error:
        _error(str(error))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
