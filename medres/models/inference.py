"""The forward pass every consumer of a trained multi-label model shares: scoring, serving and held-out evaluation.

The networks output one logit per finding; each finding is an independent sigmoid (multi-label, not softmax). Computing
the sigmoid in float32 whatever the autocast precision keeps probabilities comparable across bf16 and fp32 runs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["predict_probabilities", "probabilities"]


def probabilities(network: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, F) finding probabilities of a batch of network inputs (N, C, *spatial)."""
    return torch.sigmoid(network(images).float())


def predict_probabilities(
    network: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | None = None
) -> torch.Tensor:
    """(N, F) probabilities over every batch, in order, on the CPU; no autograd state is kept.

    Args:
        network: The model, already on ``device`` and in eval mode.
        batches: Network inputs, each (B, C, *spatial).
        device: Where the network runs; each batch is moved there (``None``: where the batch is).
    """
    chunks = []
    with torch.inference_mode():
        for images in batches:
            chunks.append(probabilities(network, images if device is None else images.to(device)).cpu())
    return torch.cat(chunks) if chunks else torch.zeros((0, 0))
