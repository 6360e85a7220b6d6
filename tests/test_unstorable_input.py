"""Refuse at the door what cannot be stored: arbitrary Unicode (NUL, every control character, lone
surrogates, over-long strings) in every string field of the canonical event, sent through the real
suite (nats-server and the three services as processes) on SQLite and on PostgreSQL.

Every event ends either rejected by ingest (INVALID_ARGUMENT / a REJECTED batch entry / HTTP 400)
or applied by contacts (in its product's history), and nothing is dead-lettered. Events go through
``BatchIngestEvents`` (encoded by hand: protobuf's own encoder refuses lone surrogates, other
clients' encoders may not) and the webhook receiver (surrogates as JSON ``\\ud800`` escapes).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import struct
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listboss.contacts.v1 import contacts_service_pb2 as contacts_pb
from listboss.contacts.v1 import contacts_service_pb2_grpc as contacts_grpc
from listboss.events.v1 import event_pb2
from listboss.ingest.v1 import ingest_service_pb2 as ingest_pb
from listboss_common import bus
from listboss_common.errors import InvalidArgument
from listboss_ingest.normalize import normalize_event
from listboss_ingest.sources.hotmart import event_from_webhook
from listboss_testing import POSTGRES_ADMIN_URL
from listboss_tools.suite import DEMO_PRODUCER, Suite

pytestmark = pytest.mark.e2e

FIXTURES = [
    json.loads(path.read_text()) for path in sorted((Path(__file__).parent / "data" / "hotmart").glob("*.json"))
]
BATCH_METHOD = "/listboss.ingest.v1.IngestService/BatchIngestEvents"
APPLY_TIMEOUT = 60.0  # seconds for contacts to record every accepted event
RPC_TIMEOUT = 15.0
_unique = itertools.count()


# --- every string field of the canonical event -------------------------------------------------


def string_paths(descriptor: Descriptor = event_pb2.Event.DESCRIPTOR, prefix: str = "") -> Iterator[str]:
    """The path of every string field of ``descriptor`` and its sub-messages (``person.address.city``)."""
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            yield prefix + field.name
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from string_paths(field.message_type, f"{prefix}{field.name}.")


STRING_PATHS = sorted(string_paths())
# What segmentation and contacts store today (contact data is the e-mail and the name): drawn
# half the time, so most examples reach the databases.
STORED_PATHS = [
    "id",
    "person.email",
    "person.first_name",
    "person.last_name",
    "person.name",
    "product.id",
    "product.name",
]
# Plausible values: the base event is valid, so each example's few arbitrary strings decide.
BASE_STRINGS = {path: "Ok" for path in STRING_PATHS} | {"producer": DEMO_PRODUCER, "person.country_code": "BR"}


def base_event() -> dict[str, Any]:
    """A valid event about a person and a product of its own: nothing another event sends can
    hide what this one stores (contact data is newest-wins, a product keeps its first name)."""
    n = next(_unique)
    event: dict[str, Any] = {
        "type": event_pb2.EVENT_TYPE_PURCHASE_APPROVED,
        "occur_time": {"seconds": int(time.time()) - 60},
        "purchase": {"price": {"value": 10.0}},
    }
    for path, value in BASE_STRINGS.items():
        put(event, path, value)
    event["id"] = f"u{n}"
    event["product"]["id"] = f"p{n}"
    event["person"]["email"] = f"ana{n}@example.com"
    return event


def put(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, name = path.split(".")
    for key in parents:
        document = document.setdefault(key, {})
    document[name] = value


def has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    if isinstance(value, Mapping):
        return any(has_surrogate(v) for v in value.values())
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    return False


# --- a protobuf encoder that does not refuse lone surrogates ------------------------------------


def encode(descriptor: Descriptor, values: Mapping[str, Any]) -> bytes:
    """The protobuf wire form of ``values`` (field name -> value, lists for repeated fields).

    Strings are encoded with ``surrogatepass``: a lone surrogate becomes the invalid UTF-8 that a
    careless client (or one whose encoder does not check) would send.
    """
    out = bytearray()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        for item in value if isinstance(value, list) else [value]:
            if field.type == FieldDescriptor.TYPE_STRING:
                out += _key(field.number, 2) + _delimited(item.encode("utf-8", "surrogatepass"))
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                out += _key(field.number, 2) + _delimited(encode(field.message_type, item))
            elif field.type == FieldDescriptor.TYPE_DOUBLE:
                out += _key(field.number, 1) + struct.pack("<d", item)
            else:  # int32, int64, enum, bool
                out += _key(field.number, 0) + _varint(int(item) & (2**64 - 1))
    return bytes(out)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _delimited(payload: bytes) -> bytes:
    return _varint(len(payload)) + payload


# --- generated input ---------------------------------------------------------------------------

any_character = st.characters(codec=None, exclude_categories=())  # surrogates and controls included
nasty_character = st.sampled_from(
    [
        "\x00",
        "\t",
        "\n",
        "\r",
        "\x1b",
        "\x7f",
        "\x85",
        "\x9f",
        "\ud800",
        "\udbff",
        "\udc00",
        "\udfff",
        "\ufffd",
        "\ufffe",
        "\u2028",
        "\u200b",
        "\u00a0",
        "\U0001f600",
    ]
)
characters = any_character | nasty_character


def text(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[str]:
    # Not st.text(): it drops surrogates from any alphabet.
    return st.lists(characters, min_size=min_size, max_size=max_size).map("".join)


strings = st.one_of(
    text(),
    st.sampled_from(["A\x00B", "\x00", "Ana\x00 Silva", "ana\x00@example.com"]),  # what PostgreSQL refuses
    # A plausible value with arbitrary characters inside: only those characters decide.
    st.tuples(text(1, 3), st.sampled_from(["Ana", "ana@example.com", "p1", "BR"])).map(
        lambda parts: parts[1][:2] + parts[0] + parts[1][2:]
    ),
    # Around the length limits (ids and codes 128, e-mail 254, names and text 500).
    st.tuples(
        st.sampled_from([127, 128, 129, 253, 254, 255, 499, 500, 501, 700]), st.sampled_from(["x", "é", "\U0001f600"])
    ).map(lambda parts: parts[1] * parts[0]),
)


@st.composite
def events(draw) -> dict[str, Any]:
    """A valid event with one to three of its string fields replaced by arbitrary text."""
    event = base_event()
    paths = st.sampled_from(STORED_PATHS) | st.sampled_from(STRING_PATHS)
    for path in draw(st.lists(paths, min_size=1, max_size=3, unique=True)):
        value = draw(strings)
        if path == "id":
            value = f"{event['id']}-{value}"  # every event stays a new one
        put(event, path, value)
    return event


def _string_leaves(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "hottok":
                yield from _string_leaves(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _string_leaves(value, (*prefix, index))
    elif isinstance(node, str):
        yield prefix


@st.composite
def webhooks(draw) -> dict[str, Any]:
    """An example webhook with a new id and one to three of its strings replaced by arbitrary text."""
    document = json.loads(json.dumps(draw(st.sampled_from(FIXTURES))))
    document["id"] = f"w{next(_unique)}"
    leaves = list(_string_leaves(document))
    stored = [leaf for leaf in leaves if leaf[-1] in ("id", "email", "name", "first_name", "last_name")]
    paths = st.sampled_from(stored) | st.sampled_from(leaves)
    for path in draw(st.lists(paths, min_size=1, max_size=3, unique=True)):
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        value = draw(strings)
        parent[path[-1]] = f"{document['id']}-{value}" if path == ("id",) else value
    return document


# --- talking to the suite ------------------------------------------------------------------------


def bearer(suite: Suite) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {suite.demo_token}"),)


def violations_of(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} without details: {error.details()}"
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields


def post_webhook(suite: Suite, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        suite.webhook_url(DEMO_PRODUCER),
        data=body,
        headers={"Content-Type": "application/json", "X-HOTMART-HOTTOK": suite.demo_hottok},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(request, timeout=RPC_TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def send_and_classify(
    suite: Suite,
    channel: grpc.Channel,
    batch: list[dict],
    webhook: dict | None,
    applied: dict[tuple[str, str], str],
    tally: Counter[str],
) -> None:
    """Sends one example; every answer must be a rejection or an acceptance, never anything else.

    Accepted events are added to ``applied`` ((product, event id) -> what was sent, for reports).
    """
    call = channel.unary_unary(BATCH_METHOD)  # bytes in, bytes out: encoded by hand
    clean = [event for event in batch if not has_surrogate(event)]
    broken = [event for event in batch if has_surrogate(event)]
    if clean:
        request = encode(ingest_pb.BatchIngestEventsRequest.DESCRIPTOR, {"events": clean})
        reply = ingest_pb.BatchIngestEventsResponse.FromString(
            call(request, metadata=bearer(suite), timeout=RPC_TIMEOUT)
        )
        assert len(reply.results) == len(clean)
        for result in reply.results:
            sent = clean[result.index]
            if result.outcome == ingest_pb.EventResult.OUTCOME_REJECTED:
                tally["rejected"] += 1
                assert result.field_violations, result
                assert all(v.field.startswith(f"events[{result.index}]") for v in result.field_violations), result
                continue
            assert result.outcome == ingest_pb.EventResult.OUTCOME_ACCEPTED, result
            # The same (pure) normalization ingest ran tells where the event lands.
            event = event_pb2.Event.FromString(encode(event_pb2.Event.DESCRIPTOR, sent))
            event.producer = event.producer or DEMO_PRODUCER  # the caller's token implies it
            event = normalize_event(event)
            assert event.id == result.event_id
            applied[(event.product.id, event.id)] = repr(sent)
            tally["accepted"] += 1
    if broken:
        # Not valid protobuf (a proto3 string must be UTF-8): the whole request is refused, naming
        # each field that holds a lone surrogate.
        request = encode(ingest_pb.BatchIngestEventsRequest.DESCRIPTOR, {"events": broken})
        with pytest.raises(grpc.RpcError) as info:
            call(request, metadata=bearer(suite), timeout=RPC_TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        fields = violations_of(info.value)
        assert fields and all(field.startswith("events[") for field in fields), fields
        tally["rejected"] += len(broken)
    if webhook is not None:
        body = json.dumps(webhook).encode()  # ensure_ascii: a lone surrogate travels as "\ud800"
        status, answer = post_webhook(suite, body)
        if status == 400:
            assert answer["error"]["field_violations"], answer
            with pytest.raises(InvalidArgument):
                event_from_webhook(body, DEMO_PRODUCER)
            tally["rejected"] += 1
            return
        assert status == 200, answer
        event = event_from_webhook(body, DEMO_PRODUCER)
        assert answer == {"event_id": event.id, "duplicate": False}
        applied[(event.product.id, event.id)] = repr(webhook)
        tally["accepted"] += 1


def recorded_ids(suite: Suite, stub: contacts_grpc.ContactsServiceStub, product: str) -> set[str]:
    parent = f"producers/{DEMO_PRODUCER}/products/{product}"
    found: set[str] = set()
    token = ""
    for _ in range(100):  # pages of 1,000: far more than one run sends
        reply = stub.ListEvents(
            contacts_pb.ListEventsRequest(parent=parent, page_size=1000, page_token=token),
            metadata=bearer(suite),
            timeout=RPC_TIMEOUT,
        )
        found.update(event.name.removeprefix(f"{parent}/events/") for event in reply.events)
        token = reply.next_page_token
        if not token:
            break
    return found


def wait_until_applied(suite: Suite, expected: dict[tuple[str, str], str]) -> list[str]:
    """Waits (bounded) until contacts holds every expected event; returns what is still missing."""
    missing = set(expected)
    with grpc.insecure_channel(suite.contacts_address) as channel:
        stub = contacts_grpc.ContactsServiceStub(channel)
        deadline = time.monotonic() + APPLY_TIMEOUT
        for _ in range(int(APPLY_TIMEOUT / 0.25)):
            for product in {product for product, _ in missing}:
                recorded = recorded_ids(suite, stub, product)
                missing -= {(p, event_id) for p, event_id in missing if p == product and event_id in recorded}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    return [expected[key] for key in sorted(missing)]


def dead_letters(suite: Suite) -> int:
    async def count() -> int:
        client = await bus.connect(suite.nats_url, name="listboss-tests")
        try:
            return (await client.jetstream().stream_info(bus.DEADLETTER.name)).state.messages
        finally:
            await client.close()

    return asyncio.run(count())


def check_every_event_is_rejected_or_applied(suite: Suite) -> None:
    applied: dict[tuple[str, str], str] = {}
    tally: Counter[str] = Counter()
    with grpc.insecure_channel(suite.ingest_address) as channel:

        @settings(
            max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
        )
        @given(batch=st.lists(events(), min_size=1, max_size=10), webhook=st.none() | webhooks())
        def send(batch, webhook):
            send_and_classify(suite, channel, batch, webhook, applied, tally)

        send()
    # Both outcomes must occur, or the generator no longer exercises the rules and the stores.
    assert tally["accepted"] and tally["rejected"], tally
    missing = wait_until_applied(suite, applied)
    assert not missing, f"{len(missing)} accepted events never reached the contacts history: {missing[:5]}"
    assert dead_letters(suite) == 0


# --- the two stores ------------------------------------------------------------------------------


def test_sqlite_refuses_or_stores_every_string(suite):
    check_every_event_is_rejected_or_applied(suite)


@pytest.fixture
def postgres_suite(tmp_path):
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as error:
        admin.dispose()
        if os.environ.get("LISTBOSS_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL is not reachable ({error.orig}); set LISTBOSS_REQUIRE_POSTGRES=1 to fail instead")
    suite = Suite(
        tmp_path / "suite",
        nats_port=0,
        ingest_port=0,
        segmentation_port=0,
        contacts_port=0,
        http_port=0,
        database=POSTGRES_ADMIN_URL,
        output=None,
        database_suffix=f"test_{uuid.uuid4().hex[:12]}",
    )
    try:
        suite.start()
        yield suite
        assert suite.stop() == {"ingest": 0, "segmentation": 0, "contacts": 0, "nats": 0}
    finally:
        suite.stop()
        with admin.connect() as connection:
            for service in ("segmentation", "contacts"):
                name = sa.make_url(suite.database_url(service)).database
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.postgres
def test_postgresql_refuses_or_stores_every_string(postgres_suite):
    check_every_event_is_rejected_or_applied(postgres_suite)
