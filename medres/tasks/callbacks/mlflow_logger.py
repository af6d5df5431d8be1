"""Lightning's MLflow logger with medres's defaults: embedded SQLite store, no telemetry, checkpoints as artifacts."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, Literal

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from medres.tracking.defaults import default_artifact_location, disable_telemetry, resolve_tracking_uri

# MLflow shows this tag as the run's description.
DESCRIPTION_TAG = "mlflow.note.content"
# MLflow's limit on metrics per log_batch request.
MAX_METRICS_PER_BATCH = 1000


class MLflowLogger(MLFlowLogger):
    """One MLflow run per fit, written to a local SQLite store unless a tracking URI is given.

    Lightning's ``MLFlowLogger`` falls back to MLflow's deprecated file store; this subclass falls
    back to ``sqlite:///$PWD/mlflow.db`` with artifacts in ``$PWD/mlartifacts`` instead, so that
    ``mlflow ui`` and the model registry work on a fresh machine with no server.

    Metrics are sent in batches: Lightning's logger makes one synchronous ``log_batch`` request (a SQLite
    transaction or an HTTP round trip) per logging step, which cost a short CPU fit about 4 % of its wall time
    (``benchmarks/mlflow_overhead.py``); MLflow's asynchronous mode was slower still on 2 cores (its thread
    competes for them). Buffered metrics are sent once ``metrics_flush_seconds`` have passed since the last send,
    before every checkpoint is recorded (a run resumed from a checkpoint has every metric up to it) and when
    the fit ends; a ``kill -9`` loses at most the last ``metrics_flush_seconds`` of step metrics.

    Args:
        experiment_name: MLflow experiment; created if missing.
        run_name: Name shown in the MLflow UI.
        description: The run's description in the MLflow UI (markdown): what the experiment tries, for the reviewer.
        tracking_uri: Server or store URI; default from ``MLFLOW_TRACKING_URI``, else the SQLite file.
        tags: Extra run tags. Never put patient-identifying values here.
        artifact_location: Artifact root for a newly created experiment.
        log_model: Log checkpoints as artifacts: ``True`` logs the best (and last) at the end of fit.
        run_id: Continue an existing run instead of starting one.
        metrics_flush_seconds: Longest time a logged metric waits in the buffer; 0 sends each step's at once.
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
        metrics_flush_seconds: float = 5.0,
    ) -> None:
        disable_telemetry()
        if metrics_flush_seconds < 0:
            raise ValueError(f"metrics_flush_seconds={metrics_flush_seconds}: must be at least 0")
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
        self.metrics_flush_seconds = metrics_flush_seconds
        self._pending_metrics: list[Any] = []  # mlflow.entities.Metric, imported lazily as Lightning does
        self._last_flush = time.monotonic()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Buffer this step's metrics (timestamped now) and send the buffer when it is due."""
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, str):
                continue  # as Lightning's logger: MLflow metrics are numbers
            # MLflow's metric-name alphabet, as Lightning's logger enforces it.
            name = re.sub("[^a-zA-Z0-9_/. -]+", "", key)
            self._pending_metrics.append(Metric(key=name, value=float(value), timestamp=timestamp_ms, step=step or 0))
        if time.monotonic() - self._last_flush >= self.metrics_flush_seconds:
            self.flush_metrics()

    @rank_zero_only
    def flush_metrics(self) -> None:
        """Send every buffered metric now."""
        pending, self._pending_metrics = self._pending_metrics, []
        for start in range(0, len(pending), MAX_METRICS_PER_BATCH):
            self.experiment.log_batch(run_id=self.run_id, metrics=pending[start : start + MAX_METRICS_PER_BATCH])
        self._last_flush = time.monotonic()

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """Flush first: the run then holds every metric the checkpoint's state has seen."""
        self.flush_metrics()
        super().after_save_checkpoint(checkpoint_callback)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Send what is buffered, then end the run as Lightning does."""
        if self._initialized:
            self.flush_metrics()
        super().finalize(status)
