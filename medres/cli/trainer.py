"""``medres fit|validate|test|predict``: LightningCLI with medres's links, callbacks and MLflow defaults."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from jsonargparse import lazy_instance
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from medres.data.box_datamodule import BoxDataModule
from medres.data.datamodule import DicomDataModule
from medres.scoring.prediction_writer import DetectionPredictionWriter
from medres.tasks.callbacks.checkpointing import Checkpoint
from medres.tasks.callbacks.mlflow_logger import MLflowLogger
from medres.tasks.callbacks.register_model import RegisterModel
from medres.tasks.callbacks.review import ReviewRun
from medres.tasks.callbacks.save_config import MLflowSaveConfig
from medres.tasks.detection import MultiLabelDetection
from medres.tasks.lesions import LesionDetection
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
        lesions = self.model_class is LesionDetection
        parser.set_defaults(
            {
                # A detector keeps the epoch with the best FROC summary (CPM), a classifier the best macro AUROC.
                "checkpoint.monitor": "val/cpm" if lesions else "val/auroc_macro",
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


def is_box_config(args: Sequence[str]) -> bool:
    """Whether the command trains a lesion detector: its config (or command line) gives ``data.boxes``.

    A box file is what makes a fit a detection fit, so the config needs no other marker and classification
    configs stay as they are. Config files are read in order like LightningCLI reads them; a later
    ``data.boxes: null`` does not switch back (the detector needs a box file).
    """
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--data.boxes" or arg.startswith("--data.boxes="):
            return True
        path = arg.removeprefix("--config=") if arg.startswith("--config=") else None
        if arg == "--config" and i + 1 < len(args):
            path = args[i + 1]
        if path is None or not Path(path).is_file():
            continue  # a missing file: LightningCLI names it in its own error
        try:
            config = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError:
            continue
        data = config.get("data") if isinstance(config, dict) else None
        if isinstance(data, dict) and "boxes" in data:
            return True
    return False


def run_trainer_cli(args: Sequence[str] | None = None) -> None:
    """``medres fit|validate|test|predict …``; ``args=None`` reads ``sys.argv``.

    A config with ``data.boxes`` trains :class:`~medres.tasks.lesions.LesionDetection` on a
    :class:`~medres.data.box_datamodule.BoxDataModule`; any other the multi-label classifier.
    """
    lesions = is_box_config(sys.argv[1:] if args is None else args)
    MedresCLI(
        LesionDetection if lesions else MultiLabelDetection,
        BoxDataModule if lesions else DicomDataModule,
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
