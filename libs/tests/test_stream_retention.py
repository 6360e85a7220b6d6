"""Stream retention: the age and size limits each stream is created with (defaults in
``bus``, overridden by ``<STREAM>_MAX_AGE`` / ``<STREAM>_MAX_BYTES``), applied by
``ensure_streams`` to new and existing streams on a real nats-server; the duration and
size parsers; and bad values refused, naming the variable."""

from __future__ import annotations

import pytest

from listboss_common import bus
from listboss_common.config import ConfigError, parse_duration, parse_size

DAY = 86_400
RETAINED = [bus.EVENTS, bus.CHANGES, bus.DEADLETTER, bus.TAG_CHANGES]


@pytest.fixture
def no_retention_settings(monkeypatch):
    for spec in RETAINED:
        monkeypatch.delenv(f"{spec.name}_MAX_AGE", raising=False)
        monkeypatch.delenv(f"{spec.name}_MAX_BYTES", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * DAY), ("12h", 43_200), ("15m", 900), ("90s", 90), ("1d12h", 1.5 * DAY), ("0", 0), (" 7D ", 7 * DAY)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "30x", "-1d", "1.5d", "30 d", "h12"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1_048_576), ("64K", 65_536), ("500M", 500 * 1024**2), ("10G", 10 * 1024**3), ("2GiB", 2 * 1024**3)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "10X", "-5", "1.5G", "ten"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_defaults(no_retention_settings) -> None:
    ages = {spec.name: spec.with_settings().max_age for spec in RETAINED}
    assert ages == {
        "LISTBOSS_EVENTS": 30 * DAY,
        "LISTBOSS_CHANGES": 7 * DAY,
        "LISTBOSS_DEADLETTER": 30 * DAY,
        "LISTBOSS_TAG_CHANGES": 7 * DAY,
    }
    assert {spec.with_settings().max_bytes for spec in RETAINED} == {0}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LISTBOSS_EVENTS_MAX_AGE", "30"),
        ("LISTBOSS_TAG_CHANGES_MAX_AGE", "a week"),
        ("LISTBOSS_CHANGES_MAX_BYTES", "lots"),
    ],
)
async def test_a_bad_value_is_refused_naming_the_variable(no_retention_settings, js, variable: str, value: str):
    no_retention_settings.setenv(variable, value)
    before = {spec.name: (await js.stream_info(spec.name)).config for spec in RETAINED}
    with pytest.raises(ConfigError, match=variable):
        await bus.ensure_streams(js, RETAINED)
    # Nothing was changed on the way to the bad value.
    assert {spec.name: (await js.stream_info(spec.name)).config for spec in RETAINED} == before


async def test_streams_are_created_with_the_limits_the_environment_sets(no_retention_settings, nats_server):
    no_retention_settings.setenv("LISTBOSS_EVENTS_MAX_AGE", "12h")
    no_retention_settings.setenv("LISTBOSS_EVENTS_MAX_BYTES", "10G")
    no_retention_settings.setenv("LISTBOSS_DEADLETTER_MAX_AGE", "1d12h")
    client = await bus.connect(nats_server.url, name="retention-test")
    try:
        js = client.jetstream()
        await bus.ensure_streams(js, RETAINED)
        limits = {}
        for spec in RETAINED:
            config = (await js.stream_info(spec.name)).config
            limits[spec.name] = (config.max_age, config.max_bytes)
    finally:
        await client.close()
    assert limits == {
        "LISTBOSS_EVENTS": (43_200, 10 * 1024**3),
        "LISTBOSS_CHANGES": (7 * DAY, -1),
        "LISTBOSS_DEADLETTER": (1.5 * DAY, -1),
        "LISTBOSS_TAG_CHANGES": (7 * DAY, -1),
    }


async def test_existing_streams_are_brought_to_the_configured_limits(no_retention_settings, js):
    # The js fixture created the streams with the defaults; a later start changes them.
    assert (await js.stream_info(bus.CHANGES.name)).config.max_age == 7 * DAY
    no_retention_settings.setenv("LISTBOSS_CHANGES_MAX_AGE", "15m")
    no_retention_settings.setenv("LISTBOSS_TAG_CHANGES_MAX_BYTES", "500M")
    await bus.ensure_streams(js, RETAINED)
    changes = (await js.stream_info(bus.CHANGES.name)).config
    tag_changes = (await js.stream_info(bus.TAG_CHANGES.name)).config
    assert (changes.max_age, changes.max_bytes) == (900, -1)
    assert (tag_changes.max_age, tag_changes.max_bytes) == (7 * DAY, 500 * 1024**2)
    # Set to 0: no limit again.
    no_retention_settings.setenv("LISTBOSS_CHANGES_MAX_AGE", "0")
    await bus.ensure_streams(js, RETAINED)
    assert (await js.stream_info(bus.CHANGES.name)).config.max_age in (0, None)


async def test_a_stream_without_a_settings_prefix_keeps_fixed_limits(no_retention_settings):
    fixed = bus.StreamSpec("SOME_STREAM", ("some.>",), max_age=60.0)
    no_retention_settings.setenv("SOME_STREAM_MAX_AGE", "1d")
    assert fixed.with_settings() is fixed
