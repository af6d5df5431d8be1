"""RSNA Pneumonia Detection Challenge: ``stage_2_train_labels.csv`` → the box contract.

The release's label file has one row per box (``patientId,x,y,width,height,Target``; ``x``/``y`` the
top-left corner in stored pixels) and one row with blank corners and ``Target`` 0 per negative image.
Images are ``stage_2_train_images/<patientId>.dcm``: the key is the file stem.
"""

from __future__ import annotations

from pathlib import Path

from medres.data.boxes import SINGLE_READER, new_box_labels
from medres.data.importers.common import ImportSummary, check_inside, image_size, number, read_rows, write_outputs

LABELS_FILE = "stage_2_train_labels.csv"
IMAGES_FOLDER = "stage_2_train_images"
HEADER = ("patientId", "x", "y", "width", "height", "Target")
FINDING = "lung_opacity"


def import_rsna_pneumonia(
    src: Path, out: Path, labels_file: str = LABELS_FILE, images: str = IMAGES_FOLDER, finding: str = FINDING
) -> ImportSummary:
    """Convert the RSNA Pneumonia release's train labels under ``src`` into ``out/boxes.csv`` + ``out/labels.csv``.

    Every labelled patientId must have its image, and every box must lie inside it: a label file that does
    not match the images is refused rather than half-imported. Images without a labels row (the test
    images) stay unknown.

    Args:
        src: The release folder.
        out: Output folder.
        labels_file: The label file, relative to ``src``.
        images: The image folder, relative to ``src``.
        finding: Name given to the boxed finding.

    Returns:
        What was written.

    Raises:
        FileNotFoundError: If the label file is missing.
        ValueError: One line naming the file, line and column of the first problem.
    """
    labels_path = src / labels_file
    rows: list[tuple[object, ...]] = []
    target_of: dict[str, tuple[str, int]] = {}  # patientId -> (Target, first line)
    sizes: dict[str, tuple[int, int]] = {}
    for line, row in read_rows(labels_path, HEADER):
        patient = row["patientId"]
        where = f"{labels_path}: line {line}"
        if not patient:
            raise ValueError(f"{where}, column 'patientId': blank")
        target = row["Target"]
        if target not in ("0", "1"):
            raise ValueError(f"{where}, column 'Target': {target!r} is not 0 or 1")
        previous = target_of.setdefault(patient, (target, line))
        if previous[0] != target:
            raise ValueError(
                f"{where}, column 'Target': {target} contradicts Target {previous[0]} of patientId {patient} "
                f"on line {previous[1]}"
            )
        relative = f"{images}/{patient}.dcm"
        if patient not in sizes:
            image = src / relative
            if not image.is_file():
                raise ValueError(f"{where}, column 'patientId': no image {relative} under {src}")
            sizes[patient] = image_size(image)
        corners = [row[c] for c in ("x", "y", "width", "height")]
        if target == "0":
            filled = [c for c, v in zip(("x", "y", "width", "height"), corners, strict=True) if v]
            if filled:
                raise ValueError(f"{where}, column {filled[0]!r}: a Target 0 row must have no box")
            rows.append((relative, SINGLE_READER, "", float("nan"), float("nan"), float("nan"), float("nan")))
            continue
        x, y, w, h = (
            number(labels_path, line, c, v) for c, v in zip(("x", "y", "width", "height"), corners, strict=True)
        )
        for column, value in (("width", w), ("height", h)):
            if value <= 0:
                raise ValueError(f"{where}, column {column!r}: {value:g} is not positive")
        check_inside(labels_path, line, "x" if x < 0 or x + w > sizes[patient][0] else "y", (x, y, x + w, y + h),
                     sizes[patient], relative)  # fmt: skip
        rows.append((relative, SINGLE_READER, finding, x, y, x + w, y + h))
    if not rows:
        raise ValueError(f"{labels_path}: line 2: no label rows")
    return write_outputs(new_box_labels("path", rows, str(labels_path)), out, [finding])
