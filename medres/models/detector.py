"""MONAI's RetinaNet detector over a medres ResNet: the network of lesion detection, for training and scoring.

The network is MONAI's ``RetinaNet`` (classification and box-regression heads on every pyramid level) over a
:class:`~medres.models.fpn.ResNetFPN`, wrapped in MONAI's ``RetinaNetDetector`` with the ATSS matcher
(Zhang et al. 2020, "Bridging the Gap Between Anchor-based and Anchor-free Detection") and hard-negative
sampling, the route of MONAI's LUNA16 tutorial; none of it needs torchvision. Anchors are given as shapes in
input pixels at the finest returned level, doubled per coarser level.

One builder serves the LightningModule (:class:`medres.tasks.lesions.LesionDetection`) and the model package
(:mod:`medres.package`), so a packaged detector is rebuilt exactly as it was trained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher

from medres.models.fpn import ResNetFPN
from medres.models.resnet import ResNet

# MONAI's detector reads and writes targets under these keys.
BOX, LABEL, SCORES = "box", "label", "label_scores"


@dataclass(frozen=True)
class DetectorSpec:
    """Everything beyond the backbone that sizes a detector; stored in the model package as ``detector``.

    Args:
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
    """

    returned_stages: tuple[int, ...] = (1, 2)
    fpn_channels: int = 64
    anchor_shapes: tuple[tuple[int, ...], ...] = ((8, 8), (12, 16), (16, 12), (24, 24))
    atss_candidates: int = 4
    negatives_per_image: int = 64
    positive_fraction: float = 0.3
    score_threshold: float = 0.02
    nms_iou: float = 0.22
    detections_per_image: int = 50

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        values = asdict(self)
        values["returned_stages"] = list(self.returned_stages)
        values["anchor_shapes"] = [list(s) for s in self.anchor_shapes]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectorSpec:
        """Read :meth:`to_dict`'s output; unknown keys are refused (a newer medres wrote them)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown detector key(s) {unknown}")
        args = dict(values)
        if "returned_stages" in args:
            args["returned_stages"] = tuple(int(s) for s in args["returned_stages"])
        if "anchor_shapes" in args:
            args["anchor_shapes"] = tuple(tuple(int(v) for v in s) for s in args["anchor_shapes"])
        return cls(**args)


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


def build_detector(
    resnet: ResNet, spec: DetectorSpec, spatial_dims: int, in_channels: int, num_findings: int
) -> AtssRetinaNetDetector:
    """The RetinaNet detector over ``resnet``'s feature pyramid, its matcher, sampler and box selector set.

    Raises:
        ValueError: An anchor shape without ``spatial_dims`` sizes.
    """
    if any(len(shape) != spatial_dims for shape in spec.anchor_shapes):
        raise ValueError(
            f"model.anchor_shapes: every shape needs {spatial_dims} sizes, got {[list(s) for s in spec.anchor_shapes]}"
        )
    features = ResNetFPN(resnet, spec.returned_stages, spec.fpn_channels)
    levels = len(spec.returned_stages) + 1  # the pyramid adds a max-pooled level
    anchors = AnchorGeneratorWithAnchorShape(
        feature_map_scales=[2**level for level in range(levels)],
        base_anchor_shapes=[tuple(int(s) for s in shape) for shape in spec.anchor_shapes],
    )
    network = RetinaNet(
        spatial_dims=spatial_dims,
        num_classes=num_findings,
        num_anchors=anchors.num_anchors_per_location()[0],
        feature_extractor=features,
        size_divisible=total_stride(features, spatial_dims, in_channels),
    )
    detector = AtssRetinaNetDetector(network=network, anchor_generator=anchors, spatial_dims=spatial_dims)
    detector.set_target_keys(box_key=BOX, label_key=LABEL)
    detector.set_atss_matcher(num_candidates=spec.atss_candidates, center_in_gt=False)
    detector.set_hard_negative_sampler(
        batch_size_per_image=spec.negatives_per_image,
        positive_fraction=spec.positive_fraction,
        min_neg=16,
        pool_size=20,
    )
    detector.set_box_selector_parameters(
        score_thresh=spec.score_threshold,
        topk_candidates_per_level=1000,
        nms_thresh=spec.nms_iou,
        detections_per_img=spec.detections_per_image,
    )
    return detector


def detect(detector: RetinaNetDetector, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Images → per image ``box`` ``(K, 2 * dims)``, ``label`` ``(K,)`` and ``label_scores`` ``(K,)`` (eval mode)."""
    was_training = detector.training
    detector.eval()
    try:
        # Detections (after NMS) carry no gradient; without no_grad MONAI's box selector deep-copies graph tensors.
        with torch.no_grad():
            outputs = detector(images, use_inferer=False)
    finally:
        detector.train(was_training)
    if not isinstance(outputs, list):
        raise TypeError("RetinaNetDetector returned losses in eval mode")
    return outputs


def total_stride(features: ResNetFPN, spatial_dims: int, in_channels: int) -> int:
    """Input pixels per cell of the coarsest pyramid level: inputs must be divisible by it."""
    size = 64
    with torch.no_grad():
        was_training = features.training
        features.eval()
        levels = features(torch.zeros(1, in_channels, *([size] * spatial_dims)))
        features.train(was_training)
    coarsest = min(int(t.shape[-1]) for t in levels.values())
    return size // coarsest
