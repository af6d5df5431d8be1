"""Make a fit's MLflow run judgeable from the UI alone: provenance and data tags, system metrics, review artifacts.

Lightning's MLflow logger records metrics and checkpoint files. A reviewer also needs to know what code and data
the run saw (tags), how the machine was used (system metrics), and how the chosen model behaves on held-out data:
ROC/PR curves, a confusion matrix at the operating thresholds, a calibration plot, Grad-CAM montages and a model
card with bootstrap confidence intervals. This callback writes those, from rank 0 only.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytorch_lightning as pl
from mlflow import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger

from medres.data.datamodule import DicomDataModule
from medres.data.summary import DataSummary
from medres.tracking.provenance import provenance_tags

log = logging.getLogger(__name__)

REVIEW_ARTIFACT_DIR = "review"


def mlflow_logger(trainer: pl.Trainer) -> MLFlowLogger | None:
    """The trainer's MLflow logger, if it has one."""
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


class ReviewRun(pl.Callback):
    """Tags, system metrics and, after testing, the review artifacts and model card of a fit's MLflow run.

    Args:
        system_metrics: Log CPU, memory, disk, network and GPU use (MLflow's system metrics) during fit.
        system_metrics_interval: Seconds between system-metric samples.
        montage_images: Validation images in the Grad-CAM montage (0: no montage).
        bootstrap_resamples: Resamples (of patients) for the model card's 95 % confidence intervals.
        intended_use: The model card's intended-use paragraph; a research-use default when empty.
        enabled: Set false to log nothing beyond Lightning's metrics.
    """

    def __init__(
        self,
        system_metrics: bool = True,
        system_metrics_interval: float = 10.0,
        montage_images: int = 16,
        bootstrap_resamples: int = 1000,
        intended_use: str | None = None,
        enabled: bool = True,
    ) -> None:
        if system_metrics_interval <= 0:
            raise ValueError(f"review.system_metrics_interval={system_metrics_interval}: must be > 0 seconds")
        if montage_images < 0 or bootstrap_resamples < 0:
            raise ValueError("review.montage_images and review.bootstrap_resamples must be ≥ 0")
        self.system_metrics = system_metrics
        self.system_metrics_interval = system_metrics_interval
        self.montage_images = montage_images
        self.bootstrap_resamples = bootstrap_resamples
        self.intended_use = intended_use
        self.enabled = enabled
        self._monitor: Any = None
        self.data_summary: DataSummary | None = None

    # ---- fit ---------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Tag the run (code, data, model) and start sampling system metrics."""
        logger = mlflow_logger(trainer)
        if not self.enabled or not trainer.is_global_zero or logger is None or logger.run_id is None:
            return
        client: MlflowClient = logger.experiment
        tags = provenance_tags()
        tags["medres.parameters"] = str(sum(p.numel() for p in pl_module.parameters()))
        tags["medres.world_size"] = str(trainer.world_size)
        datamodule = getattr(trainer, "datamodule", None)
        if isinstance(datamodule, DicomDataModule):
            self.data_summary = datamodule.summary()
            tags.update(self.data_summary.tags())
            client.log_text(logger.run_id, json.dumps(self.data_summary.to_dict(), indent=2), "data_summary.json")
        for key, value in tags.items():
            client.set_tag(logger.run_id, key, value)
        if self.system_metrics:
            self._start_system_metrics(logger, resumed=trainer.ckpt_path is not None)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop sampling system metrics."""
        self._stop_system_metrics()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Stop the sampling thread on a crash or Ctrl-C too."""
        self._stop_system_metrics()

    def _start_system_metrics(self, logger: MLFlowLogger, resumed: bool) -> None:
        # MLflow's monitor samples in a thread and logs system/* metrics to the run; it needs psutil.
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(
            logger.run_id,
            sampling_interval=self.system_metrics_interval,
            resume_logging=resumed,
            tracking_uri=logger.experiment.tracking_uri,
        )
        self._monitor.start()

    def _stop_system_metrics(self) -> None:
        if self._monitor is not None:
            self._monitor.finish()
            self._monitor = None
