import itertools

import pytest
import torch
from torch import nn

from medres.models import ResNet, create_model, list_models
from medres.models.blocks import BasicBlock, Bottleneck, ResidualBlock, ZeroPadShortcut
from medres.models.resnet import drop_path_rates

BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}
IMAGENET = ["resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet200"]
CIFAR = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"]
PREACT = [f"preact_{name}" for name in IMAGENET[1:]] + ["preact_resnet164", "preact_resnet1001"]
PLAIN = ["plain18", "plain34"] + [name.replace("resnet", "plain") for name in CIFAR] + ["plain164", "plain1001"]
IMAGENET_STEM = {*IMAGENET, *PREACT[:-2], "plain18", "plain34"}
# The 1000+-layer networks take seconds each on 2 cores: their contract runs with the slow tests (make test), the rest
# in the edit-test loop (make test-fast).
THOUSAND_LAYERS = {"resnet1202", "plain1202", "preact_resnet1001", "plain1001"}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _blocks(model: ResNet) -> list[ResidualBlock]:
    return model.blocks()


def _last_norm(block: ResidualBlock) -> nn.Module:
    return block.bn3 if isinstance(block, Bottleneck) else block.bn2


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_names() -> None:
    assert set(list_models()) == set(IMAGENET + CIFAR + PREACT + PLAIN)


def _contract_kwargs(name: str, spatial_dims: int) -> dict[str, object]:
    # zero_init_residual=False: with zero-init the last affine layer of a branch is 0, so every weight *before* it
    # gets an exactly-zero gradient on the first step; without it every parameter must get signal. Plain networks
    # refuse zero-init (it would cut their only path). ImageNet-stem networks at full width are tens of millions of
    # parameters (3D ResNet-200: 190M); quarter widths keep each variant's depth and blocks while staying fast.
    kwargs: dict[str, object] = {"in_channels": 1, "num_classes": 3}
    if name not in PLAIN:
        kwargs["zero_init_residual"] = False
    if name in IMAGENET_STEM:
        kwargs |= {"widths": (16, 32, 64, 128), "stem_width": 16}
    return kwargs


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in THOUSAND_LAYERS else n for n in IMAGENET + CIFAR + PREACT + PLAIN],
)
def test_contract_every_registered_variant(name: str, spatial_dims: int) -> None:
    model = create_model(name, spatial_dims=spatial_dims, **_contract_kwargs(name, spatial_dims))
    assert model.spatial_dims == spatial_dims
    # CIFAR networks keep full resolution in their first stage, so 8³ is plenty; ImageNet ones divide by 32.
    size = 8 if model.stem_type == "cifar" else 32
    x = torch.randn(2, 1, *([size] * spatial_dims))
    if name in ("plain1001", "plain1202"):
        # Batch-normalised plain networks this deep explode their gradients toward the input at initialisation
        # (about 1e92 at the stem conv, Yang et al. 2019, "A Mean Field Theory of Batch Normalization"): float32
        # overflows to NaN, float64 still holds the values. That is the degradation problem, not a defect.
        model, x = model.double(), x.double()
    model.train()
    out = model(x)
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname

    # Every parameter must carry signal. In train mode a bias added just before a batch norm gets an exactly-zero
    # gradient (the norm subtracts the batch mean), e.g. a pre-activation network's last projection feeding only
    # the final norm; with running statistics (eval) nothing is mean-subtracted and each parameter must matter.
    model.zero_grad()
    model.eval()
    model(x).square().sum().backward()
    silent = [pname for pname, param in model.named_parameters() if param.grad is None or not param.grad.abs().sum()]
    assert not silent


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
    assert _params(create_model(name, in_channels=3, num_classes=1000)) == count


@pytest.mark.parametrize(
    ("name", "millions", "tolerance"),
    [
        # He et al. 2015, table 6 (CIFAR-10, shortcut A): the counts round to two significant digits.
        ("resnet20", 0.27, 0.01),
        ("resnet32", 0.46, 0.01),
        ("resnet44", 0.66, 0.01),
        ("resnet56", 0.85, 0.01),
        ("resnet110", 1.7, 0.03),
        ("resnet1202", 19.4, 0.01),
        # He et al. 2016, table 2. Our ResNet-1001 has 10.33M: 10.18M convolution weights (the paper's 10.2M) plus
        # 0.15M batch-norm affine parameters, which the paper's figure evidently leaves out.
        ("preact_resnet164", 1.7, 0.01),
        ("preact_resnet1001", 10.2, 0.015),
    ],
)
def test_parameter_counts_match_the_papers(name: str, millions: float, tolerance: float) -> None:
    count = _params(create_model(name, in_channels=3, num_classes=10)) / 1e6
    assert count == pytest.approx(millions, rel=tolerance)


def test_preact_resnet1001_convolution_weights_are_the_published_10_2m() -> None:
    model = create_model("preact_resnet1001", in_channels=3, num_classes=10)
    conv = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv / 1e6 == pytest.approx(10.2, abs=0.05)


@pytest.mark.parametrize(
    ("plain", "residual"), [("plain20", "resnet20"), ("plain56", "resnet56"), ("plain1001", "preact_resnet1001")]
)
def test_plain_counterpart_has_the_residual_layers_minus_projections(plain: str, residual: str) -> None:
    plain_keys = set(create_model(plain, num_classes=10).state_dict())
    residual_keys = set(create_model(residual, num_classes=10).state_dict())
    assert plain_keys <= residual_keys
    assert all(".downsample." in key for key in residual_keys - plain_keys)
    assert not any(isinstance(b.downsample, ZeroPadShortcut) or b.skip for b in create_model(plain).blocks())


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
