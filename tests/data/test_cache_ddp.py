"""Acceptance: a 2-process DDP CPU fit (gloo) from the disk cache trains, logs one run, writes each entry once."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from medres.data.cache import TensorCache
from medres.data.datamodule import DicomDataModule
from medres.data.transforms import Preprocessing

from ..test_end_to_end import fit, the_run

pytestmark = pytest.mark.slow

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]


def test_ddp_fit_from_the_disk_cache_writes_every_entry_once(tiny_archive: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cache_dir = tmp_path / "tensor_cache"
    result = fit(
        tiny_archive,
        tmp_path,
        env={"MLFLOW_TRACKING_URI": uri},
        extra=[
            *("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"),
            *("--data.cache", "disk", "--data.cache_dir", str(cache_dir), "--register.enabled", "false"),
        ],
    )
    run = the_run(MlflowClient(uri))  # asserts a single run
    assert run.info.status == "FINISHED"
    assert run.data.tags["medres.world_size"] == "2"
    assert run.data.params["data.cache"] == "disk"
    assert 0.0 <= run.data.metrics["test/auroc_macro"] <= 1.0

    # Every labelled sample of every split has exactly one entry, written exactly once (by prepare_data on
    # rank 0; both ranks then only read, through two epochs of training, validation and the test).
    work_dir = next((tmp_path / "medres_work").glob("*/manifest.parquet")).parent
    preprocessing = Preprocessing(spatial_size=(32, 32))
    dm = DicomDataModule(tiny_archive, FINDINGS, work_dir=work_dir, preprocessing=preprocessing, num_workers=0)
    dm.setup("fit")
    samples = [s for split in ("train", "val", "test") for s in dm.samples[split]]
    cache = TensorCache(cache_dir, preprocessing)
    keys = {cache.key(s["image"]) for s in samples}
    assert {p.stem for p in cache.entries()} == keys
    assert cache.write_counts() == dict.fromkeys(keys, 1)
    assert f"{len(keys)} samples ×" in result.stderr  # the size estimate, printed before the fill
