"""``listboss-ops status``: one look at a running ListBoss, gathered in parallel.

- each service's gRPC health (``grpc.health.v1.Health/Check``, the overall service);
- per durable consumer of the work streams, what JetStream's consumer info says: pending
  (not yet delivered), ack-pending (delivered, not yet acked) and redelivered; for a partition's
  consumer (``contacts-p<k>``), the contacts replica that owns the partition now (``partitions``:
  the live replicas and each partition's owner, from the ownership bucket);
- dead letters per original stream and consumer (the subjects' counts in LISTBOSS_DEADLETTER);
- with ``--contacts-database``: the tag-change outbox backlog (rows and the oldest's age);
- with ``--segmentation-database``: backfills running, and stuck (see :mod:`ops_backfills`).

The result is one JSON-ready dict; ``problems`` lists what makes the exit status 1: a service
not SERVING, NATS unreachable, an expected consumer missing, any dead letter, a stuck backfill,
a database that cannot be read. A backlog alone is not a problem: it is what the figures are for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import grpc
import nats
import nats.js.errors
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from listboss_common import bus, partitions
from listboss_common.processes import GRPC_CHANNEL_OPTIONS
from listboss_common.tls import ClientTls, grpc_aio_channel
from listboss_contacts.schema import tag_change_outbox
from listboss_tools import deadletters, ops_backfills
from listboss_tools.ops_targets import TargetError, Targets, read_engine, safe_url

HEALTH_TIMEOUT = 3.0
NATS_CONNECT_TIMEOUT = 5.0
# The durable consumers the services create (segmentation's and contacts' main.py).
EXPECTED_CONSUMERS = ((bus.EVENTS.name, "segmentation"), (bus.CHANGES.name, "contacts"))
WORK_STREAMS = (bus.EVENTS.name, bus.CHANGES.name)


async def health(address: str, tls: ClientTls | None = None) -> str:
    """SERVING, NOT_SERVING, ... or the RPC error's code (UNAVAILABLE, DEADLINE_EXCEEDED)."""
    async with grpc_aio_channel(address, tls, GRPC_CHANNEL_OPTIONS) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT
            )
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def _services(targets: Targets) -> dict:
    names = list(targets.addresses)
    states = await asyncio.gather(*(health(targets.addresses[name], targets.tls) for name in names))
    return {
        name: {"address": targets.addresses[name], "health": state} for name, state in zip(names, states, strict=True)
    }


async def _bus(nats_url: str) -> dict:
    """Consumers and dead letters; ``error`` when NATS or JetStream does not answer."""

    async def quiet(_error: Exception) -> None:
        pass

    found: dict = {"url": nats_url, "error": None, "consumers": [], "dead_letters": None, "partitions": None}
    try:
        nc = await nats.connect(
            nats_url,
            name="listboss-ops",
            connect_timeout=NATS_CONNECT_TIMEOUT,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            error_cb=quiet,
        )
    except Exception as error:
        found["error"] = f"cannot connect ({type(error).__name__}: {error})"
        return found
    try:
        js = nc.jetstream()
        for stream in WORK_STREAMS:
            try:
                infos = await js.consumers_info(stream)
            except nats.js.errors.NotFoundError:
                infos = []
            for info in infos:
                if not info.config.durable_name:
                    continue  # ephemeral: a backfill's or a replay's ordered reader
                found["consumers"].append(
                    {
                        "stream": stream,
                        "consumer": info.name,
                        "pending": info.num_pending or 0,
                        "ack_pending": info.num_ack_pending or 0,
                        "redelivered": info.num_redelivered or 0,
                        "waiting": info.num_waiting or 0,
                    }
                )
        found["dead_letters"] = await _dead_letters(js)
        found["partitions"] = await _partitions(js, found["consumers"])
    except Exception as error:
        found["error"] = f"JetStream did not answer ({type(error).__name__}: {error})"
    finally:
        await nc.close()
    return found


async def _partitions(js, consumers: list[dict]) -> dict | None:
    """The contacts replicas present and each partition's owner (None: unclaimed, e.g. while
    a dead replica's lease runs out); each partition consumer's item gets its ``owner``."""
    by_partition = {}
    for item in consumers:
        name = item["consumer"]
        if item["stream"] == bus.CHANGES.name and name.startswith("contacts-p") and name[10:].isdigit():
            by_partition[int(name[10:])] = item
    if not by_partition:
        return None
    try:
        owners = await partitions.read_owners(js, "contacts", max(by_partition) + 1)
        members = await partitions.read_members(js, "contacts")
    except nats.js.errors.NotFoundError:
        owners, members = {}, []
    for partition, item in by_partition.items():
        item["owner"] = owners.get(partition)
    return {
        "group": "contacts",
        "members": members,
        "owners": {str(partition): owners.get(partition) for partition in sorted(by_partition)},
    }


async def _dead_letters(js) -> dict:
    """Counts per (original stream, consumer), from the per-subject counts JetStream keeps:
    no message is read, however many there are."""
    try:
        info = await js.stream_info(deadletters.STREAM, subjects_filter=deadletters.subject_filter())
    except nats.js.errors.NotFoundError:
        return {"total": 0, "by_consumer": []}
    by_consumer = []
    for subject, count in sorted((info.state.subjects or {}).items()):
        stream, _, consumer = subject.removeprefix(deadletters.SUBJECT_PREFIX).partition(".")
        by_consumer.append({"stream": stream, "consumer": consumer or None, "count": count})
    return {"total": info.state.messages, "by_consumer": by_consumer}


def _outbox(url: str, now: dt.datetime) -> dict:
    found = {"database": safe_url(url), "rows": None, "oldest_age_seconds": None, "error": None}
    try:
        engine = read_engine(url)
        try:
            with engine.connect() as connection:
                rows, oldest = connection.execute(
                    sa.select(sa.func.count(), sa.func.min(tag_change_outbox.c.commit_time))
                ).one()
        finally:
            engine.dispose()
    except TargetError as error:
        found["error"] = str(error)
        return found
    except Exception as error:
        found["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        return found
    found["rows"] = rows
    if oldest is not None:
        found["oldest_age_seconds"] = round(max(0.0, now.timestamp() - oldest / 1_000_000), 1)
    return found


def _backfills(url: str, now: dt.datetime, stuck_minutes: float) -> dict:
    found: dict[str, Any] = {
        "database": safe_url(url),
        "running": None,
        "stuck": [],
        "stuck_after_minutes": stuck_minutes,
        "error": None,
    }
    try:
        engine = read_engine(url)
        try:
            items = ops_backfills.read(engine, now, stuck_minutes)
        finally:
            engine.dispose()
    except TargetError as error:
        found["error"] = str(error)
        return found
    except Exception as error:
        found["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        return found
    found["running"] = sum(
        1 for item in items if item["state"] == "RUNNING" and not item["stuck"] and not item["superseded_by"]
    )
    found["stuck"] = ops_backfills.stuck(items)
    return found


async def gather(targets: Targets, stuck_minutes: float = ops_backfills.DEFAULT_STUCK_MINUTES) -> dict:
    now = dt.datetime.now(dt.UTC)
    contacts_url = targets.databases.get("contacts")
    segmentation_url = targets.databases.get("segmentation")
    services, bus_state, outbox, backfills = await asyncio.gather(
        _services(targets),
        _bus(targets.nats_url),
        asyncio.to_thread(_outbox, contacts_url, now) if contacts_url else _none(),
        asyncio.to_thread(_backfills, segmentation_url, now, stuck_minutes) if segmentation_url else _none(),
    )
    found = {
        "time": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "services": services,
        "nats": {"url": bus_state["url"], "error": bus_state["error"]},
        "consumers": bus_state["consumers"],
        "dead_letters": bus_state["dead_letters"],
        "partitions": bus_state["partitions"],
        "outbox": outbox,
        "backfills": backfills,
    }
    found["problems"] = problems(found)
    found["ok"] = not found["problems"]
    return found


async def _none() -> None:
    return None


def problems(found: dict) -> list[str]:
    listed = []
    for name, service in found["services"].items():
        if service["health"] != "SERVING":
            listed.append(f"{name} at {service['address']} is {service['health']}")
    if found["nats"]["error"]:
        listed.append(f"NATS at {found['nats']['url']}: {found['nats']['error']}")
    else:
        present = {(item["stream"], item["consumer"]) for item in found["consumers"]}
        for stream, consumer in EXPECTED_CONSUMERS:
            if (stream, consumer) not in present:
                listed.append(f"no durable consumer {consumer} on {stream} (has that service ever started?)")
    dead = found["dead_letters"]
    if dead and dead["total"]:
        listed.append(f"{dead['total']} dead letter(s): listboss-ops deadletters list")
    if found["outbox"] and found["outbox"]["error"]:
        listed.append(f"contacts database: {found['outbox']['error']}")
    backfills = found["backfills"]
    if backfills and backfills["error"]:
        listed.append(f"segmentation database: {backfills['error']}")
    elif backfills and backfills["stuck"]:
        listed.append(f"{len(backfills['stuck'])} stuck backfill(s): listboss-ops backfills resume --stuck")
    return listed
