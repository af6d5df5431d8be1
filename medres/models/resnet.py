"""Residual networks for 2D and 3D images.

He et al. 2015, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385): a stem, then stages of
residual blocks ``out = act(F(x) + shortcut(x))``, then global average pooling and a linear head.

One code path serves ``spatial_dims`` 2 and 3: every layer comes from MONAI's factories
(``Conv[Conv.CONV, spatial_dims]``, ``Norm[Norm.BATCH, spatial_dims]``, ``Pool[...]``). A variant is data: the
block class, the number of blocks per stage and the stage widths, bound in a registered factory at the bottom.

Parameter names follow torchvision's ``ResNet`` exactly (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``) so that 2D torchvision checkpoints load with ``strict=True``.
"""

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from monai.networks.layers import DropPath
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

from medres.models.registry import register_model

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResidualBlock",
    "drop_path_rates",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]


def conv3x3(in_channels: int, out_channels: int, spatial_dims: int, stride: int = 1) -> nn.Module:
    """3×3 (×3) convolution, padding 1, no bias (the norm that follows has one)."""
    return Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, spatial_dims: int, stride: int = 1) -> nn.Module:
    """1×1 (×1) convolution, no bias."""
    return Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def norm(channels: int, spatial_dims: int) -> nn.BatchNorm2d | nn.BatchNorm3d:
    """Batch norm for ``spatial_dims`` (the one place to change the normalisation)."""
    return Norm[Norm.BATCH, spatial_dims](channels)


class ResidualBlock(nn.Module):
    """Interface every residual block implements, so ``ResNet`` can take the block class as data.

    Subclasses take ``(in_channels, planes, stride, downsample, spatial_dims, drop_path_rate)`` and produce
    ``planes * expansion`` channels.
    """

    expansion: ClassVar[int]

    def zero_init_last(self) -> None:
        """Zero the weight of the last norm in the residual branch, so the block starts as its shortcut."""
        raise NotImplementedError


class BasicBlock(ResidualBlock):
    """Two 3×3 convolutions (He et al. 2015, fig. 5 left); used by ResNet-18/34.

    Args:
        in_channels: Channels of the block input.
        planes: Channels of both convolutions; the block outputs ``planes * expansion``.
        stride: Stride of the first convolution (2 where a stage halves the resolution).
        downsample: Projection applied to the input when its shape differs from the output, else ``None``.
        spatial_dims: 2 or 3.
        drop_path_rate: Probability of dropping the residual branch per sample while training.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 2,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, spatial_dims, stride)
        self.bn1 = norm(planes, spatial_dims)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, spatial_dims)
        self.bn2 = norm(planes, spatial_dims)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual branch plus shortcut, then ReLU."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, *spatial / stride)
        out = self.bn2(self.conv2(out))
        out = self.drop_path(out) + shortcut
        return self.relu(out)

    def zero_init_last(self) -> None:
        """Zero ``bn2.weight``: the branch outputs 0 and the block is its shortcut at initialisation."""
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(ResidualBlock):
    """1×1 reduce, 3×3, 1×1 restore (He et al. 2015, fig. 5 right); used by ResNet-50/101/152.

    The stride sits on the 3×3 convolution, not on the first 1×1 as in the paper: this is torchvision's
    "ResNet v1.5" (NVIDIA reports about 0.5% better ImageNet top-1); a strided 1×1 convolution would skip three
    quarters of its input positions in 2D, a strided 3×3 sees them all.

    Args:
        in_channels: Channels of the block input.
        planes: Bottleneck width; the block outputs ``planes * expansion``.
        stride: Stride of the 3×3 convolution.
        downsample: Projection applied to the input when its shape differs from the output, else ``None``.
        spatial_dims: 2 or 3.
        drop_path_rate: Probability of dropping the residual branch per sample while training.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 2,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes, spatial_dims)
        self.bn1 = norm(planes, spatial_dims)
        self.conv2 = conv3x3(planes, planes, spatial_dims, stride)
        self.bn2 = norm(planes, spatial_dims)
        self.conv3 = conv1x1(planes, planes * self.expansion, spatial_dims)
        self.bn3 = norm(planes * self.expansion, spatial_dims)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual branch plus shortcut, then ReLU."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, *spatial)
        out = self.relu(self.bn2(self.conv2(out)))  # (N, planes, *spatial / stride)
        out = self.bn3(self.conv3(out))  # (N, planes * 4, *spatial / stride)
        out = self.drop_path(out) + shortcut
        return self.relu(out)

    def zero_init_last(self) -> None:
        """Zero ``bn3.weight``: the branch outputs 0 and the block is its shortcut at initialisation."""
        nn.init.zeros_(self.bn3.weight)


def drop_path_rates(layers: Sequence[int], drop_path_rate: float) -> list[list[float]]:
    """Stochastic-depth rate of every block, per stage.

    Rates rise linearly with depth, from 0 at the first block to ``drop_path_rate`` at the last (Huang et al.
    2016, "Deep Networks with Stochastic Depth", linear decay of the survival probability; first block 0 as in
    timm): early blocks compute features that every later block builds on, so they are kept more often.

    Args:
        layers: Number of blocks in each stage.
        drop_path_rate: Rate of the last block.

    Returns:
        One list of rates per stage, one rate per block.
    """
    total = sum(layers)
    # ``rate * (i / (total - 1))`` keeps the last rate exactly ``drop_path_rate`` (i / (total - 1) == 1.0).
    flat = [drop_path_rate * (i / max(total - 1, 1)) for i in range(total)]
    rates, start = [], 0
    for depth in layers:
        rates.append(flat[start : start + depth])  # this stage's slice of the network-wide ramp
        start += depth
    return rates


class ResNet(nn.Module):
    """Residual network for 2D or 3D images.

    Input ``(N, in_channels, *spatial)``; output ``(N, num_classes)`` logits, or ``(N, num_features)`` pooled
    features when ``num_classes == 0``.

    Args:
        block: Residual block class (``BasicBlock`` or ``Bottleneck``).
        layers: Number of blocks in each stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: Channels of the input image (1 for most DICOM, 3 for ImageNet weights).
        num_classes: Outputs of the linear head; 0 removes the head.
        widths: ``planes`` of each stage; a stage outputs ``width * block.expansion`` channels.
        stem_width: Output channels of the stem convolution.
        zero_init_residual: Start every block as its shortcut (Goyal et al. 2017, "Accurate, Large Minibatch SGD:
            Training ImageNet in 1 Hour"): the network begins shallow and trains more stably with large batches.
        drop_path_rate: Stochastic-depth rate of the last block; earlier blocks get linearly less.
        dropout: Dropout probability on the pooled features, before the head.
    """

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: Sequence[int],
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 1000,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        zero_init_residual: bool = True,
        drop_path_rate: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have one entry per stage")
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes

        # Stem (ImageNet, He et al. 2015 table 1): 7×7 stride-2 conv and 3×3 stride-2 max-pool, so the stages run
        # at 1/4 of the input resolution. Attributes sit on the network, not in a submodule, to keep
        # torchvision's parameter names.
        self.conv1 = Conv[Conv.CONV, spatial_dims](
            in_channels, stem_width, kernel_size=7, stride=2, padding=3, bias=False
        )
        self.bn1 = norm(stem_width, spatial_dims)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1)

        # Stages layer1..layerK: the first keeps the stem's resolution, each later one halves it in its first block.
        stage_rates = drop_path_rates(layers, drop_path_rate)
        self.stage_names: list[str] = []
        channels = stem_width
        for index, (depth, width, rates) in enumerate(zip(layers, widths, stage_rates, strict=True)):
            stage, channels = self._make_layer(block, channels, width, depth, 1 if index == 0 else 2, rates)
            self.stage_names.append(f"layer{index + 1}")
            self.add_module(self.stage_names[-1], stage)
        self.num_features = channels

        # Head: global average pool, dropout, linear (``nn.Identity`` when there is no head, as in timm).
        self.avgpool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.head_drop = nn.Dropout(dropout)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        self._init_weights(zero_init_residual)

    def _make_layer(
        self,
        block: type[ResidualBlock],
        in_channels: int,
        planes: int,
        depth: int,
        stride: int,
        rates: Sequence[float],
    ) -> tuple[nn.Sequential, int]:
        """One stage: a first block that may change resolution and width, then ``depth - 1`` same-shape blocks.

        Returns:
            The stage and its output channels.
        """
        out_channels = planes * block.expansion
        blocks = [
            block(
                in_channels,
                planes,
                stride,
                self._make_shortcut(in_channels, out_channels, stride),
                self.spatial_dims,
                rates[0],
            )
        ]
        for rate in rates[1:]:
            blocks.append(block(out_channels, planes, 1, None, self.spatial_dims, rate))
        return nn.Sequential(*blocks), out_channels

    def _make_shortcut(self, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
        """Shortcut of a block: identity where the shape is kept, else a projection.

        The projection is a strided 1×1 convolution and a norm, used only where the shape changes: option B of
        He et al. 2015 (sections 3.3 and 4.1), almost as accurate as projecting every shortcut (option C) with far
        fewer parameters.

        Returns:
            The projection, or ``None`` for the identity.
        """
        if stride == 1 and in_channels == out_channels:
            return None
        return nn.Sequential(
            conv1x1(in_channels, out_channels, self.spatial_dims, stride),
            norm(out_channels, self.spatial_dims),
        )

    def _init_weights(self, zero_init_residual: bool) -> None:
        """Kaiming-normal convolutions (He et al. 2015, "Delving Deep into Rectifiers"; fan_out as torchvision).

        Norms start at weight 1, bias 0; with ``zero_init_residual`` each block then zeroes its last norm.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm3d | nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, ResidualBlock):
                    module.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages.

        Args:
            x: Images ``(N, in_channels, *spatial)``.

        Returns:
            Feature map ``(N, num_features, *spatial / 32)`` for the four-stage networks.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, stem_width, *spatial / 4)
        for name in self.stage_names:
            x = getattr(self, name)(x)  # channels -> width * expansion; spatial halves from the second stage on
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, dropout and the linear head.

        Args:
            x: Feature map from ``forward_features``.
            pre_logits: Return the pooled features, skipping the linear layer.

        Returns:
            Logits ``(N, num_classes)``, or features ``(N, num_features)``.
        """
        x = self.avgpool(x).flatten(1)  # (N, num_features)
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images to logits (or pooled features when the network has no head)."""
        return self.forward_head(self.forward_features(x))


@register_model
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (He et al. 2015, table 1): basic blocks, (2, 2, 2, 2); kwargs go to ``ResNet``."""
    return ResNet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (He et al. 2015, table 1): basic blocks, (3, 4, 6, 3); kwargs go to ``ResNet``."""
    return ResNet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (He et al. 2015, table 1): bottleneck blocks, (3, 4, 6, 3); kwargs go to ``ResNet``."""
    return ResNet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101 (He et al. 2015, table 1): bottleneck blocks, (3, 4, 23, 3); kwargs go to ``ResNet``."""
    return ResNet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152 (He et al. 2015, table 1): bottleneck blocks, (3, 8, 36, 3); kwargs go to ``ResNet``."""
    return ResNet(Bottleneck, (3, 8, 36, 3), **kwargs)
