"""Loading pretrained checkpoints: torchvision (2D) and MedicalNet (3D) layouts, built here without either library.

The reference layouts and forwards below are written from torchvision's ``models/resnet.py`` and Tencent/MedicalNet's
``models/resnet.py``, independently of ``medres.models.resnet``: a checkpoint in their layout must load strictly and
give the same outputs as their network would.
"""

import argparse
import inspect
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from medres.data.transforms import Preprocessing
from medres.models import ResNet, create_model
from medres.models.weights import LoadReport, WeightsError, load_pretrained, read_state_dict
from medres.package import ModelPackage

ARCHS = {"resnet18": (False, (2, 2, 2, 2)), "resnet50": (True, (3, 4, 6, 3))}
WIDTHS = (64, 128, 256, 512)

needs_dilation = pytest.mark.skipif(
    "dilated" not in inspect.signature(ResNet.__init__).parameters,
    reason="ResNet has no dilated/shortcut options yet (MedicalNet layout)",
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---- reference layout and forward --------------------------------------------------------------------------------


def reference_layout(
    bottleneck: bool,
    layers: tuple[int, ...],
    spatial_dims: int = 2,
    in_channels: int = 3,
    shortcut: str = "B",
    num_classes: int | None = 1000,
) -> dict[str, tuple[int, ...]]:
    """{key: shape} of torchvision's ResNet (2D, shortcut B) or MedicalNet's (3D, A or B, no fc)."""
    k3, k1, k7 = (3,) * spatial_dims, (1,) * spatial_dims, (7,) * spatial_dims
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, in_channels, *k7)}

    def bn(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    expansion = 4 if bottleneck else 1
    inplanes = 64
    for stage, (planes, depth) in enumerate(zip(WIDTHS, layers, strict=True)):
        stride = 1 if stage == 0 else 2  # MedicalNet's dilated stages have stride 1 but the same parameters
        for index in range(depth):
            p = f"layer{stage + 1}.{index}"
            if bottleneck:
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, *k1)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, *k3)
                bn(f"{p}.bn2", planes)
                shapes[f"{p}.conv3.weight"] = (planes * 4, planes, *k1)
                bn(f"{p}.bn3", planes * 4)
            else:
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, *k3)
                bn(f"{p}.bn1", planes)
                shapes[f"{p}.conv2.weight"] = (planes, planes, *k3)
                bn(f"{p}.bn2", planes)
            if index == 0 and shortcut == "B" and (stride != 1 or inplanes != planes * expansion):
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, *k1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    if num_classes is not None:
        shapes["fc.weight"] = (num_classes, 512 * expansion)
        shapes["fc.bias"] = (num_classes,)
    return shapes


def random_state(layout: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Random tensors for a layout, scaled so activations stay O(1) through 50 layers (positive variances)."""
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape)
        elif len(shape) == 1:  # norm weight
            state[key] = torch.rand(shape) + 0.5
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape) * math.sqrt(2.0 / fan_in)
    return state


def reference_forward(
    state: dict[str, torch.Tensor],
    x: torch.Tensor,
    bottleneck: bool,
    layers: tuple[int, ...],
    dilated: bool = False,
) -> torch.Tensor:
    """torchvision's ResNet forward (2D), or MedicalNet's (3D, ``dilated``), up to the pooled features or logits.

    MedicalNet: layer3 stride 1 dilation 2, layer4 stride 1 dilation 4, every 3×3 conv of those stages dilated with
    padding = dilation; shortcut A = ``avg_pool3d(kernel_size=1, stride)`` then zero channels appended.
    """
    dims = x.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(
            t, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"], state[f"{p}.bias"]
        )

    x = F.relu(bn(conv(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
    x = (F.max_pool2d if dims == 2 else F.max_pool3d)(x, kernel_size=3, stride=2, padding=1)
    for stage, depth in enumerate(layers):
        dilation = {2: 2, 3: 4}.get(stage, 1) if dilated else 1
        for index in range(depth):
            p = f"layer{stage + 1}.{index}"
            stride = 2 if index == 0 and stage > 0 and dilation == 1 else 1
            if bottleneck:
                out = F.relu(bn(conv(x, state[f"{p}.conv1.weight"]), f"{p}.bn1"))
                out = conv(out, state[f"{p}.conv2.weight"], stride=stride, padding=dilation, dilation=dilation)
                out = F.relu(bn(out, f"{p}.bn2"))
                out = bn(conv(out, state[f"{p}.conv3.weight"]), f"{p}.bn3")
            else:
                out = conv(x, state[f"{p}.conv1.weight"], stride=stride, padding=dilation, dilation=dilation)
                out = F.relu(bn(out, f"{p}.bn1"))
                out = conv(out, state[f"{p}.conv2.weight"], padding=dilation, dilation=dilation)
                out = bn(out, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in state:
                shortcut = bn(conv(x, state[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            elif out.shape != x.shape:  # shortcut A
                shortcut = (F.avg_pool2d if dims == 2 else F.avg_pool3d)(x, kernel_size=1, stride=stride)
                zeros = torch.zeros(x.shape[0], out.shape[1] - x.shape[1], *shortcut.shape[2:])
                shortcut = torch.cat([shortcut, zeros], dim=1)
            else:
                shortcut = x
            x = F.relu(out + shortcut)
    pooled = x.mean(dim=tuple(range(2, x.ndim)))
    return F.linear(pooled, state["fc.weight"], state["fc.bias"]) if "fc.weight" in state else pooled


def save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def model_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ---- torchvision layout ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ARCHS)
def test_torchvision_layout_loads_strictly(name: str, tmp_path: Path) -> None:
    bottleneck, layers = ARCHS[name]
    layout = reference_layout(bottleneck, layers)
    state = random_state(layout)
    model = create_model(name, spatial_dims=2, in_channels=3, num_classes=1000)
    assert model_shapes(model) == layout  # exactly torchvision's keys and shapes, nothing more

    report = load_pretrained(model, save(tmp_path / f"{name}.pth", state))
    # Key order is not part of the contract (load_state_dict matches by name): medres registers a block's shortcut
    # before its branch, torchvision after.
    assert report == LoadReport(source=str(tmp_path / f"{name}.pth"), layout="torchvision", loaded=report.loaded)
    assert sorted(report.loaded) == sorted(layout)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", ARCHS)
def test_torchvision_outputs_match_reference_forward(name: str, tmp_path: Path) -> None:
    bottleneck, layers = ARCHS[name]
    state = random_state(reference_layout(bottleneck, layers))
    model = create_model(name, spatial_dims=2, in_channels=3, num_classes=1000)
    load_pretrained(model, save(tmp_path / "w.pth", state), layout="torchvision")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference_forward(state, x, bottleneck, layers))


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module"])
def test_wrapped_and_old_checkpoints_load(wrap: str, tmp_path: Path) -> None:
    state = random_state(reference_layout(False, (2, 2, 2, 2)))
    # Files from PyTorch < 0.4.1 (the original torchvision ResNet weights) have no num_batches_tracked counters.
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if wrap == "module":  # saved from DataParallel: still torchvision's 2D layout, not MedicalNet's
        old = {f"module.{k}": v for k, v in old.items()}
    obj = old if wrap == "plain" else {wrap: old, "epoch": 3, "arch": "resnet18"}
    model = create_model("resnet18", spatial_dims=2, in_channels=3, num_classes=1000)
    report = load_pretrained(model, save(tmp_path / "w.pth", obj))
    assert report.layout == "torchvision"
    assert set(report.loaded) == {k.removeprefix("module.") for k in old}
    assert {k for k in state if k.endswith("num_batches_tracked")} == set(report.kept)
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


# ---- MedicalNet layout ----------------------------------------------------------------------------------------------


def medicalnet_checkpoint(path: Path, bottleneck: bool = False, layers: tuple[int, ...] = (2, 2, 2, 2)) -> Path:
    """A MedicalNet-style file: DataParallel keys, 3D, 1 channel, a conv_seg decoder, no fc, wrapped with an epoch."""
    state = random_state(
        reference_layout(bottleneck, layers, spatial_dims=3, in_channels=1, shortcut="A", num_classes=None)
    )
    features = 512 * (4 if bottleneck else 1)
    seg = {
        "conv_seg.0.weight": torch.randn(features, 32, 2, 2, 2),  # ConvTranspose3d(features, 32, 2, stride=2)
        "conv_seg.0.bias": torch.zeros(32),
        "conv_seg.1.weight": torch.ones(32),
        "conv_seg.1.bias": torch.zeros(32),
        "conv_seg.1.running_mean": torch.zeros(32),
        "conv_seg.1.running_var": torch.ones(32),
        "conv_seg.3.weight": torch.randn(32, 32, 3, 3, 3),
        "conv_seg.6.weight": torch.randn(2, 32, 1, 1, 1),
    }
    wrapped = {"state_dict": {f"module.{k}": v for k, v in {**state, **seg}.items()}, "epoch": 3}
    return save(path, wrapped)


@needs_dilation
def test_medicalnet_layout_loads_and_matches_reference_forward(tmp_path: Path) -> None:
    path = medicalnet_checkpoint(tmp_path / "resnet_18_23dataset.pth")
    state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}

    features = create_model("resnet18", spatial_dims=3, in_channels=1, num_classes=0, shortcut="A", dilated=True)
    report = load_pretrained(features, path)
    assert report.layout == "medicalnet"
    assert sorted(report.skipped) == sorted(k for k in state if k.startswith("conv_seg."))
    assert report.kept == []  # no head to keep: num_classes=0
    assert set(report.loaded) == set(features.state_dict())

    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        expected = reference_forward(state, x, bottleneck=False, layers=(2, 2, 2, 2), dilated=True)
        torch.testing.assert_close(features.eval()(x), expected)


@needs_dilation
def test_medicalnet_keeps_the_models_head(tmp_path: Path) -> None:
    path = medicalnet_checkpoint(tmp_path / "w.pth")
    model = create_model("resnet18", spatial_dims=3, in_channels=1, num_classes=2, shortcut="A", dilated=True)
    head = {k: v.clone() for k, v in model.fc.state_dict().items()}
    report = load_pretrained(model, path, layout="medicalnet")
    assert report.kept == ["fc.weight", "fc.bias"]
    assert not any(k.startswith("fc.") for k in report.loaded)
    for key, value in model.fc.state_dict().items():
        assert torch.equal(value, head[key])
    with pytest.raises(WeightsError, match=r"missing \[fc\.weight, fc\.bias\]"):
        load_pretrained(model, path, head="load")  # MedicalNet has no classification head to load


@needs_dilation
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"dilated": False}, r"dilated layer3/layer4: build the backbone with dilated=True"),
        ({"stem_stride": 1}, r"stem_stride=2"),
        ({"shortcut": "B"}, r"18 missing \[layer2\.0\.downsample\.0\.weight, .*shortcut='A'"),
    ],
    ids=["not-dilated", "stem-stride", "shortcut"],
)
def test_medicalnet_needs_the_training_setup(overrides: dict[str, object], match: str, tmp_path: Path) -> None:
    path = medicalnet_checkpoint(tmp_path / "w.pth", layers=(1, 1, 1, 1))  # resnet10: fast to build in 3D
    settings = {"shortcut": "A", "dilated": True, **overrides}
    model = create_model("resnet10", spatial_dims=3, in_channels=1, num_classes=0, **settings)
    with pytest.raises(WeightsError, match=match) as info:
        load_pretrained(model, path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_medicalnet_weights_need_a_3d_model(tmp_path: Path) -> None:
    path = save(tmp_path / "w.pth", {"state_dict": {"module.conv1.weight": torch.randn(64, 1, 7, 7, 7)}})
    model = create_model("resnet10", spatial_dims=2, in_channels=1, num_classes=0)
    with pytest.raises(WeightsError, match="spatial_dims=3"):
        load_pretrained(model, path)


# ---- errors ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def resnet18_state() -> dict[str, torch.Tensor]:
    return random_state(reference_layout(False, (2, 2, 2, 2)))


def test_missing_and_unexpected_keys_are_listed(resnet18_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    state = dict(resnet18_state)
    del state["layer3.1.conv2.weight"]
    state["layer5.0.conv1.weight"] = torch.randn(8, 8, 3, 3)
    state["layer1.0.bn1.bias"] = torch.zeros(65)
    model = create_model("resnet18", spatial_dims=2, in_channels=3, num_classes=1000)
    before = model.layer1[0].conv1.weight.clone()
    with pytest.raises(WeightsError) as info:
        load_pretrained(model, save(tmp_path / "w.pth", state))
    message = str(info.value)
    assert message.startswith(str(tmp_path / "w.pth"))
    assert "1 missing [layer3.1.conv2.weight]" in message
    assert "1 unexpected [layer5.0.conv1.weight]" in message
    assert "layer1.0.bn1.bias 65 vs model 64" in message
    assert torch.equal(model.layer1[0].conv1.weight, before)  # nothing was half-loaded


def test_long_key_lists_are_cut_with_a_count(tmp_path: Path) -> None:
    state = {f"extra.{i}.weight": torch.zeros(1) for i in range(25)}
    model = create_model("resnet10", spatial_dims=2, in_channels=3, num_classes=0)
    with pytest.raises(WeightsError, match=r"25 unexpected \[extra\.0\.weight, .*, \.\.\. 15 more\]"):
        load_pretrained(model, save(tmp_path / "w.pth", state))


@pytest.mark.parametrize("url", ["https://download.pytorch.org/models/resnet18-f37072fd.pth", "s3://bucket/w.pth"])
def test_urls_are_refused(url: str) -> None:
    model = create_model("resnet10", spatial_dims=2, in_channels=3, num_classes=0)
    with pytest.raises(WeightsError, match="local files only"):
        load_pretrained(model, url)
    with pytest.raises(WeightsError, match="local files only"):
        read_state_dict(Path(url))  # Path collapses "//"; still a URL


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(WeightsError, match=str(path)):
        read_state_dict(path)


def test_files_that_would_unpickle_code_are_refused(tmp_path: Path) -> None:
    path = save(tmp_path / "w.pth", {"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)})
    with pytest.raises(WeightsError, match=r"weights_only=True .*argparse\.Namespace"):
        read_state_dict(path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(WeightsError, match="junk.pth"):
        read_state_dict(tmp_path / "junk.pth")


def test_torchvision_weights_into_a_3d_model(resnet18_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    model = create_model("resnet18", spatial_dims=3, in_channels=3, num_classes=1000)
    path = save(tmp_path / "w.pth", resnet18_state)
    with pytest.raises(WeightsError, match="torchvision weights are 2D and the model is 3D.*spatial_dims=2"):
        load_pretrained(model, path)
    # Whatever the declared layout, a 4-D first convolution does not go into a 5-D one.
    with pytest.raises(WeightsError, match=r"conv1\.weight is 4-D \(2D weights\) but the model's is 5-D"):
        load_pretrained(model, path, layout="medres")


# ---- first-convolution channels -------------------------------------------------------------------------------------


def test_rgb_weights_into_a_grey_model(resnet18_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = save(tmp_path / "w.pth", resnet18_state)
    grey = create_model("resnet18", spatial_dims=2, in_channels=1, num_classes=1000)
    rgb = create_model("resnet18", spatial_dims=2, in_channels=3, num_classes=1000)
    report = load_pretrained(grey, path)
    load_pretrained(rgb, path)
    assert report.adapted == ["conv1.weight: 3 → 1 input channels (summed)"]
    torch.testing.assert_close(grey.conv1.weight, resnet18_state["conv1.weight"].sum(dim=1, keepdim=True))
    # Summing is what makes a grey image give the RGB network's response to that image repeated in 3 channels.
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        # Equal up to float rounding: the sum over channels happens before the convolution instead of inside it.
        torch.testing.assert_close(grey.eval()(x), rgb.eval()(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels", [3, 4])
def test_grey_weights_into_a_multichannel_model(channels: int, tmp_path: Path) -> None:
    state = random_state(reference_layout(False, (1, 1, 1, 1), in_channels=1, num_classes=None))
    model = create_model("resnet10", spatial_dims=2, in_channels=channels, num_classes=0)
    report = load_pretrained(model, save(tmp_path / "w.pth", state), layout="medres")
    assert report.adapted == [f"conv1.weight: 1 → {channels} input channels (repeated, scaled by 1/{channels})"]
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].repeat(1, channels, 1, 1) / channels)


def test_rgb_weights_into_a_four_channel_model(tmp_path: Path) -> None:
    state = random_state(reference_layout(False, (1, 1, 1, 1), num_classes=None))
    model = create_model("resnet10", spatial_dims=2, in_channels=4, num_classes=0)
    report = load_pretrained(model, save(tmp_path / "w.pth", state))
    assert report.adapted == ["conv1.weight: 3 → 4 input channels (repeated, scaled by 3/4)"]
    expected = state["conv1.weight"].repeat(1, 2, 1, 1)[:, :4] * 0.75
    torch.testing.assert_close(model.conv1.weight, expected)


def test_other_channel_counts_do_not_adapt(tmp_path: Path) -> None:
    state = random_state(reference_layout(False, (1, 1, 1, 1), in_channels=2, num_classes=None))
    model = create_model("resnet10", spatial_dims=2, in_channels=3, num_classes=0)
    with pytest.raises(WeightsError, match=r"conv1\.weight has 2 input channels and the model 3"):
        load_pretrained(model, save(tmp_path / "w.pth", state))


# ---- head -----------------------------------------------------------------------------------------------------------


def test_head_auto_keeps_a_head_that_does_not_fit(resnet18_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = save(tmp_path / "w.pth", resnet18_state)
    model = create_model("resnet18", spatial_dims=2, in_channels=3, num_classes=4)
    head = {k: v.clone() for k, v in model.fc.state_dict().items()}
    report = load_pretrained(model, path)
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert report.kept == ["fc.weight", "fc.bias"]
    assert torch.equal(model.fc.weight, head["weight"])
    assert torch.equal(model.fc.bias, head["bias"])
    assert torch.equal(model.conv1.weight, resnet18_state["conv1.weight"])
    with pytest.raises(WeightsError, match=r"head \(fc\.weight 1000×512, fc\.bias 1000\) does not fit"):
        load_pretrained(model, path, head="load")


def test_head_skip_keeps_even_a_fitting_head(resnet18_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    model = create_model("resnet18", spatial_dims=2, in_channels=3, num_classes=1000)
    head = model.fc.weight.clone()
    report = load_pretrained(model, save(tmp_path / "w.pth", resnet18_state), head="skip")
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert torch.equal(model.fc.weight, head)


def test_headless_model_skips_the_head(resnet18_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    model = create_model("resnet18", spatial_dims=2, in_channels=3, num_classes=0)
    report = load_pretrained(model, save(tmp_path / "w.pth", resnet18_state), head="load")
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert report.kept == []


def test_load_is_logged(
    resnet18_state: dict[str, torch.Tensor], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = create_model("resnet18", spatial_dims=2, in_channels=3, num_classes=1000)
    with caplog.at_level(logging.INFO, logger="medres.models.weights"):
        load_pretrained(model, save(tmp_path / "w.pth", resnet18_state))
    assert [r.getMessage() for r in caplog.records if "Loaded 122 tensors" in r.getMessage()]


# ---- medres's own formats -------------------------------------------------------------------------------------------


def test_package_folder_round_trip(tmp_path: Path) -> None:
    source = create_model("resnet18", spatial_dims=2, in_channels=1, num_classes=2)
    package = ModelPackage(
        backbone="resnet18",
        backbone_args={},
        findings=["effusion", "nodule"],
        preprocessing=Preprocessing(spatial_size=(64, 64)),
        thresholds=[0.5, 0.5],
        state_dict=source.state_dict(),
    )
    folder = package.save(tmp_path / "package")
    read = read_state_dict(folder)
    assert read.keys() == source.state_dict().keys()
    assert all(torch.equal(read[k], v) for k, v in source.state_dict().items())

    target = create_model("resnet18", spatial_dims=2, in_channels=1, num_classes=2)
    report = load_pretrained(target, folder)
    assert report.layout == "medres"
    assert report.loaded == list(source.state_dict())
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())

    (folder / "weights.safetensors").unlink()
    with pytest.raises(WeightsError, match="not a medres model package"):
        read_state_dict(folder)


def test_safetensors_round_trip(resnet18_state: dict[str, torch.Tensor], tmp_path: Path) -> None:
    save_file(resnet18_state, tmp_path / "w.safetensors")
    read = read_state_dict(tmp_path / "w.safetensors")
    assert read.keys() == resnet18_state.keys()
    assert all(torch.equal(read[k], v) for k, v in resnet18_state.items())
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match="bad.safetensors"):
        read_state_dict(tmp_path / "bad.safetensors")


def test_lightning_checkpoint_gives_the_backbone(tmp_path: Path) -> None:
    source = create_model("resnet10", spatial_dims=2, in_channels=1, num_classes=3)
    module_state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    module_state["criterion.pos_weight"] = torch.ones(3)  # a loss buffer: not the backbone's
    checkpoint = {"state_dict": module_state, "medres": {"backbone": "resnet10"}, "epoch": 4}
    path = save(tmp_path / "last.ckpt", checkpoint)
    assert read_state_dict(path).keys() == source.state_dict().keys()

    target = create_model("resnet10", spatial_dims=2, in_channels=1, num_classes=3)
    report = load_pretrained(target, path)
    assert report.layout == "medres"
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())
