"""Make a fit's MLflow run judgeable from the UI alone: provenance tags, datasets, system metrics, review artifacts.

Lightning's MLflow logger records metrics and checkpoint files. A reviewer also needs to know what code and data
the run saw (tags, and the splits as MLflow datasets), how the machine was used (system metrics), and how the
chosen model behaves on held-out data: ROC/PR curves, a confusion matrix at the operating thresholds, a calibration
plot, Grad-CAM montages and a model card with bootstrap confidence intervals. This callback writes those, from rank 0
only.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from mlflow import MlflowClient
from pytorch_lightning.loggers import MLFlowLogger

from medres.data.datamodule import DicomDataModule
from medres.data.summary import DataSummary
from medres.evaluation.detection_review import froc_file_name, plot_box_montage, plot_froc, render_detection_card
from medres.evaluation.gradcam import gradcam_montage
from medres.evaluation.metrics import evaluate
from medres.evaluation.model_card import render_model_card
from medres.evaluation.plots import plot_calibration, plot_confusion, plot_roc_pr
from medres.tasks.callbacks.register_model import RegisterModel
from medres.tasks.detection import MultiLabelDetection
from medres.tasks.lesions import LesionDetection
from medres.tasks.outputs import EpochPredictions
from medres.tracking.datasets import log_split_datasets
from medres.tracking.privacy import allowed_tags
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
        synthetic_data: Say in the model card that the data is synthetic (the demo archives).
        enabled: Set false to log nothing beyond Lightning's metrics.
    """

    def __init__(
        self,
        system_metrics: bool = True,
        system_metrics_interval: float = 10.0,
        montage_images: int = 16,
        bootstrap_resamples: int = 1000,
        synthetic_data: bool = False,
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
        self.synthetic_data = synthetic_data
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
            # One tag to filter runs by their data; the counts go to data_summary.json, the model card and the
            # splits' dataset profiles, not to ~70 tags that bury the run page (issue 21, item 5).
            tags["data.fingerprint"] = self.data_summary.fingerprint
            client.log_text(logger.run_id, json.dumps(self.data_summary.to_dict(), indent=2), "data_summary.json")
            log_split_datasets(client, logger.run_id, self.data_summary, datamodule.root)
        for key, value in allowed_tags(tags).items():
            client.set_tag(logger.run_id, key, value)
        if self.system_metrics:
            self._start_system_metrics(logger, resumed=trainer.ckpt_path is not None)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop sampling system metrics."""
        self._stop_system_metrics()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Stop the sampling thread on a crash or Ctrl-C too."""
        self._stop_system_metrics()

    # ---- test: the review ------------------------------------------------------------------------------------
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log plots, Grad-CAM montage, metrics with CIs and the model card of the tested (best) checkpoint."""
        logger = mlflow_logger(trainer)
        predictions: EpochPredictions | None = getattr(pl_module, "test_predictions", None)
        if not self.enabled or not trainer.is_global_zero or logger is None or logger.run_id is None:
            return
        if isinstance(pl_module, LesionDetection):
            self._review_detector(trainer, pl_module, logger)
            return
        if not isinstance(pl_module, MultiLabelDetection) or predictions is None or len(predictions) == 0:
            return
        datamodule = getattr(trainer, "datamodule", None)
        groups = None
        if isinstance(datamodule, DicomDataModule):
            keys = datamodule.patient_keys("test")
            groups = [keys[i] for i in predictions.index]  # bootstrap whole patients, not images
        report = evaluate(
            predictions.probs,
            predictions.targets,
            pl_module.findings,
            pl_module.thresholds,
            groups=groups,
            resamples=self.bootstrap_resamples,
        )
        client: MlflowClient = logger.experiment
        # CIs, AP, sensitivity/specificity at the thresholds, ECE; the point AUROCs are already logged by the module.
        already = set(trainer.callback_metrics)
        for key, value in report.to_dict(prefix="test/").items():
            if key not in already:
                client.log_metric(logger.run_id, key, float(value))
        registered = self._registered_version(trainer)
        card = render_model_card(
            report,
            pl_module.operating_points,
            pl_module.threshold_rule,
            model_name=registered[0] if registered else None,
            model_version=registered[1] if registered else None,
            backbone=str(pl_module.backbone_name),
            parameters=sum(p.numel() for p in pl_module.backbone.parameters()),
            spatial_dims=pl_module.preprocessing.spatial_dims,
            in_channels=pl_module.preprocessing.in_channels,
            preprocessing=pl_module.preprocessing.to_dict(),
            data_summary=self.data_summary.to_dict() if self.data_summary else None,
            synthetic_data=self.synthetic_data,
            run_id=logger.run_id,
        )
        with tempfile.TemporaryDirectory(prefix="medres-review-") as tmp:
            out = Path(tmp)
            probs, targets, findings = predictions.probs, predictions.targets, pl_module.findings
            plot_roc_pr(probs, targets, findings, out, pl_module.thresholds)
            plot_confusion(probs, targets, findings, pl_module.thresholds, out / "confusion_matrix.png")
            plot_calibration(probs, targets, findings, out / "calibration.png")
            if self.montage_images and isinstance(datamodule, DicomDataModule):
                self._montage(pl_module, datamodule, out / "gradcam_montage.png")
            (out / "model_card.md").write_text(card)
            (out / "metrics.json").write_text(json.dumps(report.to_dict(), indent=2, allow_nan=True) + "\n")
            client.log_artifacts(logger.run_id, str(out), REVIEW_ARTIFACT_DIR)
        if registered:
            self._describe_version(client, *registered, card)

    def _review_detector(self, trainer: pl.Trainer, module: LesionDetection, logger: MLFlowLogger) -> None:
        """FROC curves, a box montage, metrics.json and the model card of the tested detector."""
        review, run_id = module.test_review, logger.run_id
        if review is None or run_id is None:
            return
        registered = self._registered_version(trainer)
        card = render_detection_card(
            review.findings,
            review.metrics,
            review.intervals,
            review.thresholds,
            review.threshold_fp_rate,
            review.hit_rule,
            model_name=registered[0] if registered else None,
            model_version=registered[1] if registered else None,
            backbone=str(module.backbone_name),
            parameters=sum(p.numel() for p in module.parameters()),
            preprocessing=module.preprocessing.to_dict(),
            data_summary=self.data_summary.to_dict() if self.data_summary else None,
            run_id=logger.run_id,
        )
        client: MlflowClient = logger.experiment
        datamodule = getattr(trainer, "datamodule", None)
        with tempfile.TemporaryDirectory(prefix="medres-review-") as tmp:
            out = Path(tmp)
            for finding, images in zip(review.findings, review.images, strict=True):
                if any(len(i.truth) for i in images):
                    plot_froc(images, finding, review.hit_rule, out / froc_file_name(finding))
            if self.montage_images and isinstance(datamodule, DicomDataModule):
                self._box_montage(module, datamodule, out / "box_montage.png")
            (out / "model_card.md").write_text(card)
            metrics = {**review.metrics, "thresholds": dict(zip(review.findings, review.thresholds, strict=True))}
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
            client.log_artifacts(run_id, str(out), REVIEW_ARTIFACT_DIR)
        if registered:
            self._describe_version(client, *registered, card)

    def _box_montage(self, module: LesionDetection, datamodule: DicomDataModule, out_path: Path) -> None:
        """True and predicted boxes on the first test images, captioned with their place in the split only."""
        pixels, truth, predicted = [], [], []
        for batch in datamodule.test_dataloader():
            outputs = module(batch["image"].to(module.device))
            for image, boxes, labels, output in zip(
                batch["image"], batch["boxes"], batch["box_labels"], outputs, strict=True
            ):
                true_boxes = [(int(f), b.numpy()) for f, b in zip(labels, boxes, strict=True)]
                called = [
                    (int(f), float(s), b.float().cpu().numpy())
                    for f, s, b in zip(output["label"], output["label_scores"], output["box"], strict=True)
                ]
                volume = image[0].float().cpu().numpy()
                if volume.ndim == 3:
                    volume, true_boxes, called = _slice_through(volume, true_boxes, called)
                pixels.append(volume)
                truth.append(true_boxes)
                predicted.append(called)
            if len(pixels) >= self.montage_images:
                break
        count = min(len(pixels), self.montage_images)
        plot_box_montage(
            np.stack(pixels[:count]),
            truth[:count],
            predicted[:count],
            module.findings,
            module.thresholds,
            [f"test #{i}" for i in range(count)],
            out_path,
        )

    def _montage(self, module: MultiLabelDetection, datamodule: DicomDataModule, out_path: Path) -> None:
        """Grad-CAM over the first validation images, captioned with their place in the split only."""
        images, labels = [], []
        for batch in datamodule.val_dataloader():
            images.append(batch["image"].as_tensor() if hasattr(batch["image"], "as_tensor") else batch["image"])
            labels.append(batch["label"])
            if sum(len(b) for b in images) >= self.montage_images:
                break
        pixels = torch.cat(images)[: self.montage_images].float()
        targets = torch.cat(labels)[: self.montage_images].float()
        targets = torch.where(targets < 0, torch.full_like(targets, float("nan")), targets)  # uncertain: shown as ?
        backbone = module.backbone
        device = next(backbone.parameters()).device
        with torch.no_grad():
            probs = torch.sigmoid(backbone(pixels.to(device)).float()).cpu()
        # The backbone, not the LightningModule: Grad-CAM works on a copy, and that must not copy the trainer.
        gradcam_montage(
            backbone,
            pixels.to(device),
            probs.numpy(),
            targets.numpy(),
            module.findings,
            module.thresholds,
            [f"val #{i}" for i in range(len(pixels))],
            out_path,
        )

    def _registered_version(self, trainer: pl.Trainer) -> tuple[str, str] | None:
        register = next((c for c in trainer.callbacks if isinstance(c, RegisterModel)), None)  # type: ignore[attr-defined]
        info = register.model_info if register is not None else None
        if info is None or info.registered_model_version is None:
            return None
        return register.model_name, str(info.registered_model_version)  # type: ignore[union-attr]

    def _describe_version(self, client: MlflowClient, name: str, version: str, card: str) -> None:
        """The registered version's description is its model card.

        The thresholds and their rule are in the card and in the model's metadata; they are not also set as version
        tags, which the registry shows as a column beside the card and which no reviewer filters versions by.
        """
        registry = MlflowClient(tracking_uri=client.tracking_uri, registry_uri=client.tracking_uri)
        registry.update_model_version(name, version, description=card)

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


def _slice_through(
    volume: np.ndarray,
    truth: list[tuple[int, np.ndarray]],
    predicted: list[tuple[int, float, np.ndarray]],
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]], list[tuple[int, float, np.ndarray]]]:
    """A 3D sample as the montage shows it: one slice along the last axis, and the boxes that cross it.

    The slice goes through the first true box, else the top prediction, else the middle; each crossing box is kept as
    its rectangle over the first two axes.
    """
    anchor = truth[0][1] if truth else (max(predicted, key=lambda p: p[1])[2] if predicted else None)
    z = int((anchor[2] + anchor[5]) / 2) if anchor is not None else volume.shape[2] // 2
    z = min(max(z, 0), volume.shape[2] - 1)

    def crosses(box: np.ndarray) -> bool:
        return bool(box[2] <= z + 0.5 <= box[5])

    flat = [(f, b[[0, 1, 3, 4]]) for f, b in truth if crosses(b)]
    flat_predicted = [(f, s, b[[0, 1, 3, 4]]) for f, s, b in predicted if crosses(b)]
    return volume[:, :, z], flat, flat_predicted
