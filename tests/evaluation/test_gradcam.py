from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from torch import nn

from medres.evaluation.gradcam import (
    _caption,
    default_target_layer,
    display_plane,
    gradcam_maps,
    gradcam_montage,
)
from medres.models import create_backbone

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]


class Wrapped(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def backbone(name: str, spatial_dims: int = 2, sign: float = 1.0) -> nn.Module:
    """A random backbone whose head weights all have one sign.

    The gradient of a logit with respect to the last (non-negative) feature map is then its head weight over the
    map size, the same sign everywhere: with positive weights Grad-CAM is the non-negative weighted channel sum and
    cannot vanish; with negative ones it is zero everywhere. A random head gives either, by chance.
    """
    torch.manual_seed(0)
    model = create_backbone(name, spatial_dims=spatial_dims, in_channels=1, num_classes=4)
    with torch.no_grad():
        model.fc.weight.copy_(sign * model.fc.weight.abs())
    return model


def test_default_target_layer_is_the_last_feature_map() -> None:
    assert default_target_layer(backbone("resnet18")) == "layer4"
    assert default_target_layer(backbone("resnet20")) == "layer3"  # CIFAR networks have three stages
    assert default_target_layer(backbone("preact_resnet18")) == "final_relu"  # after the last norm + ReLU
    assert default_target_layer(Wrapped(backbone("resnet18"))) == "backbone.layer4"
    with pytest.raises(ValueError, match="Sequential holds no medres ResNet: pass the Grad-CAM target_layer"):
        default_target_layer(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()))


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18"])
def test_maps_are_nonzero_and_leave_the_model_as_found(name: str) -> None:
    model = backbone(name)
    model.train()
    model.layer1.requires_grad_(False)  # partly frozen, as when fine-tuning
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = {k: p.requires_grad for k, p in model.named_parameters()}
    images = torch.rand(3, 1, 64, 64)
    with torch.inference_mode():  # as in a Lightning evaluation hook
        maps = gradcam_maps(model, images, [0, 2, 2])
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    assert (maps >= 0).all() and np.allclose(maps.reshape(3, -1).max(axis=1), 1.0)
    assert (maps > 0.01).mean() > 0.05  # a map, not a single pixel
    assert model.training
    assert {k: p.requires_grad for k, p in model.named_parameters()} == grads_before
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    if name == "preact_resnet18":
        assert model.final_relu.inplace  # MONAI switches it off, but only on the copy


def test_a_score_no_location_raises_gives_a_zero_map() -> None:
    maps = gradcam_maps(backbone("resnet18", sign=-1.0), torch.rand(2, 1, 32, 32), [0, 1])
    assert maps.shape == (2, 32, 32) and not maps.any()


def test_maps_for_a_wrapped_backbone_and_an_explicit_layer() -> None:
    model = Wrapped(backbone("resnet18"))
    images = torch.rand(2, 1, 32, 32)
    maps = gradcam_maps(model, images, [1, 3], target_layer="backbone.layer3")
    assert maps.shape == (2, 32, 32) and maps.max() == 1.0
    with pytest.raises(ValueError, match="target_layer 'backbone.layer9' is not a module of Wrapped"):
        gradcam_maps(model, images, [1, 3], target_layer="backbone.layer9")


def test_display_plane_takes_the_axial_slice_through_the_maximum() -> None:
    image = np.random.default_rng(0).random((1, 8, 6, 10)).astype(np.float32)  # (C, x, y, z)
    cam = np.zeros((8, 6, 10), dtype=np.float32)
    cam[2, 1, 7] = 1.0
    plane, cam_plane = display_plane(image, cam)
    assert plane.shape == cam_plane.shape == (6, 8)  # rows y, columns x
    np.testing.assert_array_equal(plane, image[0, :, :, 7].T[::-1, ::-1])
    assert cam_plane[6 - 1 - 1, 8 - 1 - 2] == 1.0  # anterior up, patient's right on the left
    middle, _ = display_plane(image, np.zeros_like(cam))
    np.testing.assert_array_equal(middle, image[0, :, :, 5].T[::-1, ::-1])
    flat, flat_cam = display_plane(image[:, :, :, 0], cam[:, :, 0])
    assert flat.shape == flat_cam.shape == (8, 6)


def test_caption_marks_calls_against_labels() -> None:
    caption = _caption(
        "patient 3f9a",
        np.array([0.83, 0.2, 0.6, 0.1], dtype=np.float32),
        np.array([1.0, 1.0, 0.0, np.nan]),
        FINDINGS,
        [0.5, 0.5, 0.5, 0.5],
        shown=0,
    )
    assert caption.splitlines() == [
        "patient 3f9a",
        "▶ nodule p=0.83 ✓ (label 1)",
        "   effusion p=0.20 ✗ (label 1)",
        "   cardiomegaly p=0.60 ✗ (label 0)",
        "   pneumothorax p=0.10 ? (label ?)",
    ]


def test_montage_2d(tmp_path: Path) -> None:
    model = backbone("resnet18")
    images = torch.rand(5, 1, 64, 64)
    with torch.no_grad():
        probs = torch.sigmoid(model.eval()(images))
    targets = np.tile([1.0, 0.0, np.nan, 0.0], (5, 1))
    out = gradcam_montage(
        model, images, probs, targets, FINDINGS, [0.5] * 4, [f"#{i}" for i in range(5)], tmp_path / "cam.png", columns=3
    )
    image = matplotlib.image.imread(out)
    assert image.shape[:2] == (round(2 * (2.8 + 0.16 * 5) * 110), round(3 * 2.8 * 110))
    assert image[..., :3].std() > 0.05


def test_montage_3d(tmp_path: Path) -> None:
    model = backbone("resnet10", spatial_dims=3)
    images = torch.rand(2, 1, 32, 32, 16)  # (N, C, x, y, z)
    maps = gradcam_maps(model, images, [0, 1])
    assert maps.shape == (2, 32, 32, 16) and maps.max() == 1.0
    out = gradcam_montage(
        model, images, np.full((2, 4), 0.4), np.zeros((2, 4)), FINDINGS, [0.5] * 4, ["a", "b"], tmp_path / "cam3d.png"
    )
    assert matplotlib.image.imread(out).shape[:2] == (round((2.8 + 0.16 * 5) * 110), round(2 * 2.8 * 110))


def test_montage_refuses_mismatched_inputs(tmp_path: Path) -> None:
    model = backbone("resnet20")
    images = torch.rand(2, 1, 32, 32)
    with pytest.raises(ValueError, match="2 images, 2 rows, 1 captions"):
        gradcam_montage(model, images, np.zeros((2, 4)), np.zeros((2, 4)), FINDINGS, [0.5] * 4, ["a"], tmp_path / "x")
