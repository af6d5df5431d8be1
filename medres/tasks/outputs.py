"""An epoch's predictions, gathered across ranks in dataset order: the input of thresholds, plots and the model card."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


@dataclass  # not frozen: torchmetrics rebuilds compute() results field by field
class EpochPredictions:
    """Probabilities and targets of one evaluation epoch, one row per sample, in the split's order.

    Attributes:
        probs: (N, F) probabilities.
        targets: (N, F) 1, 0, or NaN where the label does not count (unknown, or uncertain under ``ignore``).
        index: (N,) position of each row in the split's sample list (for joining pseudonymous keys).
    """

    probs: np.ndarray
    targets: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


class PredictionCollector(Metric):
    """Collects (probability, target, sample index) rows of an epoch; ``compute`` syncs them across DDP ranks.

    torchmetrics does the gathering (``dist_reduce_fx="cat"``), so every rank sees every row. The rows come
    back sorted by sample index with duplicates dropped: ``DistributedSampler`` pads the last batch by
    repeating samples, which would otherwise count twice.
    """

    full_state_update = False
    probs: list[torch.Tensor]
    targets: list[torch.Tensor]
    index: list[torch.Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")
        self.add_state("index", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> None:
        """Add a batch: (N, F) probabilities, (N, F) targets with NaN for labels that do not count, (N,) indices."""
        self.probs.append(probs.detach().float())
        self.targets.append(targets.detach().float())
        self.index.append(index.detach().long())

    def compute(self) -> EpochPredictions:
        """All rows seen this epoch, on every rank, in sample order."""
        if isinstance(self.index, list) and not self.index:  # after a DDP sync the states are one tensor each
            return EpochPredictions(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), np.zeros(0, np.int64))
        index = dim_zero_cat(self.index).cpu().numpy()
        probs = dim_zero_cat(self.probs).cpu().numpy()
        targets = dim_zero_cat(self.targets).cpu().numpy()
        unique, first = np.unique(index, return_index=True)  # sorted, and the first of any padded repeat
        return EpochPredictions(probs=probs[first], targets=targets[first], index=unique)
