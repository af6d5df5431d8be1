"""Box labels: the contract of lesion boxes beside the per-finding label CSV (issue 18).

One CSV row per box::

    <key>, finding, x_min, y_min, x_max, y_max[, reader]                      2D
    SeriesInstanceUID, finding, x_min, y_min, z_min, x_max, y_max, z_max[, reader]   3D

- The key is ``path`` or ``SOPInstanceUID`` (2D: one image; corners in *stored pixel* coordinates,
  ``x`` = column, ``y`` = row, pixel edges, so a box over the whole image is ``0, 0, Columns, Rows``)
  or ``SeriesInstanceUID`` (3D: one volume; corners in *patient LPS millimetres*).
- A row whose finding and corners are all blank lists the image as read with nothing boxed: a negative
  for every finding. An image with no row at all is unknown and takes no part in training or metrics.
- ``reader`` (optional) names who drew the box; several readers of one image are merged by a
  :class:`MergeRule` (union, or consensus of at least ``k`` readers overlapping at IoU ``t``).
- Image-level labels (1 = at least one box of the finding after merging, 0 = listed without one) come
  from :func:`image_labels`, so one archive trains both the detector and the classifier.

Every malformed file gets one ``ValueError`` line naming the file, the line and the column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from monai.data.box_utils import box_iou

KEYS_2D: tuple[str, ...] = ("path", "SOPInstanceUID")
KEYS_3D: tuple[str, ...] = ("SeriesInstanceUID",)
CORNERS_2D: tuple[str, ...] = ("x_min", "y_min", "x_max", "y_max")
CORNERS_3D: tuple[str, ...] = ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")
FINDING = "finding"
READER = "reader"
# Reader id given to rows of a file without a reader column, and to boxes after merging.
SINGLE_READER = ""


def corner_columns(spatial_dims: int) -> tuple[str, ...]:
    """The corner columns of a ``spatial_dims`` box CSV, in MONAI's ``xyzxyz`` order."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return CORNERS_2D if spatial_dims == 2 else CORNERS_3D


@dataclass(frozen=True)
class BoxLabels:
    """A parsed box CSV.

    Attributes:
        key: The key column: ``path``, ``SOPInstanceUID`` (2D) or ``SeriesInstanceUID`` (3D).
        frame: One row per box, columns ``key, reader, finding, <corners>``; a row with ``finding == ""``
            and NaN corners lists an image read with nothing boxed. Corners are float64.
        source: The file it came from (for messages), or a description.
    """

    key: str
    frame: pd.DataFrame
    source: str = "<memory>"

    @property
    def spatial_dims(self) -> int:
        """2 for image keys, 3 for series keys."""
        return 3 if self.key in KEYS_3D else 2

    @property
    def corners(self) -> tuple[str, ...]:
        """The corner columns."""
        return corner_columns(self.spatial_dims)

    @property
    def findings(self) -> list[str]:
        """The findings with at least one box, sorted."""
        return sorted(f for f in self.frame[FINDING].unique() if f)

    @property
    def keys(self) -> list[str]:
        """Every listed image or series, in first-appearance order."""
        return list(dict.fromkeys(self.frame[self.key]))

    def boxes(self, key: str, finding: str | None = None) -> np.ndarray:
        """The ``(N, 2 * spatial_dims)`` corners of one image (or series), optionally of one finding."""
        rows = self.frame[(self.frame[self.key] == key) & (self.frame[FINDING] != "")]
        if finding is not None:
            rows = rows[rows[FINDING] == finding]
        return rows[list(self.corners)].to_numpy(np.float64).reshape(-1, len(self.corners))


def new_box_labels(key: str, rows: Iterable[Sequence[object]], source: str = "<memory>") -> BoxLabels:
    """Build :class:`BoxLabels` from ``(key, reader, finding, *corners)`` tuples (blank finding = negative)."""
    if key not in KEYS_2D + KEYS_3D:
        raise ValueError(f"{source}: key must be one of {list(KEYS_2D + KEYS_3D)}, got {key!r}")
    corners = corner_columns(3 if key in KEYS_3D else 2)
    frame = pd.DataFrame(list(rows), columns=[key, READER, FINDING, *corners])
    for column in (key, READER, FINDING):
        frame[column] = frame[column].astype(str)
    for column in corners:
        frame[column] = pd.to_numeric(frame[column]).astype(np.float64)
    return BoxLabels(key, frame, source)


def read_box_csv(path: Path, findings: Sequence[str] | None = None) -> BoxLabels:
    """Read and check a box CSV (see the module docstring for the contract).

    Args:
        path: The CSV file.
        findings: The findings a box may name; ``None`` accepts any name.

    Returns:
        The parsed boxes, negatives included.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: One line naming the file, line and column of the first problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"box labels file {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file; expected a header line")
        header = [h.strip() for h in header]
        keys = [k for k in KEYS_2D + KEYS_3D if k in header]
        if len(keys) != 1:
            raise ValueError(
                f"{path}: line 1: need exactly one key column of {list(KEYS_2D + KEYS_3D)}, found {keys or 'none'}"
            )
        key = keys[0]
        corners = corner_columns(3 if key in KEYS_3D else 2)
        missing = [c for c in (FINDING, *corners) if c not in header]
        if missing:
            raise ValueError(f"{path}: line 1: missing column(s) {missing} for a {key}-keyed box file")
        allowed = {key, FINDING, READER, *corners}
        extra = [h for h in header if h not in allowed]
        if extra:
            raise ValueError(f"{path}: line 1: unexpected column(s) {extra}; allowed: {sorted(allowed)}")
        index = {h: i for i, h in enumerate(header)}
        known = None if findings is None else set(findings)
        rows: list[tuple[object, ...]] = []
        for line, cells in enumerate(reader, start=2):
            if not any(c.strip() for c in cells):
                continue  # blank line
            if len(cells) != len(header):
                raise ValueError(f"{path}: line {line}: {len(cells)} cells, header has {len(header)}")
            rows.append(_parse_row(path, line, cells, index, key, corners, known))
    return new_box_labels(key, rows, str(path))


def _parse_row(
    path: Path,
    line: int,
    cells: list[str],
    index: dict[str, int],
    key: str,
    corners: tuple[str, ...],
    known: set[str] | None,
) -> tuple[object, ...]:
    def cell(column: str) -> str:
        return cells[index[column]].strip()

    where = f"{path}: line {line}"
    key_value = cell(key)
    if not key_value:
        raise ValueError(f"{where}, column {key!r}: blank key")
    finding = cell(FINDING)
    reader = cell(READER) if READER in index else SINGLE_READER
    raw = [cell(c) for c in corners]
    if not finding:
        if any(raw):
            raise ValueError(f"{where}, column {FINDING!r}: blank finding on a row with corners")
        return (key_value, reader, "", *([math.nan] * len(corners)))
    if known is not None and finding not in known:
        raise ValueError(f"{where}, column {FINDING!r}: unknown finding {finding!r}; expected one of {sorted(known)}")
    values: list[float] = []
    for column, text in zip(corners, raw, strict=True):
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{where}, column {column!r}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}, column {column!r}: {text!r} is not finite")
        values.append(value)
    d = len(corners) // 2
    for axis in range(d):
        if values[axis + d] <= values[axis]:
            raise ValueError(
                f"{where}, column {corners[axis + d]!r}: {values[axis + d]:g} is not greater than "
                f"{corners[axis]} {values[axis]:g} (an empty box)"
            )
    if d == 2 and min(values) < 0:
        bad = corners[int(np.argmin(values))]
        raise ValueError(f"{where}, column {bad!r}: negative pixel coordinate {min(values):g}")
    return (key_value, reader, finding, *values)


def write_box_csv(labels: BoxLabels, path: Path) -> Path:
    """Write ``labels`` in the contract's layout (the ``reader`` column only if some row names a reader)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [labels.key, FINDING, *labels.corners]
    if (labels.frame[READER] != SINGLE_READER).any():
        columns.append(READER)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for row in labels.frame[columns].itertuples(index=False):
            writer.writerow(["" if isinstance(v, float) and math.isnan(v) else _number(v) for v in row])
    return path


def _number(value: object) -> object:
    # Integral corners print without ".0", so pixel-exact files read back as they were written.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class MergeRule:
    """How boxes of several readers of one image become the boxes training and metrics see.

    Boxes of the same finding that overlap at IoU >= ``iou`` (directly or through a chain) form one
    cluster, fused into the coordinate-wise mean of its boxes; a cluster is kept if at least
    ``min(min_readers, readers of that image)`` distinct readers drew a box in it. ``union`` is
    ``min_readers=1``: every cluster is kept. An image read by one reader keeps its boxes as drawn. Capping
    by the image's readers keeps images read once (VinDr-CXR's test set, a single-reader site) from losing
    every box to the consensus rule.

    Attributes:
        kind: ``union`` or ``consensus``.
        min_readers: ``k`` of the consensus rule (ignored for ``union``).
        iou: IoU at which two boxes are the same lesion.
    """

    kind: Literal["union", "consensus"] = "union"
    min_readers: int = 2
    iou: float = 0.4

    def __post_init__(self) -> None:
        if self.kind not in ("union", "consensus"):
            raise ValueError(f"merge rule kind must be 'union' or 'consensus', got {self.kind!r}")
        if self.min_readers < 1:
            raise ValueError(f"merge rule min_readers must be >= 1, got {self.min_readers}")
        if not 0.0 < self.iou <= 1.0:
            raise ValueError(f"merge rule iou must be in (0, 1], got {self.iou}")

    @property
    def required(self) -> int:
        """Readers a cluster needs (before capping by the image's readers)."""
        return 1 if self.kind == "union" else self.min_readers


def merge_readers(labels: BoxLabels, rule: MergeRule | None = None) -> BoxLabels:
    """Merge the readers of every image into one set of boxes (reader ``""``), negatives kept as listings.

    Args:
        labels: Boxes, possibly from several readers per image.
        rule: The merge rule; ``None`` = :class:`MergeRule` defaults (union at IoU 0.4).

    Returns:
        One box per kept cluster, and a blank-finding row for every listed image left without boxes.
    """
    rule = rule or MergeRule()
    frame, key, corners = labels.frame, labels.key, list(labels.corners)
    out: list[tuple[object, ...]] = []
    for key_value, image in frame.groupby(key, sort=False):
        readers = image[READER].nunique()
        need = min(rule.required, readers)
        kept = 0
        boxed = image[image[FINDING] != ""]
        if readers == 1:
            # One reader's boxes are that reader's distinct lesions, even where they overlap: kept as drawn.
            out.extend((key_value, SINGLE_READER, *row) for row in boxed[[FINDING, *corners]].itertuples(index=False))
            kept = len(boxed)
            boxed = boxed.iloc[:0]
        for finding, group in boxed.groupby(FINDING, sort=True):
            coords = group[corners].to_numpy(np.float64)
            for members in _clusters(coords, rule.iou):
                if group[READER].iloc[members].nunique() >= need:
                    out.append((key_value, SINGLE_READER, finding, *coords[members].mean(axis=0)))
                    kept += 1
        if not kept:
            out.append((key_value, SINGLE_READER, "", *([math.nan] * len(corners))))
    return new_box_labels(key, out, labels.source)


def _clusters(coords: np.ndarray, threshold: float) -> list[list[int]]:
    """Connected components of the graph "IoU >= threshold", each as sorted member indices."""
    n = len(coords)
    iou = box_iou(coords, coords)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if iou[i, j] >= threshold:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def image_labels(labels: BoxLabels, findings: Sequence[str] | None = None) -> pd.DataFrame:
    """Image-level (or series-level) labels derived from boxes: 1 = boxed, 0 = listed without a box.

    Call it on merged boxes (:func:`merge_readers`); on unmerged ones an image is positive when any
    reader boxed the finding.

    Args:
        labels: The boxes.
        findings: Label columns, in order; ``None`` = every finding with a box.

    Returns:
        One row per listed key: the key column then one float32 column per finding; the layout
        :func:`medres.data.manifest.join_labels` reads.
    """
    findings = list(labels.findings if findings is None else findings)
    frame = labels.frame
    keys = labels.keys
    table = pd.DataFrame({labels.key: keys})
    for finding in findings:
        positive = set(frame.loc[frame[FINDING] == finding, labels.key])
        table[finding] = np.array([k in positive for k in keys], dtype=np.float32)
    return table


def write_image_labels(labels: BoxLabels, path: Path, findings: Sequence[str] | None = None) -> Path:
    """Write :func:`image_labels` as a labels CSV (``1``/``0`` cells)."""
    table = image_labels(labels, findings)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for column in table.columns[1:]:
        table[column] = table[column].astype(int)
    table.to_csv(path, index=False, lineterminator="\n")
    return path
