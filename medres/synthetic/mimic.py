"""A synthetic archive in the layout of MIMIC-CXR (PhysioNet 2.0.0 DICOM release) with its CheXpert-labeler CSV.

The release, as it ships::

    files/pNN/p<subject_id>/s<study_id>/<dicom_id>.dcm   NN = the first two digits of the 8-digit subject_id
    mimic-cxr-2.0.0-chexpert.csv      subject_id,study_id,<14 findings>: one row per study, cells 1.0 / 0.0 /
                                      -1.0 (uncertain) / blank (not mentioned in the report)
    mimic-cxr-2.0.0-metadata.csv      dicom_id,subject_id,study_id,PerformedProcedureStepDescription,
                                      ViewPosition,Rows,Columns,StudyDate,StudyTime,...: one row per image

``dicom_id`` is five dash-joined groups of 8 hex digits; ``study_id`` an 8-digit number starting with 5.
Labels are per study (from the radiology report), so every image of a study shares them.

The radiographs come from the chest model of :mod:`medres.synthetic.chest_xray` (its study draws, renderer and
DICOM writer): ``Lung Lesion`` ← nodules, ``Pleural Effusion`` ← effusion, ``Cardiomegaly``, ``Pneumothorax``,
each labelled as that model labels it (mostly the truth, a few blank and uncertain cells), so the four are
learnable; ``No Finding`` is 1.0 when none of them is labelled present, blank otherwise; the other columns are
blank, as findings a report does not mention are.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medres.synthetic.chest_xray import _dicom_dataset, _draw_encoding, _draw_studies, _render, _set_pixels
from medres.synthetic.writing import draw_patient, new_archive_folder, require_at_least

MIMIC_FILES = "files"
MIMIC_CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
MIMIC_METADATA = "mimic-cxr-2.0.0-metadata.csv"
MIMIC_FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)  # fmt: skip
MIMIC_CHEXPERT_HEADER: tuple[str, ...] = ("subject_id", "study_id", *MIMIC_FINDINGS)
MIMIC_METADATA_HEADER: tuple[str, ...] = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)  # fmt: skip
# The chest model's findings and the CheXpert column each one is reported under.
MIMIC_COLUMNS = {
    "nodule": "Lung Lesion",
    "effusion": "Pleural Effusion",
    "cardiomegaly": "Cardiomegaly",
    "pneumothorax": "Pneumothorax",
}
_CELL = {"1": "1.0", "0": "0.0", "-1": "-1.0", "": ""}
_VIEW_META = {  # chest model view -> (ViewPosition, ViewCodeSequence_CodeMeaning)
    "PA": ("PA", "postero-anterior"),
    "AP": ("AP", "antero-posterior"),
    "LL": ("LATERAL", "lateral"),
}


@dataclass(frozen=True)
class MimicSummary:
    """What :func:`synth_mimic_cxr` wrote.

    Attributes:
        root: The archive folder.
        subjects: Number of subjects.
        studies: Number of studies (rows of the CheXpert CSV).
        images: Number of DICOM files (rows of the metadata CSV).
        chexpert_csv: Path of ``mimic-cxr-2.0.0-chexpert.csv``.
        metadata_csv: Path of ``mimic-cxr-2.0.0-metadata.csv``.
    """

    root: Path
    subjects: int
    studies: int
    images: int
    chexpert_csv: Path
    metadata_csv: Path


def mimic_study_folder(subject_id: int, study_id: int) -> str:
    """``files/pNN/p<subject_id>/s<study_id>``, relative to the release folder (NN = the subject's first two digits)."""
    subject = f"{subject_id:08d}"
    return f"{MIMIC_FILES}/p{subject[:2]}/p{subject}/s{study_id:08d}"


def synth_mimic_cxr(out: Path, patients: int = 20, seed: int = 0, image_size: int = 128) -> MimicSummary:
    """Write a synthetic archive in the MIMIC-CXR layout with its CheXpert and metadata CSVs.

    Args:
        out: Folder to create; it may exist but must be empty.
        patients: Number of subjects (1-3 studies each, one or two views a study), at least 1.
        seed: Non-negative seed; the same seed writes byte-identical files.
        image_size: Nominal Rows/Columns, at least 64.

    Returns:
        Counts and paths of what was written.

    Raises:
        ValueError: If an argument is out of range.
        FileExistsError: If ``out`` exists and is not an empty folder.
    """
    require_at_least(1, patients=patients)
    require_at_least(0, seed=seed)
    require_at_least(64, image_size=image_size)
    out = new_archive_folder(out)

    label_rows: list[list[str]] = []
    meta_rows: list[list[str]] = []
    # Distinct ids from a seeded permutation: subject ids 10000000-19999999, study ids 50000000-59999999.
    ids = np.random.default_rng([seed, 2**30])
    subject_ids = 10_000_000 + ids.choice(10_000_000, size=patients, replace=False)
    next_study = 50_000_000 + int(ids.integers(0, 1_000_000))
    for p in range(patients):
        rng = np.random.default_rng([seed, p, 7])  # keyed by (seed, subject): independent of loop order
        patient = draw_patient(rng, seed, p)
        subject_id = int(subject_ids[p])
        for study in _draw_studies(rng, seed, patient):
            next_study += int(rng.integers(1, 5000))
            study_id = next_study
            cells = dict.fromkeys(MIMIC_FINDINGS, "")
            for finding, column in MIMIC_COLUMNS.items():
                cells[column] = _CELL[study.labels[finding]]
            if not any(cells[c] == "1.0" for c in MIMIC_COLUMNS.values()):
                cells["No Finding"] = "1.0"
            label_rows.append([str(subject_id), str(study_id), *(cells[f] for f in MIMIC_FINDINGS)])
            folder = out / mimic_study_folder(subject_id, study_id)
            folder.mkdir(parents=True)
            # MIMIC shifts dates about two centuries into the future; times keep a fractional second.
            shifted = study.date + dt.timedelta(days=365 * 160)
            frontal = study.views[0]
            procedure = (
                "CHEST (PA AND LAT)"
                if len(study.views) == 2
                else f"CHEST ({'PORTABLE AP' if frontal == 'AP' else 'PA'})"
            )
            for series_number, view in enumerate(study.views, start=1):
                rows, cols = (round(image_size * float(f)) for f in rng.uniform([0.92, 0.9], [1.1, 1.08]))
                image = _render(view, study.anatomy, study.geometry, study.truth, rows, cols, rng)
                encoding = _draw_encoding(rng)
                ds = _dicom_dataset(patient, study, view, series_number, encoding, seed)
                ds.PatientID = str(subject_id)  # the release's DICOM headers carry the subject_id
                _set_pixels(ds, image, encoding)
                dicom_id = "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, 5))
                ds.save_as(folder / f"{dicom_id}.dcm", enforce_file_format=True)
                position, meaning = _VIEW_META[view]
                meta_rows.append(
                    [
                        dicom_id, str(subject_id), str(study_id), procedure, position, str(rows), str(cols),
                        f"{shifted:%Y%m%d}", f"{study.time}.{int(rng.integers(1000)):03d}", procedure, meaning,
                        "Erect" if view != "AP" else "Recumbent",
                    ]
                )  # fmt: skip

    label_rows.sort(key=lambda r: (int(r[0]), int(r[1])))  # the release is sorted by subject, then study
    chexpert_csv, metadata_csv = out / MIMIC_CHEXPERT, out / MIMIC_METADATA
    for path, header, table in (
        (chexpert_csv, MIMIC_CHEXPERT_HEADER, label_rows),
        (metadata_csv, MIMIC_METADATA_HEADER, meta_rows),
    ):
        with path.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(table)
    return MimicSummary(out, patients, len(label_rows), len(meta_rows), chexpert_csv, metadata_csv)
