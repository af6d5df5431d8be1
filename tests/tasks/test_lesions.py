"""LesionDetection: MONAI RetinaNet (ATSS, hard negatives) over a tiny medres ResNet, without torchvision."""

from __future__ import annotations

import importlib.util
import json
from functools import partial

import numpy as np
import pytest
import torch

from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY
from medres.data.transforms import IMAGE_KEY, Preprocessing
from medres.models.detector import detect
from medres.package import ModelPackage
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
        model._collect("val", held_out, 0)
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


def test_detector_package_round_trip_gives_the_same_boxes(tmp_path) -> None:
    torch.manual_seed(1)
    model = _model().eval()
    model.thresholds = [0.3, 0.4]
    directory = model.to_package().save(tmp_path / "pkg")
    contract = json.loads((directory / "package.json").read_text())
    assert contract["format_version"] == 3 and contract["detector"]["anchor_shapes"] == [[12, 12], [6, 16], [16, 6]]
    assert contract["thresholds"] == [0.3, 0.4]
    package = ModelPackage.load(directory)
    assert package.is_detector and package.detector == model.spec
    network = package.build_model()
    images = _batch(5, n=2)[IMAGE_KEY]
    for theirs, ours in zip(detect(network, images), model(images), strict=True):
        torch.testing.assert_close(theirs["box"], ours["box"])
        torch.testing.assert_close(theirs["label_scores"], ours["label_scores"])


def test_checkpoint_embeds_the_detector_contract(tmp_path) -> None:
    model = _model()
    model.thresholds = [0.5, 0.6]
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "x.ckpt")
    package = ModelPackage.from_checkpoint(tmp_path / "x.ckpt")
    assert package.is_detector and package.thresholds == [0.5, 0.6] and package.threshold_fp_rate == 0.25
    reloaded = package.build_model()
    for name, tensor in model.detector.network.state_dict().items():
        torch.testing.assert_close(reloaded.network.state_dict()[name], tensor)


def test_a_classifier_package_is_not_a_detector(tmp_path) -> None:
    package = ModelPackage.load(_classifier_package(tmp_path))
    assert not package.is_detector and package.detector is None


def _classifier_package(tmp_path):
    from medres.tasks.detection import MultiLabelDetection

    module = MultiLabelDetection(["x", "y"], Preprocessing(spatial_dims=2, spatial_size=(32, 32)), backbone="resnet20")
    return module.to_package().save(tmp_path / "cls")


def test_every_parameter_gets_a_gradient() -> None:
    """DDP refuses parameters no loss reaches: the pyramid keeps only the stages it reads (here 1-2 of 4)."""
    model = _model()
    model.train()
    model.training_step(_batch(7), 0).backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == []
    assert not any(name.startswith("detector.network.feature_extractor.backbone.layer3") for name, _ in
                   model.named_parameters())  # fmt: skip
