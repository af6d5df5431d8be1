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


def test_backbone_with_the_wrong_output_size_is_named():
    backbone = {"class_path": "monai.networks.nets.DenseNet121", "init_args": {"out_channels": 7}}
    module = MultiLabelDetection(FINDINGS, PRE, backbone=backbone)
    with pytest.raises(ValueError, match=r"expected \(N, 3\)"):
        module(torch.randn(2, 1, 32, 32))


def test_pretrained_initialises_the_backbone_but_keeps_the_head_sized_to_the_findings(tmp_path):
    source = MultiLabelDetection(["x", "y", "z", "w"], PRE, backbone="resnet18")
    directory = source.to_package().save(tmp_path / "pkg")
    module = tiny_module(pretrained=str(directory))  # 3 findings: the 4-output head does not fit and is not loaded
    for key, value in source.backbone.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(module.backbone.state_dict()[key], value), key
    assert module.backbone.fc.out_features == 3
    assert "pretrained" not in module.to_package().contract()  # scoring never reads the initialisation file


def test_missing_pretrained_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="nowhere.pth"):
        tiny_module(pretrained=str(tmp_path / "nowhere.pth"))


def _batches(n: int = 16, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n, len(FINDINGS)), generator=generator).float()
    labels[0, 2] = float("nan")  # an unknown label is left out of the thresholds too
    images = torch.randn(n, 1, 32, 32, generator=generator) + labels[:, :1, None, None]
    return [{"image": images[i], "label": labels[i], "sample_index": i} for i in range(n)]


def test_validation_chooses_thresholds_by_the_rule_and_checkpoints_carry_them(tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    from medres.evaluation.thresholds import ThresholdRule, choose_thresholds
    from medres.package import CHECKPOINT_KEY

    torch.manual_seed(0)
    rule = ThresholdRule(method="specificity", target=0.75)
    module = tiny_module(threshold_rule=rule)
    data = _batches()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="epoch{epoch}", save_top_k=-1)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, callbacks=[checkpoint], enable_progress_bar=False
    )
    trainer.fit(module, DataLoader(data, batch_size=8), DataLoader(data, batch_size=5))

    module.eval()
    with torch.no_grad():
        probs = torch.sigmoid(module(torch.stack([d["image"] for d in data]))).numpy()
    targets = torch.stack([d["label"] for d in data]).numpy()
    expected = choose_thresholds(probs, targets, rule)
    assert module.thresholds == pytest.approx([p.threshold for p in expected])
    for point in expected:
        assert point.specificity >= 0.75 or point.note
    saved = torch.load(next(tmp_path.glob("*.ckpt")), map_location="cpu", weights_only=True)
    assert saved[CHECKPOINT_KEY]["thresholds"] == pytest.approx(module.thresholds)

    fresh = tiny_module()
    assert fresh.thresholds == [0.5] * 3
    fresh.on_load_checkpoint(saved)
    assert fresh.thresholds == pytest.approx(module.thresholds)
    assert [p.sensitivity for p in fresh.operating_points] == pytest.approx([p.sensitivity for p in expected])


def test_fixed_thresholds_are_kept():
    module = tiny_module(thresholds=[0.2, 0.3, 0.4])
    assert module.to_package().thresholds == [0.2, 0.3, 0.4]
    assert module.fixed_thresholds
