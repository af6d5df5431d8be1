"""``LesionDetection``: boxes with scores per finding, MONAI's RetinaNet over a medres ResNet (issue 18).

The network is MONAI's ``RetinaNet`` (classification and box-regression heads on every pyramid level) over a
:class:`~medres.models.fpn.ResNetFPN`, wrapped in MONAI's ``RetinaNetDetector`` with the ATSS matcher
(Zhang et al. 2020, "Bridging the Gap Between Anchor-based and Anchor-free Detection") and hard-negative
sampling, the route of MONAI's LUNA16 tutorial; none of it needs torchvision. Anchors come from the config
(their shapes in input pixels at the finest returned level, doubled per level).

Batches are dicts with ``image`` ``(N, C, *spatial)``, ``boxes`` (a list of ``(B_i, 2 * spatial_dims)``
corners in the network input's pixel edges, MONAI's axis order) and ``box_labels`` (a list of ``(B_i,)``
finding indices), as :mod:`medres.data.box_transforms` produces them. Validation and test log, per finding,
CPM, sensitivity at 1 false positive per image and mAP at IoU 0.1 and 0.5, plus AUROC of the image-level
probability (the top box score), so the detector's AUROC sits beside the classifier's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from sklearn.metrics import roc_auc_score

from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY
from medres.data.transforms import IMAGE_KEY, Preprocessing
from medres.evaluation.detection_metrics import HitRule, ImageBoxes, detection_metrics, image_scores
from medres.models.fpn import ResNetFPN
from medres.models.resnet import ResNet
from medres.package import build_backbone

# MONAI's detector reads and writes targets under these keys.
_BOX, _LABEL, _SCORES = "box", "label", "label_scores"


class AtssRetinaNetDetector(RetinaNetDetector):
    """MONAI's ``RetinaNetDetector`` that matches with ATSS only, and so runs without torchvision.

    MONAI's ``compute_anchor_matched_idxs`` first asks ``isinstance(matcher, torchvision Matcher)``; without
    torchvision that name is MONAI's optional-import placeholder, whose ``isinstance`` raises even when the
    matcher is MONAI's own ``ATSSMatcher`` (MONAI 1.5). This is its ATSS branch, unchanged otherwise.
    """

    def compute_anchor_matched_idxs(
        self,
        anchors: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
        num_anchor_locs_per_level: Sequence[int],
    ) -> list[torch.Tensor]:
        """Per image, the true box each anchor is matched to (-1: background), by the ATSS matcher."""
        if not isinstance(self.proposal_matcher, ATSSMatcher):
            raise ValueError("AtssRetinaNetDetector needs set_atss_matcher() before training")
        matched = []
        for anchors_per_image, targets_per_image in zip(anchors, targets, strict=True):
            boxes = targets_per_image[self.target_box_key]
            if boxes.numel() == 0:
                matched.append(
                    torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64, device=anchors_per_image.device)
                )
                continue
            _, idxs = self.proposal_matcher(
                boxes.to(anchors_per_image.device),
                anchors_per_image,
                num_anchor_locs_per_level,
                self.num_anchors_per_loc,
            )
            matched.append(idxs)
        return matched


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)


class LesionDetection(pl.LightningModule):
    """Boxes with scores for each finding; the image-level probability of a finding is its top box score.

    Args:
        findings: Finding names, in box-label index order.
        preprocessing: The data module's preprocessing (its ``spatial_dims`` and ``in_channels`` size the net).
        backbone: A registered medres ResNet (``resnet18``, ...), as for classification.
        backbone_args: Overrides of the backbone's arguments (``widths``, ``stem``, ...).
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
        hit_kind: Hit rule of the FROC (``iou`` or ``centre``).
        hit_iou: IoU of the ``iou`` hit rule.
        optimizer: Optimizer factory.
        scheduler: Optional LR scheduler factory, stepped once per epoch.
    """

    def __init__(
        self,
        findings: list[str],
        preprocessing: Preprocessing | None = None,
        backbone: str = "resnet18",
        backbone_args: dict[str, Any] | None = None,
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
        optimizer: OptimizerCallable = _default_optimizer,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if not findings:
            raise ValueError("model.findings is empty: name at least one finding")
        self.findings = list(findings)
        self.preprocessing = preprocessing or Preprocessing()
        dims = self.preprocessing.spatial_dims
        if any(len(shape) != dims for shape in anchor_shapes):
            raise ValueError(
                f"model.anchor_shapes: every shape needs {dims} sizes, got {[list(s) for s in anchor_shapes]}"
            )
        resnet = build_backbone(backbone, dict(backbone_args or {}), self.preprocessing, 0)
        if not isinstance(resnet, ResNet):
            raise ValueError(f"model.backbone={backbone!r}: LesionDetection needs a medres ResNet")
        features = ResNetFPN(resnet, returned_stages, fpn_channels)
        levels = len(returned_stages) + 1  # the pyramid adds a max-pooled level
        stride = _total_stride(features, dims, self.preprocessing.in_channels)
        anchors = AnchorGeneratorWithAnchorShape(
            feature_map_scales=[2**level for level in range(levels)],
            base_anchor_shapes=[tuple(int(s) for s in shape) for shape in anchor_shapes],
        )
        network = RetinaNet(
            spatial_dims=dims,
            num_classes=len(self.findings),
            num_anchors=anchors.num_anchors_per_location()[0],
            feature_extractor=features,
            size_divisible=stride,
        )
        self.detector = AtssRetinaNetDetector(network=network, anchor_generator=anchors, spatial_dims=dims)
        self.detector.set_target_keys(box_key=_BOX, label_key=_LABEL)
        self.detector.set_atss_matcher(num_candidates=atss_candidates, center_in_gt=False)
        self.detector.set_hard_negative_sampler(
            batch_size_per_image=negatives_per_image, positive_fraction=positive_fraction, min_neg=16, pool_size=20
        )
        self.detector.set_box_selector_parameters(
            score_thresh=score_threshold,
            topk_candidates_per_level=1000,
            nms_thresh=nms_iou,
            detections_per_img=detections_per_image,
        )
        self.hit_rule = HitRule(hit_kind, hit_iou)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.save_hyperparameters(
            {
                "findings": self.findings,
                "preprocessing": self.preprocessing.to_dict(),
                "backbone": backbone,
                "backbone_args": dict(backbone_args or {}),
                "returned_stages": list(returned_stages),
                "fpn_channels": fpn_channels,
                "anchor_shapes": [list(s) for s in anchor_shapes],
            },
            logger=False,
        )
        self._outputs: dict[str, list[tuple[list[ImageBoxes], np.ndarray]]] = {"val": [], "test": []}

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Images → per image ``box`` ``(K, 2 * dims)``, ``label`` ``(K,)`` and ``label_scores`` ``(K,)``."""
        was_training = self.detector.training
        self.detector.eval()
        try:
            # Detections (after NMS) carry no gradient; without no_grad MONAI's box selector deep-copies graph tensors.
            with torch.no_grad():
                outputs = self.detector(images, use_inferer=False)
        finally:
            self.detector.train(was_training)
        if not isinstance(outputs, list):
            raise TypeError("RetinaNetDetector returned losses in eval mode")
        return outputs

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """Classification (focal) plus box-regression loss of the detector."""
        targets = [
            {_BOX: boxes.to(self.device, torch.float32), _LABEL: labels.to(self.device, torch.long)}
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
        self._collect("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Predict and keep the boxes for the test metrics."""
        self._collect("test", batch)

    def _collect(self, stage: str, batch: dict[str, Any]) -> None:
        outputs = self(batch[IMAGE_KEY])
        for output, boxes, labels in zip(outputs, batch[BOX_KEY], batch[BOX_LABEL_KEY], strict=True):
            truth_boxes, truth_labels = boxes.detach().cpu().numpy(), labels.detach().cpu().numpy()
            pred_boxes = output[_BOX].detach().float().cpu().numpy()
            pred_labels = output[_LABEL].detach().cpu().numpy()
            scores = output[_SCORES].detach().float().cpu().numpy()
            per_finding = [
                ImageBoxes(truth_boxes[truth_labels == f], pred_boxes[pred_labels == f], scores[pred_labels == f])
                for f in range(len(self.findings))
            ]
            present = np.array([(truth_labels == f).any() for f in range(len(self.findings))], dtype=np.float32)
            self._outputs[stage].append((per_finding, present))

    def on_validation_epoch_end(self) -> None:
        """Log per-finding and mean CPM, sensitivity at 1 FP/image, mAP@0.1/0.5 and top-box AUROC."""
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        """As validation, on the test split."""
        self._log_metrics("test")

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        """The metrics of the images collected so far in ``stage`` (``val`` or ``test``)."""
        collected = self._outputs[stage]
        metrics: dict[str, float] = {}
        for f, finding in enumerate(self.findings):
            images = [per_finding[f] for per_finding, _ in collected]
            if not any(len(i.truth) for i in images):
                continue
            for name, value in detection_metrics(images, self.hit_rule).items():
                metrics[f"{stage}/{name}/{finding}"] = value
            present = np.array([p[f] for _, p in collected])
            if 0 < present.sum() < len(present):
                metrics[f"{stage}/auroc/{finding}"] = float(roc_auc_score(present, image_scores(images)))
        for name in ("cpm", "sens_at_1fp", "map_0.1", "map_0.5"):
            values = [v for k, v in metrics.items() if k.startswith(f"{stage}/{name}/")]
            if values:
                metrics[f"{stage}/{name}"] = float(np.nanmean(values))
        return metrics

    def _log_metrics(self, stage: str) -> None:
        # Lightning syncs nothing here: metrics need every image's boxes (run validation on one process).
        metrics = self.epoch_metrics(stage)
        if metrics:
            self.log_dict(metrics, sync_dist=False)
        self._outputs[stage] = []

    def configure_optimizers(self) -> Any:
        """The configured optimizer (and scheduler)."""
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}


def _total_stride(features: ResNetFPN, spatial_dims: int, in_channels: int) -> int:
    """Input pixels per cell of the coarsest pyramid level: inputs must be divisible by it."""
    size = 64
    with torch.no_grad():
        was_training = features.training
        features.eval()
        levels = features(torch.zeros(1, in_channels, *([size] * spatial_dims)))
        features.train(was_training)
    coarsest = min(int(t.shape[-1]) for t in levels.values())
    return size // coarsest
