import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medres.data.datamodule import DicomDataModule
from medres.data.transforms import Augmentation2D, Preprocessing

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]


def make_dm(root, work_dir, **kwargs):
    settings = {
        "findings": FINDINGS,
        "work_dir": work_dir,
        "preprocessing": Preprocessing(spatial_size=(32, 32)),
        "augmentation": Augmentation2D(),
        "batch_size": 4,
        "num_workers": 0,
        **kwargs,
    }
    return DicomDataModule(root, **settings)


def test_prepare_and_setup_split_by_patient(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path / "work")
    dm.prepare_data()
    dm.setup("fit")
    manifest = pd.read_parquet(dm.manifest_path)
    splits = pd.read_csv(dm.splits_path)
    assert set(splits["split"]) == {"train", "val", "test"}
    assert splits["patient_key"].is_unique
    by_sop = manifest.set_index("SOPInstanceUID")["patient_key"]
    patients = {s: {by_sop[r["SOPInstanceUID"]] for r in dm.samples[s]} for s in ("train", "val", "test")}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    n_samples = sum(len(v) for v in dm.samples.values())
    assert n_samples == len(manifest)  # every labelled instance is in exactly one split


def test_batches_have_images_and_raw_labels(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path / "work")
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, 4)
    labels = pd.read_csv(tiny_archive / "labels.csv").set_index("StudyInstanceUID")
    for study, label in zip(batch["StudyInstanceUID"], batch["label"], strict=True):
        expected = labels.loc[study, FINDINGS].to_numpy(dtype="float32")
        np.testing.assert_array_equal(np.isnan(expected), torch.isnan(label).numpy())
        np.testing.assert_array_equal(np.nan_to_num(expected, nan=7), torch.nan_to_num(label, nan=7).numpy())
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[1:] == (1, 32, 32)


def test_split_file_is_reused_and_a_changed_seed_refused(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path / "work")
    dm.prepare_data()
    first = dm.splits_path.read_text()
    dm.prepare_data()
    assert dm.splits_path.read_text() == first
    other = make_dm(tiny_archive, tmp_path / "work", split_seed=1)
    with pytest.raises(ValueError, match="seed"):
        other.prepare_data()


def test_archive_change_triggers_reindex(tiny_archive, tmp_path):
    root = tmp_path / "cxr"
    shutil.copytree(tiny_archive, root)
    dm = make_dm(root, tmp_path / "work")
    dm.prepare_data()
    before = len(pd.read_parquet(dm.manifest_path))
    (root / "junk.txt").write_text("not an image")
    victim = next(root.rglob("*.dcm"))
    victim.unlink()
    dm.prepare_data()
    assert len(pd.read_parquet(dm.manifest_path)) == before - 1
    errors = pd.read_parquet(dm.work_dir / "index_errors.parquet")
    assert "junk.txt" in set(errors["path"])


def test_missing_root_or_labels_names_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        make_dm(tmp_path / "nope", tmp_path / "w").prepare_data()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="data.labels"):
        make_dm(tmp_path / "empty", tmp_path / "w").prepare_data()


def test_bad_arguments_name_the_setting(tmp_path):
    with pytest.raises(ValueError, match="data.findings"):
        DicomDataModule(tmp_path, findings=[])
    with pytest.raises(ValueError, match="data.batch_size"):
        DicomDataModule(tmp_path, findings=["a"], batch_size=0)


def test_unknown_labels_stay_nan_not_zero(tiny_archive, tmp_path):
    dm = make_dm(tiny_archive, tmp_path / "work")
    dm.prepare_data()
    dm.setup("fit")
    all_labels = np.stack([r["label"] for split in dm.samples.values() for r in split])
    assert np.isnan(all_labels).any() or not pd.read_csv(tiny_archive / "labels.csv")[FINDINGS].isna().any().any()
    assert set(np.unique(all_labels[~np.isnan(all_labels)])) <= {-1.0, 0.0, 1.0}
    assert not math.isnan(float(np.nanmax(all_labels)))


# ---- 3D: a sample is a series -------------------------------------------------------------------
CT_FINDINGS = ["mass", "effusion"]
CT_PRE = Preprocessing(
    spatial_dims=3, spatial_size=(16, 16, 16), intensity_window=(-1000.0, 400.0), target_spacing=(16.0, 16.0, 16.0)
)


@pytest.fixture(scope="module")
def ct_archive(tmp_path_factory):
    from medres.synthetic import synth_ct

    return synth_ct(tmp_path_factory.mktemp("ct") / "ct", patients=12, seed=4, slices=16, size=24).root


def make_ct_dm(root, work_dir, **kwargs):
    from medres.data.selection import SeriesSelection
    from medres.data.transforms import Augmentation3D

    settings = {
        "findings": CT_FINDINGS,
        "work_dir": work_dir,
        "preprocessing": CT_PRE,
        "augmentation": Augmentation3D(),
        "selection": SeriesSelection(modalities=("CT",), orientation="axial", min_slices=4, prefer="thinnest"),
        "batch_size": 2,
        "num_workers": 0,
        **kwargs,
    }
    return DicomDataModule(root, **settings)


def test_3d_samples_are_series_and_every_file_is_accounted_for(ct_archive, tmp_path):
    import pydicom

    dm = make_ct_dm(ct_archive, tmp_path / "work")
    dm.prepare_data()
    dm.setup("fit")
    samples = [s for split in dm.samples.values() for s in split]
    labels = pd.read_csv(ct_archive / "labels.csv")
    assert len(samples) == len(labels)  # prefer=thinnest: one series per study
    used: set[str] = set()
    for sample in samples:
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sample["image"]]
        assert {h.SeriesInstanceUID for h in headers} == {sample["SeriesInstanceUID"]}
        assert all("LOCALIZER" not in h.ImageType for h in headers)  # a mixed-in scout is dropped
        assert sample["path"] == Path(sample["image"][0]).relative_to(ct_archive).as_posix()
        assert sample["n_instances"] == len(sample["image"])
        used |= {Path(p).relative_to(ct_archive).as_posix() for p in sample["image"]}
    # Nothing silently dropped: each indexed file is a sample's slice or a rejected row with a reason.
    manifest = pd.read_parquet(dm.manifest_path)
    rejected = pd.read_parquet(dm.rejected_path)
    assert set(rejected["path"]).isdisjoint(used)
    assert set(rejected["path"]) | used == set(manifest["path"])
    assert rejected["message"].str.len().gt(0).all()
    assert set(rejected["kind"]) == {"not_selected"}  # the same kinds as scoring's ledger
    assert rejected["message"].str.contains("prefer=thinnest").any()  # thicker reconstructions lose
    assert rejected["message"].str.contains("localizer_dropped").any()  # a scout inside a kept series


def test_3d_batches_and_patient_split(ct_archive, tmp_path):
    dm = make_ct_dm(ct_archive, tmp_path / "work", cache=True)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 2) and batch["SOPInstanceUID"] == ["", ""]
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[1:] == (1, 16, 16, 16) and val["image"].min() >= 0 and val["image"].max() <= 1
    splits = pd.read_csv(dm.splits_path).set_index("patient_key")["split"]
    manifest = pd.read_parquet(dm.manifest_path).set_index("SeriesInstanceUID")["patient_key"]
    for split, samples in dm.samples.items():
        for sample in samples:
            key = manifest.loc[sample["SeriesInstanceUID"]]
            key = key.iloc[0] if isinstance(key, pd.Series) else key
            assert splits[key] == split


def test_3d_needs_3d_augmentation(ct_archive, tmp_path):
    with pytest.raises(ValueError, match="Augmentation3D"):
        make_ct_dm(ct_archive, tmp_path / "work", augmentation=Augmentation2D())
