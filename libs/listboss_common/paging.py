"""AIP-158 pagination: page sizes and opaque, filter-bound page tokens.

A page token carries the keyset position of the last item returned (so page
10,000 costs what page 1 costs) and a fingerprint of the request's filter and
ordering: a token reused with a different filter is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from listboss_common.errors import invalid_field, quoted

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_PAGE_TOKEN_LENGTH = 4096

T = TypeVar("T")


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    if requested < 0:
        raise invalid_field("page_size", "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)


def _fingerprint(*binding: str) -> str:
    return hashlib.sha256("\x00".join(binding).encode()).hexdigest()[:16]


def encode_page_token(position: list[Any], *binding: str) -> str:
    body = json.dumps({"p": position, "b": _fingerprint(*binding)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_page_token(token: str, *binding: str) -> list[Any] | None:
    """The keyset position in ``token``, or None for the first page.

    ``binding`` is what the token must have been issued for (parent, filter,
    order); anything else is INVALID_ARGUMENT on ``page_token``.
    """
    if not token:
        return None
    if len(token) > MAX_PAGE_TOKEN_LENGTH:  # ours are far shorter; decoding a huge one is wasted work
        raise invalid_field("page_token", "is not a page token issued by this service")
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, fingerprint = body["p"], body["b"]
    except (ValueError, KeyError, TypeError):
        raise invalid_field("page_token", "is not a page token issued by this service") from None
    if not isinstance(position, list) or fingerprint != _fingerprint(*binding):
        raise invalid_field(
            "page_token", "was issued for a different request; keep parent, filter and order_by while paging"
        )
    return position


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a keyset listing."""

    items: list[T]
    # The keyset position after the last item, for the next page's token; None at the end.
    next_position: list | None

    @classmethod
    def of(cls, rows: Sequence[T], size: int, position: Callable[[T], list]) -> Page[T]:
        """The page in ``rows``, read with one more than ``size`` to learn whether another follows;
        ``position`` is an item's keyset position."""
        if len(rows) > size:
            return cls(list(rows[:size]), position(rows[size - 1]))
        return cls(list(rows), None)

    def next_page_token(self, *binding: str) -> str:
        """The response's ``next_page_token``: empty only at the end (AIP-158), else bound
        to ``binding`` as :func:`decode_page_token` expects."""
        return "" if self.next_position is None else encode_page_token(self.next_position, *binding)


@dataclass(frozen=True)
class SortOrder:
    """One ``order_by`` field (AIP-132) and its direction."""

    field: str
    descending: bool = False

    def __str__(self) -> str:
        return f"{self.field} desc" if self.descending else self.field


_ORDER_RE = re.compile(r"\s*([a-z_][a-z0-9_]*)(?:\s+(asc|desc))?\s*")


def parse_order_by(text: str, allowed: Collection[str], default: SortOrder) -> SortOrder:
    """``order_by`` such as ``"create_time desc"``: one of ``allowed`` fields,
    optionally followed by ``asc`` or ``desc``; empty means ``default``.

    The id always breaks ties, so one field is all a keyset order needs.
    """
    if not text.strip():
        return default
    match = _ORDER_RE.fullmatch(text)
    if match is None:
        raise invalid_field("order_by", f"expected one field optionally followed by asc or desc, got {quoted(text)}")
    name, direction = match.groups()
    if name not in allowed:
        raise invalid_field("order_by", f"cannot order by {quoted(name)}; supported: {', '.join(sorted(allowed))}")
    return SortOrder(name, direction == "desc")
