"""pos_weight "auto" from the train split's counts, logged to the run; channels_last gives the same outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from mlflow import MlflowClient

from medres.data.datamodule import DicomDataModule
from medres.data.transforms import Preprocessing
from medres.tasks.callbacks.mlflow_logger import MLflowLogger
from medres.tasks.detection import POS_WEIGHT_TAG, MultiLabelDetection, auto_pos_weight

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]


def datamodule(archive: Path, work: Path) -> DicomDataModule:
    return DicomDataModule(
        archive,
        FINDINGS,
        work_dir=work,
        preprocessing=Preprocessing(spatial_size=(32, 32)),
        batch_size=8,
        num_workers=0,
    )


def test_auto_pos_weight_is_negatives_over_positives_on_train(tiny_archive: Path, tmp_path: Path) -> None:
    data = datamodule(tiny_archive, tmp_path / "work")
    data.prepare_data()
    data.setup("fit")
    counts = data.summary().counts["train"]
    weights = auto_pos_weight(data.summary(), FINDINGS)
    for finding, weight in zip(FINDINGS, weights, strict=True):
        c = counts[finding]
        assert weight == (c.negative / c.positive if c.positive else 1.0)
    assert any(w != 1.0 for w in weights)


def test_fit_with_auto_pos_weight_uses_and_logs_the_train_counts(tiny_archive: Path, tmp_path: Path) -> None:
    data = datamodule(tiny_archive, tmp_path / "work")
    model = MultiLabelDetection(
        FINDINGS, preprocessing=data.preprocessing, backbone="resnet20", pos_weight="auto", channels_last=True
    )
    assert model.pos_weight is not None and model.pos_weight.tolist() == [1.0] * 4
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger(experiment_name="imbalance", tracking_uri=uri, log_model=False)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    expected = auto_pos_weight(data.summary(), FINDINGS)
    assert model.pos_weight.tolist() == pytest.approx(expected)
    tag = MlflowClient(uri).get_run(logger.run_id).data.tags[POS_WEIGHT_TAG]
    assert tag == ", ".join(f"{f}={w:.4g}" for f, w in zip(FINDINGS, expected, strict=True))
    # channels_last=True: configure_model moved every convolution's weights to NHWC
    convolutions = [p for p in model.backbone.parameters() if p.ndim == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    # the chosen weights travel with the checkpoint, so a resumed fit keeps them
    assert torch.equal(model.state_dict()["pos_weight"], torch.tensor(expected, dtype=torch.float32))


def test_pos_weight_must_be_per_finding_or_auto() -> None:
    with pytest.raises(ValueError, match="model.pos_weight has 2 values for 4 findings"):
        MultiLabelDetection(FINDINGS, backbone="resnet20", pos_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="model.pos_weight='balanced'"):
        MultiLabelDetection(FINDINGS, backbone="resnet20", pos_weight="balanced")  # type: ignore[arg-type]


def test_channels_last_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    plain = MultiLabelDetection(FINDINGS, backbone="resnet20").eval()
    fast = MultiLabelDetection(FINDINGS, backbone="resnet20", channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    fast.backbone.to(memory_format=torch.channels_last)
    images = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(images), plain(images), atol=1e-5, rtol=1e-5)
