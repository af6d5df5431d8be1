import pytest
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
    assert list_models("resnet1*") == ["resnet101", "resnet152", "resnet18"]
    assert list_models("resnet?0") == ["resnet50"]
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
    with pytest.raises(ValueError, match="available: resnet101, resnet152") as info:
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
