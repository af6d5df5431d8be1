"""Start the team MLflow tracking server from the environment (the ``mlflow`` service of compose.yaml).

Passwords come from the environment (``docker/.env``), never from a file in the image or the repository:
this builds the PostgreSQL store URI (percent-encoded, so any password works), writes the basic-auth config
into a private temporary file, and replaces itself with ``mlflow server --app-name basic-auth``. The store
URI goes to MLflow through ``MLFLOW_BACKEND_STORE_URI`` rather than the command line, so ``ps`` does not show it.

``--dry-run`` prints the command and the auth config's path as JSON instead of starting the server.
"""

from __future__ import annotations

import configparser
import json
import os
import sys
import tempfile
from urllib.parse import quote

ARTIFACTS = "/mlartifacts"  # the named volume the server proxies artifacts to (--serve-artifacts)
DEFAULT_ALLOWED_HOSTS = "mlflow:5000,localhost:5000,127.0.0.1:5000"


def required(name: str) -> str:
    """The variable's value; exits naming it when it is unset or empty."""
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"mlflow_server.py: {name} is not set (copy docker/.env.example to docker/.env and fill it in)")
    return value


def database_uri(database: str) -> str:
    """``postgresql://`` URI of ``database`` on the compose PostgreSQL, credentials percent-encoded."""
    user = quote(required("POSTGRES_USER"), safe="")
    password = quote(required("POSTGRES_PASSWORD"), safe="")
    host = os.environ.get("POSTGRES_HOST", "postgres")
    return f"postgresql://{user}:{password}@{host}:5432/{database}"


def write_auth_config() -> str:
    """Write the basic-auth config (users and permissions in their own database) to a 0600 file; returns its path."""
    config = configparser.RawConfigParser()
    config["mlflow"] = {
        # Authenticated users read everything; writing needs ownership or a grant. Anonymous requests get 401.
        "default_permission": os.environ.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "READ"),
        # MLflow reads this file with interpolation: a percent-encoded password's "%" must be doubled.
        "database_uri": database_uri(os.environ.get("MLFLOW_AUTH_DB", "mlflow_auth")).replace("%", "%%"),
        # The admin's name and password are read by MLflow from MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD.
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    }
    required("MLFLOW_AUTH_ADMIN_USERNAME")
    required("MLFLOW_AUTH_ADMIN_PASSWORD")
    required("MLFLOW_FLASK_SERVER_SECRET_KEY")  # signs the UI's session cookies
    handle, path = tempfile.mkstemp(prefix="basic_auth-", suffix=".ini")  # mode 0600
    with os.fdopen(handle, "w") as file:
        config.write(file)
    return path


def main(argv: list[str]) -> None:
    """Configure and exec ``mlflow server``."""
    os.environ["MLFLOW_BACKEND_STORE_URI"] = database_uri(os.environ.get("POSTGRES_DB", "mlflow"))
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = write_auth_config()
    command = [
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        "0.0.0.0",  # inside the compose network; compose publishes the port on 127.0.0.1 only
        "--port",
        "5000",
        "--serve-artifacts",
        "--artifacts-destination",
        ARTIFACTS,
        # Clients reach the server as http://mlflow:5000; MLflow refuses Host headers it was not told about.
        "--allowed-hosts",
        os.environ.get("MLFLOW_ALLOWED_HOSTS", DEFAULT_ALLOWED_HOSTS),
        "--workers",
        os.environ.get("MLFLOW_WORKERS", "2"),
    ]
    if "--dry-run" in argv:
        print(json.dumps({"command": command, "auth_config": os.environ["MLFLOW_AUTH_CONFIG_PATH"]}))
        return
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
