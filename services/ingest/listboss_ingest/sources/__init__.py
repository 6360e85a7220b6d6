"""Source adapters: one module per platform that sends webhooks, turning its payload into a
canonical ``Event`` (``sources/hotmart.py``). A second platform is a module beside it, built on
:mod:`listboss_ingest.sources.payload` and ending in its :func:`~.payload.finish`: the canonical
rules (:mod:`listboss_ingest.normalize`) stay as they are.

Each adapter offers ``NAME`` (its part of the receiver's path, ``/webhooks/{NAME}/{producer}``),
``TOKEN_HEADER`` (the header carrying the producer's webhook token) and
``event_from_webhook(payload, producer, *, receive_time=None) -> Event``, which raises
``InvalidArgument`` naming every violation and nothing else for any input.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from listboss.events.v1 import event_pb2


class WebhookSource(Protocol):
    """What an adapter module offers (see the package docstring)."""

    NAME: str
    TOKEN_HEADER: str

    def event_from_webhook(
        self, payload: bytes | str | Mapping[str, Any], producer: str, *, receive_time: datetime | None = None
    ) -> event_pb2.Event: ...
