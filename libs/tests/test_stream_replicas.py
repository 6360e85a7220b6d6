"""Cluster-ready bus settings: the replica count of each stream (``LISTBOSS_STREAM_REPLICAS``,
``<STREAM>_REPLICAS``), a list of NATS URLs, and ``ensure_streams`` never weakening a stream
that already exists (a higher replica count, extra subjects and settings ListBoss does not own
are kept; every difference is logged). Against a real nats-server, and a real 3-node cluster
where replicas matter."""

from __future__ import annotations

import pytest
import structlog
from nats.js.api import StreamConfig

from listboss_common import bus
from listboss_common.config import ConfigError, ServiceConfig, nats_servers
from listboss_common.processes import free_port, nats_cluster

EVERY_STREAM = [bus.EVENTS, bus.CHANGES, bus.DEADLETTER, bus.TAG_CHANGES, bus.PERSON_KEYS]


@pytest.fixture
def no_replica_settings(monkeypatch):
    monkeypatch.delenv(bus.REPLICAS_SETTING, raising=False)
    for spec in EVERY_STREAM:
        monkeypatch.delenv(f"{spec.name}_REPLICAS", raising=False)
    return monkeypatch


@pytest.fixture
def cluster(tmp_path):
    """Three nats-servers routed into one JetStream cluster."""
    nodes = nats_cluster(tmp_path / "cluster")
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_healthy()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_one_replica_by_default(no_replica_settings):
    assert {spec.with_settings().config().num_replicas for spec in EVERY_STREAM} == {1}


def test_the_replica_count_is_a_setting_for_every_stream_and_for_each(no_replica_settings):
    no_replica_settings.setenv("LISTBOSS_STREAM_REPLICAS", "3")
    no_replica_settings.setenv("LISTBOSS_DEADLETTER_REPLICAS", "1")
    no_replica_settings.setenv("LISTBOSS_PERSON_KEYS_REPLICAS", "5")
    replicas = {spec.name: spec.with_settings().config().num_replicas for spec in EVERY_STREAM}
    assert replicas == {
        "LISTBOSS_EVENTS": 3,
        "LISTBOSS_CHANGES": 3,
        "LISTBOSS_DEADLETTER": 1,
        "LISTBOSS_TAG_CHANGES": 3,
        "LISTBOSS_PERSON_KEYS": 5,
    }
    # The person keys' fixed limits stay fixed: only the replica count is read for them.
    assert bus.PERSON_KEYS.with_settings().max_age == bus.PERSON_KEYS.max_age == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LISTBOSS_STREAM_REPLICAS", "0"), ("LISTBOSS_EVENTS_REPLICAS", "6"), ("LISTBOSS_PERSON_KEYS_REPLICAS", "three")],
)
def test_a_bad_replica_count_is_refused_naming_the_variable(no_replica_settings, variable, value):
    no_replica_settings.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        for spec in EVERY_STREAM:
            spec.with_settings()


def test_nats_url_takes_a_comma_separated_list(monkeypatch):
    assert nats_servers("nats://a:4222") == ["nats://a:4222"]
    assert nats_servers(" nats://a:4222, nats://b:4222 ,nats://c:4222") == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
    ]
    for bad in ("nats://a:4222,,nats://b:4222", "nats://a:4222,"):
        with pytest.raises(ConfigError, match="LISTBOSS_NATS_URL"):
            nats_servers(bad)
    monkeypatch.setenv("LISTBOSS_JWKS_FILE", "/dev/null")
    monkeypatch.setenv("LISTBOSS_NATS_URL", "nats://a:4222, nats://b:4222")
    assert ServiceConfig.from_env("127.0.0.1:0").nats_url == "nats://a:4222,nats://b:4222"


async def test_a_service_connects_when_any_listed_node_answers(nats_server):
    nobody = f"nats://127.0.0.1:{free_port()}"
    client = await bus.connect(f"{nobody},{nats_server.url}", name="list-test")
    try:
        assert client.is_connected
        assert client.connected_url is not None and client.connected_url.port == nats_server.port
    finally:
        await client.close()


def test_reconcile_keeps_what_is_stronger_or_not_ours():
    stored = StreamConfig(
        name="LISTBOSS_EVENTS",
        subjects=["listboss.events.>", "mirror.in.>"],
        description="placed by the operator",
        num_replicas=3,
        duplicate_window=10.0,
        max_age=bus.EVENTS.max_age,
        max_bytes=-1,
        max_msg_size=bus.EVENTS.max_msg_size,
        max_msgs_per_subject=-1,
        allow_direct=False,
    )
    merged, differences = bus.reconcile_stream(stored, bus.EVENTS.config())
    assert merged.num_replicas == 3
    assert merged.subjects == ["listboss.events.>", "mirror.in.>"]
    assert merged.description == "placed by the operator"
    assert merged.duplicate_window == bus.EVENTS.duplicate_window
    assert {difference["setting"]: difference["kept"] for difference in differences} == {
        "subjects": ["listboss.events.>", "mirror.in.>"],
        "num_replicas": 3,
        "duplicate_window": bus.EVENTS.duplicate_window,
    }
    # Nothing to change, nothing to say.
    assert bus.reconcile_stream(bus.EVENTS.config(), bus.EVENTS.config())[1] == []


async def test_an_existing_stream_keeps_its_subjects_and_description_and_each_difference_is_logged(
    no_replica_settings, js
):
    widened = (await js.stream_info(bus.CHANGES.name)).config
    widened.subjects = [*widened.subjects, "operator.extra.>"]
    widened.description = "operator's note"
    widened.duplicate_window = 30.0
    await js.update_stream(widened)
    with structlog.testing.capture_logs() as logs:
        await bus.ensure_streams(js, [bus.CHANGES])
    config = (await js.stream_info(bus.CHANGES.name)).config
    assert config.subjects == ["listboss.changes.>", "operator.extra.>"]
    assert config.description == "operator's note"
    assert config.duplicate_window == pytest.approx(bus.CHANGES.duplicate_window)
    warned = {entry["setting"] for entry in logs if entry["log_level"] == "warning" and entry.get("stream")}
    assert warned == {"subjects", "duplicate_window"}
    # A second start finds nothing left to change but the subjects it keeps.
    with structlog.testing.capture_logs() as logs:
        await bus.ensure_streams(js, [bus.CHANGES])
    assert [entry["setting"] for entry in logs if entry.get("stream")] == ["subjects"]


async def test_on_a_cluster_streams_get_the_replicas_set_and_a_start_never_lowers_them(no_replica_settings, cluster):
    urls = ",".join(node.url for node in cluster)
    client = await bus.connect(urls, name="replicas-test")
    try:
        js = client.jetstream()
        no_replica_settings.setenv("LISTBOSS_STREAM_REPLICAS", "3")
        no_replica_settings.setenv("LISTBOSS_DEADLETTER_REPLICAS", "1")
        await bus.ensure_streams(js, EVERY_STREAM)
        replicas = {spec.name: (await js.stream_info(spec.name)).config.num_replicas for spec in EVERY_STREAM}
        assert replicas == {spec.name: 1 if spec is bus.DEADLETTER else 3 for spec in EVERY_STREAM}
        events = await js.stream_info(bus.EVENTS.name)
        assert events.cluster is not None and events.cluster.leader in {node.name for node in cluster}
        assert len(events.cluster.replicas or []) == 2  # the leader's two followers

        # A service started without the setting (R1) leaves every R3 stream at R3, and says so.
        no_replica_settings.delenv("LISTBOSS_STREAM_REPLICAS")
        with structlog.testing.capture_logs() as logs:
            await bus.ensure_streams(js, EVERY_STREAM)
        after = {spec.name: (await js.stream_info(spec.name)).config.num_replicas for spec in EVERY_STREAM}
        assert after == replicas
        lowered = {
            entry["stream"]
            for entry in logs
            if entry.get("setting") == "num_replicas" and entry["stored"] == 3 and entry["kept"] == 3
        }
        assert lowered == {spec.name for spec in EVERY_STREAM if spec is not bus.DEADLETTER}

        # Raising it is a start with a higher setting: the stream grows to three copies.
        no_replica_settings.setenv("LISTBOSS_DEADLETTER_REPLICAS", "3")
        await bus.ensure_streams(js, [bus.DEADLETTER])
        assert (await js.stream_info(bus.DEADLETTER.name)).config.num_replicas == 3
    finally:
        await client.close()
