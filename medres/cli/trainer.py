"""``medres fit|validate|test|predict``: LightningCLI with medres's links, callbacks and MLflow defaults."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jsonargparse import lazy_instance
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from medres.data.datamodule import DicomDataModule
from medres.scoring.prediction_writer import DetectionPredictionWriter
from medres.tasks.callbacks.checkpointing import Checkpoint
from medres.tasks.callbacks.mlflow_logger import MLflowLogger
from medres.tasks.callbacks.register_model import RegisterModel
from medres.tasks.callbacks.review import ReviewRun
from medres.tasks.callbacks.save_config import MLflowSaveConfig
from medres.tasks.detection import MultiLabelDetection
from medres.tracking.resume import resolve_resume

TRAINER_SUBCOMMANDS = ("fit", "validate", "test", "predict")
log = logging.getLogger(__name__)


class MedresCLI(LightningCLI):
    """LightningCLI with medres's links and defaults: one MLflow run per fit, test after fit, registration."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link data → model settings and add the always-on callbacks as config groups."""
        # The model's label names and preprocessing come from the data: declared once, saved with the model.
        parser.link_arguments("data.findings", "model.findings")
        parser.link_arguments("data.preprocessing", "model.preprocessing")
        parser.link_arguments("data.selection", "model.selection")
        # last.ckpt follows every epoch, so `fit --ckpt_path last` after a preemption loses at most one epoch.
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/auroc_macro",
                "checkpoint.mode": "max",
                "checkpoint.filename": "best-{epoch:02d}",
                "checkpoint.save_last": True,
            }
        )
        parser.add_lightning_class_args(RegisterModel, "register")
        parser.add_lightning_class_args(ReviewRun, "review")
        parser.add_lightning_class_args(DetectionPredictionWriter, "predictions")

    def before_instantiate_classes(self) -> None:
        """``fit --ckpt_path FILE`` continues the MLflow run that wrote the checkpoint instead of starting one.

        ``--ckpt_path last`` first becomes the newest ``last.ckpt`` of the configured experiment under
        ``trainer.default_root_dir``; with none there (a first start of a job that requeues itself) the fit starts
        from scratch in a new run (:func:`medres.tracking.resume.resolve_resume`).
        """
        if self.subcommand != "fit":
            return
        config = self.config["fit"]
        logger = config.trainer.get("logger")
        init_args = None if logger is None or isinstance(logger, bool | list) else logger.get("init_args")
        resume = resolve_resume(
            config.get("ckpt_path"),
            experiment_name=None if init_args is None else init_args.get("experiment_name"),
            tracking_uri=None if init_args is None else init_args.get("tracking_uri"),
            root_dir=config.trainer.get("default_root_dir") or "medres_work",
        )
        config.ckpt_path = resume.ckpt_path
        if resume.run_id is not None and init_args is not None and "run_id" in init_args and init_args.run_id is None:
            init_args.run_id = resume.run_id
            log.info("resuming MLflow run %s from %s", resume.run_id, config.ckpt_path)

    def after_fit(self) -> None:
        """Evaluate the best checkpoint on the test split (when there is one) into the same MLflow run."""
        datamodule = self.datamodule
        if isinstance(datamodule, DicomDataModule) and datamodule.has_split("test") and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=datamodule, ckpt_path="best" if self._has_best() else None)

    def _has_best(self) -> bool:
        callback = self.trainer.checkpoint_callback
        return bool(getattr(callback, "best_model_path", ""))


def run_trainer_cli(args: Sequence[str] | None = None) -> None:
    """``medres fit|validate|test|predict …``; ``args=None`` reads ``sys.argv``."""
    MedresCLI(
        MultiLabelDetection,
        DicomDataModule,
        save_config_callback=MLflowSaveConfig,
        save_config_kwargs={"save_to_log_dir": False},
        trainer_defaults={
            "logger": lazy_instance(MLflowLogger, experiment_name="medres"),
            "default_root_dir": "medres_work",
        },
        seed_everything_default=0,
        parser_kwargs={"exit_on_error": False},
        args=None if args is None else list(args),
    )
