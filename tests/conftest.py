"""Shared fixtures: tiny synthetic archives written once per session, helpers to break files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import torch

from medres.synthetic import synth_chest_xray

from .mlflow_server import mlflow_server  # noqa: F401  (a fixture for every test that needs a real server)

# Tests run offline and must never phone home.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

# Two CPU fits with the same seed and `deterministic: true` agree to the last bit on almost every run, but not on
# every one: a CI run on record gave val/loss 0.7027343 against 0.7027362 (2.7e-6 relative) for the same seed, data
# and machine; fp32 BLAS (MKL) may block and thread a reduction differently from run to run. A different seed or data
# order moves these metrics by 1e-2 or more, so this tolerance still tells "same run" from "different run".
RUN_TO_RUN = {"rel": 1e-4, "abs": 1e-6}

IDENTIFYING_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    # planted by `planted_archive`: places a pipeline might copy from without thinking of them as identifying
    "OtherPatientIDs",
    "PatientAddress",
    "ReferringPhysicianName",
    "InstitutionAddress",
)


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


@pytest.fixture(scope="session")
def planted_archive(tiny_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny archive with identifying values planted in more header fields, each unique per patient."""
    root = tmp_path_factory.mktemp("planted") / "cxr"
    shutil.copytree(tiny_archive, root)
    for path in dicom_files(root):
        ds = pydicom.dcmread(path)
        patient = str(ds.PatientID)
        ds.OtherPatientIDs = f"MRN{patient}X"
        ds.PatientAddress = f"{patient} Plantedstreet Springfield"
        ds.ReferringPhysicianName = f"Referrer^Planted{patient}"
        ds.InstitutionAddress = f"Planted Clinic Road {patient}"
        ds.StudyDescription = f"CHEST PA for {ds.PatientName}"  # a name where a description belongs
        ds.save_as(path)
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


def find_identifying(values: set[str], places: list[Path], texts: list[str], scratch: Path) -> list[str]:
    """Every ``file:value`` where an identifying value occurs as a whole word in files, Parquet cells or texts.

    grep -F matches all values in one pass (a multi-pattern search), fast enough for checkpoints of
    tens of MB; Parquet is compressed, so its cells are checked as CSV text.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "values.txt").write_text("\n".join(sorted(values)) + "\n")
    targets: list[str] = []
    for place in places:
        for path in [place] if place.is_file() else sorted(place.rglob("*")):
            if path.suffix == ".parquet":
                csv = scratch / f"{len(targets)}-{path.name}.csv"
                pd.read_parquet(path).astype(str).to_csv(csv)
                targets.append(str(csv))
            elif path.is_file():
                targets.append(str(path))
    for i, text in enumerate(texts):
        (scratch / f"text-{i}.txt").write_text(text)
        targets.append(str(scratch / f"text-{i}.txt"))
    result = subprocess.run(
        ["grep", "-HFwao", "-f", str(scratch / "values.txt"), *targets], capture_output=True, text=True, check=False
    )
    assert result.returncode in (0, 1), result.stderr  # 1: no match
    return result.stdout.splitlines()
