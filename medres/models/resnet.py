"""The residual network family for 2D and 3D images, and its registered variants.

He et al. 2015, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385): a stem, then stages of residual
blocks, then global average pooling and a linear head. One ``ResNet`` class covers the family the literature
describes; a variant is data (block class, blocks per stage, widths, stem, shortcut option) bound in a registered
factory at the bottom of this file, as in timm:

- ImageNet networks ``resnet10`` ... ``resnet200`` (2015 paper, table 1; ResNet-10 and -200 as in MedicalNet/timm)
  and their pre-activation forms ``preact_resnet18`` ... ``preact_resnet200`` (He et al. 2016, arXiv:1603.05027);
- CIFAR networks ``resnet20`` ... ``resnet1202`` (2015 paper, sec. 4.2: 6n+2 layers, widths 16/32/64, shortcut A)
  and the pre-activation bottleneck ``preact_resnet164`` and ``preact_resnet1001`` (2016 paper, table 2: 9n+2);
- the "plain" ablations: the same networks without skip connections (``plain18``, ``plain34``, ``plain20`` ...
  ``plain1202``, ``plain164``, ``plain1001``), as the 2015 paper trains them to show the degradation problem.

One code path serves ``spatial_dims`` 2 and 3: every layer comes from MONAI's factories. Parameter names follow
torchvision's ``ResNet`` exactly, so 2D torchvision checkpoints and 3D MedicalNet checkpoints load with
``strict=True`` (see ``medres.models.weights``).
"""

from collections.abc import Sequence
from typing import Any, Literal

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn
from torch.utils.checkpoint import checkpoint

from medres.models.blocks import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ResidualBlock,
    ZeroPadShortcut,
    norm,
    projection_shortcut,
)
from medres.models.registry import register_model

__all__ = ["CIFAR_WIDTHS", "IMAGENET_WIDTHS", "ResNet", "drop_path_rates"]

IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)

Stem = Literal["imagenet", "cifar"]
Shortcut = Literal["A", "B", "C"]


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
        block: Block class: ``BasicBlock``, ``Bottleneck``, ``PreActBasicBlock`` or ``PreActBottleneck``.
        layers: Number of blocks in each stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: Channels of the input image (1 for most DICOM, 3 for ImageNet weights).
        num_classes: Outputs of the linear head; 0 removes the head.
        widths: ``planes`` of each stage; a stage outputs ``width * block.expansion`` channels.
        stem: ``"imagenet"``: 7×7 convolution at ``stem_stride`` and a 3×3 stride-2 max-pool, so the stages run at
            1/4 of the input resolution (the 2015 paper's table 1; in 3D this is MedicalNet's stem). ``"cifar"``:
            one 3×3 stride-1 convolution, no pool, for small images (sec. 4.2).
        stem_width: Output channels of the stem convolution.
        stem_stride: Stride of the ImageNet stem convolution. MONAI's ``ResNet`` defaults to 1 (``conv1_t_stride``),
            which in 3D makes every stage work on 8× the voxels; 2 is the published stem.
        shortcut: Where the shape changes, ``"A"`` zero-pads an identity (parameter-free), ``"B"`` projects; ``"C"``
            projects in every block (2015 paper, sec. 3.3 and table 3). Ignored by plain networks.
        residual: ``False`` removes every skip connection: the plain network of the same depth.
        avg_down: Average-pool before the projection shortcut instead of striding it (ResNet-D).
        dilated: Keep the resolution of the last two stages and dilate their convolutions by 2 and 4 instead (output
            stride 8, as MedicalNet was pretrained; needed to use its weights).
        zero_init_residual: Start every block as its shortcut (Goyal et al. 2017, "Accurate, Large Minibatch SGD"):
            the network begins shallow and trains more stably. Not allowed for plain networks, whose only path it
            would cut.
        residual_scale: Factor on every residual branch before the addition.
        drop_path_rate: Stochastic-depth rate of the last block; earlier blocks get linearly less.
        dropout: Dropout probability on the pooled features, before the head.
        grad_checkpointing: Recompute each block's activations in the backward pass instead of storing them; trades
            about a third more compute for memory that no longer grows with depth (deep or 3D networks).
    """

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: Sequence[int],
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 1000,
        widths: Sequence[int] = IMAGENET_WIDTHS,
        stem: Stem = "imagenet",
        stem_width: int = 64,
        stem_stride: int = 2,
        shortcut: Shortcut = "B",
        residual: bool = True,
        avg_down: bool = False,
        dilated: bool = False,
        zero_init_residual: bool = True,
        residual_scale: float = 1.0,
        drop_path_rate: float = 0.0,
        dropout: float = 0.0,
        grad_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(layers) != len(widths):
            raise ValueError(f"layers {tuple(layers)} and widths {tuple(widths)} must have one entry per stage")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        if shortcut not in ("A", "B", "C"):
            raise ValueError(f"shortcut must be 'A', 'B' or 'C', got {shortcut!r}")
        if dilated and len(layers) < 3:
            raise ValueError("dilated=True dilates the last two stages after the first: it needs at least 3 stages")
        if not residual and (zero_init_residual or drop_path_rate > 0 or residual_scale != 1.0):
            raise ValueError(
                "a plain network (residual=False) takes zero_init_residual=False, drop_path_rate=0 and "
                "residual_scale=1: each acts on a skip connection it does not have"
            )
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.preactivation = block.preactivation
        self.stem_type = stem
        self.stem_stride = stem_stride if stem == "imagenet" else 1
        self.shortcut = shortcut
        self.residual = residual
        self.avg_down = avg_down
        self.dilated = dilated
        self.grad_checkpointing = grad_checkpointing

        # Stem. Attributes sit on the network, not in a submodule, to keep torchvision's parameter names. A
        # pre-activation network has no norm here: its first block normalises its input (the authors' code shares
        # that one norm between the branch and the shortcut of the first block).
        if stem == "imagenet":
            self.conv1 = Conv[Conv.CONV, spatial_dims](
                in_channels, stem_width, kernel_size=7, stride=stem_stride, padding=3, bias=False
            )
            self.maxpool: nn.Module = Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = Conv[Conv.CONV, spatial_dims](
                in_channels, stem_width, kernel_size=3, stride=1, padding=1, bias=False
            )
            self.maxpool = nn.Identity()
        self.bn1: nn.Module = nn.Identity() if self.preactivation else norm(stem_width, spatial_dims)
        self.relu: nn.Module = nn.Identity() if self.preactivation else nn.ReLU(inplace=True)

        # Stages layer1..layerK: the first keeps the stem's resolution, each later one halves it in its first block,
        # except that ``dilated`` trades the last two halvings for dilation 2 and 4.
        stage_rates = drop_path_rates(layers, drop_path_rate)
        self.stage_names: list[str] = []
        channels = stem_width
        for index, (depth, width, rates) in enumerate(zip(layers, widths, stage_rates, strict=True)):
            dilation = 2 ** (index - len(layers) + 3) if dilated and index >= len(layers) - 2 else 1
            stride = 1 if index == 0 or dilation > 1 else 2
            stage, channels = self._make_layer(block, channels, width, depth, stride, dilation, rates, residual_scale)
            self.stage_names.append(f"layer{index + 1}")
            self.add_module(self.stage_names[-1], stage)
        self.num_features = channels

        # Head: a pre-activation network normalises once more after its last addition (2016 paper, fig. 1b), then
        # global average pool, dropout, linear (``nn.Identity`` when there is no head, as in timm).
        self.norm: nn.Module = norm(channels, spatial_dims) if self.preactivation else nn.Identity()
        self.final_relu: nn.Module = nn.ReLU(inplace=True) if self.preactivation else nn.Identity()
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
        dilation: int,
        rates: Sequence[float],
        residual_scale: float,
    ) -> tuple[nn.Sequential, int]:
        """One stage: a first block that may change resolution and width, then ``depth - 1`` same-shape blocks.

        Returns:
            The stage and its output channels.
        """
        out_channels = planes * block.expansion
        blocks = []
        for index, rate in enumerate(rates):
            block_in, block_stride = (in_channels, stride) if index == 0 else (out_channels, 1)
            blocks.append(
                block(
                    block_in,
                    planes,
                    stride=block_stride,
                    downsample=self._make_shortcut(block_in, out_channels, block_stride),
                    spatial_dims=self.spatial_dims,
                    drop_path_rate=rate,
                    dilation=dilation,
                    skip=self.residual,
                    residual_scale=residual_scale,
                )
            )
        return nn.Sequential(*blocks), out_channels

    def _make_shortcut(self, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
        """The shortcut module of one block (``None``: identity, or no skip at all in a plain network).

        Option B, projecting only where the shape changes, is the default: the 2015 paper (table 3) finds it almost
        as accurate as projecting everywhere (C) for far fewer parameters, and a little better than zero-padding
        (A), whose padded channels learn nothing.
        """
        if not self.residual:
            return None
        same_shape = stride == 1 and in_channels == out_channels
        if self.shortcut == "C" or (self.shortcut == "B" and not same_shape):
            return projection_shortcut(in_channels, out_channels, stride, self.spatial_dims, self.avg_down)
        if self.shortcut == "A" and not same_shape:
            return ZeroPadShortcut(out_channels, stride, self.spatial_dims)
        return None

    def _init_weights(self, zero_init_residual: bool) -> None:
        """Kaiming-normal convolutions (He et al. 2015, "Delving Deep into Rectifiers"; fan_out as torchvision).

        Norms start at weight 1, bias 0; with ``zero_init_residual`` each block then zeroes its last affine layer.
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

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation checkpointing of the blocks on or off (timm's name for it)."""
        self.grad_checkpointing = enable

    def blocks(self) -> list[ResidualBlock]:
        """Every residual block, input to output."""
        return [module for module in self.modules() if isinstance(module, ResidualBlock)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stages.

        Args:
            x: Images ``(N, in_channels, *spatial)``.

        Returns:
            Feature map ``(N, num_features, *spatial / 32)`` for the four-stage ImageNet networks.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, stem_width, *spatial / 4) for the ImageNet stem
        checkpointing = self.grad_checkpointing and torch.is_grad_enabled()
        for name in self.stage_names:
            stage = getattr(self, name)
            if not checkpointing:
                x = stage(x)  # channels -> width * expansion; spatial halves from the second stage on
                continue
            for block in stage:
                # Non-reentrant checkpointing restores the RNG state (stochastic depth drops the same samples when
                # recomputed), but a training-mode batch norm updates its running statistics twice per step, as in
                # timm's checkpoint_seq; with the default momentum that is a slightly faster running average.
                x = checkpoint(block, x, use_reentrant=False)
        return self.final_relu(self.norm(x))

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


# ---- registered variants ----------------------------------------------------------------------------------------
# Each factory binds the published architecture; keyword arguments override any of its settings (in_channels,
# spatial_dims, shortcut, drop_path_rate, ...). The plain networks are the residual ones with ``residual=False``.


def _build(
    block: type[ResidualBlock], layers: Sequence[int], defaults: dict[str, Any], kwargs: dict[str, Any]
) -> ResNet:
    return ResNet(block, layers, **{**defaults, **kwargs})


_CIFAR = {"widths": CIFAR_WIDTHS, "stem": "cifar", "stem_width": 16}
_PLAIN = {"residual": False, "zero_init_residual": False}


def _cifar_blocks(depth: int, layers_per_block: int) -> tuple[int, int, int]:
    """Blocks per stage of a three-stage CIFAR network: depth = 3 · n · layers_per_block + 2 (stem and head)."""
    n, rest = divmod(depth - 2, 3 * layers_per_block)
    if rest:
        raise ValueError(f"a CIFAR network with {layers_per_block}-layer blocks cannot have depth {depth}")
    return (n, n, n)


@register_model
def resnet10(**kwargs: Any) -> ResNet:
    """ResNet-10 (MedicalNet's smallest 3D network): basic blocks (1, 1, 1, 1), ImageNet stem, shortcut B."""
    return _build(BasicBlock, (1, 1, 1, 1), {}, kwargs)


@register_model
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (He et al. 2015, table 1): basic blocks (2, 2, 2, 2), ImageNet stem, shortcut B."""
    return _build(BasicBlock, (2, 2, 2, 2), {}, kwargs)


@register_model
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (He et al. 2015, table 1): basic blocks (3, 4, 6, 3), ImageNet stem, shortcut B."""
    return _build(BasicBlock, (3, 4, 6, 3), {}, kwargs)


@register_model
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (He et al. 2015, table 1): bottleneck blocks (3, 4, 6, 3), ImageNet stem, shortcut B."""
    return _build(Bottleneck, (3, 4, 6, 3), {}, kwargs)


@register_model
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101 (He et al. 2015, table 1): bottleneck blocks (3, 4, 23, 3), ImageNet stem, shortcut B."""
    return _build(Bottleneck, (3, 4, 23, 3), {}, kwargs)


@register_model
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152 (He et al. 2015, table 1): bottleneck blocks (3, 8, 36, 3), ImageNet stem, shortcut B."""
    return _build(Bottleneck, (3, 8, 36, 3), {}, kwargs)


@register_model
def resnet200(**kwargs: Any) -> ResNet:
    """ResNet-200 (He et al. 2016, table 5; MedicalNet): bottleneck blocks (3, 24, 36, 3), ImageNet stem, shortcut B."""
    return _build(Bottleneck, (3, 24, 36, 3), {}, kwargs)


@register_model
def preact_resnet18(**kwargs: Any) -> ResNet:
    """Pre-activation ResNet-18 (He et al. 2016; timm's ``resnetv2_18``): basic blocks (2, 2, 2, 2)."""
    return _build(PreActBasicBlock, (2, 2, 2, 2), {}, kwargs)


@register_model
def preact_resnet34(**kwargs: Any) -> ResNet:
    """Pre-activation ResNet-34 (He et al. 2016; timm's ``resnetv2_34``): basic blocks (3, 4, 6, 3)."""
    return _build(PreActBasicBlock, (3, 4, 6, 3), {}, kwargs)


@register_model
def preact_resnet50(**kwargs: Any) -> ResNet:
    """Pre-activation ResNet-50 (He et al. 2016; timm's ``resnetv2_50``): bottleneck blocks (3, 4, 6, 3)."""
    return _build(PreActBottleneck, (3, 4, 6, 3), {}, kwargs)


@register_model
def preact_resnet101(**kwargs: Any) -> ResNet:
    """Pre-activation ResNet-101 (He et al. 2016; timm's ``resnetv2_101``): bottleneck blocks (3, 4, 23, 3)."""
    return _build(PreActBottleneck, (3, 4, 23, 3), {}, kwargs)


@register_model
def preact_resnet152(**kwargs: Any) -> ResNet:
    """Pre-activation ResNet-152 (He et al. 2016; timm's ``resnetv2_152``): bottleneck blocks (3, 8, 36, 3)."""
    return _build(PreActBottleneck, (3, 8, 36, 3), {}, kwargs)


@register_model
def preact_resnet200(**kwargs: Any) -> ResNet:
    """Pre-activation ResNet-200 (He et al. 2016; timm's ``resnetv2_200``): bottleneck blocks (3, 24, 36, 3)."""
    return _build(PreActBottleneck, (3, 24, 36, 3), {}, kwargs)


@register_model
def resnet20(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-20 (He et al. 2015, sec. 4.2): 3×3 basic blocks, widths 16/32/64, shortcut A."""
    return _build(BasicBlock, _cifar_blocks(20, 2), {**_CIFAR, "shortcut": "A"}, kwargs)


@register_model
def resnet32(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-32 (He et al. 2015, sec. 4.2): 3×5 basic blocks, widths 16/32/64, shortcut A."""
    return _build(BasicBlock, _cifar_blocks(32, 2), {**_CIFAR, "shortcut": "A"}, kwargs)


@register_model
def resnet44(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-44 (He et al. 2015, sec. 4.2): 3×7 basic blocks, widths 16/32/64, shortcut A."""
    return _build(BasicBlock, _cifar_blocks(44, 2), {**_CIFAR, "shortcut": "A"}, kwargs)


@register_model
def resnet56(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-56 (He et al. 2015, sec. 4.2): 3×9 basic blocks, widths 16/32/64, shortcut A."""
    return _build(BasicBlock, _cifar_blocks(56, 2), {**_CIFAR, "shortcut": "A"}, kwargs)


@register_model
def resnet110(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-110 (He et al. 2015, sec. 4.2): 3×18 basic blocks, widths 16/32/64, shortcut A."""
    return _build(BasicBlock, _cifar_blocks(110, 2), {**_CIFAR, "shortcut": "A"}, kwargs)


@register_model
def resnet1202(**kwargs: Any) -> ResNet:
    """CIFAR ResNet-1202 (He et al. 2015, sec. 4.2): 3×200 basic blocks, widths 16/32/64, shortcut A."""
    return _build(BasicBlock, _cifar_blocks(1202, 2), {**_CIFAR, "shortcut": "A"}, kwargs)


@register_model
def preact_resnet164(**kwargs: Any) -> ResNet:
    """Pre-activation CIFAR ResNet-164 (He et al. 2016, table 2): 3×18 bottlenecks, shortcut B."""
    return _build(PreActBottleneck, _cifar_blocks(164, 3), _CIFAR, kwargs)


@register_model
def preact_resnet1001(**kwargs: Any) -> ResNet:
    """Pre-activation CIFAR ResNet-1001 (He et al. 2016, table 2): 3×111 bottlenecks, shortcut B."""
    return _build(PreActBottleneck, _cifar_blocks(1001, 3), _CIFAR, kwargs)


@register_model
def plain18(**kwargs: Any) -> ResNet:
    """Plain-18 (He et al. 2015, fig. 3 middle and table 2): ResNet-18 without skip connections."""
    return _build(BasicBlock, (2, 2, 2, 2), _PLAIN, kwargs)


@register_model
def plain34(**kwargs: Any) -> ResNet:
    """Plain-34 (He et al. 2015, fig. 3 middle and table 2): ResNet-34 without skip connections."""
    return _build(BasicBlock, (3, 4, 6, 3), _PLAIN, kwargs)


@register_model
def plain20(**kwargs: Any) -> ResNet:
    """CIFAR plain-20 (He et al. 2015, sec. 4.2 and fig. 6 left): ResNet-20 without skip connections."""
    return _build(BasicBlock, _cifar_blocks(20, 2), {**_CIFAR, **_PLAIN}, kwargs)


@register_model
def plain32(**kwargs: Any) -> ResNet:
    """CIFAR plain-32 (He et al. 2015, sec. 4.2 and fig. 6 left): ResNet-32 without skip connections."""
    return _build(BasicBlock, _cifar_blocks(32, 2), {**_CIFAR, **_PLAIN}, kwargs)


@register_model
def plain44(**kwargs: Any) -> ResNet:
    """CIFAR plain-44 (He et al. 2015, sec. 4.2 and fig. 6 left): ResNet-44 without skip connections."""
    return _build(BasicBlock, _cifar_blocks(44, 2), {**_CIFAR, **_PLAIN}, kwargs)


@register_model
def plain56(**kwargs: Any) -> ResNet:
    """CIFAR plain-56 (He et al. 2015, sec. 4.2 and fig. 6 left): ResNet-56 without skip connections."""
    return _build(BasicBlock, _cifar_blocks(56, 2), {**_CIFAR, **_PLAIN}, kwargs)


@register_model
def plain110(**kwargs: Any) -> ResNet:
    """CIFAR plain-110 (He et al. 2015, sec. 4.2 and fig. 6 left): ResNet-110 without skip connections."""
    return _build(BasicBlock, _cifar_blocks(110, 2), {**_CIFAR, **_PLAIN}, kwargs)


@register_model
def plain1202(**kwargs: Any) -> ResNet:
    """CIFAR plain-1202 (He et al. 2015, sec. 4.2 and fig. 6 left): ResNet-1202 without skip connections."""
    return _build(BasicBlock, _cifar_blocks(1202, 2), {**_CIFAR, **_PLAIN}, kwargs)


@register_model
def plain164(**kwargs: Any) -> ResNet:
    """Pre-activation ResNet-164 without skip connections: the plain network of the same depth."""
    return _build(PreActBottleneck, _cifar_blocks(164, 3), {**_CIFAR, **_PLAIN}, kwargs)


@register_model
def plain1001(**kwargs: Any) -> ResNet:
    """Pre-activation ResNet-1001 without skip connections: the plain network of the same depth."""
    return _build(PreActBottleneck, _cifar_blocks(1001, 3), {**_CIFAR, **_PLAIN}, kwargs)
