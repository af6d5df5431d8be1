"""Where MLflow writes when nobody said: a SQLite file and an artifact folder in the working directory.

A fresh machine needs no server: ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` in the same
directory shows every run. ``MLFLOW_TRACKING_URI`` (or an explicit ``tracking_uri``) overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

TRACKING_DB_NAME = "mlflow.db"
ARTIFACT_DIR_NAME = "mlartifacts"


def disable_telemetry() -> None:
    """Turn MLflow's usage telemetry off for this process and its children.

    medres runs next to patient data and must not talk to the network; MLflow 3 sends usage
    telemetry unless told not to (``MLFLOW_DISABLE_TELEMETRY``, and the cross-tool ``DO_NOT_TRACK``).
    """
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The tracking URI to use: the argument, else ``MLFLOW_TRACKING_URI``, else a SQLite file in the cwd."""
    if tracking_uri:
        return tracking_uri
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    return f"sqlite:///{Path.cwd() / TRACKING_DB_NAME}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifact root for new experiments: beside the SQLite file for local stores, the server's choice otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        db_path = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db_path.parent / ARTIFACT_DIR_NAME).resolve().as_uri()
    return None


def existing_store(tracking_uri: str) -> str:
    """``tracking_uri``, refusing a local SQLite store that does not exist.

    MLflow creates an empty store (and its folders) on first contact; a command that only reads (scoring with a
    registered model, promotion, reports) would then answer "model not found" from a store the user never meant.

    Raises:
        FileNotFoundError: a ``sqlite:///`` URI whose database file does not exist, naming the file.
    """
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise FileNotFoundError(
                f"no MLflow store at {path}: run where the store is, or name it (--tracking_uri, MLFLOW_TRACKING_URI)"
            )
    return tracking_uri
