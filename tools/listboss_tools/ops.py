"""``listboss-ops``: operating a running ListBoss from the command line.

    listboss-ops deadletters list [--producer P] [--stream S] [--json]
    listboss-ops deadletters show SEQ [--json]
    listboss-ops deadletters replay (SEQ... | --all [--producer P] [--stream S])
    listboss-ops deadletters purge (SEQ... | --all [--producer P] [--stream S])

``--nats-url`` (before or after the command) defaults to ``$LISTBOSS_NATS_URL``, else
nats://127.0.0.1:4222. SEQ is a dead letter's sequence in LISTBOSS_DEADLETTER, as
``list`` prints it. ``--stream`` names the original stream (LISTBOSS_EVENTS or
LISTBOSS_CHANGES; ``events`` and ``changes`` will do). The dead letters' format is in
:mod:`listboss_tools.deadletters`.

Exit status: 0 when everything asked for was done (an empty stream included), 1 when
something failed (NATS unreachable, a sequence with no dead letter, a replay refused
or not acknowledged), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence

import nats
import nats.errors
import nats.js.errors

from listboss_tools import deadletters

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
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


def build_parser() -> argparse.ArgumentParser:
    # --nats-url is accepted before or after the command; the top level holds the default.
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--nats-url", default=argparse.SUPPRESS,
                            help="NATS server (default: $LISTBOSS_NATS_URL, else %s)" % DEFAULT_NATS_URL)

    parser = argparse.ArgumentParser(prog=PROG, description="Operate a running ListBoss.")
    parser.add_argument("--nats-url", default=os.environ.get("LISTBOSS_NATS_URL") or DEFAULT_NATS_URL,
                        help="NATS server (default: $LISTBOSS_NATS_URL, else %(default)s)")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    dead = groups.add_parser(
        "deadletters", help="list, show, replay or purge what the workers could not process",
        description="Dead letters: what the bus workers could not process, in the stream "
        f"{deadletters.STREAM} (listboss.deadletter.<stream>.<consumer>).",
    )
    actions = dead.add_subparsers(dest="action", metavar="ACTION", required=True)

    def filters(command: argparse.ArgumentParser) -> None:
        command.add_argument("--producer", help="only the dead letters of this producer")
        command.add_argument("--stream", type=deadletters.stream_name,
                             help="only those from this original stream: LISTBOSS_EVENTS or LISTBOSS_CHANGES")

    listing = actions.add_parser("list", parents=[connection], help="one line per dead letter, oldest first",
                                 description="One line per dead letter, oldest first: its sequence, age, original "
                                 "subject, producer, event ids and error.")
    filters(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line instead, for scripts")

    show = actions.add_parser("show", parents=[connection], help="everything about one dead letter",
                              description="Headers and the body decoded as JSON.")
    show.add_argument("seq", type=_positive, metavar="SEQ", help="the dead letter's sequence, as list prints it")
    show.add_argument("--json", action="store_true", help="one JSON object (headers, body) for scripts")

    for name, summary in (
        ("replay", "publish dead letters to their original subjects again, then delete them"),
        ("purge", "delete dead letters"),
    ):
        command = actions.add_parser(name, parents=[connection], help=summary,
                                     description=summary[0].upper() + summary[1:] + ". Give sequences, or --all "
                                     "(narrowed by --producer and --stream).")
        command.add_argument("seqs", type=_positive, nargs="*", metavar="SEQ",
                             help="a dead letter's sequence, as list prints it")
        command.add_argument("--all", action="store_true", help="every dead letter (matching the filters)")
        filters(command)
        command.set_defaults(usage=command.format_usage())
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
                print(_COLUMNS.format(seq="SEQ", age="AGE", subject="ORIGINAL SUBJECT", producer="PRODUCER",
                                      events="EVENT IDS", error="ERROR"))
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
    for seq in seqs:
        letter = await deadletters.get(js, seq)
        if letter is None:
            _error(f"dead letter {seq}: not found (already replayed or purged?)")
            failed += 1
            continue
        try:
            result = await deadletters.replay(js, letter)
        except deadletters.ReplayRefused as refused:
            _error(f"dead letter {seq} not replayed: {refused}")
            failed += 1
            continue
        except (nats.errors.Error, nats.js.errors.Error, asyncio.TimeoutError) as error:
            _error(f"dead letter {seq} not replayed (kept): the publish to {letter.original_subject} failed: "
                   f"{error!r}")
            failed += 1
            continue
        note = " (JetStream already held it from an earlier replay: stored once)" if result.duplicate else ""
        gone = "dead letter deleted" if result.deleted else "dead letter was already gone"
        print(f"replayed {seq} -> {result.subject} ({result.stream} sequence {result.stream_seq}){note}; {gone}")
        done += 1
    print(f"{done} replayed, {failed} failed")
    return EXIT_OK if failed == 0 else EXIT_FAILED


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


COMMANDS = {"list": _list, "show": _show, "replay": _replay, "purge": _purge}


def _error(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


async def _connect(url: str):
    async def quiet(_error: Exception) -> None:  # failures are reported once, below
        pass

    try:
        # Two attempts, then give up (nats-py's 0 would mean "retry for ever").
        return await nats.connect(url, name=PROG, connect_timeout=CONNECT_TIMEOUT, allow_reconnect=False,
                                  max_reconnect_attempts=1, reconnect_time_wait=0.5, error_cb=quiet)
    except Exception as error:  # NoServersError, OSError, a bad URL...
        raise Failed(
            f"cannot connect to NATS at {url} ({type(error).__name__}: {error}); pass --nats-url or set "
            "LISTBOSS_NATS_URL (the local suite, ./dev run, listens on nats://127.0.0.1:4322)"
        ) from None


async def _run(args: argparse.Namespace) -> int:
    nc = await _connect(args.nats_url)
    try:
        return await COMMANDS[args.action](nc.jetstream(), args)
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as error:
        raise Failed(
            f"JetStream does not answer at {args.nats_url} ({error!r}): is nats-server running with -js?"
        ) from None
    except (nats.errors.TimeoutError, asyncio.TimeoutError) as error:
        raise Failed(f"NATS at {args.nats_url} did not answer in time ({error!r})") from None
    except (nats.errors.Error, nats.js.errors.Error) as error:
        raise Failed(f"NATS at {args.nats_url} answered with an error: {error}") from None
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    try:
        if args.action in ("replay", "purge"):
            _check_selection(args)
        return asyncio.run(_run(args))
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
