"""google.protobuf.Timestamp to and from the integer microseconds the stores keep."""

from __future__ import annotations

from google.protobuf import timestamp_pb2


def timestamp(micros: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def micros(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.seconds * 1_000_000 + stamp.nanos // 1000
