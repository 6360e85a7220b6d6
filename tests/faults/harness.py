"""The fault-injection harness: a paced load through ingest, a fault in the middle of it,
and the checks that follow.

A :class:`FaultRun` sends at least 10,000 generated events through
``IngestService.BatchIngestEvents`` in paced batches (a background thread that keeps
retrying a batch the suite refuses, with the same ``request_id``, so a retry stores only
what was missing). The test injects its fault once part of the load is accepted
(:meth:`FaultRun.fault` marks when it started and ended), then :meth:`FaultRun.finish`
waits, bounded in time, until the contacts history holds every stored event or the
pipeline has nothing left to deliver, and checks:

a. every stored event id is in the contacts history exactly once (and nothing else is);
b. every tag's ``contact_count`` equals its present links;
c. the final (email, product, tag) set equals the one the automatic rules give for the
   same events without a fault, computed here in-process: each event through
   segmentation's ``change_for``, and per (email, product, tag) the operation with the
   greatest (occur_time, event id) stamp wins (contacts' ``domain.py``);
d. ``LISTBOSS_DEADLETTER`` holds nothing (or, in the poison run, exactly the poison).

"Stored" is every event ingest answered ACCEPTED, plus every event a retried batch
answered DUPLICATE (all ids are unique, so DUPLICATE can only mean that an earlier attempt
of the same request was stored before its answer got lost), plus events the test published
on the bus itself.

It also records recovery figures (how long after the fault the backlog drained and at how
many events/s, when the history caught up with the load, the contacts process's peak RSS;
see :meth:`FaultRun._recovery`) and writes them to a JSON file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from listboss.events.v1 import event_pb2
from listboss_tools.suite import Suite

from .load import EventFactory, LoadGenerator, LoadShape, expected_tags
from .probes import (
    ContactsProbe,
    DeadLetter,
    RssSampler,
    _wait_in_flight,
    backlog,
    dead_letters,
    publish_event_batch,
)


@dataclasses.dataclass
class Outcome:
    figures: dict
    failures: list[str]

    def assert_ok(self) -> None:
        assert not self.failures, "\n".join(self.failures)


class FaultRun:
    """The load against one suite, a fault in its middle, and the checks after it."""

    def __init__(
        self,
        scenario: str,
        suite: Suite,
        figures_file: Path,
        *,
        producer: str = "faults",
        shape: LoadShape = LoadShape(),  # noqa: B008 - frozen: one shared default is safe
        say: Callable[[str], None] = print,
    ):
        self.scenario = scenario
        self.suite = suite
        self.producer = producer
        self.shape = shape
        self.figures_file = figures_file
        self.say = say
        self.factory = EventFactory(producer, shape)
        self.load = LoadGenerator(
            suite.ingest_address,
            suite.internal_token,
            self.factory.batches(),
            shape.interval,
            request_prefix=f"{scenario}-{shape.seed}",
        )
        self.probe = ContactsProbe(suite.database_url("contacts"))
        self.rss = RssSampler(suite)
        self.published: list[event_pb2.Event] = []  # put on the bus by the test itself
        self.poison: list[event_pb2.Event] = []  # never to be applied: expected in the dead letters
        self.published_at: list[tuple[float, list[str]]] = []
        self.faults: list[dict] = []
        self.started = time.time()

    def start_load(self) -> None:
        self.started = time.time()
        self.rss.start()
        self.load.start()

    def wait_answered(self, fraction: float, timeout: float = 120.0) -> None:
        """Waits until ``fraction`` of the load got an answer; fails the run if it does not."""
        count = int(self.load.total * fraction)
        if not self.load.wait_answered(count, timeout):
            raise AssertionError(
                f"only {self.load.answered} of {count} events answered after {timeout:.0f} s ({self.load.error})"
            )

    @contextlib.contextmanager
    def fault(self, description: str) -> Iterator[dict]:
        """Marks the fault's start and end (the end is when the part is back); the dict
        yielded takes figures of the fault's own."""
        record: dict = {"fault": description, "start": time.time()}
        self.say(
            f"[{self.scenario}] fault: {description} at +{record['start'] - self.started:.1f} s "
            f"({self.load.answered} of {self.load.total} events answered)"
        )
        yield record
        record["end"] = time.time()
        self.faults.append(record)
        self.say(
            f"[{self.scenario}] fault over after {record['end'] - record['start']:.1f} s "
            f"({self.load.answered} events answered)"
        )

    def wait_in_flight(self, stream: str, durable: str, timeout: float = 5.0) -> int:
        """Waits (bounded) until the durable consumer holds delivered, unacknowledged messages,
        so that a kill lands on work in progress; returns how many it held (0: none seen)."""
        return asyncio.run(_wait_in_flight(self.suite.nats_url, stream, durable, timeout))

    def close(self) -> None:
        """Stops the load and the sampler (after a failure, too); idempotent."""
        self.load.halt()
        if self.load.is_alive():
            self.load.join(timeout=35)
        if self.rss.is_alive():
            self.rss.stop()
        self.probe.close()

    def publish(self, events: Sequence[event_pb2.Event], poison: Sequence[event_pb2.Event] = ()) -> None:
        """Puts one packed batch straight on the bus (bypassing ingest's validation)."""
        msg_id = f"{self.producer}/batch/direct-{self.scenario}-{len(self.published)}/0"
        publish_event_batch(self.suite.nats_url, self.producer, events, msg_id)
        poisoned = {event.id for event in poison}
        good = [event for event in events if event.id not in poisoned]
        self.published.extend(good)
        self.published_at.append((time.time(), [event.id for event in good]))
        self.poison.extend(poison)

    # -- after the load ----------------------------------------------------------

    def _wait_for_history(self, expected: int, timeout: float, stall: float) -> str:
        """Waits until the history holds ``expected`` entries (and, in a poison run, a dead
        letter names the poison): "complete"; or until nothing is left to deliver and the
        history has stopped growing: "idle"; or ``timeout``."""
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        idle_polls = 0
        while True:
            count = self.probe.history_count(self.producer)
            now = time.monotonic()
            if count is not None and count >= expected and self._poison_dead_lettered():
                return "complete"
            if count != last_count:
                last_count, last_change = count, now
                idle_polls = 0
            elif now - last_change > stall:
                idle_polls = idle_polls + 1 if backlog(self.suite.nats_url) == 0 else 0
                if idle_polls >= 3:
                    return "idle"
            if now > deadline:
                return "timeout"
            time.sleep(1.0)

    def _poison_dead_lettered(self) -> bool:
        if not self.poison:
            return True
        poison_ids = {event.id for event in self.poison}
        try:
            letters = dead_letters(self.suite.nats_url)
        except Exception:
            return False
        return any(poison_ids & (set(letter.event_ids) | set(_header_ids(letter.headers))) for letter in letters)

    def finish(self, *, catch_up_timeout: float = 150.0, stall: float = 15.0) -> Outcome:
        """Lets the load end, waits for the history (bounded), checks, records the figures."""
        load = self.load
        load.join(timeout=max(60.0, load.total / 50))  # the pacing ends long before
        if load.is_alive():
            load.halt()
            load.join(timeout=35)
        stored = [*load.stored, *self.published]
        stored_ids = Counter(event.id for event in stored)
        wait_from = time.time()
        waited = self._wait_for_history(len(stored_ids), catch_up_timeout, stall)
        self.say(f"[{self.scenario}] history wait ended: {waited} after {time.time() - wait_from:.1f} s")
        peak_kib = self.rss.stop()

        failures: list[str] = []
        if load.error:
            failures.append(f"load: {load.error}")
        if load.answered < load.total:
            failures.append(f"load: only {load.answered} of {load.total} events got an answer")

        # (a) every stored event exactly once in the history, and nothing else.
        entries = self.probe.history(self.producer)
        history = Counter({event_id: n for event_id, (n, _) in entries.items()})
        missing = [event_id for event_id in stored_ids if event_id not in history]
        twice = {event_id: n for event_id, n in history.items() if n > 1}
        unknown = [event_id for event_id in history if event_id not in stored_ids]
        poison_ids = {event.id for event in self.poison}
        poison_applied = [event_id for event_id in poison_ids if event_id in history]
        unknown = [event_id for event_id in unknown if event_id not in poison_ids]
        if missing:
            failures.append(
                f"(a) {len(missing)} of {len(stored_ids)} stored events are not in the history (e.g. {missing[:3]})"
            )
        if twice:
            failures.append(f"(a) {len(twice)} events are in the history more than once (e.g. {list(twice)[:3]})")
        if unknown:
            failures.append(f"(a) {len(unknown)} history entries are of events never stored (e.g. {unknown[:3]})")
        if poison_applied:
            failures.append(f"(a) the poison event {poison_applied} is in the history")

        # (b) kept counts equal the links.
        mismatches = self.probe.count_mismatches(self.producer)
        if mismatches:
            failures.append(
                f"(b) {len(mismatches)} tags' contact_count differ from their present links "
                f"(product, key, count, links: {mismatches[:5]})"
            )

        # (c) the same tags as without the fault; each person captured once.
        expected = expected_tags(stored)
        actual = self.probe.present_tags(self.producer)
        tags_missing, tags_extra = sorted(expected - actual), sorted(actual - expected)
        if tags_missing or tags_extra:
            failures.append(
                f"(c) tags differ from the fault-free result: {len(tags_missing)} missing "
                f"(e.g. {tags_missing[:3]}), {len(tags_extra)} extra (e.g. {tags_extra[:3]})"
            )
        emails = self.probe.contact_emails(self.producer)
        expected_emails = {event.person.email for event in stored}
        if set(emails) != expected_emails or any(n > 1 for n in emails.values()):
            failures.append(
                f"(c) contacts differ: {len(expected_emails - set(emails))} missing, "
                f"{len(set(emails) - expected_emails)} unexpected, "
                f"{sum(1 for n in emails.values() if n > 1)} twice"
            )

        # (d) dead letters: none, or exactly the poison.
        letters = dead_letters(self.suite.nats_url)
        dead_event_ids = [event_id for letter in letters for event_id in letter.event_ids]
        failures.extend(self._check_dead_letters(letters, poison_ids))

        recovery = self._recovery({event_id: at for event_id, (_, at) in entries.items()}, caught_up=not missing)
        figures = {
            "scenario": self.scenario,
            "result": "pass" if not failures else "fail",
            "events_sent": load.total + len(self.published) + len(self.poison),
            "events_stored": len(stored_ids),
            "accepted_by_ingest": len(load.accepted),
            "duplicate_on_retry": load.duplicates_on_retry,
            "published_directly": len(self.published) + len(self.poison),
            "ingest_refusals": dict(load.refusals),
            "ingest_refused_s": round(load.refused_seconds, 1),
            "faults": [
                {
                    "at_s": round(f["start"] - self.started, 1),
                    "lasted_s": round(f["end"] - f["start"], 1),
                    **{k: v for k, v in f.items() if k not in ("start", "end")},
                }
                for f in self.faults
            ],
            "load_s": round((load.finished_at or time.time()) - self.started, 1),
            "history_wait": waited,
            "history_entries": sum(history.values()),
            "events_lost": len(missing),
            "events_twice": len(twice),
            "dead_letters": len(letters),
            "dead_lettered_events": len(dead_event_ids),
            "dead_letter_subjects": sorted({letter.subject for letter in letters}),
            "tag_count_mismatches": len(mismatches),
            "tags_expected": len(expected),
            "tags_missing": len(tags_missing),
            "tags_extra": len(tags_extra),
            **recovery,
            "contacts_rss_peak_mib": round(peak_kib / 1024, 1),
            "duration_s": round(time.time() - self.started, 1),
            "failures": failures,
        }
        self._record(figures)
        self.probe.close()
        return Outcome(figures, failures)

    def _recovery(self, committed_at: dict[str, float], caught_up: bool) -> dict:
        """How the suite came back, from the history's commit times (``record_time``):

        - ``backlog_drained_after_fault_s``: from the fault's end until every event stored
          before that end was committed: the recovery proper;
        - ``drain_events_per_s``: the history's commits per second over that time;
        - ``caught_up_after_fault_s`` / ``caught_up_after_load_s``: from the fault's end / the
          load's last answer until the last commit (the rest of the load included);
        - ``end_to_end_events_per_s``: every commit over the whole run.
        """
        times = sorted(committed_at.values())
        figures: dict = {
            "end_to_end_events_per_s": None,
            "backlog_drained_after_fault_s": None,
            "drain_events_per_s": None,
            "caught_up_after_fault_s": None,
            "caught_up_after_load_s": None,
        }
        if not times:
            return figures
        last = times[-1]
        if last > self.started:
            figures["end_to_end_events_per_s"] = round(len(times) / (last - self.started))
        if not caught_up:
            return figures
        if self.load.finished_at:
            figures["caught_up_after_load_s"] = round(max(0.0, last - self.load.finished_at), 1)
        if not self.faults:
            return figures
        fault_end = max(f["end"] for f in self.faults)
        figures["caught_up_after_fault_s"] = round(max(0.0, last - fault_end), 1)
        before = [i for when, ids in [*self.load.answers, *self.published_at] if when <= fault_end for i in ids]
        if before:
            drained = max(committed_at[i] for i in before)
            figures["backlog_drained_after_fault_s"] = round(max(0.0, drained - fault_end), 1)
            if drained - fault_end >= 0.5:
                commits = sum(1 for t in times if fault_end <= t <= drained)
                figures["drain_events_per_s"] = round(commits / (drained - fault_end))
        return figures

    def _check_dead_letters(self, letters: list[DeadLetter], poison_ids: set[str]) -> list[str]:
        if not poison_ids:
            if letters:
                events = sum(len(letter.event_ids) for letter in letters)
                return [
                    f"(d) {len(letters)} dead letters holding {events} events "
                    f"(subjects {sorted({letter.subject for letter in letters})}; first error: "
                    f"{letters[0].headers.get('Listboss-Error', '?')[:200]})"
                ]
            return []
        failures = []
        naming = [
            letter
            for letter in letters
            if poison_ids & set(letter.event_ids) or poison_ids & set(_header_ids(letter.headers))
        ]
        if len(letters) != 1 or len(naming) != 1:
            events = sum(len(letter.event_ids) for letter in letters)
            failures.append(
                f"(d) expected exactly one dead letter, for the poison; found {len(letters)} holding "
                f"{events} events ({len(naming)} of them naming the poison)"
            )
        for letter in naming[:1]:
            headers = letter.headers
            named = set(_header_ids(headers))
            if named != poison_ids:
                failures.append(
                    f"(d) Listboss-Event-Ids names {sorted(named)}, not only the poison {sorted(poison_ids)}"
                )
            if set(letter.event_ids) - poison_ids:
                failures.append(f"(d) the dead letter carries {len(letter.event_ids)} events, not only the poison")
            if headers.get("Listboss-Producer") != self.producer:
                failures.append(f"(d) Listboss-Producer is {headers.get('Listboss-Producer')!r}, not {self.producer!r}")
            original = headers.get("Listboss-Original-Subject", "")
            # Events: listboss.events.<producer>; changes: listboss.changes.<producer>.<partition>.
            if not re.fullmatch(rf"listboss\.(events|changes)\.{re.escape(self.producer)}(\.\d+)?", original):
                failures.append(f"(d) Listboss-Original-Subject is {original!r}")
            if not headers.get("Listboss-Stream-Sequence", "").isdigit():
                failures.append(f"(d) Listboss-Stream-Sequence is {headers.get('Listboss-Stream-Sequence')!r}")
            if not headers.get("Listboss-Error"):
                failures.append("(d) Listboss-Error is missing")
        return failures

    def _record(self, figures: dict) -> None:
        try:
            recorded = json.loads(self.figures_file.read_text())
        except (OSError, ValueError):
            recorded = {}
        recorded[self.scenario] = figures
        self.figures_file.write_text(json.dumps(recorded, indent=2) + "\n")
        self.say(f"\n[{self.scenario}] {summary(figures)}")
        for failure in figures["failures"]:
            self.say(f"[{self.scenario}] FAILED {failure}")
        self.say(f"[{self.scenario}] figures written to {self.figures_file}")


def summary(figures: dict) -> str:
    """One line of a run's figures, for people."""

    def seconds(key: str) -> str:
        return "-" if figures.get(key) is None else f"{figures[key]} s"

    return (
        f"{figures['result'].upper()}: {figures['events_stored']} events stored, {figures['history_entries']} in the "
        f"history, {figures['events_lost']} lost, {figures['dead_lettered_events']} dead-lettered "
        f"({figures['dead_letters']} letters), {figures['tag_count_mismatches']} counts off, "
        f"{figures['tags_missing']} tags missing / {figures['tags_extra']} extra; backlog drained "
        f"{seconds('backlog_drained_after_fault_s')} after the fault at "
        f"{figures['drain_events_per_s'] or '-'} events/s, "
        f"caught up {seconds('caught_up_after_load_s')} after the load; contacts RSS peak "
        f"{figures['contacts_rss_peak_mib']} MiB; {figures['duration_s']} s"
    )


def _header_ids(headers: dict[str, str]) -> list[str]:
    return [part for part in re.split(r"[,\s]+", headers.get("Listboss-Event-Ids", "")) if part]
