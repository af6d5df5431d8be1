import itertools

import pytest
import torch
from torch import nn

from medres.models import ResNet, create_model, list_models
from medres.models.resnet import BasicBlock, Bottleneck, ResidualBlock, drop_path_rates

NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}

# Small inputs keep every variant fast on CPU. Batch 2 because training-mode batch norm needs more than one value
# per channel, and the 3D stages end at 1×1×1 for a 32³ input.
SHAPES = {2: (2, 1, 64, 64), 3: (2, 1, 32, 32, 32)}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _blocks(model: ResNet) -> list[ResidualBlock]:
    return [m for m in model.modules() if isinstance(m, ResidualBlock)]


def _last_norm(block: ResidualBlock) -> nn.Module:
    return block.bn3 if isinstance(block, Bottleneck) else block.bn2


def test_registered_names() -> None:
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_every_variant(name: str, spatial_dims: int) -> None:
    # zero_init_residual=False: with zero-init the last norm's weight is 0, so every weight *before* it in a branch
    # gets an exactly-zero gradient on the first step (still not None); without it every parameter must get signal.
    # 3D at full width is ~3× the parameters of 2D (ResNet-152: 119M); quarter widths keep each variant's depth and
    # blocks while staying fast. Full-width 3D is covered by the eval test and the 3D state-dict test below.
    narrow = {"widths": (16, 32, 64, 128), "stem_width": 16} if spatial_dims == 3 else {}
    model = create_model(
        name, spatial_dims=spatial_dims, in_channels=1, num_classes=3, zero_init_residual=False, **narrow
    )
    model.train()
    out = model(torch.randn(SHAPES[spatial_dims]))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()

    out.square().sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize(("spatial_dims", "shape"), [(2, (1, 1, 64, 64)), (3, (1, 1, 32, 32, 32))], ids=["2d", "3d"])
def test_single_channel_input_eval(spatial_dims: int, shape: tuple[int, ...]) -> None:
    model = create_model("resnet50", spatial_dims=spatial_dims, in_channels=1, num_classes=4).eval()
    assert model.conv1.weight.shape == (64, 1, *([7] * spatial_dims))
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (1, 4)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
    ],
)
def test_parameter_counts_match_torchvision(name: str, count: int) -> None:
    model = create_model(name, in_channels=3, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == count


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def _torchvision_layout(name: str) -> dict[str, tuple[int, ...]]:
    """torchvision's ResNet state-dict keys and shapes, written out from its naming rules."""
    bottleneck = name == "resnet50"
    expansion = 4 if bottleneck else 1
    expected: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    in_ch = 64
    for stage, (depth, planes) in enumerate(zip(BLOCKS[name], (64, 128, 256, 512), strict=True), start=1):
        out_ch = planes * expansion
        for index in range(depth):
            p = f"layer{stage}.{index}"
            if bottleneck:
                expected[f"{p}.conv1.weight"] = (planes, in_ch, 1, 1)
                expected[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                expected[f"{p}.conv3.weight"] = (out_ch, planes, 1, 1)
                expected |= _bn(f"{p}.bn1", planes) | _bn(f"{p}.bn2", planes) | _bn(f"{p}.bn3", out_ch)
            else:
                expected[f"{p}.conv1.weight"] = (planes, in_ch, 3, 3)
                expected[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                expected |= _bn(f"{p}.bn1", planes) | _bn(f"{p}.bn2", planes)
            if index == 0 and (stage > 1 or in_ch != out_ch):
                expected[f"{p}.downsample.0.weight"] = (out_ch, in_ch, 1, 1)
                expected |= _bn(f"{p}.downsample.1", out_ch)
            in_ch = out_ch
    expected["fc.weight"] = (1000, in_ch)
    expected["fc.bias"] = (1000,)
    return expected


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_state_dict_layout_matches_torchvision(name: str) -> None:
    expected = _torchvision_layout(name)
    state = create_model(name).state_dict()
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    # resnet18 has no projection in layer1 (64 -> 64), resnet50 does (64 -> 256).
    assert ("layer1.0.downsample.0.weight" in state) == (name == "resnet50")


def test_3d_uses_the_same_names_as_2d() -> None:
    keys_2d = create_model("resnet18").state_dict().keys()
    state_3d = create_model("resnet18", spatial_dims=3).state_dict()
    assert state_3d.keys() == keys_2d
    assert state_3d["layer2.0.conv1.weight"].shape == (128, 64, 3, 3, 3)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zero_init_residual_zeroes_each_last_norm(name: str) -> None:
    blocks = _blocks(create_model(name, zero_init_residual=True))
    assert len(blocks) == sum(BLOCKS[name])
    for block in blocks:
        assert torch.count_nonzero(_last_norm(block).weight) == 0
        assert torch.count_nonzero(block.bn1.weight - 1) == 0  # only the last norm is zeroed

    for block in _blocks(create_model(name, zero_init_residual=False)):
        assert torch.equal(_last_norm(block).weight, torch.ones_like(_last_norm(block).weight))


@pytest.mark.parametrize(("stage", "index"), [("layer1", 1), ("layer2", 0)], ids=["identity", "projection"])
def test_zero_init_block_is_its_shortcut(stage: str, index: int) -> None:
    model = create_model("resnet50", zero_init_residual=True).eval()
    block = getattr(model, stage)[index]
    in_channels = block.conv1.in_channels
    x = torch.randn(2, in_channels, 16, 16)
    with torch.no_grad():
        shortcut = x if block.downsample is None else block.downsample(x)
        assert torch.equal(block(x), torch.relu(shortcut))


def test_basic_block_zero_init_is_identity() -> None:
    block = BasicBlock(8, 8, spatial_dims=3)
    block.zero_init_last()
    block.eval()
    x = torch.randn(2, 8, 4, 4, 4)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))


def test_drop_path_rates_rise_linearly() -> None:
    rates = drop_path_rates((2, 2, 2, 2), 0.7)
    assert [len(r) for r in rates] == [2, 2, 2, 2]
    flat = [r for stage in rates for r in stage]
    assert flat[0] == 0.0
    assert flat[-1] == 0.7
    assert flat == pytest.approx([0.7 * i / 7 for i in range(8)])
    assert drop_path_rates((1,), 0.3) == [[0.0]]


def test_model_blocks_carry_linear_drop_path_rates() -> None:
    model = create_model("resnet50", drop_path_rate=0.2)
    rates = [block.drop_path.drop_prob for block in _blocks(model)]
    assert len(rates) == 16
    assert rates[0] == 0.0
    assert rates[-1] == 0.2
    steps = [b - a for a, b in itertools.pairwise(rates)]
    assert steps == pytest.approx([0.2 / 15] * 15)


def test_drop_path_is_a_no_op_in_eval_and_active_in_train() -> None:
    x = torch.randn(4, 1, 64, 64)
    # zero_init_residual=False: a zero-initialised branch outputs 0, so dropping it would change nothing.
    dropped = create_model("resnet18", in_channels=1, num_classes=2, drop_path_rate=0.5, zero_init_residual=False)
    plain = create_model("resnet18", in_channels=1, num_classes=2, zero_init_residual=False)
    plain.load_state_dict(dropped.state_dict())

    dropped.eval()
    plain.eval()
    with torch.no_grad():
        first, second = dropped(x), dropped(x)
        assert torch.equal(first, second)
        assert torch.equal(first, plain(x))

    dropped.train()
    with torch.no_grad():
        assert not torch.equal(dropped(x), dropped(x))


@pytest.mark.parametrize(("name", "features"), [("resnet18", 512), ("resnet50", 2048)])
def test_no_head_returns_pooled_features(name: str, features: int) -> None:
    model = create_model(name, num_classes=0).eval()
    assert model.num_features == features
    assert not any(k.startswith("fc.") for k in model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, features)
        assert torch.equal(out, model.forward_head(model.forward_features(x), pre_logits=True))


def test_forward_is_features_then_head() -> None:
    model = create_model("resnet18", in_channels=1, num_classes=5).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (1, 512, 2, 2)  # 64 / 32
        assert torch.equal(model(x), model.forward_head(features))


def test_custom_widths_set_num_features() -> None:
    model = create_model("resnet50", widths=(8, 16, 32, 64), stem_width=16, num_classes=2)
    assert model.num_features == 64 * 4
    assert model.conv1.out_channels == 16
    assert model.fc.in_features == 256


def test_head_dropout_probability() -> None:
    assert create_model("resnet18", dropout=0.3).head_drop.p == 0.3


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="spatial_dims"):
        ResNet(BasicBlock, (2, 2, 2, 2), spatial_dims=1)
    with pytest.raises(ValueError, match="one entry per stage"):
        ResNet(BasicBlock, (2, 2, 2), widths=(64, 128, 256, 512))
