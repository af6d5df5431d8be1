"""What every label importer shares: its summary, header checks, image sizes and output files."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom

from medres.data.boxes import BoxLabels, MergeRule, merge_readers, write_box_csv, write_image_labels

BOXES_CSV = "boxes.csv"
LABELS_CSV = "labels.csv"


@dataclass(frozen=True)
class ImportSummary:
    """What an importer wrote.

    Attributes:
        boxes_csv: The box file (contract of :mod:`medres.data.boxes`); ``None`` for a release with image-level
            labels only (MIMIC-CXR).
        labels_csv: Image-level labels derived from the boxes, or converted from the release's labels.
        images: Images (or series) listed (positives and negatives).
        positives: Images with at least one box after merging readers (image-level releases: at least one
            finding labelled 1).
        boxes: Boxes in ``boxes_csv`` (0 without one).
        findings: The findings, in label-column order.
    """

    boxes_csv: Path | None
    labels_csv: Path
    images: int
    positives: int
    boxes: int
    findings: tuple[str, ...]


def read_rows(path: Path, header: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, row)`` of a CSV whose header must hold ``header`` (extra columns are allowed, ignored).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: One line naming the file, line and problem.
    """
    if not path.is_file():
        raise FileNotFoundError(f"label file {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        found = [h.strip() for h in next(reader, [])]
        missing = [h for h in header if h not in found]
        if missing:
            raise ValueError(f"{path}: line 1: missing column(s) {missing}; found {found}")
        index = {h: i for i, h in enumerate(found)}
        for line, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(found):
                raise ValueError(f"{path}: line {line}: {len(cells)} cells, header has {len(found)}")
            yield line, {h: cells[index[h]].strip() for h in header}


def number(path: Path, line: int, column: str, text: str) -> float:
    """``text`` as a finite float, or one line naming file, line and column."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}: line {line}, column {column!r}: {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{path}: line {line}, column {column!r}: {text!r} is not finite")
    return value


def image_size(path: Path) -> tuple[int, int]:
    """``(Columns, Rows)`` of a DICOM image, from its header only."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
    return int(ds.Columns), int(ds.Rows)


def check_inside(
    labels_path: Path, line: int, column: str, corners: Sequence[float], size: tuple[int, int], image: str
) -> None:
    """Refuse a 2D box reaching outside its image: the label file does not belong to these images."""
    x0, y0, x1, y1 = corners
    cols, rows = size
    # Half a pixel of slack: some releases round pixel-edge corners to the nearest pixel centre.
    if x0 < -0.5 or y0 < -0.5 or x1 > cols + 0.5 or y1 > rows + 0.5:
        raise ValueError(
            f"{labels_path}: line {line}, column {column!r}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside "
            f"{image} ({cols} x {rows} pixels)"
        )


def write_outputs(
    labels: BoxLabels, out: Path, findings: Sequence[str], rule: MergeRule | None = None
) -> ImportSummary:
    """Write ``boxes.csv`` (every reader's boxes, as read) and ``labels.csv`` (derived after merging by ``rule``).

    The box file keeps the readers apart so training can apply another merge rule later; the counts in the
    summary are after merging.
    """
    out.mkdir(parents=True, exist_ok=True)
    boxes_csv = write_box_csv(labels, out / BOXES_CSV)
    merged = merge_readers(labels, rule)
    labels_csv = write_image_labels(merged, out / LABELS_CSV, findings)
    boxed = merged.frame[merged.frame["finding"] != ""]
    return ImportSummary(
        boxes_csv=boxes_csv,
        labels_csv=labels_csv,
        images=len(merged.keys),
        positives=int(boxed[merged.key].nunique()),
        boxes=len(boxed),
        findings=tuple(findings),
    )
