"""Blocks, shortcuts and the network options that choose them (stems, dilation, checkpointing)."""

import pytest
import torch
from torch import nn

from medres.models import ResNet, create_model
from medres.models.blocks import (
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    ZeroPadShortcut,
    projection_shortcut,
)

BLOCK_CLASSES = [BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _copy_weights(source: nn.Module, target: nn.Module) -> None:
    target.load_state_dict(source.state_dict(), strict=False)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_zero_pad_shortcut_subsamples_and_pads(spatial_dims: int) -> None:
    x = torch.randn(2, 4, *([5] * spatial_dims))
    out = ZeroPadShortcut(out_channels=8, stride=2, spatial_dims=spatial_dims)(x)
    assert out.shape == (2, 8, *([3] * spatial_dims))  # ceil(5 / 2), like a padded strided 3×3 conv
    index = (slice(None), slice(None), *([slice(None, None, 2)] * spatial_dims))
    assert torch.equal(out[:, :4], x[index])
    assert torch.count_nonzero(out[:, 4:]) == 0


def test_zero_pad_shortcut_refuses_to_drop_channels() -> None:
    with pytest.raises(ValueError, match="cannot reduce"):
        ZeroPadShortcut(2, 1, 2)(torch.randn(1, 4, 3, 3))


def test_projection_shortcut_avg_down_pools_then_projects() -> None:
    plain = projection_shortcut(8, 16, stride=2, spatial_dims=2)
    pooled = projection_shortcut(8, 16, stride=2, spatial_dims=2, avg_down=True)
    assert isinstance(pooled[0], nn.AvgPool2d) and pooled[1].stride == (1, 1)
    assert plain[0].stride == (2, 2)
    x = torch.randn(2, 8, 7, 7)
    assert pooled(x).shape == plain(x).shape == (2, 16, 4, 4)  # odd sizes round up on both


@pytest.mark.parametrize("block_class", BLOCK_CLASSES)
def test_plain_block_is_the_residual_block_without_its_skip(block_class: type) -> None:
    """Same weights; the residual block adds the input where the plain one does not."""
    channels = 8 * block_class.expansion
    residual = block_class(channels, 8, spatial_dims=2).eval()
    plain = block_class(channels, 8, spatial_dims=2, skip=False).eval()
    _copy_weights(residual, plain)
    x = torch.randn(2, channels, 6, 6)
    with torch.no_grad():
        if block_class.preactivation:  # nothing after the addition: the difference is exactly the input
            torch.testing.assert_close(residual(x) - plain(x), x)
        else:  # post-activation: relu(branch + x) against relu(branch)
            branch = plain(x)
            assert not torch.allclose(residual(x), branch)
            block = residual
            pre = (
                block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
                if block_class is BasicBlock
                else block.bn3(block.conv3(block.relu(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))))
            )
            torch.testing.assert_close(residual(x), torch.relu(pre + x))
            torch.testing.assert_close(branch, torch.relu(pre))


def test_plain_block_refuses_skip_settings() -> None:
    with pytest.raises(ValueError, match="plain block"):
        BasicBlock(8, 8, skip=False, drop_path_rate=0.1)
    with pytest.raises(ValueError, match="plain block"):
        BasicBlock(8, 16, skip=False, downsample=ZeroPadShortcut(16, 1, 2))


@pytest.mark.parametrize("block_class", [PreActBasicBlock, PreActBottleneck])
def test_preact_zero_init_block_is_exactly_its_input(block_class: type) -> None:
    channels = 8 * block_class.expansion
    block = block_class(channels, 8, spatial_dims=3)
    block.zero_init_last()
    block.train()  # even in train mode: the branch ends in a zeroed conv and nothing follows the addition
    x = torch.randn(2, channels, 4, 4, 4)
    assert torch.equal(block(x), x)


def test_preact_projection_takes_the_preactivated_input() -> None:
    block = PreActBottleneck(16, 8, stride=2, downsample=projection_shortcut(16, 32, 2, 2), spatial_dims=2).eval()
    block.zero_init_last()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.downsample(torch.relu(block.bn1(x))))


def test_residual_scale_multiplies_the_branch() -> None:
    scaled = PreActBasicBlock(8, 8, residual_scale=0.2).eval()
    unscaled = PreActBasicBlock(8, 8).eval()
    _copy_weights(scaled, unscaled)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x) - x, 0.2 * (unscaled(x) - x))
    model = create_model("resnet20", residual_scale=0.1)
    assert {block.residual_scale for block in model.blocks()} == {0.1}


def _shortcut_kinds(model: ResNet) -> list[str]:
    kinds = []
    for block in model.blocks():
        if block.downsample is None:
            kinds.append("identity")
        elif isinstance(block.downsample, ZeroPadShortcut):
            kinds.append("zero-pad")
        else:
            kinds.append("projection")
    return kinds


def test_shortcut_options_a_b_c() -> None:
    # resnet20: 3 stages of 3 blocks; the first blocks of stages 2 and 3 change the shape (16 -> 32 -> 64).
    changes = ["identity"] * 3 + ["CHANGE"] + ["identity"] * 2 + ["CHANGE"] + ["identity"] * 2
    a = _shortcut_kinds(create_model("resnet20", shortcut="A"))
    b = _shortcut_kinds(create_model("resnet20", shortcut="B"))
    c = _shortcut_kinds(create_model("resnet20", shortcut="C"))
    assert a == [k.replace("CHANGE", "zero-pad") for k in changes]
    assert b == [k.replace("CHANGE", "projection") for k in changes]
    assert c == ["projection"] * 9
    assert create_model("resnet20").shortcut == "A"  # the paper's CIFAR choice
    params = [sum(p.numel() for p in create_model("resnet20", shortcut=s).parameters()) for s in "ABC"]
    assert params[0] < params[1] < params[2]


def test_plain_network_has_no_shortcuts_and_refuses_zero_init() -> None:
    model = create_model("plain18")
    assert not model.residual
    assert all(not block.skip and block.downsample is None for block in model.blocks())
    with pytest.raises(ValueError, match="plain network"):
        create_model("plain20", zero_init_residual=True)
    with pytest.raises(ValueError, match="plain network"):
        create_model("resnet20", residual=False, drop_path_rate=0.1, zero_init_residual=False)


def test_avg_down_network_shapes() -> None:
    model = create_model("resnet50", avg_down=True, num_classes=2)
    assert isinstance(model.layer2[0].downsample[0], nn.AvgPool2d)
    assert not isinstance(model.layer1[0].downsample[0], nn.AvgPool2d)  # stride 1: a plain projection
    assert model(torch.randn(2, 3, 65, 65)).shape == (2, 2)


def test_imagenet_stem_stride_sets_the_stage_resolution() -> None:
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        published = create_model("resnet18", spatial_dims=3, in_channels=1, num_classes=0).eval()
        monai_like = create_model("resnet18", spatial_dims=3, in_channels=1, num_classes=0, stem_stride=1).eval()
        assert published.forward_features(x).shape[2:] == (1, 1, 1)  # 32 / 32
        assert monai_like.forward_features(x).shape[2:] == (2, 2, 2)  # 32 / 16: every stage has 8× the voxels


def test_cifar_stem_keeps_full_resolution() -> None:
    model = create_model("resnet20", in_channels=3, num_classes=10).eval()
    assert isinstance(model.maxpool, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)  # two halvings


def test_dilated_network_keeps_resolution_in_the_last_two_stages() -> None:
    model = create_model("resnet18", spatial_dims=3, in_channels=1, num_classes=0, dilated=True, shortcut="A")
    assert model.layer3[0].conv1.dilation == (2, 2, 2) and model.layer3[0].conv1.stride == (1, 1, 1)
    assert model.layer4[1].conv2.dilation == (4, 4, 4)
    assert model.layer2[0].conv1.dilation == (1, 1, 1)
    with torch.no_grad():
        assert model.eval().forward_features(torch.randn(1, 1, 32, 32, 32)).shape == (1, 512, 4, 4, 4)  # stride 8
    with pytest.raises(ValueError, match="at least 3 stages"):
        ResNet(BasicBlock, (1, 1), widths=(8, 16), dilated=True)


def test_preact_network_normalises_after_the_last_block() -> None:
    model = create_model("preact_resnet164", num_classes=10)
    assert isinstance(model.norm, nn.BatchNorm2d) and model.norm.num_features == 256
    assert isinstance(model.bn1, nn.Identity)  # the first block's pre-activation normalises the stem
    assert isinstance(create_model("resnet20").norm, nn.Identity)


@pytest.mark.parametrize("name", ["resnet20", pytest.param("preact_resnet164", marks=pytest.mark.slow)])
def test_grad_checkpointing_gives_the_same_outputs_and_gradients(name: str) -> None:
    reference = create_model(name, in_channels=1, num_classes=3, zero_init_residual=False, drop_path_rate=0.2)
    checkpointed = create_model(name, in_channels=1, num_classes=3, zero_init_residual=False, drop_path_rate=0.2)
    checkpointed.load_state_dict(reference.state_dict())
    checkpointed.set_grad_checkpointing()
    x = torch.randn(2, 1, 8, 8)
    outputs = []
    for model in (reference, checkpointed):
        torch.manual_seed(1)  # the same stochastic-depth draws; checkpointing must replay them when recomputing
        out = model.train()(x)
        out.square().sum().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[0], outputs[1])
    for (pname, p_ref), p_ckpt in zip(reference.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(p_ref.grad, p_ckpt.grad, msg=pname)
    with torch.no_grad():  # no recomputation without gradients
        assert checkpointed.eval()(x).shape == (2, 3)


def test_invalid_stem_and_shortcut_raise() -> None:
    with pytest.raises(ValueError, match="stem"):
        create_model("resnet18", stem="deep")
    with pytest.raises(ValueError, match="shortcut"):
        create_model("resnet18", shortcut="D")
