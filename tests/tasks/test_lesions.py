"""LesionDetection: MONAI RetinaNet (ATSS, hard negatives) over a tiny medres ResNet, without torchvision."""

from __future__ import annotations

import importlib.util
from functools import partial

import numpy as np
import pytest
import torch

from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY
from medres.data.transforms import IMAGE_KEY, Preprocessing
from medres.tasks.lesions import LesionDetection

TINY = {"widths": [8, 16, 32, 64], "stem_width": 8}


def _batch(seed: int, n: int = 4, size: int = 64) -> dict[str, object]:
    """Noisy images with one or two bright squares each (finding 0) or a bright bar (finding 1)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.2, 0.05, (n, 1, size, size)).astype(np.float32)
    boxes, labels = [], []
    for i in range(n):
        b, lab = [], []
        for _ in range(int(rng.integers(1, 3))):
            r, c = rng.integers(4, size - 20, 2)
            if rng.random() < 0.5:
                images[i, 0, r : r + 12, c : c + 12] += 0.6
                b.append([r, c, r + 12, c + 12])
                lab.append(0)
            else:
                images[i, 0, r : r + 6, c : c + 16] += 0.6
                b.append([r, c, r + 6, c + 16])
                lab.append(1)
        boxes.append(torch.tensor(b, dtype=torch.float32))
        labels.append(torch.tensor(lab, dtype=torch.long))
    return {IMAGE_KEY: torch.from_numpy(images), BOX_KEY: boxes, BOX_LABEL_KEY: labels}


def _model() -> LesionDetection:
    return LesionDetection(
        findings=["square", "bar"],
        preprocessing=Preprocessing(spatial_dims=2, spatial_size=(64, 64)),
        backbone="resnet10",
        backbone_args=TINY,
        returned_stages=(1, 2),
        fpn_channels=32,
        anchor_shapes=((12, 12), (6, 16), (16, 6)),
        optimizer=partial(torch.optim.Adam, lr=3e-3),
    )


def test_no_torchvision_needed() -> None:
    assert importlib.util.find_spec("torchvision") is None


@pytest.mark.slow
def test_learns_to_find_boxes() -> None:
    torch.manual_seed(0)
    model = _model()
    optimizer = model.configure_optimizers()
    model.train()
    batches = [_batch(s) for s in range(6)]
    first = None
    for step in range(90):
        optimizer.zero_grad()
        loss = model.training_step(batches[step % len(batches)], step)
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < 0.5 * first
    model.eval()
    held_out = _batch(100, n=8)
    with torch.no_grad():
        model._collect("val", held_out)
    metrics = model.epoch_metrics("val")
    # Held-out images: the detector finds most squares and bars at one false positive per image.
    assert metrics["val/sens_at_1fp"] >= 0.6, metrics
    assert metrics["val/map_0.1"] >= 0.5, metrics
    outputs = model(held_out[IMAGE_KEY])
    assert len(outputs) == 8 and outputs[0]["box"].shape[1] == 4


def test_anchor_shapes_must_match_the_dimensions() -> None:
    with pytest.raises(ValueError, match="anchor_shapes: every shape needs 2 sizes"):
        LesionDetection(["a"], Preprocessing(spatial_dims=2, spatial_size=(64, 64)), "resnet10", TINY,
                        anchor_shapes=((8, 8, 8),))  # fmt: skip
