"""Property tests of the Hotmart adapter: any JSON-like input ends as a valid canonical Event
or an InvalidArgument, never anything else."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listboss.events.v1 import event_pb2
from listboss_common.errors import InvalidArgument
from listboss_ingest.normalize import normalize_event
from listboss_ingest.sources.hotmart import event_from_webhook

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "data" / "hotmart"
PRODUCER = "acme"
UTC = UTC


def _keys_of(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield key
            yield from _keys_of(child)
    elif isinstance(value, list):
        for child in value:
            yield from _keys_of(child)


# The purchase events that carry a status (the cart abandonment carries none).
PURCHASE_EVENTS = sorted(
    path.stem for path in FIXTURES.glob("PURCHASE_*.json") if path.stem != "PURCHASE_OUT_OF_SHOPPING_CART"
)
FIXTURE_DOCS = [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]
KNOWN_KEYS = sorted({key for doc in FIXTURE_DOCS for key in _keys_of(doc)} | {"street", "zip_code", "key"})
TRICKY_STRINGS = [
    "",
    " ",
    "0",
    "00000",
    "12",
    "-1",
    "1500.50",
    "1e400",
    "NaN",
    "true",
    "1763247745737",
    "2022-10-25T12:00:00.000Z",
    "9999-12-31T23:59:59+00:00",
    "a@b.co",
    "  Ana@Example.COM ",
    "ana@localhost",
    "PURCHASE_APPROVED",
    "switch_plan",
    "CLUB_FIRST_ACCESS",
    "\ud800",
    "x" * 200,
    "hottok",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(TRICKY_STRINGS)
)
json_keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=5),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replaced(doc: Any, path: tuple[Any, ...], replacement: Any) -> Any:
    if not path:
        return replacement
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = replacement
    return doc


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(FIXTURE_DOCS)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        doc = _replaced(doc, path, draw(json_values))
    return doc


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Top-level objects shaped like a webhook, with arbitrary contents."""
    doc = draw(st.dictionaries(json_keys, json_values, max_size=4))
    doc.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": json_values,
                    "event": st.sampled_from([*PURCHASE_EVENTS, "SWITCH_PLAN", "CLUB_FIRST_ACCESS"]) | json_values,
                    "creation_date": st.integers(min_value=-(10**16), max_value=10**16) | json_values,
                    "creationDate": json_values,
                    "hottok": st.text(max_size=8),
                    "data": json_values,
                },
            )
        )
    )
    return doc


@st.composite
def encoded(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> Any:
    """A document as a mapping, str or bytes, maybe cut short."""
    doc = draw(documents)
    form = draw(st.sampled_from(["object", "str", "bytes", "truncated"]))
    if form == "object":
        return doc
    text = json.dumps(doc)
    if form == "str":
        return text
    if form == "bytes":
        return text.encode()
    return text.encode()[: draw(st.integers(min_value=0, max_value=len(text)))]


PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis folder written into the repo
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _assert_event_or_invalid_argument(payload: Any) -> None:
    try:
        event = event_from_webhook(payload, PRODUCER, receive_time=datetime(2025, 1, 1, tzinfo=UTC))
    except InvalidArgument as exc:
        assert exc.violations, "an InvalidArgument must name at least one field"
        return
    assert isinstance(event, event_pb2.Event)
    assert event.source == event_pb2.EVENT_SOURCE_WEBHOOK
    assert normalize_event(event) == event
    event.SerializeToString()


@PROPERTY_SETTINGS
@given(encoded(mutated_fixtures()))
def test_property_mutated_fixtures(payload: Any) -> None:
    snapshot = json.dumps(payload) if isinstance(payload, Mapping) else None
    _assert_event_or_invalid_argument(payload)
    if snapshot is not None:
        assert json.dumps(payload) == snapshot  # the caller's object is only read


@PROPERTY_SETTINGS
@given(encoded(envelopes()))
def test_property_webhook_shaped_objects(payload: Any) -> None:
    _assert_event_or_invalid_argument(payload)


@PROPERTY_SETTINGS
@given(json_values | st.text(max_size=40) | st.binary(max_size=40))
def test_property_arbitrary_values(payload: Any) -> None:
    _assert_event_or_invalid_argument(payload)
