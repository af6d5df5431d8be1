import pytest
import torch
from torch import nn

from medres.models import ResNet, create_model, is_model, list_models, register_model, registry


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register test models into a copy, so they never leak into other tests."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))


def test_list_models_is_sorted_and_complete() -> None:
    names = list_models()
    assert names == sorted(names)
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"} <= set(names)


def test_list_models_pattern() -> None:
    assert list_models("resnet1*") == ["resnet10", "resnet101", "resnet110", "resnet1202", "resnet152", "resnet18"]
    assert list_models("resnet?0") == ["resnet10", "resnet20", "resnet50"]
    assert list_models("preact_*") == [
        "preact_resnet1001",
        "preact_resnet101",
        "preact_resnet152",
        "preact_resnet164",
        "preact_resnet18",
        "preact_resnet200",
        "preact_resnet34",
        "preact_resnet50",
    ]
    assert list_models("vit*") == []


def test_is_model() -> None:
    assert is_model("resnet50")
    assert not is_model("resnet51")


def test_create_model_passes_kwargs() -> None:
    model = create_model("resnet18", in_channels=1, num_classes=5)
    assert isinstance(model, ResNet)
    assert model.fc.out_features == 5
    assert model.conv1.in_channels == 1


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(ValueError, match="resnet50") as info:
        create_model("resnt50")
    message = str(info.value)
    assert "'resnt50'" in message
    assert "\n" not in message


def test_unknown_name_without_close_match_lists_models() -> None:
    with pytest.raises(ValueError, match="available: plain1001, plain110, ") as info:
        create_model("xyz")
    assert "\n" not in str(info.value)


@pytest.mark.usefixtures("scratch_registry")
def test_register_new_model() -> None:
    def tiny_net(width: int = 4) -> nn.Module:
        return nn.Linear(width, width)

    assert register_model(tiny_net) is tiny_net
    assert is_model("tiny_net")
    assert "tiny_net" in list_models("tiny*")
    model = create_model("tiny_net", width=3)
    assert isinstance(model, nn.Linear)
    assert model.in_features == 3


@pytest.mark.usefixtures("scratch_registry")
def test_duplicate_registration_raises() -> None:
    def resnet18() -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet18)
    assert isinstance(create_model("resnet18"), ResNet)  # the original is untouched


def test_create_backbone_by_name_applies_sizing_and_overrides() -> None:
    model = registry.create_backbone("resnet20", 2, 1, 4, overrides={"shortcut": "B"})
    assert isinstance(model, ResNet)
    assert model.fc.out_features == 4 and model.conv1.in_channels == 1 and model.shortcut == "B"


def test_create_backbone_by_class_path_fills_what_the_config_leaves_out() -> None:
    spec = {"class_path": "monai.networks.nets.DenseNet121", "init_args": {"dropout_prob": 0.1}}
    model = registry.create_backbone(spec, spatial_dims=2, in_channels=1, num_classes=3)
    assert type(model).__name__ == "DenseNet121"
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)  # out_channels and in_channels filled
    # MONAI's ResNet spells the input channels n_input_channels; the config's own values win.
    spec = {
        "class_path": "monai.networks.nets.ResNet",
        "init_args": {"block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64], "num_classes": 5},
    }
    model = registry.create_backbone(spec, spatial_dims=3, in_channels=2, num_classes=3)
    assert model.conv1.in_channels == 2 and model.fc.out_features == 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"class_path": "torch.nn.Linear", "init_args": {"in_features": 2, "out_features": 2, "bias_": 1}},
            "unexpected",
        ),
        ({"class_path": "os.system"}, "not a torch.nn.Module class"),
        ({"class_path": "no_such_package.Net"}, "does not import"),
        ({"class_path": "Net"}, "dotted import path"),
        ({"class_path": "monai.networks.nets.DenseNet121", "init_argz": {}}, "registered name or"),
        ({"class_path": "monai.networks.nets.DenseNet121", "init_args": {"pretrained": True}}, "download"),
        ({"class_path": "monai.networks.nets.resnet18"}, "not a torch.nn.Module class"),  # a factory function
    ],
)
def test_create_backbone_refuses_bad_specs(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        registry.create_backbone(spec, spatial_dims=2, in_channels=1, num_classes=3)
