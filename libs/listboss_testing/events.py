"""Canonical events as a client sends them, for tests that go through ingest."""

from __future__ import annotations

import time

from listboss.events.v1 import event_pb2


def make_event(event_id="evt-1", producer="alice", email="  Ana.Silva@Example.COM ", **overrides) -> event_pb2.Event:
    event = event_pb2.Event(
        id=event_id,
        producer=producer,
        type=event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        product=event_pb2.Product(id="0042", name=" Course "),
        person=event_pb2.Person(email=email, name="Ana"),
    )
    event.occur_time.FromSeconds(int(time.time()) - 60)
    for key, value in overrides.items():
        setattr(event, key, value)
    return event
