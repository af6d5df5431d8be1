import math

import pytest
import torch

from medres.data.transforms import Preprocessing
from medres.package import ModelPackage
from medres.tasks.detection import MaskedMultilabelAUROC, MultiLabelDetection

FINDINGS = ["a", "b", "c"]
PRE = Preprocessing(spatial_size=(32, 32))


def tiny_module(**kwargs):
    return MultiLabelDetection(FINDINGS, PRE, backbone="resnet18", **kwargs)


def test_forward_shape_and_training_step_loss_is_finite():
    module = tiny_module()
    batch = {"image": torch.randn(4, 1, 32, 32), "label": torch.tensor([[1, 0, float("nan")], [0, -1, 1]] * 2)}
    assert module(batch["image"]).shape == (4, 3)
    loss = module._shared_step(batch)[0]
    assert torch.isfinite(loss) and loss.item() > 0


def test_auroc_is_nan_for_a_finding_with_one_class_and_exact_otherwise():
    metric = MaskedMultilabelAUROC(num_labels=2, average=None, ignore_index=-1)
    preds = torch.tensor([[0.9, 0.2], [0.1, 0.3], [0.8, 0.6], [0.3, 0.1]])
    target = torch.tensor([[1, 0], [0, 0], [1, 0], [0, -1]])
    metric.update(preds, target)
    values = metric.compute()
    assert values[0].item() == pytest.approx(1.0)
    assert math.isnan(values[1].item())


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match="model.findings"):
        MultiLabelDetection([], PRE, backbone="resnet18")
    with pytest.raises(ValueError, match="model.thresholds"):
        tiny_module(thresholds=[0.5])
    with pytest.raises(ValueError, match="model.pos_weight"):
        tiny_module(pos_weight=[1.0])


def test_package_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    module = tiny_module(thresholds=[0.3, 0.5, 0.7]).eval()
    package = module.to_package(training_config="model: {}\n")
    loaded = ModelPackage.load(package.save(tmp_path / "pkg"))
    assert loaded.findings == FINDINGS and loaded.thresholds == [0.3, 0.5, 0.7]
    assert loaded.preprocessing == PRE and loaded.training_config == "model: {}\n"
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(module(x), loaded.build_model()(x))


def test_checkpoint_hyperparameters_are_plain_values():
    module = tiny_module()
    # weights_only loading needs every hparam to be a plain Python value, not a dataclass or callable.
    for value in module.hparams.values():
        assert isinstance(value, (str, int, float, list, dict, type(None)))
