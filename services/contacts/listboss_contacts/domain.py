"""Order-independent tag state, free of protobuf and of the database.

Every tag operation carries a stamp: the time its event occurred, with the
event id breaking ties. For each (contact, tag) the operation with the
greatest stamp decides whether the tag is present. Taking a maximum is
commutative, associative and idempotent, so any order and any repetition of
the same events ends in the same tags.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Stamp = tuple[int, str]  # (occur time in microseconds, event id)


@dataclass(frozen=True)
class TagLink:
    present: bool
    stamp: Stamp
    segmentation: str


def newest(links: Iterable[TagLink]) -> TagLink:
    return max(links, key=lambda link: link.stamp)


def resolve(current: TagLink | None, incoming: TagLink) -> TagLink | None:
    """The link to store after ``incoming``, or None when ``current`` is newer (nothing changes)."""
    if current is not None and current.stamp >= incoming.stamp:
        return None
    return incoming


def count_delta(current: TagLink | None, stored: TagLink) -> int:
    """How the tag's contact count moves when ``stored`` replaces ``current``."""
    was = current is not None and current.present
    return int(stored.present) - int(was)
