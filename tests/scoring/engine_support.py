"""Helpers for the engine tests: the engine extras (required in CI, a skip elsewhere), archive and reference run."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from medres.scoring import score_archive

from ..conftest import dicom_files
from .bulk import write_bulk_archive, write_checkpoint

# A few hundred files keep CI in seconds; benchmarks/engine_ray.py and MEDRES_ENGINE_TEST_FILES=2000 run the
# acceptance size (the same tests, the same assertions).
FILES = int(os.environ.get("MEDRES_ENGINE_TEST_FILES", "160"))
CHUNK_FILES = 16
BATCH_SIZE = 8


def require(module: str, extra: str) -> ModuleType:
    """Import an engine: CI installs the extras (.ci/run), so there a missing one fails instead of skipping."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"pip install -e '.[{extra}]'")


def build_archive(tiny_archive: Path, root: Path, files: int = FILES) -> tuple[Path, Path, Path]:
    """A synthetic archive of ``files`` files (1 in 97 junk), a tiny checkpoint and the single-process predictions."""
    archive = root / "archive"
    write_bulk_archive(archive, dicom_files(tiny_archive)[0], files)
    model = write_checkpoint(root / "tiny.ckpt", backbone="resnet10", size=16)
    reference = root / "reference" / "preds.parquet"
    score_archive(
        str(model), archive, reference, batch_size=BATCH_SIZE, num_workers=0, chunk_files=CHUNK_FILES, progress=False
    )
    return archive, model, reference


def assert_same_job(output: Path, reference: Path, files: int, tidy: bool = True, studies: bool = True) -> None:
    """Every file exactly once; the same rows as the reference and its probabilities within 1e-6.

    ``tidy``: no temporary part is left (medres score's protocol; Spark leaves its hidden checksum files).
    ``studies``: the study table has as many studies as the reference's.
    """
    predictions = pd.read_parquet(output)
    ledger = pd.read_parquet(output.with_suffix(".errors.parquet"))
    paths = [*predictions["path"], *ledger["path"]]
    assert len(paths) == files and len(set(paths)) == files, (len(paths), len(set(paths)))
    assert set(ledger["kind"]) == {"not_dicom"} and len(ledger) == files // 97
    got = predictions.sort_values("path").reset_index(drop=True)
    expected = pd.read_parquet(reference).sort_values("path").reset_index(drop=True)
    probs = [c for c in expected.columns if c.startswith("prob_")]
    pd.testing.assert_frame_equal(got.drop(columns=probs), expected.drop(columns=probs))
    assert (got[probs] - expected[probs]).abs().max().max() <= 1e-6
    if tidy:
        assert not list(output.glob(".*")), "no temporary part is left behind"
    if studies:
        table = pd.read_parquet(output.with_suffix(".studies.parquet"))
        assert len(table) == len(pd.read_parquet(reference.with_suffix(".studies.parquet")))
