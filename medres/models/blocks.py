"""Residual blocks and shortcuts, for 2D and 3D.

Four blocks, each usable with or without its skip connection:

- ``BasicBlock`` and ``Bottleneck``: the original post-activation blocks, ``act(F(x) + shortcut(x))`` (He et al.
  2015, "Deep Residual Learning for Image Recognition", arXiv:1512.03385, fig. 5).
- ``PreActBasicBlock`` and ``PreActBottleneck``: norm and activation *before* each convolution, and nothing after the
  addition, so the identity path from any block to any later one is clean (He et al. 2016, "Identity Mappings in Deep
  Residual Networks", arXiv:1603.05027, fig. 4e). This is what trains 1000-layer networks.

With ``skip=False`` a block is the "plain" counterpart the 2015 paper uses as its ablation (sec. 4.1): the same
layers, the addition removed.

Shortcuts where the shape changes (sec. 3.3 of the 2015 paper): option A is ``ZeroPadShortcut`` (parameter-free),
options B and C are a strided 1×1 projection (``projection_shortcut``), optionally after an average pool (ResNet-D).
Which option applies to which block is the network's decision (``ResNet``), not the block's.

Parameter names (``conv1``, ``bn1``, ``downsample``) follow torchvision, so 2D checkpoints load strictly.
"""

from types import EllipsisType
from typing import ClassVar

import torch
import torch.nn.functional as F
from monai.networks.layers import DropPath
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResidualBlock",
    "ZeroPadShortcut",
    "conv1x1",
    "conv3x3",
    "norm",
    "projection_shortcut",
]


def conv3x3(
    in_channels: int, out_channels: int, spatial_dims: int, stride: int = 1, dilation: int = 1
) -> nn.Conv2d | nn.Conv3d:
    """3×3 (×3) convolution that keeps the size at stride 1 (padding = dilation), no bias (a norm follows)."""
    conv: nn.Conv2d | nn.Conv3d = Conv[Conv.CONV, spatial_dims](
        in_channels, out_channels, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )
    return conv


def conv1x1(in_channels: int, out_channels: int, spatial_dims: int, stride: int = 1) -> nn.Conv2d | nn.Conv3d:
    """1×1 (×1) convolution, no bias."""
    conv: nn.Conv2d | nn.Conv3d = Conv[Conv.CONV, spatial_dims](
        in_channels, out_channels, kernel_size=1, stride=stride, bias=False
    )
    return conv


def norm(channels: int, spatial_dims: int) -> nn.BatchNorm2d | nn.BatchNorm3d:
    """Batch norm for ``spatial_dims`` (the one place to change the normalisation)."""
    layer: nn.BatchNorm2d | nn.BatchNorm3d = Norm[Norm.BATCH, spatial_dims](channels)
    return layer


class ZeroPadShortcut(nn.Module):
    """Shortcut option A: identity, subsampled by the stride, with the extra channels zero.

    He et al. 2015 (sec. 3.3 and the CIFAR-10 networks of sec. 4.2) use it so that every shortcut is parameter-free;
    MedicalNet's ResNet-18/34 were pretrained with it. Subsampling takes every ``stride``-th position, which is what
    MedicalNet's ``avg_pool3d(kernel_size=1, stride=stride)`` computes, and gives the same size as a padded strided
    3×3 convolution (ceil(size / stride)).

    Args:
        out_channels: Channels after padding (at least the input's).
        stride: Subsampling factor of every spatial dimension.
        spatial_dims: 2 or 3.
    """

    def __init__(self, out_channels: int, stride: int, spatial_dims: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *spatial) → (N, out_channels, *ceil(spatial / stride))."""
        if self.stride > 1:
            every_stride: tuple[EllipsisType | slice, ...] = (
                ...,
                *[slice(None, None, self.stride)] * self.spatial_dims,
            )
            x = x[every_stride]
        extra = self.out_channels - x.shape[1]
        if extra < 0:
            raise ValueError(f"ZeroPadShortcut cannot reduce {x.shape[1]} channels to {self.out_channels}")
        # F.pad lists (before, after) pairs from the last dimension backwards: zeros for the spatial ones, then
        # ``extra`` zero channels after the input's.
        return F.pad(x, (0, 0) * self.spatial_dims + (0, extra)) if extra else x

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"out_channels={self.out_channels}, stride={self.stride}"


def projection_shortcut(
    in_channels: int, out_channels: int, stride: int, spatial_dims: int, avg_down: bool = False
) -> nn.Sequential:
    """Shortcut options B and C: a 1×1 convolution and a norm.

    Args:
        in_channels: Channels of the block input.
        out_channels: Channels of the block output.
        stride: Resolution change of the block.
        spatial_dims: 2 or 3.
        avg_down: Average-pool by the stride first and project at stride 1 (ResNet-D, He et al. 2019, "Bag of Tricks
            for Image Classification with Convolutional Neural Networks", sec. 4.1): a strided 1×1 convolution
            ignores three quarters of its input in 2D (seven eighths in 3D); the pool lets every position count.

    Returns:
        ``Sequential(conv, norm)``, or ``Sequential(pool, conv, norm)`` with ``avg_down`` at stride > 1.
    """
    if avg_down and stride > 1:
        # ceil_mode and count_include_pad=False: odd sizes give ceil(size / stride), matching the residual branch.
        pool = Pool[Pool.AVG, spatial_dims](stride, stride, ceil_mode=True, count_include_pad=False)
        return nn.Sequential(pool, conv1x1(in_channels, out_channels, spatial_dims), norm(out_channels, spatial_dims))
    return nn.Sequential(conv1x1(in_channels, out_channels, spatial_dims, stride), norm(out_channels, spatial_dims))


class ResidualBlock(nn.Module):
    """What every block shares: the skip connection, stochastic depth and residual scaling.

    Subclasses build their residual branch from the same arguments and call ``_shortcut`` and ``_join`` in
    ``forward``; ``ResNet`` takes the block class as data.

    Args:
        in_channels: Channels of the block input.
        planes: Width of the branch; the block outputs ``planes * expansion`` channels.
        stride: Resolution change of the block.
        downsample: Shortcut module for the block input (projection or zero-padding), ``None`` for the identity.
        spatial_dims: 2 or 3.
        drop_path_rate: Probability of dropping the residual branch per sample while training (stochastic depth).
        dilation: Dilation of the 3×3 convolutions.
        skip: ``False`` removes the skip connection: the block is its branch alone (a "plain" block).
        residual_scale: Factor on the branch before the addition (Szegedy et al. 2016, "Inception-v4,
            Inception-ResNet and the Impact of Residual Connections on Learning", sec. 3.3: scaling by 0.1-0.3
            stabilises very wide or very deep residual networks).
    """

    expansion: ClassVar[int]
    preactivation: ClassVar[bool]

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 2,
        drop_path_rate: float = 0.0,
        dilation: int = 1,
        skip: bool = True,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not skip and (downsample is not None or drop_path_rate > 0 or residual_scale != 1.0):
            # Without a skip there is nothing to project, and dropping or scaling the only path is not an ablation.
            raise ValueError("a plain block (skip=False) takes no shortcut, drop_path_rate or residual_scale")
        self.downsample = downsample
        self.drop_path = DropPath(drop_path_rate)
        self.skip = skip
        self.residual_scale = residual_scale

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor | None:
        """The skip path of input ``x``; ``None`` in a plain block."""
        if not self.skip:
            return None
        return x if self.downsample is None else self.downsample(x)

    def _join(self, branch: torch.Tensor, shortcut: torch.Tensor | None) -> torch.Tensor:
        """``shortcut + scale * drop_path(branch)``, or the branch alone in a plain block."""
        if shortcut is None:
            return branch
        branch = self.drop_path(branch)
        if self.residual_scale != 1.0:
            branch = branch * self.residual_scale
        return branch + shortcut

    def zero_init_last(self) -> None:
        """Zero the last affine layer of the branch, so the block starts as its shortcut (Goyal et al. 2017)."""
        raise NotImplementedError


class BasicBlock(ResidualBlock):
    """Two 3×3 convolutions, post-activation (He et al. 2015, fig. 5 left); ResNet-18/34 and the CIFAR networks.

    Args:
        in_channels: Channels of the block input.
        planes: Channels of both convolutions; the block outputs ``planes * expansion``.
        stride: Stride of the first convolution (2 where a stage halves the resolution).
        downsample: Shortcut module, ``None`` for the identity.
        spatial_dims: 2 or 3.
        drop_path_rate: Stochastic-depth rate of this block.
        dilation: Dilation of both convolutions (MedicalNet's layer3/layer4 keep resolution this way).
        skip: ``False`` for the plain block.
        residual_scale: Factor on the branch before the addition.
    """

    expansion = 1
    preactivation = False

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 2,
        drop_path_rate: float = 0.0,
        dilation: int = 1,
        skip: bool = True,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__(
            in_channels, planes, stride, downsample, spatial_dims, drop_path_rate, dilation, skip, residual_scale
        )
        self.conv1 = conv3x3(in_channels, planes, spatial_dims, stride, dilation)
        self.bn1 = norm(planes, spatial_dims)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, spatial_dims, 1, dilation)
        self.bn2 = norm(planes, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        shortcut = self._shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, *spatial / stride)
        out = self.bn2(self.conv2(out))
        return self.relu(self._join(out, shortcut))

    def zero_init_last(self) -> None:
        """Zero ``bn2.weight``."""
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(ResidualBlock):
    """1×1 reduce, 3×3, 1×1 restore, post-activation (He et al. 2015, fig. 5 right); ResNet-50 and deeper.

    The stride sits on the 3×3 convolution, not on the first 1×1 as in the paper: torchvision's "ResNet v1.5" (NVIDIA
    reports about 0.5% better ImageNet top-1), also MedicalNet's layout; a strided 1×1 convolution would skip three
    quarters of its input positions in 2D, a strided 3×3 sees them all.

    Args:
        in_channels: Channels of the block input.
        planes: Bottleneck width; the block outputs ``planes * expansion``.
        stride: Stride of the 3×3 convolution.
        downsample: Shortcut module, ``None`` for the identity.
        spatial_dims: 2 or 3.
        drop_path_rate: Stochastic-depth rate of this block.
        dilation: Dilation of the 3×3 convolution.
        skip: ``False`` for the plain block.
        residual_scale: Factor on the branch before the addition.
    """

    expansion = 4
    preactivation = False

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 2,
        drop_path_rate: float = 0.0,
        dilation: int = 1,
        skip: bool = True,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__(
            in_channels, planes, stride, downsample, spatial_dims, drop_path_rate, dilation, skip, residual_scale
        )
        self.conv1 = conv1x1(in_channels, planes, spatial_dims)
        self.bn1 = norm(planes, spatial_dims)
        self.conv2 = conv3x3(planes, planes, spatial_dims, stride, dilation)
        self.bn2 = norm(planes, spatial_dims)
        self.conv3 = conv1x1(planes, planes * self.expansion, spatial_dims)
        self.bn3 = norm(planes * self.expansion, spatial_dims)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reduce, 3×3, restore; add the shortcut; ReLU."""
        shortcut = self._shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, *spatial)
        out = self.relu(self.bn2(self.conv2(out)))  # (N, planes, *spatial / stride)
        out = self.bn3(self.conv3(out))  # (N, planes * 4, *spatial / stride)
        return self.relu(self._join(out, shortcut))

    def zero_init_last(self) -> None:
        """Zero ``bn3.weight``."""
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(ResidualBlock):
    """Two 3×3 convolutions, each after norm and ReLU (He et al. 2016, fig. 4e); nothing follows the addition.

    A projection shortcut takes the pre-activated input, as in the authors' code ("both_preact"): the first block of
    a stage normalises once for both paths. The identity shortcut takes the raw input, which keeps the path from
    block to block a pure sum.

    Args:
        in_channels: Channels of the block input.
        planes: Channels of both convolutions; the block outputs ``planes * expansion``.
        stride: Stride of the first convolution.
        downsample: Shortcut module, ``None`` for the identity.
        spatial_dims: 2 or 3.
        drop_path_rate: Stochastic-depth rate of this block.
        dilation: Dilation of both convolutions.
        skip: ``False`` for the plain block.
        residual_scale: Factor on the branch before the addition.
    """

    expansion = 1
    preactivation = True

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 2,
        drop_path_rate: float = 0.0,
        dilation: int = 1,
        skip: bool = True,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__(
            in_channels, planes, stride, downsample, spatial_dims, drop_path_rate, dilation, skip, residual_scale
        )
        self.bn1 = norm(in_channels, spatial_dims)
        self.conv1 = conv3x3(in_channels, planes, spatial_dims, stride, dilation)
        self.bn2 = norm(planes, spatial_dims)
        self.conv2 = conv3x3(planes, planes, spatial_dims, 1, dilation)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut``."""
        pre = self.relu(self.bn1(x))
        shortcut = self._shortcut(pre) if self.downsample is not None else self._shortcut(x)
        out = self.conv1(pre)  # (N, planes, *spatial / stride)
        out = self.conv2(self.relu(self.bn2(out)))
        return self._join(out, shortcut)

    def zero_init_last(self) -> None:
        """Zero ``conv2.weight``: in a pre-activation block the branch ends in a convolution, not a norm."""
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(ResidualBlock):
    """1×1 reduce, 3×3, 1×1 restore, each after norm and ReLU (He et al. 2016); ResNet-164/1001 on CIFAR.

    Stride on the 3×3 convolution, as in ``Bottleneck``; projection shortcuts take the pre-activated input.

    Args:
        in_channels: Channels of the block input.
        planes: Bottleneck width; the block outputs ``planes * expansion``.
        stride: Stride of the 3×3 convolution.
        downsample: Shortcut module, ``None`` for the identity.
        spatial_dims: 2 or 3.
        drop_path_rate: Stochastic-depth rate of this block.
        dilation: Dilation of the 3×3 convolution.
        skip: ``False`` for the plain block.
        residual_scale: Factor on the branch before the addition.
    """

    expansion = 4
    preactivation = True

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        spatial_dims: int = 2,
        drop_path_rate: float = 0.0,
        dilation: int = 1,
        skip: bool = True,
        residual_scale: float = 1.0,
    ) -> None:
        super().__init__(
            in_channels, planes, stride, downsample, spatial_dims, drop_path_rate, dilation, skip, residual_scale
        )
        self.bn1 = norm(in_channels, spatial_dims)
        self.conv1 = conv1x1(in_channels, planes, spatial_dims)
        self.bn2 = norm(planes, spatial_dims)
        self.conv2 = conv3x3(planes, planes, spatial_dims, stride, dilation)
        self.bn3 = norm(planes, spatial_dims)
        self.conv3 = conv1x1(planes, planes * self.expansion, spatial_dims)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activated reduce, 3×3, restore; add the shortcut."""
        pre = self.relu(self.bn1(x))
        shortcut = self._shortcut(pre) if self.downsample is not None else self._shortcut(x)
        out = self.conv1(pre)  # (N, planes, *spatial)
        out = self.conv2(self.relu(self.bn2(out)))  # (N, planes, *spatial / stride)
        out = self.conv3(self.relu(self.bn3(out)))  # (N, planes * 4, *spatial / stride)
        return self._join(out, shortcut)

    def zero_init_last(self) -> None:
        """Zero ``conv3.weight``."""
        nn.init.zeros_(self.conv3.weight)
