"""docker/compose.yaml wires a basic-auth MLflow on PostgreSQL and points train/score at it; no secret is committed."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import mlflow
import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
COMPOSE = DOCKER / "compose.yaml"
SECRETS = (
    "POSTGRES_PASSWORD",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "MEDRES_MLFLOW_PASSWORD",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def referenced_variables(value: Any) -> dict[str, str]:
    """``${NAME...}`` references in a compose value: name → the modifier (``:?message``, ``:-default`` or "")."""
    return dict(re.findall(r"\$\{([A-Z0-9_]+)([^}]*)\}", json.dumps(value)))


def test_every_referenced_service_exists_and_waits_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "mlflow", "train", "score"} <= set(services)
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition == {"condition": "service_healthy"}
            assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has no healthcheck"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/", "$")):
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
            elif source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts missing file {source}"
    assert services["postgres"]["image"] == "postgres:16"
    assert services["mlflow"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_build_files_exist_and_the_server_image_pins_mlflow(compose: dict[str, Any]) -> None:
    for name in ("mlflow", "train", "score"):
        build = compose["services"][name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()
    dockerfile = (DOCKER / "mlflow.Dockerfile").read_text()
    assert f'"mlflow[auth]=={mlflow.__version__}"' in dockerfile and "psycopg2-binary" in dockerfile
    assert compose["services"]["mlflow"]["image"].endswith(mlflow.__version__)


def test_jobs_get_the_tracking_server_and_credentials_from_env(compose: dict[str, Any]) -> None:
    for name in ("train", "score"):
        env = compose["services"][name]["environment"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert referenced_variables(env["MLFLOW_TRACKING_USERNAME"]).keys() == {"MEDRES_MLFLOW_USERNAME"}
        assert referenced_variables(env["MLFLOW_TRACKING_PASSWORD"]).keys() == {"MEDRES_MLFLOW_PASSWORD"}
        assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
        assert any(v.endswith(":/archive:ro") for v in compose["services"][name]["volumes"])
    assert compose["services"]["score"]["command"][:3] == ["score", "--model", "models:/chest_xray@champion"]


def test_no_password_has_a_default_and_the_example_env_holds_none(compose: dict[str, Any]) -> None:
    variables = referenced_variables(compose)
    for secret in SECRETS:
        assert variables[secret].startswith(":?"), f"{secret} must be required (:?), never defaulted"
    example = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if re.match(r"^[A-Z_]+=", line)
    )
    assert set(variables) <= set(example), f"not in .env.example: {set(variables) - set(example)}"
    assert all(example[secret] == "" for secret in SECRETS)
    assert "docker/.env" in (DOCKER.parent / ".gitignore").read_text().splitlines()
    assert compose["services"]["mlflow"]["ports"] == ["127.0.0.1:5000:5000"]


@pytest.mark.slow
def test_server_entrypoint_turns_on_auth_with_a_postgres_store(tmp_path: Path) -> None:
    password = "p@ss:w/rd%?"  # characters a URI and an ini file would both mangle if not escaped
    env = {
        **os.environ,
        "POSTGRES_USER": "mlflow",
        "POSTGRES_PASSWORD": password,
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-secret",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "cookie-secret",
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, str(DOCKER / "mlflow_server.py"), "--dry-run"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    command = printed["command"]
    assert command[:4] == ["mlflow", "server", "--app-name", "basic-auth"]
    assert command[command.index("--artifacts-destination") + 1] == "/mlartifacts" and "--serve-artifacts" in command
    assert "mlflow:5000" in command[command.index("--allowed-hosts") + 1].split(",")
    assert password not in " ".join(command)  # the store URI travels in the environment, not in argv

    auth = configparser.ConfigParser()  # as MLflow reads it: with interpolation
    auth.read(printed["auth_config"])
    uri = urlsplit(auth["mlflow"]["database_uri"])
    assert (uri.scheme, uri.hostname, uri.path) == ("postgresql", "postgres", "/mlflow_auth")
    assert unquote(uri.password or "") == password
    assert "admin_password" not in auth["mlflow"] and auth["mlflow"]["default_permission"] == "READ"
    assert Path(printed["auth_config"]).stat().st_mode & 0o077 == 0

    missing = {k: v for k, v in env.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}
    refused = subprocess.run(
        [sys.executable, str(DOCKER / "mlflow_server.py"), "--dry-run"], env=missing, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "MLFLOW_AUTH_ADMIN_PASSWORD is not set" in refused.stderr


@pytest.mark.slow
def test_docker_compose_config_resolves(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed")
    env_file = tmp_path / ".env"
    example = (DOCKER / ".env.example").read_text()
    env_file.write_text(re.sub(r"^([A-Z_]+)=$", r"\1=test-value", example, flags=re.MULTILINE))
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--env-file", str(env_file), "--profile", "jobs", "config"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert resolved["services"]["score"]["environment"]["MLFLOW_TRACKING_PASSWORD"] == "test-value"
