"""Helpers for the streaming tests: an archive of N small DICOM files and a tiny scoring checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.uid import generate_uid

from medres.data.transforms import Preprocessing
from medres.package import CHECKPOINT_KEY
from medres.tasks.detection import MultiLabelDetection

FINDINGS = ["nodule", "effusion", "cardiomegaly", "pneumothorax"]
THRESHOLDS = [0.5, 0.4, 0.6, 0.5]


def write_checkpoint(path: Path, backbone: str = "resnet18", size: int = 32) -> Path:
    """A randomly initialised 2D detection model taking ``size`` px images (scoring needs no training)."""
    torch.manual_seed(0)
    module = MultiLabelDetection(
        FINDINGS, Preprocessing(spatial_size=(size, size)), backbone=backbone, thresholds=THRESHOLDS
    )
    torch.save({"state_dict": module.eval().state_dict(), CHECKPOINT_KEY: module.to_package().contract()}, path)
    return path


def write_bulk_archive(root: Path, source: Path, files: int, per_study: int = 4, broken_every: int = 97) -> None:
    """``files`` files under ``root``: copies of ``source`` with fresh UIDs and pixels, a few of them broken.

    Every ``broken_every``-th file is junk (``not_dicom``) so that the ledger has rows too; studies hold
    ``per_study`` instances, 50 studies a folder.
    """
    template = pydicom.dcmread(source)
    if template.file_meta.TransferSyntaxUID.is_compressed:
        template.decompress()  # fresh pixels are written uncompressed
    rng = np.random.default_rng(0)
    pixels = template.pixel_array[::2, ::2].copy()  # 32 px files: decoding stays cheap at 2,000 files
    template.Rows, template.Columns = pixels.shape
    study = series = ""
    for i in range(files):
        folder = root / f"site_{i // (50 * per_study):03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:06d}.dcm"
        if i % broken_every == broken_every - 1:
            path.write_bytes(b"not a DICOM file\n" * 8)
            continue
        if i % per_study == 0:
            study, series = generate_uid(), generate_uid()
        template.StudyInstanceUID, template.SeriesInstanceUID = study, series
        template.SOPInstanceUID = generate_uid()
        noise = rng.integers(0, 64, size=pixels.shape, dtype=pixels.dtype)
        template.PixelData = (pixels // 2 + noise).astype(pixels.dtype).tobytes()
        template.save_as(path, enforce_file_format=True)


def medres_score(*args: str) -> list[str]:
    """The ``medres score`` command line (a subprocess of this interpreter)."""
    return [sys.executable, "-m", "medres.cli", "score", *args]


def run_score(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``medres score`` to the end; fail with its output if it fails."""
    done = subprocess.run(medres_score(*args), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done
