"""Detection samples: manifest rows joined to their (merged) boxes, and the batch collation the detector reads.

A 2D sample is ``{"image": <absolute path>, "boxes": (N, 4) float32 stored-pixel edges (column, row),
"box_labels": (N,) int64 finding indices, "path": <relative path>}``. A 3D sample (series-keyed boxes) is one
series: ``"image"`` its files' absolute paths in slice order (as :func:`medres.data.samples.series_sample`
plans them, localizers and duplicates left out, the DataModule's 3D records' image), ``"boxes"`` ``(N, 6)``
float32 patient LPS mm, ``"path"`` its first file, plus ``"SeriesInstanceUID"`` and ``"files"`` (relative).
:mod:`medres.data.box_transforms` turns either into network input. Images (series) the box file does not list
are unknown and get no sample; listed ones without a box are negatives with ``N = 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medres.data.box_transforms import BOX_KEY, BOX_LABEL_KEY
from medres.data.boxes import FINDING, BoxLabels
from medres.data.samples import series_sample
from medres.data.transforms import IMAGE_KEY


def box_lookup(labels: BoxLabels, findings: Sequence[str]) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
    """Key → its boxes of ``findings`` (``(N, 2 * spatial_dims)`` float32) and their finding indices (``(N,)`` int64).

    A key without a box of these findings (listed as negative, or boxed only for other findings) gets ``N = 0``.
    """
    index = {finding: i for i, finding in enumerate(findings)}
    boxed = labels.frame[labels.frame[FINDING].isin(index)]
    by_key = {
        key: (group[list(labels.corners)].to_numpy(np.float32), group[FINDING].map(index).to_numpy(np.int64))
        for key, group in boxed.groupby(labels.key, sort=False)
    }
    width = 2 * labels.spatial_dims
    # A fresh empty pair per call: samples never share an array a transform could write into.
    return lambda key: by_key.get(key) or (np.zeros((0, width), np.float32), np.zeros(0, np.int64))


def box_samples(root: Path, manifest: pd.DataFrame, labels: BoxLabels, findings: Sequence[str]) -> list[dict[str, Any]]:
    """One detection sample per manifest row (2D) or series (3D) whose key the (merged) box labels list.

    Args:
        root: Archive root the manifest's relative paths start from.
        manifest: Manifest rows (``path`` and the key column).
        labels: Boxes, readers already merged (:func:`medres.data.boxes.merge_readers`).
        findings: Finding names in label-index order; boxes of other findings are left out.

    Raises:
        ValueError: A key column the manifest lacks.
        DicomReadError: 3D: a listed series that cannot become a volume (run selection first, as the
            DataModule does, to get it as a ledger row instead).
    """
    if labels.key not in manifest.columns:
        raise ValueError(f"{labels.source}: key column {labels.key!r} is not a manifest column")
    if labels.spatial_dims == 3:
        return _series_box_samples(Path(root), manifest, labels, findings)
    boxes_of = box_lookup(labels, findings)
    listed = set(labels.frame[labels.key])
    samples = []
    for key, relative in zip(manifest[labels.key], manifest["path"], strict=True):
        if key not in listed:
            continue
        boxes, classes = boxes_of(key)
        path = str(relative)
        samples.append({IMAGE_KEY: str(Path(root) / path), BOX_KEY: boxes, BOX_LABEL_KEY: classes, "path": path})
    return samples


def _series_box_samples(
    root: Path, manifest: pd.DataFrame, labels: BoxLabels, findings: Sequence[str]
) -> list[dict[str, Any]]:
    """One sample per listed series of the manifest, in SeriesInstanceUID order (the DataModule's series order)."""
    boxes_of = box_lookup(labels, findings)
    listed = set(labels.frame[labels.key])
    samples = []
    for uid, rows in manifest[manifest[labels.key].isin(listed)].groupby(labels.key, sort=True):
        sample = series_sample(rows, root)
        boxes, classes = boxes_of(uid)
        samples.append(
            {
                IMAGE_KEY: [str(root / f) for f in sample.files],
                BOX_KEY: boxes,
                BOX_LABEL_KEY: classes,
                "path": sample.files[0],
                "SeriesInstanceUID": str(uid),
                "files": list(sample.files),
            }
        )
    return samples


def collate_boxes(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack images; keep boxes, labels and every other key as per-sample lists (their lengths differ)."""
    out: dict[str, Any] = {IMAGE_KEY: torch.stack([torch.as_tensor(s[IMAGE_KEY]) for s in batch])}
    for key in batch[0]:
        if key == IMAGE_KEY:
            continue
        values = [s[key] for s in batch]
        if key in (BOX_KEY, BOX_LABEL_KEY):
            values = [torch.as_tensor(v) for v in values]
        out[key] = values
    return out
