"""MIMIC-CXR (PhysioNet 2.0.0): ``mimic-cxr-2.0.0-chexpert.csv`` → an image-level labels CSV keyed by path.

The release's label file has one row per study (``subject_id,study_id`` then fourteen CheXpert findings with
cells ``1.0``, ``0.0``, ``-1.0`` or blank) and no boxes: this importer writes ``labels.csv`` only, no
``boxes.csv``. Each study's images are ``files/pNN/p<subject_id>/s<study_id>/<dicom_id>.dcm``; a study's
labels go to every one of its images, keyed by the path relative to the release folder. Column names become
snake-case findings (``Pleural Effusion`` → ``pleural_effusion``), cells ``1``/``0``/``-1``/blank (the labels
CSV contract). Studies present as folders but absent from the CSV stay unlabelled (unknown).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

from medres.data.importers.common import LABELS_CSV, ImportSummary, read_rows

LABELS_FILE = "mimic-cxr-2.0.0-chexpert.csv"
FILES_FOLDER = "files"
KEYS = ("subject_id", "study_id")
FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)  # fmt: skip
_CELLS = {"1.0": "1", "1": "1", "0.0": "0", "0": "0", "-1.0": "-1", "-1": "-1", "": ""}


def finding_name(column: str) -> str:
    """The medres finding for a CheXpert column: lower snake case (``Pleural Effusion`` → ``pleural_effusion``)."""
    return re.sub(r"[^a-z0-9]+", "_", column.lower()).strip("_")


def import_mimic_cxr(
    src: Path,
    out: Path,
    labels_file: str = LABELS_FILE,
    files: str = FILES_FOLDER,
    findings: Sequence[str] | None = None,
) -> ImportSummary:
    """Convert MIMIC-CXR's CheXpert labels under ``src`` into ``out/labels.csv`` (one row per image, by path).

    Every labelled study must have its folder under ``files/``, in the folder of its subject: a label file
    that does not match the images is refused rather than half-imported.

    Args:
        src: The release folder.
        out: Output folder (``labels.csv`` only: the release has no boxes).
        labels_file: The CheXpert label file, relative to ``src``.
        files: The image folder, relative to ``src``.
        findings: Snake-case findings to keep, in column order; ``None`` keeps all fourteen.

    Returns:
        What was written (``boxes_csv`` is ``None``; ``positives`` counts images with a finding other than
        ``no_finding`` labelled 1).

    Raises:
        FileNotFoundError: If the label file is missing.
        ValueError: One line naming the file, line and column of the first problem.
    """
    labels_path = src / labels_file
    names = {finding_name(c): c for c in FINDINGS}
    keep = list(names) if findings is None else list(findings)
    unknown = [f for f in keep if f not in names]
    if unknown:
        raise ValueError(f"findings {unknown} are not MIMIC-CXR findings; expected some of {list(names)}")
    studies = _study_folders(src / files)
    out_rows: list[list[str]] = []
    seen: dict[str, int] = {}
    for line, row in read_rows(labels_path, (*KEYS, *FINDINGS)):
        where = f"{labels_path}: line {line}"
        for column in KEYS:
            if not row[column].isdigit():
                raise ValueError(f"{where}, column {column!r}: {row[column]!r} is not an id (digits)")
        subject, study = int(row["subject_id"]), int(row["study_id"])
        if row["study_id"] in seen:
            first = seen[row["study_id"]]
            raise ValueError(f"{where}, column 'study_id': study {study} already labelled on line {first}")
        seen[row["study_id"]] = line
        folder = studies.get(study)
        if folder is None:
            raise ValueError(f"{where}, column 'study_id': no folder s{study:08d} under {src / files}")
        folder_subject = int(folder.parent.name[1:])
        if folder_subject != subject:
            raise ValueError(
                f"{where}, column 'subject_id': {subject} disagrees with the folder of study {study}, "
                f"{folder.relative_to(src).as_posix()} (subject {folder_subject})"
            )
        cells: list[str] = []
        for finding in keep:
            column = names[finding]
            text = row[column]
            if text not in _CELLS:
                raise ValueError(f"{where}, column {column!r}: {text!r} is not 1.0, 0.0, -1.0 or blank")
            cells.append(_CELLS[text])
        for image in sorted(folder.glob("*.dcm")):
            out_rows.append([image.relative_to(src).as_posix(), *cells])
    if not seen:
        raise ValueError(f"{labels_path}: line 2: no label rows")
    out.mkdir(parents=True, exist_ok=True)
    labels_csv = out / LABELS_CSV
    with labels_csv.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", *keep])
        writer.writerows(out_rows)
    findings_only = [i for i, f in enumerate(keep) if f != "no_finding"]
    positives = sum(any(r[1 + i] == "1" for i in findings_only) for r in out_rows)
    return ImportSummary(
        boxes_csv=None, labels_csv=labels_csv, images=len(out_rows), positives=positives, boxes=0, findings=tuple(keep)
    )


def _study_folders(files: Path) -> dict[int, Path]:
    """study_id → its folder ``files/pNN/p<subject>/s<study>``, from the layout alone."""
    if not files.is_dir():
        raise FileNotFoundError(f"image folder {files} does not exist")
    folders: dict[int, Path] = {}
    for folder in files.glob("p[0-9][0-9]/p[0-9]*/s[0-9]*"):
        if folder.is_dir() and folder.name[1:].isdigit() and folder.parent.name[1:].isdigit():
            folders[int(folder.name[1:])] = folder
    return folders
