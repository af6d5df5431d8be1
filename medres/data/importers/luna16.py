"""LUNA16 (nodule detection, 2016): ``annotations.csv`` + ``seriesuids.csv`` → the 3D box contract.

The release's ``annotations.csv`` has one row per nodule (``seriesuid,coordX,coordY,coordZ,diameter_mm``): its
centre in ITK physical millimetres, which are DICOM patient LPS (ITK keeps DICOM's patient frame, so
``coordX`` grows to the patient's left, ``coordY`` posterior, ``coordZ`` up, the frame of
ImagePositionPatient), and its diameter. A nodule becomes the cube ``centre ± diameter / 2`` (finding
``nodule``), keyed by SeriesInstanceUID. ``evaluationScript/annotations/seriesuids.csv`` (no header, one
seriesuid a line) lists every scan LUNA16 evaluates; a listed scan without an annotation is a negative, a
blank row. The scans are the LIDC-IDRI DICOM series under the release folder
(``LIDC-IDRI-NNNN/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm``), found by their headers, not their
folder names.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from medres.data.boxes import SINGLE_READER, new_box_labels
from medres.data.importers.common import ImportSummary, number, read_rows, write_outputs

LABELS_FILE = "annotations.csv"
SERIESUIDS_FILE = "evaluationScript/annotations/seriesuids.csv"
HEADER = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
FINDING = "nodule"
_GEOMETRY_TAGS = ["SeriesInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
                  "Columns"]  # fmt: skip


@dataclass(frozen=True)
class _Volume:
    """Where a series' voxels lie: enough to tell whether a point is inside the scanned volume."""

    origin: np.ndarray  # LPS mm of the first voxel centre (lowest position along the normal)
    axes: np.ndarray  # (3, 3) rows: unit row cosine, column cosine, normal
    steps: np.ndarray  # mm per index along each axis: column spacing, row spacing, slice step
    shape: tuple[int, int, int]  # columns, rows, slices

    def index(self, point: np.ndarray) -> np.ndarray:
        """Continuous (column, row, slice) index of an LPS point."""
        return self.axes @ (point - self.origin) / self.steps

    def inside(self, point: np.ndarray) -> bool:
        """Whether ``point`` lies in a voxel of the volume (voxel centre ± half a voxel)."""
        index = self.index(point)
        return bool(np.all(index >= -0.5) and np.all(index <= np.array(self.shape) - 0.5))


def import_luna16(
    src: Path,
    out: Path,
    labels_file: str = LABELS_FILE,
    seriesuids_file: str = SERIESUIDS_FILE,
    finding: str = FINDING,
) -> ImportSummary:
    """Convert LUNA16's nodule annotations under ``src`` into ``out/boxes.csv`` + ``out/labels.csv`` (3D, LPS mm).

    Every annotated and every listed seriesuid must be a series under ``src``, and every nodule centre must
    lie inside its scan: annotations that do not match the scans are refused rather than half-imported.
    Series under ``src`` that ``seriesuids.csv`` does not list stay unknown.

    Args:
        src: The release folder (LIDC-IDRI case folders and LUNA16's CSV files).
        out: Output folder.
        labels_file: The annotation file, relative to ``src``.
        seriesuids_file: The list of evaluated scans, relative to ``src``.
        finding: Name given to the boxed finding.

    Returns:
        What was written; ``images`` counts series.

    Raises:
        FileNotFoundError: If a label file is missing.
        ValueError: One line naming the file, line and column of the first problem.
    """
    labels_path = src / labels_file
    listed_path = src / seriesuids_file
    folders = _series_folders(src)
    volumes: dict[str, _Volume] = {}
    rows: list[tuple[object, ...]] = []
    annotated: set[str] = set()
    for line, row in read_rows(labels_path, HEADER):
        where = f"{labels_path}: line {line}"
        uid = row["seriesuid"]
        if uid not in folders:
            raise ValueError(f"{where}, column 'seriesuid': no series {uid or '(blank)'} under {src}")
        centre = np.array([number(labels_path, line, c, row[c]) for c in ("coordX", "coordY", "coordZ")])
        diameter = number(labels_path, line, "diameter_mm", row["diameter_mm"])
        if diameter <= 0:
            raise ValueError(f"{where}, column 'diameter_mm': {diameter:g} is not positive")
        if uid not in volumes:
            volumes[uid] = _volume(folders[uid])
        if not volumes[uid].inside(centre):
            index = volumes[uid].index(centre)
            # Name the coordinate that moves the centre most along the first voxel axis it leaves.
            limits = np.array(volumes[uid].shape) - 0.5
            axis = int(np.argmax(np.maximum(-0.5 - index, index - limits)))
            column = ("coordX", "coordY", "coordZ")[int(np.argmax(np.abs(volumes[uid].axes[axis])))]
            raise ValueError(
                f"{where}, column {column!r}: centre ({', '.join(f'{v:g}' for v in centre)}) mm lies outside "
                f"series {uid} (voxel index {', '.join(f'{v:.1f}' for v in index)} of {volumes[uid].shape}); "
                "coordinates must be patient LPS mm"
            )
        radius = diameter / 2
        rows.append((uid, SINGLE_READER, finding, *(centre - radius), *(centre + radius)))
        annotated.add(uid)
    if not listed_path.is_file():
        raise FileNotFoundError(f"scan list {listed_path} does not exist")
    with listed_path.open(newline="", encoding="utf-8-sig") as f:
        for line, cells in enumerate(csv.reader(f), start=1):
            uid = cells[0].strip() if cells else ""
            if not uid:
                continue
            if uid == "seriesuid" and line == 1:
                continue  # tolerate a header line some copies add
            if uid not in folders:
                raise ValueError(f"{listed_path}: line {line}, column 1: no series {uid} under {src}")
            if uid not in annotated:
                annotated.add(uid)
                rows.append((uid, SINGLE_READER, "", *[float("nan")] * 6))
    if not rows:
        raise ValueError(f"{labels_path}: line 2: no annotation rows and no listed scans")
    return write_outputs(new_box_labels("SeriesInstanceUID", rows, str(labels_path)), out, [finding])


def _series_folders(src: Path) -> dict[str, list[Path]]:
    """SeriesInstanceUID → its DICOM files, from the first file of each folder holding ``.dcm`` files."""
    by_folder: dict[Path, list[Path]] = {}
    for path in sorted(src.rglob("*.dcm")):
        by_folder.setdefault(path.parent, []).append(path)
    series: dict[str, list[Path]] = {}
    for files in by_folder.values():
        ds = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        uid = str(getattr(ds, "SeriesInstanceUID", ""))
        if uid:
            series.setdefault(uid, []).extend(files)
    return series


def _volume(files: list[Path]) -> _Volume:
    """The voxel grid of a series of single-frame slices, from headers only."""
    headers = [pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_GEOMETRY_TAGS) for f in files]
    first = headers[0]
    cosines = np.array([float(v) for v in first.ImageOrientationPatient])
    row_cos, col_cos = cosines[:3] / np.linalg.norm(cosines[:3]), cosines[3:] / np.linalg.norm(cosines[3:])
    normal = np.cross(row_cos, col_cos)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    along = positions @ normal
    order = np.argsort(along)
    step = float(np.median(np.diff(along[order]))) if len(files) > 1 else 1.0
    spacing = [float(v) for v in first.PixelSpacing]  # (between rows, between columns)
    return _Volume(
        origin=positions[order[0]],
        axes=np.stack([row_cos, col_cos, normal]),
        steps=np.array([spacing[1], spacing[0], step if step > 0 else 1.0]),
        shape=(int(first.Columns), int(first.Rows), len(files)),
    )
