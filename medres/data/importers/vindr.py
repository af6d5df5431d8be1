"""VinDr-CXR (PhysioNet 1.0.0): ``annotations/annotations_train.csv`` → the box contract.

The release's box file has one row per box and radiologist
(``image_id,rad_id,class_name,x_min,y_min,x_max,y_max``, corners in stored pixels) and one ``No finding``
row with blank corners per radiologist who saw nothing; each training image was read by three of
seventeen radiologists. Images are ``train/<image_id>.dicom``. Class names become snake-case findings
(``Nodule/Mass`` → ``nodule_mass``); the readers stay apart in ``boxes.csv`` and are merged by the given
rule for ``labels.csv``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from medres.data.boxes import MergeRule, new_box_labels
from medres.data.importers.common import ImportSummary, check_inside, image_size, number, read_rows, write_outputs

LABELS_FILE = "annotations/annotations_train.csv"
IMAGES_FOLDER = "train"
HEADER = ("image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max")
NO_FINDING = "No finding"
CORNERS = ("x_min", "y_min", "x_max", "y_max")


def finding_name(class_name: str) -> str:
    """The medres finding for a VinDr-CXR class name: lower snake case (``Nodule/Mass`` → ``nodule_mass``)."""
    return re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_")


def import_vindr_cxr(
    src: Path,
    out: Path,
    labels_file: str = LABELS_FILE,
    images: str = IMAGES_FOLDER,
    findings: Sequence[str] | None = None,
    merge: MergeRule | None = None,
) -> ImportSummary:
    """Convert VinDr-CXR's training boxes under ``src`` into ``out/boxes.csv`` + ``out/labels.csv``.

    Args:
        src: The release folder.
        out: Output folder.
        labels_file: The box file, relative to ``src``.
        images: The image folder, relative to ``src``.
        findings: Findings to keep (snake-case names); boxes of other classes are dropped, their images
            stay listed. ``None`` keeps every class present.
        merge: How the readers' boxes become ``labels.csv``; default consensus of 2 readers at IoU 0.4
            (two of the three radiologists agreeing).

    Returns:
        What was written.

    Raises:
        FileNotFoundError: If the box file is missing.
        ValueError: One line naming the file, line and column of the first problem.
    """
    labels_path = src / labels_file
    merge = merge or MergeRule("consensus", min_readers=2, iou=0.4)
    keep = None if findings is None else set(findings)
    rows: list[tuple[object, ...]] = []
    sizes: dict[str, tuple[int, int]] = {}
    said_nothing: dict[tuple[str, str], int] = {}  # (image, reader) -> line of its "No finding" row
    boxed: dict[tuple[str, str], int] = {}  # (image, reader) -> line of its first box
    for line, row in read_rows(labels_path, HEADER):
        where = f"{labels_path}: line {line}"
        image_id, reader, class_name = row["image_id"], row["rad_id"], row["class_name"]
        for column in ("image_id", "rad_id", "class_name"):
            if not row[column]:
                raise ValueError(f"{where}, column {column!r}: blank")
        relative = f"{images}/{image_id}.dicom"
        if image_id not in sizes:
            if not (src / relative).is_file():
                raise ValueError(f"{where}, column 'image_id': no image {relative} under {src}")
            sizes[image_id] = image_size(src / relative)
        pair = (image_id, reader)
        if class_name == NO_FINDING:
            filled = [c for c in CORNERS if row[c]]
            if filled:
                raise ValueError(f"{where}, column {filled[0]!r}: a 'No finding' row must have no box")
            if pair in boxed:
                raise ValueError(
                    f"{where}, column 'class_name': {reader} says 'No finding' but boxed a finding on line "
                    f"{boxed[pair]}"
                )
            said_nothing.setdefault(pair, line)
            rows.append((relative, reader, "", *[float("nan")] * 4))
            continue
        if pair in said_nothing:
            raise ValueError(
                f"{where}, column 'class_name': {reader} boxes {class_name!r} but said 'No finding' on line "
                f"{said_nothing[pair]}"
            )
        boxed.setdefault(pair, line)
        corners = [number(labels_path, line, c, row[c]) for c in CORNERS]
        for axis, name in ((0, "x_max"), (1, "y_max")):
            if corners[axis + 2] <= corners[axis]:
                raise ValueError(
                    f"{where}, column {name!r}: {corners[axis + 2]:g} is not greater than {corners[axis]:g}"
                )
        check_inside(labels_path, line, "x_max", corners, sizes[image_id], relative)
        finding = finding_name(class_name)
        if keep is not None and finding not in keep:
            rows.append((relative, reader, "", *[float("nan")] * 4))  # read, but not for a kept finding
            continue
        rows.append((relative, reader, finding, *corners))
    if not rows:
        raise ValueError(f"{labels_path}: line 2: no label rows")
    labels = new_box_labels("path", rows, str(labels_path))
    # A reader's "not a kept finding" placeholder beside their kept boxes is redundant: drop it.
    frame = labels.frame
    has_box = frame[frame["finding"] != ""].groupby(["path", "reader"]).size()
    redundant = (frame["finding"] == "") & frame.set_index(["path", "reader"]).index.isin(has_box.index)
    frame = frame[~redundant].drop_duplicates().reset_index(drop=True)
    labels = new_box_labels("path", frame.itertuples(index=False), str(labels_path))
    names = sorted(keep) if keep is not None else labels.findings
    return write_outputs(labels, out, names, merge)
