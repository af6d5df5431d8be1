"""Scoring with the decode policy (issue 19): the package's policy is the one applied, files land once either way."""

from __future__ import annotations

import pandas as pd
import pydicom
import pytest
import torch
from pydicom.uid import JPEG2000Lossless

from medres.data.transforms import IMAGE_KEY, Preprocessing, eval_transforms
from medres.package import CHECKPOINT_KEY, ModelPackage
from medres.scoring import score_archive
from medres.tasks.detection import MultiLabelDetection

from ..conftest import add_broken_files, dicom_files

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
SIZE = (16, 16)  # the tiny archive's images are about 64 px: JPEG 2000 ones decode at level 1 (≥ 1.5 × 16)


def _checkpoint(tmp_path, decode: str | None):
    """A checkpoint whose contract says ``decode`` (``None``: a package written before the setting existed)."""
    torch.manual_seed(0)
    module = MultiLabelDetection(FINDINGS, Preprocessing(spatial_size=SIZE), backbone="resnet10").eval()
    contract = module.to_package().contract()
    if decode is None:
        del contract["preprocessing"]["decode"]
    else:
        contract["preprocessing"]["decode"] = decode
    path = tmp_path / f"model-{decode}.ckpt"
    torch.save({"state_dict": module.state_dict(), CHECKPOINT_KEY: contract}, path)
    return path, module


def _j2k_files(root):
    return [
        p
        for p in dicom_files(root)
        if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEG2000Lossless
    ]


def _expected(module, files, decode: str) -> torch.Tensor:
    transform = eval_transforms(Preprocessing(spatial_size=SIZE, decode=decode))
    with torch.no_grad():
        return torch.sigmoid(module(torch.stack([transform({IMAGE_KEY: str(p)})[IMAGE_KEY] for p in files])))


@pytest.mark.slow
@pytest.mark.parametrize("decode", ["full", "reduced"])
def test_every_file_lands_exactly_once_in_both_modes(decode, archive_copy, tmp_path):
    path, _ = _checkpoint(tmp_path, decode)
    readable = len(dicom_files(archive_copy))
    add_broken_files(archive_copy)
    output = tmp_path / "preds.parquet"
    summary = score_archive(str(path), archive_copy, output, batch_size=8, num_workers=0, progress=False)
    predictions = pd.read_parquet(output)
    errors = pd.read_parquet(tmp_path / "preds.errors.parquet")
    all_files = {p.relative_to(archive_copy).as_posix() for p in archive_copy.rglob("*") if p.is_file()}
    assert set(predictions["path"]).isdisjoint(errors["path"])
    assert set(predictions["path"]) | set(errors["path"]) == all_files
    assert len(predictions) + len(errors) == len(all_files)
    assert summary.error_kinds == {"not_dicom": 2, "truncated": 1}  # the junk file, labels.csv, the cut DICOM
    assert len(predictions) == readable


@pytest.mark.slow
@pytest.mark.parametrize("decode", [None, "full", "reduced"])
def test_scoring_applies_the_packages_decode_policy(decode, tiny_archive, tmp_path):
    """A model trained ``full`` (or packaged before the setting) scores ``full``; one trained ``reduced`` scores so."""
    path, module = _checkpoint(tmp_path, decode)
    applied = decode or "full"
    assert ModelPackage.from_checkpoint(path).preprocessing.decode == applied
    files = _j2k_files(tiny_archive)[:6]
    assert files, "the tiny archive has JPEG 2000 files"
    output = tmp_path / "preds.parquet"
    score_archive(str(path), tiny_archive, output, batch_size=8, num_workers=0, progress=False)
    scored = pd.read_parquet(output).set_index("path")
    got = torch.tensor(
        [[scored.loc[p.relative_to(tiny_archive).as_posix(), f"prob_{f}"] for f in FINDINGS] for p in files]
    )
    wanted, other = (
        _expected(module, files, applied),
        _expected(module, files, "full" if applied == "reduced" else "reduced"),
    )
    assert torch.allclose(got, wanted, atol=1e-5)
    assert (got - other).abs().max() > 1e-4  # the two policies differ on these files, so this test can tell them apart
