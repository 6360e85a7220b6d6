"""Audiences: a producer's named contact filters whose members are kept exact.

An audience (``producers/{producer}/audiences/{audience}``) holds one contact filter, the
language of ``ListContacts.filter``. ``audience_members`` holds the contacts that match it
and ``audiences.member_count`` their number. A contact that starts matching gets an
``AUDIENCE_ENTERED`` row in the tag-change outbox, one that stops an ``AUDIENCE_EXITED``,
in the same transaction as the membership; the relay publishes them with the tag changes.

Three things re-evaluate membership:

- **An applied batch** (:func:`reevaluate_batch`, called by apply.py after the batch's
  writes): every audience of the batch's producers, over only the contacts the batch
  touched, one set-based query per audience. A redelivered batch touches no contact, so it
  changes nothing; the filters read the contacts' stored state, which is order-independent,
  so memberships are too.
- **A change of the audience** (:meth:`AudienceStore.create`, :meth:`AudienceStore.update`):
  every contact. Creation records the existing matches silently unless asked to publish them.
- **Time** (:class:`AudienceSweeper`): filters comparing with ``now - <duration>`` change
  their matches as time passes; a periodic sweep re-evaluates those audiences over every
  contact, a bounded number of audiences per round.

And erasure (:func:`remove_contact`) takes the contact out of its audiences, publishing exits.

Concurrency (PostgreSQL). Each producer has an advisory lock for its audiences. A batch or an
erasure holds it *shared* while it evaluates the contacts whose rows it has already locked
(the write path locks contacts by producer, then id); creating, changing, deleting or
sweeping an audience holds it *exclusive* and takes no contact lock. So a full evaluation
waits for the batches already evaluating to commit and then reads what they wrote, and a
batch that wrote a contact before a full evaluation evaluates that contact again after it,
seeing the new audience or filter: the last evaluation of every (audience, contact) sees the
contact's newest committed state. Batches of one producer run side by side; they meet only
on the ``member_count`` rows, updated in audience id order. SQLite has one writer: the
exclusive paths take its write lock before they read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine

from listboss_common import filtering
from listboss_common.db import advisory_lock_key, is_postgres
from listboss_common.errors import InvalidArgument, ServiceError, failed_precondition, invalid_field, not_found
from listboss_common.faults import describe_error
from listboss_common.resources import ResourcePattern
from listboss_contacts import domain, queries
from listboss_contacts.schema import audience_members, audiences, contacts, tag_change_outbox

log = structlog.get_logger("listboss.contacts.audiences")

AUDIENCE = ResourcePattern("producers/{producer}/audiences/{audience}")

#: Audiences one producer may have: each is evaluated for every batch of its changes.
MAX_AUDIENCES = 100
MAX_DISPLAY_NAME = 200
_AUDIENCE_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def now_micros() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Audience:
    id: int  # the row id
    producer: str
    audience_id: str
    display_name: str
    filter: str
    relative: bool
    member_count: int
    revision: int
    create_time: int
    update_time: int

    @property
    def name(self) -> str:
        return AUDIENCE.format(self.producer, self.audience_id)

    @property
    def etag(self) -> str:
        return f"r{self.revision}"


def _record(row) -> Audience:
    return Audience(
        row.id,
        row.producer,
        row.audience_id,
        row.display_name,
        row.filter,
        row.relative,
        row.member_count,
        row.revision,
        row.create_time,
        row.update_time,
    )


# --------------------------------------------------------------------------- validation


def new_audience_id() -> str:
    return f"aud-{uuid.uuid4().hex[:12]}"


def is_audience_id(value: str) -> bool:
    return _AUDIENCE_ID.match(value) is not None


def check_audience_id(audience_id: str) -> None:
    if not _AUDIENCE_ID.match(audience_id):
        raise invalid_field("audience_id", "must be 1-63 lower-case letters, digits or '-', starting with a letter")


def check_display_name(display_name: str, field: str = "audience.display_name") -> str:
    text = display_name.strip()
    if not text:
        raise invalid_field(field, "is required")
    if len(text) > MAX_DISPLAY_NAME:
        raise invalid_field(field, f"must be at most {MAX_DISPLAY_NAME} characters; got {len(text)}")
    return text


def parse_filter(text: str, field: str = "audience.filter") -> filtering.Node:
    """The audience's filter, validated as ListContacts validates its own; errors name ``field``."""
    if not text.strip():
        raise invalid_field(field, "is required: the contact filter whose matches are the audience's members")
    try:
        node = queries.parse_contact_filter(text)
    except InvalidArgument as error:
        raise InvalidArgument([v.prefixed(field.rpartition(".")[0]) for v in error.violations]) from None
    assert node is not None  # a non-blank filter parses to a tree
    return node


_PARSED: dict[str, filtering.Node] = {}


def _parsed(text: str) -> filtering.Node:
    """Stored filters, parsed once per process (they were validated when saved)."""
    node = _PARSED.get(text)
    if node is None:
        if len(_PARSED) > 10_000:
            _PARSED.clear()
        node = _PARSED[text] = parse_filter(text)
    return node


# --------------------------------------------------------------------------- locks


def _lock_key(producer: str) -> int:
    return advisory_lock_key(f"listboss_contacts.audiences/{producer}")


def _hold_for_contacts(connection: Connection, producer: str) -> None:
    """A batch or an erasure about to evaluate contacts it has locked (module docstring)."""
    if is_postgres(connection):
        connection.execute(sa.text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": _lock_key(producer)})


def _hold_for_audiences(connection: Connection, producer: str) -> None:
    """A change to the producer's audiences, or a full evaluation: alone until it commits."""
    if is_postgres(connection):
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(producer)})
    else:
        # A write that changes nothing takes SQLite's write lock now, before the reads.
        connection.execute(
            audiences.update().where(audiences.c.producer == producer, sa.false()).values(revision=audiences.c.revision)
        )


# --------------------------------------------------------------------------- membership


@dataclass(frozen=True)
class Cause:
    """What made a membership change: an event (id, occurrence time, product), or, with no event,
    the moment of the evaluation (time passing, a new filter, an erasure)."""

    event_id: str
    occur_time: int
    product: str = ""


@dataclass
class MembershipChanges:
    entered: int = 0
    exited: int = 0


def _write(
    connection: Connection,
    producer: str,
    changes: Mapping[Audience, tuple[Collection[int], Collection[int]]],
    causes: Callable[[int], Cause],
    publish: bool = True,
) -> MembershipChanges:
    """Writes (entered, exited) contacts per audience: members, counts (audience id order),
    then outbox rows (after the other writes: see tag_changes.py on outbox order)."""
    inserts = [
        {"audience_id": audience.id, "contact_id": contact_id}
        for audience, (entered, _) in changes.items()
        for contact_id in sorted(entered)
    ]
    deletes = [
        {"a": audience.id, "c": contact_id}
        for audience, (_, exited) in changes.items()
        for contact_id in sorted(exited)
    ]
    if inserts:
        connection.execute(audience_members.insert(), inserts)
    if deletes:
        connection.execute(
            audience_members.delete().where(
                audience_members.c.audience_id == sa.bindparam("a"), audience_members.c.contact_id == sa.bindparam("c")
            ),
            deletes,
        )
    for audience in sorted(changes, key=lambda audience: audience.id):
        entered, exited = changes[audience]
        if len(entered) != len(exited):
            connection.execute(
                audiences.update()
                .where(audiences.c.id == audience.id)
                .values(member_count=audiences.c.member_count + (len(entered) - len(exited)))
            )
    result = MembershipChanges(len(inserts), len(deletes))
    if publish and (inserts or deletes):
        commit_time = now_micros()
        rows = []
        for audience in sorted(changes, key=lambda audience: audience.id):
            entered, exited = changes[audience]
            for added, contact_ids in ((True, entered), (False, exited)):
                for contact_id in sorted(contact_ids):
                    cause = causes(contact_id)
                    rows.append(
                        {
                            "producer": producer,
                            "contact_id": contact_id,
                            "product": cause.product,
                            "tag_key": "",
                            "added": added,
                            "event_id": cause.event_id,
                            "segmentation": "",
                            "occur_time": cause.occur_time,
                            "commit_time": commit_time,
                            "audience": audience.audience_id,
                        }
                    )
        connection.execute(tag_change_outbox.insert(), rows)
    return result


def _audiences_of(connection: Connection, producer: str) -> list[Audience]:
    rows = connection.execute(sa.select(audiences).where(audiences.c.producer == producer).order_by(audiences.c.id))
    return [_record(row) for row in rows]


def _touched(connection: Connection, contact_ids: Sequence[int]) -> sa.ColumnElement[bool]:
    """``contacts.id`` among ``contact_ids``, as one bound array (PostgreSQL) or JSON list
    (SQLite): one statement for any number of ids, compiled once and cached."""
    if is_postgres(connection):
        return contacts.c.id == sa.any_(sa.bindparam("touched", list(contact_ids), type_=ARRAY(sa.BigInteger)))
    listed = sa.func.json_each(sa.bindparam("touched", json.dumps(list(contact_ids))))
    return contacts.c.id.in_(sa.select(sa.literal_column("value")).select_from(listed))


def _differences(
    connection: Connection, audience: Audience, touched: sa.ColumnElement[bool], now: int
) -> tuple[set[int], set[int]]:
    """(entered, exited) among the touched contacts: one query that returns only the contacts
    whose match differs from their membership, so a batch that changes no membership reads
    no rows back."""
    condition = queries.ContactFilter(connection, audience.producer, _parsed(audience.filter), now).whole_condition()
    matches = sa.case((condition, 1), else_=0) if condition is not None else sa.literal(1)
    member = sa.exists().where(
        audience_members.c.audience_id == audience.id, audience_members.c.contact_id == contacts.c.id
    )
    is_member = sa.case((member, 1), else_=0)
    rows = connection.execute(
        sa.select(contacts.c.id, is_member).where(
            contacts.c.producer == audience.producer, touched, matches != is_member
        )
    )
    entered: set[int] = set()
    exited: set[int] = set()
    for contact_id, was_member in rows:
        (exited if was_member else entered).add(contact_id)
    return entered, exited


def reevaluate_contacts(
    connection: Connection, producer: str, causes: Mapping[int, Cause], now: int | None = None
) -> MembershipChanges:
    """Re-evaluates every audience of ``producer`` for the contacts in ``causes`` (their ids,
    each with what changed it), in the caller's transaction, after its writes: one query
    per audience."""
    _hold_for_contacts(connection, producer)
    found = _audiences_of(connection, producer)
    if not found or not causes:
        return MembershipChanges()
    touched = _touched(connection, sorted(causes))
    moment = now_micros() if now is None else now  # one instant for every relative filter
    changes: dict[Audience, tuple[Collection[int], Collection[int]]] = {}
    for audience in found:
        entered, exited = _differences(connection, audience, touched, moment)
        if entered or exited:
            changes[audience] = (entered, exited)
    return _write(connection, producer, changes, causes.__getitem__)


def reevaluate_batch(
    connection: Connection, changes: Iterable[domain.Change], contact_ids: Mapping[domain.ContactKey, int]
) -> MembershipChanges:
    """What an applied batch did to its producers' audiences: each contact it touched is
    evaluated once, its newest event of the batch named as the cause."""
    causes: dict[str, dict[int, Cause]] = defaultdict(dict)
    for change in changes:
        contact_id = contact_ids.get(change.contact)
        if contact_id is None:  # an erased person: no contact
            continue
        known = causes[change.producer].get(contact_id)
        if known is None or (known.occur_time, known.event_id) < change.stamp:
            causes[change.producer][contact_id] = Cause(change.event_id, change.occur_time, change.product)
    total = MembershipChanges()
    for producer in sorted(causes):  # one order for every replica's shared locks
        done = reevaluate_contacts(connection, producer, causes[producer])
        total.entered += done.entered
        total.exited += done.exited
    return total


def remove_contact(connection: Connection, producer: str, contact_id: int, now: int | None = None) -> int:
    """Erasure: the contact leaves every audience it is in, each exit published (the change
    names the contact only by its resource name). Returns how many it left."""
    _hold_for_contacts(connection, producer)
    member_of = connection.execute(
        sa.select(audiences)
        .join(audience_members, audience_members.c.audience_id == audiences.c.id)
        .where(audience_members.c.contact_id == contact_id, audiences.c.producer == producer)
        .order_by(audiences.c.id)
    ).all()
    if not member_of:
        return 0
    moment = now_micros() if now is None else now
    changes: dict[Audience, tuple[Collection[int], Collection[int]]] = {
        _record(row): ((), (contact_id,)) for row in member_of
    }
    return _write(connection, producer, changes, lambda _: Cause("", moment)).exited


def reconcile(
    connection: Connection, audience: Audience, now: int | None = None, publish: bool = True
) -> MembershipChanges:
    """Evaluates ``audience`` over every contact of its producer and writes the difference
    with its members (the caller holds :func:`_hold_for_audiences`)."""
    moment = now_micros() if now is None else now
    matched = queries.all_matching_contact_ids(connection, audience.producer, _parsed(audience.filter), moment)
    current = set(
        connection.execute(
            sa.select(audience_members.c.contact_id).where(audience_members.c.audience_id == audience.id)
        ).scalars()
    )
    entered, exited = matched - current, current - matched
    if not entered and not exited:
        return MembershipChanges()
    return _write(connection, audience.producer, {audience: (entered, exited)}, lambda _: Cause("", moment), publish)


# --------------------------------------------------------------------------- the resource


class AudienceStore:
    """The audiences of the caller's transaction (``connection``), for the RPCs."""

    def __init__(self, connection: Connection):
        self.connection = connection

    def _find(self, producer: str, audience_id: str) -> Audience | None:
        row = self.connection.execute(
            sa.select(audiences).where(audiences.c.producer == producer, audiences.c.audience_id == audience_id)
        ).first()
        return None if row is None else _record(row)

    def get(self, producer: str, audience_id: str) -> Audience:
        found = self._find(producer, audience_id)
        if found is None:
            raise not_found(AUDIENCE.format(producer, audience_id))
        return found

    def list(self, producer: str, after_id: int | None, limit: int) -> list[Audience]:
        query = sa.select(audiences).where(audiences.c.producer == producer)
        if after_id is not None:
            query = query.where(audiences.c.id > after_id)
        return [_record(row) for row in self.connection.execute(query.order_by(audiences.c.id).limit(limit))]

    def create(
        self, producer: str, audience_id: str, display_name: str, filter_text: str, publish: bool, now: int
    ) -> tuple[Audience, MembershipChanges]:
        node = parse_filter(filter_text)
        _hold_for_audiences(self.connection, producer)
        if self._find(producer, audience_id) is not None:
            name = AUDIENCE.format(producer, audience_id)
            raise ServiceError(
                grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists", "AUDIENCE_ALREADY_EXISTS", {"resource": name}
            )
        count = self.connection.execute(
            sa.select(sa.func.count()).select_from(audiences).where(audiences.c.producer == producer)
        ).scalar_one()
        if count >= MAX_AUDIENCES:
            raise failed_precondition(
                f"cannot create {AUDIENCE.format(producer, audience_id)}: a producer may have at most "
                f"{MAX_AUDIENCES} audiences and producers/{producer} already has {count}; delete one first",
                "AUDIENCES_LIMIT",
                producer=f"producers/{producer}",
                limit=str(MAX_AUDIENCES),
                total=str(count),
            )
        self.connection.execute(
            audiences.insert().values(
                producer=producer,
                audience_id=audience_id,
                display_name=display_name,
                filter=filter_text,
                relative=queries.has_relative_time(node),
                member_count=0,
                revision=1,
                create_time=now,
                update_time=now,
                sweep_time=now,
            )
        )
        created = self.get(producer, audience_id)
        changes = reconcile(self.connection, created, now, publish=publish)
        return self.get(producer, audience_id), changes

    def update(
        self, producer: str, audience_id: str, etag: str, display_name: str | None, filter_text: str | None, now: int
    ) -> tuple[Audience, MembershipChanges]:
        node = parse_filter(filter_text) if filter_text is not None else None
        _hold_for_audiences(self.connection, producer)
        current = self.get(producer, audience_id)
        _check_etag(current, etag)
        values: dict[str, object] = {"revision": current.revision + 1, "update_time": now}
        if display_name is not None:
            values["display_name"] = display_name
        refilter = filter_text is not None and filter_text != current.filter
        if refilter:
            values.update(filter=filter_text, relative=queries.has_relative_time(node), sweep_time=now)
        self.connection.execute(audiences.update().where(audiences.c.id == current.id).values(**values))
        changes = reconcile(self.connection, self.get(producer, audience_id), now) if refilter else MembershipChanges()
        return self.get(producer, audience_id), changes

    def delete(self, producer: str, audience_id: str, etag: str) -> None:
        _hold_for_audiences(self.connection, producer)
        current = self.get(producer, audience_id)
        _check_etag(current, etag)
        self.connection.execute(audience_members.delete().where(audience_members.c.audience_id == current.id))
        self.connection.execute(audiences.delete().where(audiences.c.id == current.id))


def _check_etag(current: Audience, etag: str) -> None:
    if etag and etag != current.etag:
        raise ServiceError(
            grpc.StatusCode.ABORTED,
            f"{current.name} changed since it was read (etag {etag!r}, now {current.etag!r}); read it again and retry",
            "ETAG_MISMATCH",
            {"audience": current.name},
        )


# --------------------------------------------------------------------------- the sweep


def sweep_due(connection: Connection, now: int, interval: int, limit: int) -> list[tuple[str, str]]:
    """(producer, audience id) of the relative audiences not evaluated for ``interval``
    microseconds, the longest waiting first, at most ``limit``."""
    rows = connection.execute(
        sa.select(audiences.c.producer, audiences.c.audience_id)
        .where(audiences.c.relative == sa.true(), audiences.c.sweep_time <= now - interval)
        .order_by(audiences.c.sweep_time, audiences.c.id)
        .limit(limit)
    )
    return [(row.producer, row.audience_id) for row in rows]


def sweep_audience(
    connection: Connection, producer: str, audience_id: str, now: int, interval: int = 0
) -> MembershipChanges:
    """Evaluates one relative audience at ``now`` and publishes who entered and left;
    nothing when it was evaluated less than ``interval`` microseconds ago (by another
    replica since it was found due) or is gone."""
    _hold_for_audiences(connection, producer)
    row = connection.execute(
        sa.select(audiences).where(
            audiences.c.producer == producer,
            audiences.c.audience_id == audience_id,
            audiences.c.sweep_time <= now - interval,
        )
    ).first()
    if row is None:
        return MembershipChanges()
    changes = reconcile(connection, _record(row), now)
    connection.execute(audiences.update().where(audiences.c.id == row.id).values(sweep_time=now))
    return changes


_SWEEP_LOCK = advisory_lock_key("listboss_contacts.audience_sweep")


class AudienceSweeper:
    """Re-evaluates, every ``interval`` seconds, the audiences whose filters compare with
    ``now``, at most ``per_round`` of them a round (the longest waiting first), each in a
    transaction of its own. On PostgreSQL one replica sweeps at a time (a session advisory
    lock held for the round); besides, the producer's exclusive audience lock and the
    audience's sweep time keep an audience from being swept twice in a round. Shaped
    like a bus worker (``subscribe``, ``run(stop)``)."""

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float = 60.0,
        per_round: int = 20,
        clock: Callable[[], int] = now_micros,
        on_committed: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._interval = interval
        self._per_round = per_round
        self._clock = clock
        self._on_committed = on_committed

    async def subscribe(self) -> None:
        pass

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.sweep_once)
            except Exception as error:  # the database away: the next round tries again
                log.warning("audience sweep failed; will retry", error=describe_error(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    def sweep_once(self) -> MembershipChanges:
        """One round: the due relative audiences, each evaluated at the clock's time. On
        PostgreSQL only the replica holding the sweep lock sweeps; the others skip the round."""
        with self._engine.connect() as leader:
            if is_postgres(leader):
                held = leader.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": _SWEEP_LOCK}).scalar()
                leader.commit()
                if not held:
                    return MembershipChanges()
            try:
                return self._sweep_due()
            finally:
                if is_postgres(leader):
                    leader.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _SWEEP_LOCK})
                    leader.commit()

    def _sweep_due(self) -> MembershipChanges:
        total = MembershipChanges()
        interval = int(self._interval * 1_000_000)
        with self._engine.connect() as connection:
            due = sweep_due(connection, self._clock(), interval, self._per_round)
        for producer, audience_id in due:
            with self._engine.begin() as connection:
                done = sweep_audience(connection, producer, audience_id, self._clock(), interval)
            total.entered += done.entered
            total.exited += done.exited
        if (total.entered or total.exited) and self._on_committed is not None:
            self._on_committed()
        return total
