"""The resolved LightningCLI config, logged to the fit's MLflow run as an artifact and as flattened params."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import MLFlowLogger

from medres.tracking.config_logging import flatten_config
from medres.tracking.privacy import allowed_params

log = logging.getLogger(__name__)


class MLflowSaveConfig(SaveConfigCallback):
    """Saves the resolved config into the fit's MLflow run (rank 0 only, once per run).

    Lightning's default callback writes ``config.yaml`` into ``trainer.log_dir``, which an MLflow
    logger on a database store does not have; this one logs it where the reviewer looks instead.
    """

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Log ``config.yaml`` and the flattened params to every MLflow logger of the trainer."""
        import yaml

        config_yaml = self.parser.dump(self.config, skip_none=False)
        flat = allowed_params(dict(flatten_config(yaml.safe_load(config_yaml))))
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logged = logger.experiment.get_run(logger.run_id).data.params
                if not logged:
                    logger.experiment.log_text(logger.run_id, config_yaml, "config.yaml")
                    logger.log_hyperparams(flat)
                    continue
                # A resumed run (fit --ckpt_path): MLflow refuses to change a param, so the original config.yaml
                # and params stay; the resumed config is kept beside them and new keys are added.
                resumes = sum(name.startswith("config.resume") for name in _artifact_names(logger))
                logger.experiment.log_text(logger.run_id, config_yaml, f"config.resume-{resumes + 1}.yaml")
                changed = sorted(k for k, v in flat.items() if k in logged and logged[k] != v)
                if changed:
                    log.warning("resumed run keeps its original params; changed on resume: %s", ", ".join(changed))
                new = {k: v for k, v in flat.items() if k not in logged}
                if new:
                    logger.log_hyperparams(new)


def _artifact_names(logger: MLFlowLogger) -> list[str]:
    return [info.path for info in logger.experiment.list_artifacts(logger.run_id)]
