"""``LesionDetection``: boxes with scores per finding, MONAI's RetinaNet over a medres ResNet (issue 18).

The network is built by :func:`medres.models.detector.build_detector` (MONAI's RetinaNet, ATSS matcher,
hard-negative sampler over a :class:`~medres.models.fpn.ResNetFPN`; no torchvision). Batches are dicts with
``image`` ``(N, C, *spatial)``, ``boxes`` (a list of ``(B_i, 2 * spatial_dims)`` corners in the network input's
pixel edges, MONAI's axis order) and ``box_labels`` (a list of ``(B_i,)`` finding indices), as
:class:`medres.data.box_datamodule.BoxDataModule` produces them.

Validation and test log, per finding, CPM, sensitivity at 1/8 … 8 false positives per image and mAP at IoU 0.1
and 0.5, plus AUROC of the image-level probability (the top box score), so the detector's AUROC sits beside the
classifier's. After every validation epoch each finding's box threshold is re-chosen at
``threshold_fp_rate`` false positives per image; it travels in checkpoints and packages, and scoring calls a
box (and its image) at it. The test epoch adds patient-clustered bootstrap CIs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from sklearn.metrics import roc_auc_score

import medres
from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY
from medres.data.selection import SeriesSelection
from medres.data.transforms import IMAGE_KEY, Preprocessing
from medres.evaluation.detection_metrics import (
    DetectionCI,
    HitRule,
    ImageBoxes,
    detection_bootstrap_ci,
    detection_metrics,
    finding_boxes,
    image_scores,
    threshold_at_fp_rate,
)
from medres.models.detector import BOX, LABEL, DetectorSpec, build_detector, detect
from medres.models.resnet import ResNet
from medres.package import CHECKPOINT_KEY, ModelPackage, build_backbone
from medres.tracking.resume import MLFLOW_RUN_KEY, run_entry

log = logging.getLogger(__name__)
SUMMARY_METRICS = ("cpm", "sens_at_1fp", "map_0.1", "map_0.5")


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


class LesionDetection(pl.LightningModule):
    """Boxes with scores for each finding; the image-level probability of a finding is its top box score.

    Args:
        findings: Finding names, in box-label index order (linked from the data).
        preprocessing: The data module's preprocessing (linked; its ``spatial_dims`` and ``in_channels`` size the net).
        backbone: A registered medres ResNet (``resnet18``, ...), as for classification.
        backbone_args: Overrides of the backbone's arguments (``widths``, ``stem``, ...).
        selection: The data module's selection (linked); saved into packages so scoring picks the same images.
        returned_stages: 1-based ResNet stages feeding the feature pyramid (finest first).
        fpn_channels: Channels of every pyramid level.
        anchor_shapes: Base anchor shapes in input pixels (one per anchor, ``spatial_dims`` sizes each) at the
            finest level; each coarser level doubles them.
        atss_candidates: Anchors per level ATSS considers for each true box.
        negatives_per_image: Anchors per image the hard-negative sampler keeps (positives included).
        positive_fraction: Largest fraction of those that may be positive.
        score_threshold: Boxes scoring below this are not returned.
        nms_iou: IoU above which non-maximum suppression removes the lower-scoring box.
        detections_per_image: Most boxes returned per image.
        hit_kind: Hit rule of the FROC (``iou``, or ``centre``: LUNA16's centre-within-radius).
        hit_iou: IoU of the ``iou`` hit rule.
        threshold_fp_rate: False positives per image the per-finding box threshold is chosen at (on validation).
        bootstrap_resamples: Patient-clustered bootstrap resamples of the test metrics' CIs (0: none).
        optimizer: Optimizer factory.
        scheduler: Optional LR scheduler factory, stepped once per epoch.
    """

    def __init__(
        self,
        findings: list[str],
        preprocessing: Preprocessing | None = None,
        backbone: str = "resnet18",
        backbone_args: dict[str, Any] | None = None,
        selection: SeriesSelection | None = None,
        returned_stages: Sequence[int] = (1, 2),
        fpn_channels: int = 64,
        anchor_shapes: Sequence[Sequence[int]] = ((8, 8), (12, 16), (16, 12), (24, 24)),
        atss_candidates: int = 4,
        negatives_per_image: int = 64,
        positive_fraction: float = 0.3,
        score_threshold: float = 0.02,
        nms_iou: float = 0.22,
        detections_per_image: int = 50,
        hit_kind: Literal["iou", "centre"] = "iou",
        hit_iou: float = 0.1,
        threshold_fp_rate: float = 0.25,
        bootstrap_resamples: int = 200,
        optimizer: OptimizerCallable = _default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if not findings:
            raise ValueError("model.findings is empty: name at least one finding")
        if threshold_fp_rate < 0:
            raise ValueError(f"model.threshold_fp_rate={threshold_fp_rate}: must be ≥ 0")
        self.findings = list(findings)
        self.preprocessing = preprocessing or Preprocessing()
        self.selection = selection or SeriesSelection()
        self.backbone_name = backbone
        self.backbone_args = dict(backbone_args or {})
        self.spec = DetectorSpec(
            returned_stages=tuple(int(s) for s in returned_stages),
            fpn_channels=fpn_channels,
            anchor_shapes=tuple(tuple(int(v) for v in s) for s in anchor_shapes),
            atss_candidates=atss_candidates,
            negatives_per_image=negatives_per_image,
            positive_fraction=positive_fraction,
            score_threshold=score_threshold,
            nms_iou=nms_iou,
            detections_per_image=detections_per_image,
        )
        resnet = build_backbone(backbone, self.backbone_args, self.preprocessing, 0)
        if not isinstance(resnet, ResNet):
            raise ValueError(f"model.backbone={backbone!r}: LesionDetection needs a medres ResNet")
        self.detector = build_detector(
            resnet, self.spec, self.preprocessing.spatial_dims, self.preprocessing.in_channels, len(self.findings)
        )
        self.hit_rule = HitRule(hit_kind, hit_iou)
        self.threshold_fp_rate = threshold_fp_rate
        self.bootstrap_resamples = bootstrap_resamples
        # Until a validation epoch chooses them: the detector's own score floor (every returned box is called).
        self.thresholds = [float(score_threshold)] * len(self.findings)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.save_hyperparameters(
            {
                "findings": self.findings,
                "preprocessing": self.preprocessing.to_dict(),
                "backbone": backbone,
                "backbone_args": self.backbone_args,
                "detector": self.spec.to_dict(),
            },
            logger=False,
        )
        self._outputs: dict[str, list[tuple[list[ImageBoxes], np.ndarray, int]]] = {"val": [], "test": []}
        # The test epoch's per-finding images, metrics and CIs, for the review callback (FROC curves, model card).
        self.test_review: DetectionReview | None = None

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Images → per image ``box`` ``(K, 2 * dims)``, ``label`` ``(K,)`` and ``label_scores`` ``(K,)``."""
        return detect(self.detector, images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Classification (focal) plus box-regression loss of the detector."""
        targets = [
            {BOX: boxes.to(self.device, torch.float32), LABEL: labels.to(self.device, torch.long)}
            for boxes, labels in zip(batch[BOX_KEY], batch[BOX_LABEL_KEY], strict=True)
        ]
        losses = self.detector(batch[IMAGE_KEY], targets)
        assert isinstance(losses, dict)
        loss = losses[self.detector.cls_key] + losses[self.detector.box_reg_key]
        size = len(targets)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/loss_cls", losses[self.detector.cls_key], batch_size=size)
        self.log("train/loss_box", losses[self.detector.box_reg_key], batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Predict and keep the boxes for the epoch's metrics."""
        self._collect("val", batch, batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Predict and keep the boxes for the test metrics."""
        self._collect("test", batch, batch_idx)

    def _collect(self, stage: str, batch: dict[str, Any], batch_idx: int) -> None:
        outputs = self(batch[IMAGE_KEY])
        indices = batch.get("sample_index")
        for i, (output, boxes, labels) in enumerate(zip(outputs, batch[BOX_KEY], batch[BOX_LABEL_KEY], strict=True)):
            per_finding = finding_boxes(output, boxes, labels, len(self.findings))
            present = np.array([len(image.truth) > 0 for image in per_finding], dtype=np.float32)
            index = int(indices[i]) if indices is not None else batch_idx * len(outputs) + i
            self._outputs[stage].append((per_finding, present, index))

    def on_validation_epoch_end(self) -> None:
        """Log the metrics and choose each finding's box threshold at ``threshold_fp_rate`` FPs per image."""
        collected = self._outputs["val"] = self._gathered("val")
        if not self.trainer.sanity_checking:
            for f in range(len(self.findings)):
                images = [per_finding[f] for per_finding, _, _ in collected]
                if images:
                    self.thresholds[f] = threshold_at_fp_rate(images, self.threshold_fp_rate, self.hit_rule)
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        """As validation, on the test split, plus patient-clustered bootstrap CIs."""
        collected = self._outputs["test"] = self._gathered("test")
        metrics = self.epoch_metrics("test")
        intervals: dict[str, DetectionCI] = {}
        groups = self._patient_keys("test", [index for _, _, index in collected])
        if self.bootstrap_resamples > 0:
            for f, finding in enumerate(self.findings):
                images = [per_finding[f] for per_finding, _, _ in collected]
                if any(len(i.truth) for i in images):
                    ci = detection_bootstrap_ci(images, groups, self.hit_rule, resamples=self.bootstrap_resamples)
                    intervals[finding] = ci
                    for name in ci.low:
                        metrics[f"test/{name}/{finding}_ci_low"] = ci.low[name]
                        metrics[f"test/{name}/{finding}_ci_high"] = ci.high[name]
        self.test_review = DetectionReview(
            findings=list(self.findings),
            images=[[per_finding[f] for per_finding, _, _ in collected] for f in range(len(self.findings))],
            metrics=dict(metrics),
            intervals=intervals,
            thresholds=list(self.thresholds),
            threshold_fp_rate=self.threshold_fp_rate,
            hit_rule=self.hit_rule,
        )
        if metrics:
            # Equal on every rank (gathered images): the mean over ranks is the value, and Lightning stays quiet.
            self.log_dict(metrics, sync_dist=True)
        self._outputs["test"] = []

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """The metrics of the images collected so far in ``stage`` (``val`` or ``test``)."""
        collected = self._outputs[stage]
        metrics: dict[str, float] = {}
        for f, finding in enumerate(self.findings):
            images = [per_finding[f] for per_finding, _, _ in collected]
            if not any(len(i.truth) for i in images):
                continue
            for name, value in detection_metrics(images, self.hit_rule).items():
                metrics[f"{stage}/{name}/{finding}"] = value
            present = np.array([p[f] for _, p, _ in collected])
            if 0 < present.sum() < len(present):
                metrics[f"{stage}/auroc/{finding}"] = float(roc_auc_score(present, image_scores(images)))
        for name in (*SUMMARY_METRICS, "auroc"):
            values = [v for k, v in metrics.items() if k.startswith(f"{stage}/{name}/")]
            if values:
                metrics[f"{stage}/{name}"] = float(np.nanmean(values))
        return metrics

    def _gathered(self, stage: str) -> list[tuple[list[ImageBoxes], np.ndarray, int]]:
        """Every process's collected images, once each, in split order.

        FROC and mAP need every image's boxes, not a mean of per-process values: under DDP each rank's images are
        gathered to all ranks (``all_gather_object``), so every rank computes the same metrics and chooses the same
        box thresholds. The distributed sampler pads a split by repeating samples; the sample index removes them.
        """
        collected = self._outputs[stage]
        if self._trainer is None or self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return sorted(collected, key=lambda item: item[2])
        parts: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(parts, collected)
        unique = {item[2]: item for part in parts for item in part}
        return [unique[index] for index in sorted(unique)]

    def _log_metrics(self, stage: str) -> None:
        # The collected images are already every rank's (see _gathered): the metrics are equal on every rank, so
        # syncing (a mean over ranks) changes nothing and tells Lightning they are epoch-level values of all ranks.
        metrics = self.epoch_metrics(stage)
        if metrics:
            self.log_dict(metrics, sync_dist=True)
        self._outputs[stage] = []

    def _patient_keys(self, split: str, indices: Sequence[int]) -> list[str] | None:
        """The pseudonymous patient key of each collected image, for clustered CIs (None: resample images)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        keys_of = getattr(datamodule, "patient_keys", None)
        if keys_of is None:
            return None
        keys = keys_of(split)
        return [keys[i] for i in indices] if all(i < len(keys) for i in indices) else None

    def configure_optimizers(self) -> Any:
        """The configured optimizer (and scheduler)."""
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    # ---- checkpoints and packages ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Embed the package contract (with this epoch's thresholds) and the MLflow run, as classification does."""
        checkpoint[CHECKPOINT_KEY] = self.to_package().contract()
        run = run_entry(self.loggers) if self._trainer is not None else None
        if run is not None:
            checkpoint[MLFLOW_RUN_KEY] = run

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the checkpoint's box thresholds."""
        contract = checkpoint.get(CHECKPOINT_KEY)
        if contract is not None and len(contract.get("thresholds", [])) == len(self.findings):
            self.thresholds = [float(t) for t in contract["thresholds"]]

    def to_package(self, training_config: str | None = None) -> ModelPackage:
        """The current weights (the whole detector network) and contract as a model package."""
        return ModelPackage(
            backbone=self.backbone_name,
            backbone_args=self.backbone_args,
            findings=self.findings,
            preprocessing=self.preprocessing,
            selection=self.selection,
            thresholds=self.thresholds,
            state_dict={k: v.detach().cpu() for k, v in self.detector.network.state_dict().items()},
            medres_version=medres.__version__,
            training_config=training_config,
            detector=self.spec,
            threshold_fp_rate=self.threshold_fp_rate,
        )


@dataclass(frozen=True)
class DetectionReview:
    """What the test epoch saw, for the review callback's FROC curves, montage and model card."""

    findings: list[str]
    images: list[list[ImageBoxes]]
    metrics: dict[str, float]
    intervals: dict[str, DetectionCI]
    thresholds: list[float]
    threshold_fp_rate: float
    hit_rule: HitRule
