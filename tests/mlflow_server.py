"""A real ``mlflow server`` subprocess on 127.0.0.1, shared by every test that needs a server (a fixture of conftest).

Use ``mlflow_server.uri`` as the tracking and registry URI (or set ``MLFLOW_TRACKING_URI`` to it for a CLI
subprocess). The server is session-scoped: tests that share it use their own experiment and model names.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .services import free_port

STARTUP_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class MlflowServer:
    """A running tracking server: its URI, its SQLite backend store and its artifact folder."""

    uri: str
    backend_store_uri: str
    artifacts: Path
    log: Path


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` with a SQLite backend and proxied artifacts under a temporary folder; stopped at the end."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    server = MlflowServer(
        uri=f"http://127.0.0.1:{port}",
        backend_store_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifacts=root / "artifacts",
        log=root / "server.log",
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", server.backend_store_uri,
        "--artifacts-destination", str(server.artifacts),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    with server.log.open("w") as log:
        # Its own process group: the server forks workers, and teardown must stop them all, and only them.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _healthy(server.uri):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up on {server.uri}:\n{server.log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
