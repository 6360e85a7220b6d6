"""Hypothesis throws generated payloads at the real webhook endpoint (real HTTP, real JetStream):
never a 500, never a crash, and nothing published from invalid input."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from listboss_common import bus
from listboss_common.errors import InvalidArgument
from listboss_ingest.http_api import HOTTOK_HEADER, WebhookReceiver
from listboss_ingest.publisher import EventPublisher
from listboss_ingest.sources.hotmart import event_from_webhook
from listboss_ingest.webhook_tokens import WebhookTokens
from listboss_testing.rich_errors import assert_plain_text

REPO = Path(__file__).resolve().parents[3]
FIXTURES = [json.loads(path.read_text()) for path in sorted((REPO / "tests" / "data" / "hotmart").glob("*.json"))]
TOKENS = {"alice": "alice-hottok-0123456789"}
STREAM = bus.EVENTS.name


@pytest.fixture
async def http(js):
    receiver = WebhookReceiver(EventPublisher(js), WebhookTokens(TOKENS), publish_timeout=5.0)
    port = await receiver.start("127.0.0.1:0")
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        yield session
    await receiver.stop()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["", " ", "ANA@EXAMPLE.COM ", "1700000000000", "2024-01-01T00:00:00", "-1", "1e400", "0042"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=15,
)


def _paths(node, prefix=()):
    """Every path to a value inside a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated_fixtures(draw):
    """A real webhook with a few values replaced by arbitrary JSON or removed."""
    document = json.loads(json.dumps(draw(st.sampled_from(FIXTURES))))
    document["id"] = draw(st.sampled_from([document["id"], "fuzz-" + str(draw(st.integers(0, 10**6)))]))
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(document))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
    return json.dumps(document).encode()


webhook_shaped = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "event": st.sampled_from(["PURCHASE_APPROVED", "CLUB_FIRST_ACCESS", "SWITCH_PLAN", "nope"]) | json_values,
        "creation_date": json_values,
        "creationDate": json_values,
        "hottok": st.text(max_size=10),
        "data": st.fixed_dictionaries(
            {},
            optional={
                key: json_values for key in ("buyer", "user", "subscriber", "subscription", "product", "purchase")
            },
        ),
    },
).map(lambda document: json.dumps(document).encode())

payloads = st.one_of(
    mutated_fixtures(),
    webhook_shaped,
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
)


async def _count(js) -> int:
    return (await js.stream_info(STREAM)).state.messages


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    body=payloads,
    producer=st.sampled_from(["alice"] * 6 + ["bob", "", "Alice", "al ice", "../alice"]) | st.text(max_size=20),
    token=st.sampled_from([TOKENS["alice"]] * 8 + ["", "wrong", TOKENS["alice"] + " x"]),
    content_type=st.sampled_from(["application/json"] * 8 + ["text/plain", "application/json; charset=utf-16", ""]),
)
async def test_generated_payloads_never_break_the_endpoint(http, js, body, producer, token, content_type):
    before = await _count(js)
    headers = {HOTTOK_HEADER: token}
    if content_type:
        headers["Content-Type"] = content_type
    async with http.post(f"/webhooks/hotmart/{quote(producer, safe='')}", data=body, headers=headers) as response:
        status = response.status
        answer = await response.json(content_type=None)
    after = await _count(js)
    event(f"HTTP {status}")

    assert status in {200, 400, 401, 404, 405, 415}, answer
    if status != 200:
        assert after == before, "an invalid request published something"
        assert answer["error"]["code"] == status
        # Every answer speaks the caller's terms, bounded in size, whatever the body held.
        assert_plain_text(answer["error"]["message"])
        for violation in answer["error"]["field_violations"]:
            assert_plain_text(violation["field"])
            assert_plain_text(violation["description"])
        if status == 400:
            assert answer["error"]["field_violations"]
            with pytest.raises(InvalidArgument):
                event_from_webhook(body, producer)
        return
    # Accepted: the pure converter agrees it is valid, and exactly one new message unless a duplicate.
    accepted = event_from_webhook(body, producer)
    assert answer["event_id"] == accepted.id
    assert after - before == (0 if answer["duplicate"] else 1)
