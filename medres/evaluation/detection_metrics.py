"""Lesion-detection metrics per finding: FROC and its mean (CPM), mAP, with patient-clustered bootstrap CIs.

Boxes are ``(N, 2 * spatial_dims)`` corners in MONAI's ``xyxy``/``xyzxyz`` order, any coordinate system as
long as truths and predictions share it.

- **Hit rule** (:class:`HitRule`): a prediction hits a true lesion at IoU ≥ ``iou`` (the detection
  benchmarks' rule), or when its centre lies inside the lesion's inscribed ellipse (ellipsoid), which for
  a LUNA16 nodule's cube is LUNA16's "within the nodule's radius" (Setio et al. 2017, Med. Image Anal. 42).
- **FROC** (:func:`froc`), as LUNA16's evaluation script scores it: each true lesion counts once, at the
  highest score of the predictions hitting it; a prediction hitting no lesion is a false positive; a second
  prediction on an already-hit lesion is neither. Sensitivity at a rate ``r`` false positives per image is
  the highest sensitivity of any score threshold whose false positives per image stay ≤ ``r`` (an operating
  point one can actually choose; LUNA16 interpolates linearly between operating points instead, which
  can only be higher). CPM is the mean over 1/8, 1/4, 1/2, 1, 2, 4 and 8.
- **mAP** at IoU 0.1 and 0.5 from MONAI's ``COCOMetric`` (the detection app's metric), per finding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou

from medres.models.detector import BOX, LABEL, SCORES

FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MAP_IOUS: tuple[float, ...] = (0.1, 0.5)


@dataclass(frozen=True)
class HitRule:
    """When a predicted box finds a true lesion.

    Attributes:
        kind: ``iou`` (IoU ≥ ``iou``) or ``centre`` (prediction centre inside the lesion's inscribed ellipse).
        iou: The IoU threshold of the ``iou`` rule.
    """

    kind: Literal["iou", "centre"] = "iou"
    iou: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in ("iou", "centre"):
            raise ValueError(f"hit rule kind must be 'iou' or 'centre', got {self.kind!r}")
        if not 0.0 < self.iou <= 1.0:
            raise ValueError(f"hit rule iou must be in (0, 1], got {self.iou}")

    def hits(self, predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """``(P, T)`` boolean: prediction ``p`` hits lesion ``t``."""
        predicted, truth = _boxes(predicted), _boxes(truth)
        if not len(predicted) or not len(truth):
            return np.zeros((len(predicted), len(truth)), bool)
        if self.kind == "iou":
            return np.asarray(box_iou(predicted, truth)) >= self.iou - 1e-12
        d = predicted.shape[1] // 2
        centres = (predicted[:, :d] + predicted[:, d:]) / 2
        truth_centres = (truth[:, :d] + truth[:, d:]) / 2
        half = (truth[:, d:] - truth[:, :d]) / 2
        distance = (((centres[:, None, :] - truth_centres[None]) / half[None]) ** 2).sum(-1)
        return distance <= 1.0 + 1e-12


@dataclass(frozen=True)
class ImageBoxes:
    """One image's (or scan's) true boxes and predictions for one finding.

    Attributes:
        truth: ``(T, 2 * spatial_dims)`` true boxes.
        predicted: ``(P, 2 * spatial_dims)`` predicted boxes.
        scores: ``(P,)`` prediction scores.
    """

    truth: np.ndarray
    predicted: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if len(self.predicted) != len(self.scores):
            raise ValueError(f"{len(self.predicted)} predicted boxes but {len(self.scores)} scores")


@dataclass(frozen=True)
class FrocResult:
    """A FROC curve and its summary.

    Attributes:
        fp_rates: The false-positive rates the sensitivities are read at.
        sensitivities: Sensitivity at each rate.
        cpm: Mean of ``sensitivities`` (LUNA16's competition performance metric).
        curve_fps: False positives per image at each distinct score threshold, descending threshold.
        curve_sensitivity: Sensitivity at the same thresholds.
        thresholds: The thresholds.
        lesions: True lesions counted.
        images: Images counted.
    """

    fp_rates: tuple[float, ...]
    sensitivities: np.ndarray
    cpm: float
    curve_fps: np.ndarray
    curve_sensitivity: np.ndarray
    thresholds: np.ndarray
    lesions: int
    images: int

    def sensitivity_at(self, rate: float) -> float:
        """Sensitivity at a rate of ``fp_rates``."""
        return float(self.sensitivities[self.fp_rates.index(rate)])


def _boxes(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    return array.reshape(0, 4) if array.size == 0 and array.ndim < 2 else array


def _lesion_and_fp_scores(images: Sequence[ImageBoxes], rule: HitRule) -> tuple[np.ndarray, np.ndarray, int]:
    """Best hitting score per true lesion (-inf: never hit), scores of false positives, lesion count."""
    lesion_scores: list[float] = []
    fp_scores: list[float] = []
    for image in images:
        hits = rule.hits(image.predicted, image.truth)
        scores = np.asarray(image.scores, dtype=np.float64)
        best = np.full(hits.shape[1], -np.inf)
        for p in range(hits.shape[0]):
            if hits[p].any():
                best[hits[p]] = np.maximum(best[hits[p]], scores[p])
            else:
                fp_scores.append(float(scores[p]))
        lesion_scores.extend(best.tolist())
    return np.asarray(lesion_scores), np.asarray(fp_scores), len(lesion_scores)


def froc(images: Sequence[ImageBoxes], rule: HitRule | None = None, fp_rates: Sequence[float] = FP_RATES) -> FrocResult:
    """FROC sensitivities, CPM and curve of one finding over ``images`` (see the module docstring).

    Args:
        images: Every evaluated image, those without lesions or predictions included (they add false
            positives and count in the per-image rate).
        rule: The hit rule; default IoU ≥ 0.1.
        fp_rates: Rates to read sensitivity at.

    Returns:
        The result; sensitivities are NaN when there is no true lesion.
    """
    rule = rule or HitRule()
    lesion_scores, fp_scores, lesions = _lesion_and_fp_scores(images, rule)
    n_images = len(images)
    candidates = np.unique(np.concatenate([lesion_scores[np.isfinite(lesion_scores)], fp_scores]))[::-1]
    thresholds = np.concatenate([[np.inf], candidates])
    fps = np.array([(fp_scores >= t).sum() for t in thresholds], dtype=np.float64) / max(n_images, 1)
    sensitivity = np.array([(lesion_scores >= t).sum() for t in thresholds], dtype=np.float64)
    sensitivity = sensitivity / lesions if lesions else np.full(len(thresholds), np.nan)
    at = np.array([sensitivity[fps <= rate + 1e-12].max() for rate in fp_rates])
    return FrocResult(
        fp_rates=tuple(fp_rates),
        sensitivities=at,
        cpm=float(at.mean()),
        curve_fps=fps,
        curve_sensitivity=sensitivity,
        thresholds=thresholds,
        lesions=lesions,
        images=n_images,
    )


def mean_average_precision(
    images: Sequence[ImageBoxes], ious: Sequence[float] = MAP_IOUS, max_detections: int = 100
) -> dict[float, float]:
    """Average precision of one finding at each IoU, by MONAI's ``COCOMetric`` (101-point interpolation).

    Returns:
        IoU → AP; NaN when there is no true lesion.
    """
    if not any(len(_boxes(i.truth)) for i in images):
        return dict.fromkeys(ious, float("nan"))
    matches = matching_batch(
        iou_fn=_iou,
        iou_thresholds=list(ious),
        pred_boxes=[_boxes(i.predicted) for i in images],
        pred_classes=[np.zeros(len(i.scores), np.int64) for i in images],
        pred_scores=[np.asarray(i.scores, dtype=np.float64) for i in images],
        gt_boxes=[_boxes(i.truth) for i in images],
        gt_classes=[np.zeros(len(_boxes(i.truth)), np.int64) for i in images],
        max_detections=max_detections,
    )
    # iou_range spans the listed IoUs only; the mAP over a range is not reported.
    metric = COCOMetric(
        classes=["finding"],
        iou_list=list(ious),
        iou_range=(min(ious), max(ious), max(max(ious) - min(ious), 0.05)),
        max_detection=[max_detections],
        per_class=False,
        verbose=False,
    )
    values = metric(matches)[0]
    return {iou: float(values[f"AP_IoU_{iou:.2f}_MaxDet_{max_detections}"]) for iou in ious}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(box_iou(a, b))


def image_scores(images: Sequence[ImageBoxes]) -> np.ndarray:
    """Image-level probability of the finding: the top box score (0 for an image without predictions)."""
    return np.array([float(np.max(i.scores)) if len(i.scores) else 0.0 for i in images])


@dataclass(frozen=True)
class DetectionCI:
    """Percentile bootstrap intervals of CPM, sensitivity at each FP rate and mAP.

    Attributes:
        low: Metric name → lower bound.
        high: Metric name → upper bound.
        resamples: Resamples drawn.
        clusters: Clusters (patients) resampled.
        confidence: Interval coverage.
    """

    low: dict[str, float] = field(default_factory=dict)
    high: dict[str, float] = field(default_factory=dict)
    resamples: int = 0
    clusters: int = 0
    confidence: float = 0.95


def detection_metrics(
    images: Sequence[ImageBoxes], rule: HitRule | None = None, fp_rates: Sequence[float] = FP_RATES
) -> dict[str, float]:
    """The flat metric dict of one finding: ``cpm``, ``sens_at_<rate>fp``, ``map_<iou>``."""
    result = froc(images, rule, fp_rates)
    metrics = {"cpm": result.cpm}
    metrics.update(
        {f"sens_at_{rate:g}fp": float(s) for rate, s in zip(result.fp_rates, result.sensitivities, strict=True)}
    )
    metrics.update({f"map_{iou:g}": ap for iou, ap in mean_average_precision(images).items()})
    return metrics


def detection_bootstrap_ci(
    images: Sequence[ImageBoxes],
    groups: Sequence[object] | None = None,
    rule: HitRule | None = None,
    resamples: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> DetectionCI:
    """Bootstrap intervals of :func:`detection_metrics`, drawing whole patients (``groups``) with replacement.

    Several images of one patient move together, as in :func:`medres.evaluation.metrics.bootstrap_ci`, so
    they do not narrow the interval as if independent. A resample without a true lesion is skipped.

    Args:
        images: Every evaluated image.
        groups: One cluster key per image (the pseudonymous patient key); None resamples images.
        rule: The hit rule.
        resamples: Number of resamples (each recomputes FROC and mAP).
        seed: Seed of the random generator.
        confidence: Interval coverage.
    """
    if resamples < 1:
        raise ValueError(f"bootstrap resamples must be at least 1, got {resamples}")
    keys = np.arange(len(images)) if groups is None else np.asarray(groups)
    if keys.shape != (len(images),):
        raise ValueError(f"bootstrap groups must hold one key per image: {keys.shape} for {len(images)} images")
    _, cluster = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(cluster == c) for c in range(int(cluster.max()) + 1)] if len(images) else []
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(resamples):
        drawn = rng.integers(len(members), size=len(members))
        chosen = [images[i] for c in drawn for i in members[c]]
        if not any(len(_boxes(i.truth)) for i in chosen):
            continue
        for name, value in detection_metrics(chosen, rule).items():
            samples.setdefault(name, []).append(value)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low = {k: float(np.nanpercentile(v, tail)) for k, v in samples.items()}
    high = {k: float(np.nanpercentile(v, 100.0 - tail)) for k, v in samples.items()}
    return DetectionCI(low, high, resamples, len(members), confidence)


def threshold_at_fp_rate(images: Sequence[ImageBoxes], rate: float, rule: HitRule | None = None) -> float:
    """The lowest box-score threshold whose false positives per image stay ≤ ``rate`` (score ≥ threshold ⇒ call).

    Chosen on validation, it is the operating point a package carries per finding: at most ``rate`` false
    boxes per image, and the highest sensitivity such a threshold reaches. ``inf`` when even the top-scoring
    box is a false positive beyond the budget (no box is called).
    """
    if rate < 0:
        raise ValueError(f"false-positive rate must be ≥ 0, got {rate}")
    result = froc(images, rule, (rate,))
    allowed = np.flatnonzero(result.curve_fps <= rate + 1e-12)
    return float(result.thresholds[allowed[-1]])


def finding_boxes(
    output: Mapping[str, torch.Tensor], truth: torch.Tensor, truth_labels: torch.Tensor, num_findings: int
) -> list[ImageBoxes]:
    """One image's detector output (``box``, ``label``, ``label_scores``) and true boxes, split per finding index."""
    true_boxes, true_labels = truth.detach().cpu().numpy(), truth_labels.detach().cpu().numpy()
    boxes = output[BOX].detach().float().cpu().numpy()
    labels = output[LABEL].detach().cpu().numpy()
    scores = output[SCORES].detach().float().cpu().numpy()
    return [
        ImageBoxes(true_boxes[true_labels == f], boxes[labels == f], scores[labels == f]) for f in range(num_findings)
    ]
