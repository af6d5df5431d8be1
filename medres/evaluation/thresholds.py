"""Operating thresholds chosen on validation predictions, one per finding.

A call is ``probability >= threshold`` everywhere in medres (scoring applies it that way), so every threshold chosen
here is a cut point the data can reach: one of the validation probabilities themselves, or, for "call nothing", the
next representable number above the largest one. The sensitivity and specificity reported with a threshold are the
ones ``probs >= threshold`` gives on the same data, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from sklearn.metrics import roc_curve

__all__ = ["OperatingPoint", "ThresholdRule", "as_predictions", "choose_thresholds", "labelled"]

Method = Literal["youden", "sensitivity", "specificity", "fixed"]
_METHODS = ("youden", "sensitivity", "specificity", "fixed")


@dataclass(frozen=True)
class ThresholdRule:
    """How operating thresholds are chosen on validation data.

    Attributes:
        method: ``"youden"`` maximises sensitivity + specificity - 1 (ties go to the higher threshold);
            ``"sensitivity"`` takes the highest threshold whose sensitivity reaches ``target`` (so specificity is as
            high as it can be); ``"specificity"`` the lowest threshold whose specificity reaches ``target``;
            ``"fixed"`` uses ``fixed`` for every finding.
        target: The sensitivity or specificity to reach.
        fixed: The threshold of ``"fixed"``, and the fallback for a finding whose labels hold a single class.
    """

    method: Method = "youden"
    target: float = 0.9
    fixed: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"model.threshold_rule.method must be one of {', '.join(_METHODS)}, got {self.method!r}")
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"model.threshold_rule.target must be in (0, 1], got {self.target}")
        if not 0.0 <= self.fixed <= 1.0:
            raise ValueError(f"model.threshold_rule.fixed must be in [0, 1], got {self.fixed}")

    def describe(self) -> str:
        """The rule in a few words, for model cards and run descriptions."""
        if self.method == "youden":
            return "Youden's J"
        if self.method == "fixed":
            return f"fixed {self.fixed:.2f}"
        return f"{self.method} ≥ {self.target:.2f}"


@dataclass(frozen=True)
class OperatingPoint:
    """One finding's threshold and what it gives on the data it was chosen on.

    Attributes:
        threshold: Probability at or above which the finding is called present.
        sensitivity: True-positive rate at the threshold (NaN without positive labels).
        specificity: True-negative rate at the threshold (NaN without negative labels).
        positives: Labelled positives the threshold was chosen on.
        negatives: Labelled negatives the threshold was chosen on.
        note: Why the rule could not be applied as asked, if it could not (empty otherwise).
    """

    threshold: float
    sensitivity: float
    specificity: float
    positives: int
    negatives: int
    note: str = ""


def as_predictions(
    probs: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert an epoch's probabilities and targets to ``(N, F)`` arrays.

    Probabilities keep float32 or float64 (a threshold taken from float32 probabilities must compare equal in
    float32); targets become float64.

    Args:
        probs: ``(N, F)`` probabilities in [0, 1], or ``(N,)`` for a single finding.
        targets: Same shape: 1 positive, 0 negative, NaN unknown.

    Returns:
        ``(probs, targets)`` as 2-D arrays.

    Raises:
        ValueError: On a shape mismatch, a probability outside [0, 1] or a target other than 0, 1 or NaN.
    """
    p = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    t = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    t = t.astype(np.float64)
    if p.ndim == 1:
        p = p[:, None]
    if t.ndim == 1:
        t = t[:, None]
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"probs {p.shape} and targets {t.shape} must both be (samples, findings)")
    if p.size and not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError("probs must be finite probabilities in [0, 1]")
    known = t[~np.isnan(t)]
    if not np.isin(known, (0.0, 1.0)).all():
        raise ValueError(f"targets must be 1, 0 or NaN (unknown), found {sorted(set(known.tolist()) - {0.0, 1.0})[:5]}")
    return p, t


def labelled(probs: np.ndarray, targets: np.ndarray, column: int) -> tuple[np.ndarray, np.ndarray]:
    """One finding's probabilities and 0/1 labels, unknown labels left out."""
    keep = ~np.isnan(targets[:, column])
    return probs[keep, column], targets[keep, column].astype(np.int64)


def choose_thresholds(
    probs: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, rule: ThresholdRule
) -> list[OperatingPoint]:
    """The operating threshold of every finding, chosen by ``rule`` on validation predictions.

    Args:
        probs: ``(N, F)`` probabilities.
        targets: ``(N, F)`` labels: 1, 0, or NaN to leave the sample out for that finding.
        rule: How to choose.

    Returns:
        One operating point per finding, in column order.
    """
    p, t = as_predictions(probs, targets)
    return [_choose(*labelled(p, t, column), rule) for column in range(p.shape[1])]


def _choose(scores: np.ndarray, labels: np.ndarray, rule: ThresholdRule) -> OperatingPoint:
    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    if rule.method == "fixed" or positives == 0 or negatives == 0:
        note = ""
        if rule.method != "fixed":
            missing = (
                "labelled samples"
                if positives == negatives == 0
                else "positive labels"
                if positives == 0
                else "negative labels"
            )
            note = f"no {missing}: fixed {rule.fixed:.2f} used"
        return _point(scores, labels, rule.fixed, note)

    cuts, tp, fp = _cut_points(scores, labels)
    tn = negatives - fp
    if rule.method == "youden":
        # J = tp/P - fp/N; compared as the integer tp·N - fp·P so that equal J values tie exactly. Cut points run
        # from high to low threshold, and argmax takes the first maximum: ties go to the higher threshold.
        index = int(np.argmax(tp * negatives - fp * positives))
        return _point(scores, labels, float(cuts[index]))
    if rule.method == "sensitivity":
        # Sensitivity only grows as the threshold falls: the first cut point that reaches the target is the highest.
        reached = np.flatnonzero(tp >= _count_for(rule.target, positives))
        # The lowest cut point calls every sample: sensitivity 1, so the target is always reached.
        return _point(scores, labels, float(cuts[reached[0]]))
    # "specificity": it only falls as the threshold falls, so the last cut point that reaches the target is the lowest.
    reached = np.flatnonzero(tn >= _count_for(rule.target, negatives))
    if len(reached) == 0:
        # Only when a negative scores exactly 1.0: no probability threshold calls nothing, so none reaches the target.
        point = _point(scores, labels, float(cuts[0]))
        return replace(point, note=f"no threshold reaches specificity {rule.target:.2f}: highest cut point used")
    return _point(scores, labels, float(cuts[reached[-1]]))


def _count_for(rate: float, total: int) -> int:
    """Fewest samples out of ``total`` whose share ``count / total`` reaches ``rate`` (as the reported rate does)."""
    count = int(np.ceil(rate * total))
    # rate * total can land a hair off an integer in floating point; settle on the share that is reported.
    while count > 0 and (count - 1) / total >= rate:
        count -= 1
    while count < total and count / total < rate:
        count += 1
    return count


def _cut_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct threshold from "call nothing" down to "call everything", with its true/false-positive counts.

    ``roc_curve`` (without dropping intermediate points) lists each distinct score once, highest first, with the
    rates of ``score >= threshold``. Its first threshold is +inf; a probability threshold cannot be, so that point
    becomes the next representable number above the largest score, in the scores' own precision, so it still calls
    nothing when compared in float32. Above a score of exactly 1.0 there is no probability: the point is dropped.

    Returns:
        ``(thresholds, true_positives, false_positives)``, thresholds decreasing.
    """
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    positives, negatives = int(labels.sum()), int(len(labels) - labels.sum())
    # roc_curve divides integer counts by the totals; rint recovers them exactly.
    tp, fp = np.rint(tpr * positives).astype(np.int64), np.rint(fpr * negatives).astype(np.int64)
    top = scores.max()
    above = np.nextafter(top, np.array(np.inf, dtype=scores.dtype))
    cuts = thresholds.astype(np.float64)
    if above <= 1.0:
        cuts[0] = float(above)
        return cuts, tp, fp
    return cuts[1:], tp[1:], fp[1:]


def _point(scores: np.ndarray, labels: np.ndarray, threshold: float, note: str = "") -> OperatingPoint:
    """The operating point of ``threshold``, counted directly as ``scores >= threshold``."""
    # Compare in the scores' precision, as scoring compares a float32 probability with the threshold.
    called = scores >= scores.dtype.type(threshold)
    positive = labels == 1
    positives, negatives = int(positive.sum()), int((~positive).sum())
    sensitivity = float(called[positive].sum() / positives) if positives else float("nan")
    specificity = float((~called[~positive]).sum() / negatives) if negatives else float("nan")
    return OperatingPoint(threshold, sensitivity, specificity, positives, negatives, note)
