"""Lightning's MLflow logger with medres's defaults: embedded SQLite store, no telemetry, checkpoints as artifacts."""

from __future__ import annotations

from typing import Any, Literal

from pytorch_lightning.loggers import MLFlowLogger

from medres.tracking.defaults import default_artifact_location, disable_telemetry, resolve_tracking_uri

# MLflow shows this tag as the run's description.
DESCRIPTION_TAG = "mlflow.note.content"


class MLflowLogger(MLFlowLogger):
    """One MLflow run per fit, written to a local SQLite store unless a tracking URI is given.

    Lightning's ``MLFlowLogger`` falls back to MLflow's deprecated file store; this subclass falls
    back to ``sqlite:///$PWD/mlflow.db`` with artifacts in ``$PWD/mlartifacts`` instead, so that
    ``mlflow ui`` and the model registry work on a fresh machine with no server.

    Args:
        experiment_name: MLflow experiment; created if missing.
        run_name: Name shown in the MLflow UI.
        description: The run's description in the MLflow UI (markdown): what the experiment tries, for the reviewer.
        tracking_uri: Server or store URI; default from ``MLFLOW_TRACKING_URI``, else the SQLite file.
        tags: Extra run tags. Never put patient-identifying values here.
        artifact_location: Artifact root for a newly created experiment.
        log_model: Log checkpoints as artifacts: ``True`` logs the best (and last) at the end of fit.
        run_id: Continue an existing run instead of starting one.
    """

    def __init__(
        self,
        experiment_name: str = "medres",
        run_name: str | None = None,
        description: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        artifact_location: str | None = None,
        log_model: Literal[True, False, "all"] = True,
        run_id: str | None = None,
    ) -> None:
        disable_telemetry()
        uri = resolve_tracking_uri(tracking_uri)
        tags = dict(tags or {})
        if description:
            tags[DESCRIPTION_TAG] = description
        super().__init__(
            experiment_name=experiment_name,
            run_name=run_name,
            tracking_uri=uri,
            tags=tags,
            save_dir=None,
            log_model=log_model,
            artifact_location=artifact_location or default_artifact_location(uri),
            run_id=run_id,
        )
