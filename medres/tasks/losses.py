"""Masked multi-label BCE: unknown labels (NaN) never reach the loss; uncertain ones (-1) follow a policy."""

from __future__ import annotations

from enum import StrEnum

import torch
import torch.nn.functional as F

UNCERTAIN = -1.0


class UncertainPolicy(StrEnum):
    """What an uncertain (-1) label means for training and metrics (Irvin et al. 2019, CheXpert "U-" policies).

    ``ignore`` masks it like an unknown label; ``positive`` / ``negative`` read it as 1 / 0.
    """

    IGNORE = "ignore"
    POSITIVE = "positive"
    NEGATIVE = "negative"


def resolve_labels(labels: torch.Tensor, policy: UncertainPolicy | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn raw labels (1, 0, NaN unknown, -1 uncertain) into targets and a mask of the ones that count.

    Args:
        labels: (N, F) float labels as stored in the manifest.
        policy: How to read -1.

    Returns:
        (targets, mask): targets in {0, 1} (0 where masked), mask True where the label is used.
    """
    policy = UncertainPolicy(policy)
    uncertain = labels == UNCERTAIN
    targets = labels.clone()
    if policy is UncertainPolicy.POSITIVE:
        targets[uncertain] = 1.0
    elif policy is UncertainPolicy.NEGATIVE:
        targets[uncertain] = 0.0
    else:
        targets[uncertain] = float("nan")
    mask = ~torch.isnan(targets)
    return torch.nan_to_num(targets, nan=0.0), mask


def masked_bce_with_logits(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean BCE over the labels in ``mask``; zero (with a gradient path) when a batch has none.

    Args:
        logits: (N, F) raw scores.
        targets: (N, F) in {0, 1}.
        mask: (N, F) True where the label counts.
        pos_weight: Optional (F,) weight of positives per finding.
    """
    per_label = F.binary_cross_entropy_with_logits(
        logits.float(), targets.float(), pos_weight=pos_weight, reduction="none"
    )
    weights = mask.to(per_label.dtype)
    return (per_label * weights).sum() / weights.sum().clamp_min(1.0)
