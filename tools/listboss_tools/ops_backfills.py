"""Backfills as an operator sees them (``listboss-ops backfills``, and ``status``).

A backfill runs in the segmentation replica that holds its lease (``owner``, until
``lease_expire_time``) and stores its progress in the segmentation database (table
``backfills``) every few hundred events and at the end. When that replica dies, another one
takes the backfill over once the lease expires (listboss_segmentation.backfill). A RUNNING row
whose ``update_time`` (the last progress) is older than the stuck threshold is *stuck* (no
segmentation replica is left to take it over, or it makes no progress), unless a newer
backfill of the same segmentation exists (it was already requested again: *superseded*).
Resuming is asking SegmentationService.BackfillSegmentation again for the same segmentation:
a second run changes nothing that the first one did.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from listboss.segmentation.v1 import segmentation_service_pb2 as pb
from listboss.segmentation.v1 import segmentation_service_pb2_grpc as pb_grpc
from listboss_common.processes import GRPC_CHANNEL_OPTIONS
from listboss_common.tls import ClientTls, grpc_aio_channel
from listboss_segmentation.schema import backfills

DEFAULT_STUCK_MINUTES = 10.0
RPC_TIMEOUT = 10.0


def segmentation_name(producer: str, product: str, segmentation: str) -> str:
    return f"producers/{producer}/products/{product}/segmentations/{segmentation}"


def parse_backfill_name(name: str) -> tuple[str, str]:
    """(segmentation name, backfill id) of a Backfill resource name; ValueError otherwise."""
    parts = name.strip("/").split("/")
    if len(parts) != 8 or parts[0::2] != ["producers", "products", "segmentations", "backfills"] or not all(parts):
        raise ValueError(
            f"not a backfill name: {name!r} (producers/P/products/X/segmentations/S/backfills/B, as list prints it)"
        )
    return "/".join(parts[:6]), parts[7]


def _moment(micros: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(micros / 1_000_000, dt.UTC)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def read(engine: sa.Engine, now: dt.datetime, stuck_minutes: float = DEFAULT_STUCK_MINUTES) -> list[dict]:
    """Every backfill, oldest first, with ``stuck`` and ``superseded_by`` worked out."""
    with engine.connect() as connection:
        rows = connection.execute(sa.select(backfills).order_by(backfills.c.create_time, backfills.c.backfill_id)).all()
    newest: dict[str, dict] = {}
    found = []
    for row in rows:
        parent = segmentation_name(row.producer, row.product_id, row.segmentation_id)
        updated = _moment(row.update_time)
        item = {
            "name": f"{parent}/backfills/{row.backfill_id}",
            "segmentation": parent,
            "producer": row.producer,
            "state": row.state,
            "events_scanned": row.events_scanned,
            "events_considered": row.events_considered,
            "events_matched": row.events_matched,
            "error": row.error or None,
            "create_time": _rfc3339(_moment(row.create_time)),
            "update_time": _rfc3339(updated),
            "idle_seconds": round(max(0.0, (now - updated).total_seconds()), 1),
            "owner": row.owner or None,
            # Seconds the owner's lease still runs (negative: expired, another replica may claim it).
            "lease_seconds_left": round((_moment(row.lease_expire_time) - now).total_seconds(), 1),
            "stuck": False,
            "superseded_by": None,
        }
        found.append(item)
        newest[parent] = item  # rows are in creation order: the last one is the newest
    for item in found:
        if item["state"] != "RUNNING" or item["idle_seconds"] < stuck_minutes * 60:
            continue
        latest = newest[item["segmentation"]]
        if latest is item:
            item["stuck"] = True
        else:
            item["superseded_by"] = latest["name"]
    return found


def stuck(items: list[dict]) -> list[dict]:
    return [item for item in items if item["stuck"]]


def message_dict(backfill: pb.Backfill) -> dict:
    return {
        "name": backfill.name,
        "state": pb.BackfillState.Name(backfill.state).removeprefix("BACKFILL_STATE_"),
        "events_scanned": backfill.events_scanned,
        "events_considered": backfill.events_considered,
        "events_matched": backfill.events_matched,
        "error": backfill.error or None,
        "update_time": _rfc3339(backfill.update_time.ToDatetime(dt.UTC)) if backfill.HasField("update_time") else None,
    }


class Resumer:
    """SegmentationService over gRPC with a bearer token (internal, or the producer's)."""

    def __init__(self, address: str, token: str, tls: ClientTls | None = None):
        self._channel = grpc_aio_channel(address, tls, GRPC_CHANNEL_OPTIONS)
        self._stub = pb_grpc.SegmentationServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)

    async def get(self, name: str) -> pb.Backfill:
        return await self._stub.GetBackfill(
            pb.GetBackfillRequest(name=name), metadata=self._metadata, timeout=RPC_TIMEOUT
        )

    async def start(self, segmentation: str) -> pb.Backfill:
        return await self._stub.BackfillSegmentation(
            pb.BackfillSegmentationRequest(name=segmentation), metadata=self._metadata, timeout=RPC_TIMEOUT
        )

    async def close(self) -> None:
        await self._channel.close()
