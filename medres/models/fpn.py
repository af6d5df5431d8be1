"""A feature pyramid over a medres ResNet's stages, the feature extractor of MONAI's RetinaNet (issue 18).

MONAI's own ``resnet_fpn_feature_extractor`` wraps only MONAI's ``ResNet`` (and torchvision's layer getter
idiom); this runs a medres ResNet's stem and stages directly and hands the chosen stages to MONAI's
``FeaturePyramidNetwork``, so any registered medres ResNet, 2D or 3D, residual or plain, can detect.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torch import nn

from medres.models.resnet import ResNet


class ResNetFPN(nn.Module):
    """Multi-scale features of a medres :class:`~medres.models.resnet.ResNet` through a feature pyramid.

    Args:
        backbone: The ResNet (its head is not used).
        returned_stages: 1-based stages whose outputs feed the pyramid, e.g. ``(1, 2)``; a max-pooled extra
            level is added after the last one, as in RetinaNet.
        out_channels: Channels of every pyramid level.

    Attributes:
        out_channels: Channels of every returned map (what MONAI's RetinaNet reads).
    """

    def __init__(self, backbone: ResNet, returned_stages: Sequence[int] = (1, 2), out_channels: int = 64) -> None:
        super().__init__()
        stages = list(backbone.stage_names)
        if not returned_stages or any(not 1 <= s <= len(stages) for s in returned_stages):
            raise ValueError(f"returned_stages {tuple(returned_stages)} must name stages 1..{len(stages)}")
        if list(returned_stages) != sorted(set(returned_stages)):
            raise ValueError(f"returned_stages {tuple(returned_stages)} must be increasing")
        self.backbone = backbone
        self.returned = [stages[s - 1] for s in returned_stages]
        self.last = stages.index(self.returned[-1])
        channels = [_stage_channels(getattr(backbone, name)) for name in self.returned]
        # Stages after the last returned one, and a pre-activation network's final norm, feed nothing the detector
        # uses: removed, they cost no memory and leave no parameter without a gradient (which DDP refuses).
        for name in stages[self.last + 1 :]:
            setattr(backbone, name, nn.Identity())
        backbone.norm = nn.Identity()
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=backbone.spatial_dims,
            in_channels_list=channels,
            out_channels=out_channels,
            extra_blocks=LastLevelMaxPool(backbone.spatial_dims),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images ``(N, C, *spatial)`` → pyramid levels, finest first."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name in b.stage_names[: self.last + 1]:
            x = getattr(b, name)(x)
            if name in self.returned:
                features[name] = x
        return dict(self.fpn(features))


def _stage_channels(stage: nn.Module) -> int:
    """Output channels of a stage: those of its last convolution (every block ends in one)."""
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    if not convs:
        raise ValueError("a ResNet stage without convolutions")
    return int(convs[-1].out_channels)
