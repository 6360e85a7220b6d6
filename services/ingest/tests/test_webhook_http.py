"""The webhook receiver over real HTTP (aiohttp server on a free port, aiohttp client) with a
real nats-server and JetStream: the platform's payloads, every kind of bad input, and outages."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from listboss.events.v1 import event_pb2
from listboss_common import bus
from listboss_common.config import ConfigError
from listboss_ingest.http_api import HOTTOK_HEADER, MAX_BODY_BYTES, WebhookReceiver
from listboss_ingest.publisher import EventPublisher
from listboss_ingest.webhook_tokens import WebhookTokens, parse_tokens
from listboss_testing import stored_events

REPO = Path(__file__).resolve().parents[3]
FIXTURES = {path.stem: path for path in sorted((REPO / "tests" / "data" / "hotmart").glob("*.json"))}
STREAM = bus.EVENTS.name
TOKENS = {"alice": "alice-hottok-0123456789", "bob": "bob-hottok-9876543210"}
JSON = {"Content-Type": "application/json"}


def auth(producer: str = "alice") -> dict[str, str]:
    return {**JSON, HOTTOK_HEADER: TOKENS[producer]}


def fixture(name: str = "PURCHASE_APPROVED") -> dict:
    return json.loads(FIXTURES[name].read_text())


def fixture_bytes(name: str = "PURCHASE_APPROVED") -> bytes:
    return FIXTURES[name].read_bytes()


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
async def receiver(js):
    receiver = WebhookReceiver(EventPublisher(js), WebhookTokens(TOKENS), publish_timeout=1.0, shutdown_grace=5.0)
    await receiver.start("127.0.0.1:0")
    yield receiver
    await receiver.stop()


@pytest.fixture
async def http(receiver):
    async with aiohttp.ClientSession(f"http://127.0.0.1:{receiver.port}") as session:
        yield session


async def message_count(js) -> int:
    return (await js.stream_info(STREAM)).state.messages


async def post(http, producer="alice", body: bytes | str = b"", headers=None, **kwargs):
    async with http.post(f"/webhooks/hotmart/{producer}", data=body, headers=headers, **kwargs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None), response.headers


# --- the platform's payloads -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXTURES))
async def test_each_webhook_is_stored_once_and_answered_with_its_id(http, js, name):
    document = fixture(name)
    status, body, _ = await post(http, body=fixture_bytes(name), headers=auth())
    assert status == 200, body
    assert body == {"event_id": document["id"], "duplicate": False}
    (event,) = await stored_events(js)
    assert event.id == document["id"]
    assert event.producer == "alice"
    assert event.source == event_pb2.EVENT_SOURCE_WEBHOOK
    assert event.HasField("receive_time")
    assert event.person.email == event.person.email.strip().lower() != ""

    status, body, _ = await post(http, body=fixture_bytes(name), headers=auth())
    assert (status, body) == (200, {"event_id": document["id"], "duplicate": True})
    assert await message_count(js) == 1


async def test_the_same_event_id_for_two_producers_is_two_events(http, js):
    assert (await post(http, "alice", fixture_bytes(), auth("alice")))[1]["duplicate"] is False
    assert (await post(http, "bob", fixture_bytes(), auth("bob")))[1]["duplicate"] is False
    assert sorted(e.producer for e in await stored_events(js)) == ["alice", "bob"]


async def test_charset_and_json_suffix_content_types_are_accepted(http, js):
    status, _, _ = await post(
        http,
        body=fixture_bytes(),
        headers={HOTTOK_HEADER: TOKENS["alice"], "Content-Type": "application/json; charset=UTF-8"},
    )
    assert status == 200
    document = fixture("PURCHASE_REFUNDED")
    status, _, _ = await post(
        http,
        body=json.dumps(document),
        headers={HOTTOK_HEADER: TOKENS["alice"], "Content-Type": "application/vnd.hotmart+json"},
    )
    assert status == 200
    assert await message_count(js) == 2


async def test_a_chunked_body_is_read_whole(http, js):
    async def chunks():
        data = fixture_bytes()
        for start in range(0, len(data), 100):
            yield data[start : start + 100]

    status, body, _ = await post(http, body=chunks(), headers=auth())
    assert status == 200, body
    assert await message_count(js) == 1


# --- never the hottok ----------------------------------------------------------------------------


async def test_one_log_line_per_request_and_never_the_hottok(http, js):
    document = fixture()
    document["hottok"] = TOKENS["alice"]  # the platform also puts it in the body
    with capture_logs() as logs:
        ok = await post(http, body=json.dumps(document), headers=auth())
        wrong = await post(http, body=json.dumps(document), headers={**JSON, HOTTOK_HEADER: TOKENS["alice"] + "x"})
        bad = await post(http, body=b'{"hottok": "%s", "event": "NOPE"}' % TOKENS["alice"].encode(), headers=auth())
    assert [ok[0], wrong[0], bad[0]] == [200, 401, 400]
    lines = [entry for entry in logs if entry["event"] == "http"]
    assert len(lines) == 3
    assert lines[0] | {"duration_ms": 0} == {
        "event": "http",
        "log_level": "info",
        "method": "POST",
        "path": "/webhooks/hotmart/alice",
        "producer": "alice",
        "status": 200,
        "event_id": document["id"],
        "duplicate": False,
        "duration_ms": 0,
    }
    assert lines[1]["status"] == 401 and lines[1]["reason"] == "UNAUTHENTICATED"
    assert lines[2]["status"] == 400 and lines[2]["fields"]
    everything = repr(logs) + repr([ok, wrong, bad]) + repr(await stored_events(js))
    assert TOKENS["alice"] not in everything
    assert b"hottok" not in b"".join(e.SerializeToString() for e in await stored_events(js)).lower()


# --- the corpus of bad input -----------------------------------------------------------------------


def _without(path: tuple[str, ...]) -> bytes:
    document = fixture()
    node = document
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return json.dumps(document).encode()


def _with(path: tuple[str, ...], value) -> bytes:
    document = fixture()
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(document).encode()


# (name, producer, headers, body, status, reason, fields that must be named)
BAD_INPUTS = [
    ("truncated JSON", "alice", auth(), fixture_bytes()[:700], 400, "INVALID_ARGUMENT", {"payload"}),
    ("empty body", "alice", auth(), b"", 400, "INVALID_ARGUMENT", {"payload"}),
    ("whitespace body", "alice", auth(), b"  \n ", 400, "INVALID_ARGUMENT", {"payload"}),
    ("JSON array", "alice", auth(), b"[1, 2]", 400, "INVALID_ARGUMENT", {"payload"}),
    ("JSON null", "alice", auth(), b"null", 400, "INVALID_ARGUMENT", {"payload"}),
    ("not UTF-8", "alice", auth(), b'{"id": "\xff\xfe"}', 400, "INVALID_ARGUMENT", {"payload"}),
    (
        "data is a string",
        "alice",
        auth(),
        _with(("data",), "oops"),
        400,
        "INVALID_ARGUMENT",
        {"person.email"},
    ),
    (
        "buyer is a list",
        "alice",
        auth(),
        _with(("data", "buyer"), ["a@b.co"]),
        400,
        "INVALID_ARGUMENT",
        {"person.email"},
    ),
    (
        "email is a number",
        "alice",
        auth(),
        _with(("data", "buyer", "email"), 42),
        400,
        "INVALID_ARGUMENT",
        {"person.email"},
    ),
    (
        "creation_date is an object",
        "alice",
        auth(),
        _with(("creation_date",), {"ms": 1}),
        400,
        "INVALID_ARGUMENT",
        {"occur_time"},
    ),
    ("missing email", "alice", auth(), _without(("data", "buyer", "email")), 400, "INVALID_ARGUMENT", {"person.email"}),
    (
        "invalid email",
        "alice",
        auth(),
        _with(("data", "buyer", "email"), "ana at example"),
        400,
        "INVALID_ARGUMENT",
        {"person.email"},
    ),
    (
        "email without domain dot",
        "alice",
        auth(),
        _with(("data", "buyer", "email"), "ana@localhost"),
        400,
        "INVALID_ARGUMENT",
        {"person.email"},
    ),
    ("missing id", "alice", auth(), _without(("id",)), 400, "INVALID_ARGUMENT", {"id"}),
    ("missing date", "alice", auth(), _without(("creation_date",)), 400, "INVALID_ARGUMENT", {"occur_time"}),
    ("date in 1990", "alice", auth(), _with(("creation_date",), 631152000000), 400, "INVALID_ARGUMENT", {"occur_time"}),
    (
        "date in year 3000",
        "alice",
        auth(),
        _with(("creation_date",), "3000-01-01T00:00:00Z"),
        400,
        "INVALID_ARGUMENT",
        {"occur_time"},
    ),
    ("absurd date number", "alice", auth(), _with(("creation_date",), 1e300), 400, "INVALID_ARGUMENT", {"occur_time"}),
    (
        "date not a date",
        "alice",
        auth(),
        _with(("creation_date",), "yesterday"),
        400,
        "INVALID_ARGUMENT",
        {"occur_time"},
    ),
    ("unknown event", "alice", auth(), _with(("event",), "PURCHASE_TELEPORTED"), 400, "INVALID_ARGUMENT", {"event"}),
    (
        "gRPC-only event as webhook",
        "alice",
        auth(),
        _with(("event",), "CONTENT_PROGRESS"),
        400,
        "INVALID_ARGUMENT",
        {"event"},
    ),
    ("oversized body", "alice", auth(), b" " * MAX_BODY_BYTES + b"{}", 413, "PAYLOAD_TOO_LARGE", set()),
    ("wrong hottok", "alice", {**JSON, HOTTOK_HEADER: "guess"}, fixture_bytes(), 401, "UNAUTHENTICATED", set()),
    ("missing hottok", "alice", JSON, fixture_bytes(), 401, "UNAUTHENTICATED", set()),
    ("empty hottok", "alice", {**JSON, HOTTOK_HEADER: ""}, fixture_bytes(), 401, "UNAUTHENTICATED", set()),
    ("another producer's hottok", "alice", auth("bob"), fixture_bytes(), 401, "UNAUTHENTICATED", set()),
    ("unknown producer", "mallory", auth(), fixture_bytes(), 401, "UNAUTHENTICATED", set()),
    ("producer not an id", "Alice", auth(), fixture_bytes(), 401, "UNAUTHENTICATED", set()),
    (
        "text/plain",
        "alice",
        {HOTTOK_HEADER: TOKENS["alice"], "Content-Type": "text/plain"},
        fixture_bytes(),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        set(),
    ),
    (
        "form content type",
        "alice",
        {HOTTOK_HEADER: TOKENS["alice"], "Content-Type": "application/x-www-form-urlencoded"},
        fixture_bytes(),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        set(),
    ),
    (
        "latin-1 charset",
        "alice",
        {HOTTOK_HEADER: TOKENS["alice"], "Content-Type": "application/json; charset=latin-1"},
        fixture_bytes(),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        set(),
    ),
]


@pytest.mark.parametrize(
    ("producer", "headers", "body", "status", "reason", "fields"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
async def test_bad_input_is_answered_precisely_and_publishes_nothing(
    http, js, producer, headers, body, status, reason, fields
):
    got_status, got, _ = await post(http, producer, body, headers)
    assert got_status == status, got
    error = got["error"]
    assert error["code"] == status
    assert error["reason"] == reason
    assert error["message"]
    named = {v["field"] for v in error["field_violations"]}
    assert fields <= named, named
    assert all(v["description"] for v in error["field_violations"])
    assert await message_count(js) == 0


# --- what a store cannot hold: 400 naming the canonical field, nothing published -----------------

SURROGATE_BODY = fixture_bytes().replace(b'"Teste Comprador"', b'"Teste \xed\xa0\x80"')  # the raw bytes of U+D800

# (name, body, field, end of its description)
UNSTORABLE = [
    ("NUL in the name", _with(("data", "buyer", "name"), "A\x00B"), "person.name", "found U+0000 at position 1"),
    ("tab in the name", _with(("data", "buyer", "name"), "Ana\tMaria"), "person.name", "found U+0009 at position 3"),
    (
        "C1 control in the city",
        _with(("data", "buyer", "address", "city"), "Uber\x85landia"),
        "person.address.city",
        "found U+0085 at position 4",
    ),
    (
        "DEL in the product name",
        _with(("data", "product", "name"), "Curso\x7f"),
        "product.name",
        "found U+007F at position 5",
    ),
    (
        "lone surrogate escape in the name",
        _with(("data", "buyer", "name"), "Ana \ud800"),
        "person.name",
        "found U+D800 at position 4",
    ),
    ("lone surrogate bytes in the name", SURROGATE_BODY, "person.name", "found U+D800 at position 6"),
    (
        "lone surrogate in the email",
        _with(("data", "buyer", "email"), "\udc00ana@example.com"),
        "person.email",
        "found U+DC00 at position 0",
    ),
    ("over-long name", _with(("data", "buyer", "name"), "x" * 501), "person.name", "must be at most 500 characters"),
    (
        "over-long transaction",
        _with(("data", "purchase", "transaction"), "T" * 129),
        "purchase.transaction",
        "must be at most 128 characters",
    ),
]


@pytest.mark.parametrize(
    ("body", "field", "description"), [case[1:] for case in UNSTORABLE], ids=[case[0] for case in UNSTORABLE]
)
async def test_what_a_store_cannot_hold_is_400_naming_the_field(http, js, body, field, description):
    status, answer, _ = await post(http, body=body, headers=auth())
    assert status == 400, answer
    assert answer["error"]["status"] == "INVALID_ARGUMENT"
    assert [v["field"] for v in answer["error"]["field_violations"]] == [field]
    assert answer["error"]["field_violations"][0]["description"].endswith(description)
    assert await message_count(js) == 0


async def test_an_unstorable_answer_never_repeats_the_value(http, js):
    status, answer, _ = await post(http, body=_with(("data", "buyer", "name"), "Secreta\x00Silva"), headers=auth())
    assert status == 400
    assert "Secreta" not in json.dumps(answer)


async def test_junk_in_a_field_the_table_does_not_map_is_dropped_not_refused(http, js):
    body = _with(("data", "producer", "name"), "Produtor \ud800\x00")  # data.producer is not mapped
    status, answer, _ = await post(http, body=body, headers=auth())
    assert status == 200, answer
    assert await message_count(js) == 1


async def test_unauthorized_answers_do_not_tell_producers_apart(http):
    answers = [
        await post(http, producer, fixture_bytes(), headers)
        for producer, headers in [("alice", {**JSON, HOTTOK_HEADER: "x"}), ("mallory", auth()), ("alice", JSON)]
    ]
    assert {status for status, _, _ in answers} == {401}
    assert len({json.dumps(body, sort_keys=True) for _, body, _ in answers}) == 1


async def test_unknown_event_is_named_in_the_answer(http):
    _, body, _ = await post(http, body=_with(("event",), "PURCHASE_TELEPORTED"), headers=auth())
    (violation,) = [v for v in body["error"]["field_violations"] if v["field"] == "event"]
    assert "PURCHASE_TELEPORTED" in violation["description"]


async def test_a_body_over_the_limit_without_content_length_is_413(http, js):
    async def chunks():
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    status, body, _ = await post(http, body=chunks(), headers=auth())
    assert status == 413
    assert body["error"]["reason"] == "PAYLOAD_TOO_LARGE"
    assert await message_count(js) == 0


async def test_a_body_at_the_limit_is_read(http, js):
    document = fixture_bytes()
    padded = document + b" " * (MAX_BODY_BYTES - len(document))
    status, body, _ = await post(http, body=padded, headers=auth())
    assert status == 200, body


async def test_other_methods_and_paths(http, js):
    async with http.get("/webhooks/hotmart/alice", headers=auth()) as response:
        assert response.status == 405
        assert "POST" in response.headers["Allow"]
        assert (await response.json())["error"]["reason"] == "METHOD_NOT_ALLOWED"
    async with http.put("/webhooks/hotmart/alice", data=fixture_bytes(), headers=auth()) as response:
        assert response.status == 405
    async with http.post("/webhooks/other/alice", data=fixture_bytes(), headers=auth()) as response:
        assert response.status == 404
        assert (await response.json())["error"]["reason"] == "NOT_FOUND"
    assert await message_count(js) == 0


async def test_health_endpoint(http, receiver):
    async with http.get("/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "SERVING"}


# --- outage --------------------------------------------------------------------------------------


async def test_nats_down_is_503_with_retry_after_and_the_retry_succeeds(http, js, nats_server):
    document = fixture()
    nats_server.stop()
    status, body, headers = await post(
        http, body=json.dumps(document), headers=auth(), timeout=aiohttp.ClientTimeout(total=10)
    )
    assert status == 503
    assert body["error"]["reason"] == "BUS_UNAVAILABLE"
    assert headers["Retry-After"]

    nats_server.start()
    for _ in range(200):  # the platform's retry; bounded, not timed
        status, body, _ = await post(http, body=json.dumps(document), headers=auth())
        if status == 200:
            break
        assert status == 503
        await asyncio.sleep(0.1)
    assert status == 200
    assert body["event_id"] == document["id"]  # duplicate may be True: nats-py may have buffered the first try
    assert [e.id for e in await stored_events(js)] == [document["id"]]


# --- shutdown ------------------------------------------------------------------------------------


async def test_stop_finishes_in_flight_requests_then_refuses(js):
    entered, gate = asyncio.Event(), asyncio.Event()

    class SlowPublisher(EventPublisher):
        async def publish_one(self, event, timeout=None):
            entered.set()
            await gate.wait()
            return await super().publish_one(event, timeout)

    receiver = WebhookReceiver(SlowPublisher(js), WebhookTokens(TOKENS), shutdown_grace=10.0)
    port = await receiver.start("127.0.0.1:0")
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        in_flight = asyncio.create_task(post(session, body=fixture_bytes(), headers=auth()))
        await entered.wait()
        stopping = asyncio.create_task(receiver.stop())
        # Once stop() has begun the receiver is no longer serving, while the request in hand
        # waits. (A local bounded poll until the shared ``eventually`` lands.)
        deadline = time.monotonic() + 10
        while receiver.serving:
            assert time.monotonic() < deadline, "stop() never began"
            await asyncio.sleep(0.01)
        assert not in_flight.done()
        gate.set()
        status, body, _ = await in_flight
        await stopping
    assert status == 200 and body["duplicate"] is False
    assert await message_count(js) == 1
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, body=fixture_bytes(), headers=auth())


# --- token configuration -------------------------------------------------------------------------


def test_tokens_from_file_and_variable(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"alice": "from-file", "carol": "carol-token"}))
    tokens = WebhookTokens.from_env(
        {"LISTBOSS_WEBHOOK_TOKENS_FILE": str(path), "LISTBOSS_WEBHOOK_TOKENS": " alice = from-env ,bob=b0b,"}
    )
    assert tokens.producers == ["alice", "bob", "carol"]
    assert tokens.verify("alice", "from-env") and not tokens.verify("alice", "from-file")
    assert tokens.verify("carol", "carol-token") and tokens.verify("bob", "b0b")
    assert not tokens.verify("bob", None) and not tokens.verify("bob", "") and not tokens.verify("dave", "")
    assert "b0b" not in repr(tokens) and "carol-token" not in repr(tokens)
    assert len(WebhookTokens.from_env({})) == 0


@pytest.mark.parametrize(
    ("variables", "content"),
    [
        ({"LISTBOSS_WEBHOOK_TOKENS": "alice"}, None),
        ({"LISTBOSS_WEBHOOK_TOKENS": "alice="}, None),
        ({"LISTBOSS_WEBHOOK_TOKENS": "Alice=x"}, None),
        ({}, "not json secret-token"),
        ({}, '["alice"]'),
        ({}, '{"alice": 5}'),
        ({"LISTBOSS_WEBHOOK_TOKENS_FILE": "/nonexistent/tokens.json"}, None),
    ],
)
def test_bad_token_configuration_fails_the_start_without_echoing_tokens(tmp_path, variables, content):
    if content is not None:
        path = tmp_path / "tokens.json"
        path.write_text(content)
        variables = {**variables, "LISTBOSS_WEBHOOK_TOKENS_FILE": str(path)}
    with pytest.raises(ConfigError) as error:
        WebhookTokens.from_env(variables)
    assert "secret-token" not in str(error.value)


def test_parse_tokens():
    assert parse_tokens("") == {}
    assert parse_tokens("a=1,b=2=3") == {"a": "1", "b": "2=3"}
