"""At the end of fit, the best checkpoint becomes an MLflow model and a new registered version."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pytorch_lightning as pl
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger

from medres.package import ModelPackage
from medres.tracking.model_logging import CONFIG_ARTIFACT, log_model_package

log = logging.getLogger(__name__)


class RegisterModel(pl.Callback):
    """At the end of fit, log the best checkpoint's weights as an MLflow model and register a version.

    Lightning's MLflow logger only uploads checkpoint files; this logs a loadable model with its
    signature, label names and preprocessing, and puts it in the registry under ``model_name``.

    Args:
        model_name: Registered model name; each fit adds a version.
        enabled: Set false to skip logging and registration (e.g. quick experiments).
    """

    def __init__(self, model_name: str = "chest_xray", enabled: bool = True) -> None:
        self.model_name = model_name
        self.enabled = enabled
        self.model_info: ModelInfo | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log and register on rank 0 only, so a DDP fit registers exactly one version."""
        if not self.enabled or not trainer.is_global_zero or trainer.sanity_checking:
            return
        logger = next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)
        if logger is None or logger.run_id is None:
            log.warning("no MLflow logger on the trainer: the model is not registered")
            return
        to_package = getattr(pl_module, "to_package", None)
        if to_package is None:
            raise TypeError(f"{type(pl_module).__name__} has no to_package(); cannot register it")
        training_config = _run_config(logger)
        callback = trainer.checkpoint_callback
        best = callback.best_model_path if isinstance(callback, ModelCheckpoint) else ""
        package: ModelPackage
        if best:
            # The checkpoint that won on validation, with the thresholds chosen at its own epoch, not the last
            # epoch's weights and thresholds.
            package = ModelPackage.from_checkpoint(Path(best))
            package.training_config = training_config
        else:
            package = to_package(training_config=training_config)
        tracking_uri = logger.experiment.tracking_uri
        self.model_info = log_model_package(package, logger.run_id, tracking_uri, self.model_name)
        log.info("registered %s version %s", self.model_name, self.model_info.registered_model_version)


def _run_config(logger: MLFlowLogger) -> str | None:
    """The resolved config the CLI logged into the run, if any."""
    try:
        return mlflow.artifacts.load_text(
            f"{logger.experiment.get_run(logger.run_id).info.artifact_uri}/{CONFIG_ARTIFACT}"
        )
    except (MlflowException, OSError):  # a fit started from Python, without the CLI, has no config artifact
        return None
