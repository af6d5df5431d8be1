"""Study SRs as files (``medres score --sr_dir DIR``), and the box rows that go into them.

Some sites import SR files into a viewer rather than receive them over DICOMweb. For a finished scoring job,
each study's SR (the same deterministic SR :mod:`medres.scoring.dicomweb` stores in a PACS) is written to
``DIR/<StudyInstanceUID>/<SOPInstanceUID of the SR>.dcm``. The file carries the patient and study modules of
the source images: it belongs to the patient, like the PACS copy, and is never written beside the predictions
unless the user names that folder. Writing again overwrites the file with identical bytes: the SR's UIDs come
from the study and model version, its content time from the job's start (:func:`medres.scoring.job.job_created_at`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pydicom
from pydicom.dataset import Dataset

from medres.scoring.job import boxes_dir_for, job_created_at, studies_path_for
from medres.scoring.sr import boxes_from_rows, build_study_sr
from medres.scoring.studies import Aggregation

log = logging.getLogger(__name__)


def read_box_rows(output: Path) -> pd.DataFrame | None:
    """The job's box rows (``preds.boxes.parquet`` beside ``output``), or None for a model that writes none."""
    folder = boxes_dir_for(output)
    return pd.read_parquet(folder) if folder.exists() else None


def study_box_rows(box_rows: pd.DataFrame | None, study: dict[str, object]) -> pd.DataFrame:
    """The box rows of one study row (empty without box rows).

    Raises:
        ValueError: The study's boxes come from another model or version than its probabilities.
    """
    if box_rows is None:
        return pd.DataFrame()
    rows = box_rows[box_rows["StudyInstanceUID"] == study["StudyInstanceUID"]]
    versions = set(zip(rows["model_name"].astype(str), rows["model_version"].astype(str), strict=True))
    expected = (str(study["model_name"]), str(study["model_version"]))
    if versions - {expected}:
        raise ValueError(f"study {study['StudyInstanceUID']}: box rows of another model version than {expected}")
    return rows


def study_sr(
    study: dict[str, object],
    findings: Sequence[str],
    thresholds: Sequence[float],
    evidence: Sequence[Dataset],
    aggregation: Aggregation,
    box_rows: pd.DataFrame | None,
    output: Path | None,
) -> Dataset:
    """The SR of one study row: its findings, its called boxes, and the start of the job in ``output`` as its time.

    Without ``output`` (a caller outside a scoring job), the SR's time is the clock's.
    """
    rows = study_box_rows(box_rows, study)
    # The SR reports the boxes called present (score ≥ the finding's box threshold): a reader's viewer draws what the
    # model calls, not the detector's tail of low-scoring candidates; every box stays in preds.boxes.parquet.
    if len(rows):
        rows = rows[rows["call"].astype(bool)]
    boxes = boxes_from_rows(rows, evidence) if len(rows) else []
    created = None if output is None else job_created_at(output)
    return build_study_sr(study, findings, thresholds, evidence, aggregation, boxes=boxes, created=created)


def write_sr_file(sr: Dataset, sr_dir: Path) -> Path:
    """Write ``sr`` to ``sr_dir/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` (atomically: a whole file or none)."""
    target = sr_dir / str(sr.StudyInstanceUID) / f"{sr.SOPInstanceUID}.dcm"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    sr.save_as(temporary, enforce_file_format=True)
    os.replace(temporary, target)
    return target


def write_folder_srs(
    input_dir: Path,
    output: Path,
    findings: Sequence[str],
    thresholds: Sequence[float],
    sr_dir: Path,
    aggregation: Aggregation = "max",
) -> list[Path]:
    """Write the SR of every study of the finished job in ``output`` (a folder input) into ``sr_dir``.

    The evidence of a study is the header (pixels not read) of each of its prediction rows' files under
    ``input_dir``: every scored image of a 2D job, the first file of each scored series of a 3D job. The
    patient and study modules come from the first of them.

    Args:
        input_dir: The folder that was scored (``--input``).
        output: The job's predictions (its study table, box rows and job record lie beside it).
        findings: The package's label names.
        thresholds: The package's operating thresholds.
        sr_dir: Folder receiving ``<StudyInstanceUID>/<SOPInstanceUID>.dcm``.
        aggregation: How the study table was aggregated (recorded in each SR).

    Returns:
        The files written, one per study.
    """
    studies = pd.read_parquet(studies_path_for(output))
    predictions = pd.read_parquet(output, columns=["path", "StudyInstanceUID"]).dropna()
    paths = predictions.sort_values("path").groupby("StudyInstanceUID")["path"].apply(list).to_dict()
    box_rows = read_box_rows(output)
    written = []
    for record in studies.to_dict("records"):
        study = {str(k): v for k, v in record.items()}
        evidence = [pydicom.dcmread(input_dir / p, stop_before_pixels=True) for p in paths[study["StudyInstanceUID"]]]
        sr = study_sr(study, findings, thresholds, evidence, aggregation, box_rows, output)
        written.append(write_sr_file(sr, sr_dir))
    log.info("SR files for %d study(ies) → %s", len(written), sr_dir)
    return written
