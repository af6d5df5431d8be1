"""Shared fixtures: tiny synthetic archives written once per session, helpers to break files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
import torch

from medres.data.synthetic import synth_chest_xray

# Tests run offline and must never phone home.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

IDENTIFYING_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic chest X-ray archive (read-only by convention: copy it before changing it)."""
    root = tmp_path_factory.mktemp("archives") / "cxr"
    synth_chest_xray(root, patients=12, seed=0, image_size=64)
    return root


@pytest.fixture
def archive_copy(tiny_archive: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny archive that a test may add broken files to."""
    root = tmp_path / "cxr"
    shutil.copytree(tiny_archive, root)
    return root


def dicom_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dcm"))


def identifying_values(root: Path) -> set[str]:
    """Every patient-identifying value written into the archive's DICOM headers."""
    values: set[str] = set()
    for path in dicom_files(root):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for tag in IDENTIFYING_TAGS:
            value = str(ds.get(tag, "") or "").strip()
            if value:
                values.add(value)
    return values


def add_broken_files(root: Path) -> tuple[Path, Path]:
    """Drop a junk file and a DICOM cut in half into ``root``; returns their paths."""
    source = dicom_files(root)[0].read_bytes()
    junk = root / "junk.dcm"
    junk.write_bytes(b"this is not a DICOM file\n" * 40)
    truncated = root / "patient_9999" / "truncated.dcm"
    truncated.parent.mkdir()
    truncated.write_bytes(source[: len(source) // 2])
    return junk, truncated
